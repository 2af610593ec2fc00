"""CPU time and memory of one process over a stretch of a call (psutil, plus the kernel's peak).

CPU is user + system time of all the process's threads, as the kernel counts it, over a measured
wall-clock interval; it is reported per minute of audio. Memory is sampled every 100 ms (the
largest RSS seen during the interval) and read from VmHWM, the kernel's high-water mark of resident
memory over the process's whole life (so a brief peak between samples is not missed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

MB = 1_000_000  # decimal megabytes: the stricter reading of a "45 MB" goal


def vm_hwm_bytes(pid: int) -> int | None:
    """The kernel's peak resident set size of `pid`, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Usage:
    wall_s: float
    cpu_s: float
    rss_max_bytes: int
    hwm_bytes: int | None
    main_thread_cpu_s: float  # the event loop (or the naive client's send loop)
    other_threads_cpu_s: list[float]  # PortAudio's callback threads and helpers, largest first

    @property
    def cpu_s_per_min(self) -> float:
        return self.cpu_s / self.wall_s * 60 if self.wall_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_s_per_min": round(self.cpu_s_per_min, 3),
            "rss_max_sampled_mb": round(self.rss_max_bytes / MB, 1),
            "peak_rss_mb": round(self.hwm_bytes / MB, 1) if self.hwm_bytes else None,
            "main_thread_cpu_s": round(self.main_thread_cpu_s, 3),
            "other_threads_cpu_s": [round(t, 3) for t in self.other_threads_cpu_s if t >= 0.005],
        }


class UsageMeter:
    """`start()` at the beginning of the stretch, `stop()` at its end -> Usage."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.period_s = period_s
        self._rss_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="usage", daemon=True)
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._threads0: dict[int, float] = {}

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def _threads(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in self.process.threads()}

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self._rss_max = max(self._rss_max, self.process.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.period_s)

    def start(self) -> UsageMeter:
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu()
        self._threads0 = self._threads()
        self._thread.start()
        return self

    def stop(self) -> Usage:
        cpu = self._cpu() - self._cpu0
        wall = time.monotonic() - self._t0
        hwm = vm_hwm_bytes(self.process.pid)
        spent = {tid: t - self._threads0.get(tid, 0.0) for tid, t in self._threads().items()}
        self._stop.set()
        self._thread.join(2)
        main = spent.pop(self.process.pid, 0.0)
        return Usage(wall, cpu, self._rss_max, hwm, main, sorted(spent.values(), reverse=True))
