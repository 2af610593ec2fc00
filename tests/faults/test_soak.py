"""A compressed soak: call after call, with the service dropping every other one, for 5 minutes.

Honest about the compression: the cycle is what a busy day looks like sped up (a call every ~10 s,
half of them cut by the service and resumed), not a day of idling. SESAME_PI_SOAK_S=1800 runs the
half-hour version. After a warm-up, the app's resident memory, open descriptors and threads are
sampled at the same point of every cycle (idle, link up, speaker still open after the end earcon);
the event log runs with a small rotation size so its bound is tested, not assumed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from faults.processes import StdoutApp
from sesame_pi.logs import log_file_paths
from sesame_pi.standin import StandinOptions
from support.standin_thread import StandinThread
from support.virtual_audio import VirtualAudio

SOAK_S = float(os.environ.get("SESAME_PI_SOAK_S", "300"))
WARMUP_CYCLES = 3
LOG_MAX_BYTES = 20_000
LOG_BACKUPS = 2
MAX_LINE_BYTES = 4_000  # one event line, generously (call_ended carries the link counters)


@dataclass(frozen=True)
class Sample:
    rss: int
    fds: int
    threads: int
    tasks: int
    log_bytes: int


def sample(pid: int, log_file: Path, heartbeat: Path) -> Sample:
    proc = psutil.Process(pid)
    return Sample(
        rss=proc.memory_info().rss,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=proc.num_threads(),
        tasks=int(json.loads(heartbeat.read_text())["tasks"]),  # the app's own asyncio count
        log_bytes=sum(path.stat().st_size for path in log_file_paths(log_file)),
    )


def one_call(app: StdoutApp, server: StandinThread, dropped: bool) -> None:
    """Press, talk, (the service drops the call and it resumes), hold to hang up, idle again."""
    mark = app.mark()
    app.press()
    app.wait_event("call_live", after=mark, resumed=False)
    time.sleep(3.0)
    if dropped:
        mark = app.mark()
        server.restart_server()  # every client dropped, as a service deploy would
        server.start()
        app.wait_event("call_live", after=mark, timeout=15, resumed=True)
        time.sleep(1.0)
    mark = app.mark()
    app.hold(2.5)
    ended = app.wait_event("call_ended", after=mark, timeout=15)
    assert ended["reason"] == "user_request", ended
    app.wait_state("idle", after=mark, timeout=10)
    app.wait_event("link_up", after=mark, timeout=10)  # the fresh warm socket after the call
    time.sleep(0.5)


@pytest.mark.timeout(SOAK_S + 180)
def test_soak_calls_and_drops_leave_memory_fds_and_log_flat(
    tmp_path: Path,
    sound: VirtualAudio,
    token_file: Callable[..., tuple[str, Path]],
    figures: Any,
) -> None:
    token, path = token_file()
    heartbeat = tmp_path / "heartbeat.json"
    env = {
        **sound.env,
        "SESAME_PI_HEARTBEAT_FILE": str(heartbeat),
        "SESAME_PI_LOG_MAX_BYTES": str(LOG_MAX_BYTES),
        "SESAME_PI_LOG_BACKUPS": str(LOG_BACKUPS),
    }
    options = StandinOptions(mode="echo", expect_token=token, greeting_ms=200)
    cycles = drops = 0
    samples: list[Sample] = []
    with StandinThread(options) as server, StdoutApp(tmp_path, server.url, path, env) as app:
        app.wait_state("idle", timeout=30)
        deadline = time.monotonic() + SOAK_S
        while time.monotonic() < deadline or cycles <= WARMUP_CYCLES:
            dropped = cycles % 2 == 1
            one_call(app, server, dropped)
            cycles += 1
            drops += dropped
            if cycles >= WARMUP_CYCLES:
                samples.append(sample(app.pid, app.log_file, heartbeat))
        stdout_bytes = app.stdout_file.stat().st_size
        assert app.terminate() == 0
    record = server.record
    base, last = samples[0], samples[-1]
    rss_growth_mb = (last.rss - base.rss) / 2**20
    fds_spread = max(s.fds for s in samples) - min(s.fds for s in samples)
    log_cap = LOG_MAX_BYTES * (LOG_BACKUPS + 1) + MAX_LINE_BYTES

    figures("soak: duration", SOAK_S, "s")
    figures("soak: calls (server drops)", f"{cycles} ({drops})", "")
    figures("soak: RSS after warm-up", base.rss / 2**20, "MiB")
    figures("soak: RSS growth after warm-up", rss_growth_mb, "MiB", "<= 5")
    figures("soak: open fds first/last", f"{base.fds}/{last.fds}", "", "+-2")
    figures("soak: threads first/last", f"{base.threads}/{last.threads}", "", "+-2")
    figures("soak: asyncio tasks first/last", f"{base.tasks}/{last.tasks}", "", "+-2")
    figures("soak: log bytes on disk (written)", f"{last.log_bytes} ({stdout_bytes})", "B",
            f"<= {log_cap}")  # fmt: skip

    assert record.violations == [], record.violations[:5]
    assert record.calls == cycles + drops, "one call per press plus one per resume, no more"
    assert rss_growth_mb <= 5.0, [s.rss for s in samples]
    assert abs(last.fds - base.fds) <= 2 and fds_spread <= 4, [s.fds for s in samples]
    assert abs(last.threads - base.threads) <= 2, [s.threads for s in samples]
    assert abs(last.tasks - base.tasks) <= 2, [s.tasks for s in samples]
    assert max(s.log_bytes for s in samples) <= log_cap
    assert len(log_file_paths(app.log_file)) <= LOG_BACKUPS + 1
    if stdout_bytes > log_cap:  # the soak wrote more than the cap: rotation must have happened
        assert len(log_file_paths(app.log_file)) == LOG_BACKUPS + 1
