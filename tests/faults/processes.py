"""Child processes the fault tests watch through their JSON lines: the stand-in, the relay, the app.

Every line is stamped with the wall-clock time it arrived, so a test can measure, for example,
from "the server is listening again" to the app's `call_live` (its `ts` is the same clock).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from support.app_process import AppProcess

VENV_BIN = Path(sys.executable).parent
STANDIN_PORT = 8765


def event_time(found: dict[str, Any]) -> float:
    """An app event's `ts` (ISO 8601, UTC, milliseconds) as epoch seconds."""
    return datetime.fromisoformat(found["ts"]).timestamp()


class JsonLinesProcess:
    """A child whose stdout is JSON lines; `lines` fills in from a reader thread."""

    def __init__(self, argv: list[str], transcript: Path) -> None:
        self.argv = argv
        self.transcript = transcript
        self.lines: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> JsonLinesProcess:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with self.transcript.open("a") as copy:
            for line in proc.stdout:
                copy.write(line)
                copy.flush()
                try:
                    found = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(found, dict):
                    found["_at"] = time.time()
                    self.lines.append(found)

    def wait_event(self, name: str, after: int = 0, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for found in self.lines[after:]:
                if found.get("event") == name:
                    return found
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader drain the last lines
                for found in self.lines[after:]:
                    if found.get("event") == name:
                        return found
                raise AssertionError(f"{self.argv[:6]} exited before {name}: {self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {name} within {timeout} s: {self.tail()}")

    def count(self, name: str, after: int = 0) -> int:
        return sum(1 for found in self.lines[after:] if found.get("event") == name)

    def mark(self) -> int:
        return len(self.lines)

    def tail(self) -> str:
        return self.transcript.read_text()[-1500:] if self.transcript.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process dies as in a crash; the kernel resets its sockets."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def stop(self) -> None:
        """SIGTERM and wait (so it can print its summary line)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)


def standin_process(
    ns_wrap: list[str], host: str, port: int, transcript: Path, *options: str
) -> JsonLinesProcess:
    """`sesame-pi standin` inside a namespace (`ns_wrap` is the `ip netns exec NS` prefix)."""
    argv = [
        *ns_wrap, str(VENV_BIN / "sesame-pi"), "standin",
        "--host", host, "--port", str(port), *options,
    ]  # fmt: skip
    return JsonLinesProcess(argv, transcript)


def relay_process(
    ns_wrap: list[str],
    listen: tuple[str, int],
    target: tuple[str, int],
    delay_ms: float,
    jitter_ms: float,
    transcript: Path,
) -> JsonLinesProcess:
    script = Path(__file__).with_name("jitter_relay.py")
    argv = [
        *ns_wrap, sys.executable, str(script), listen[0], str(listen[1]),
        target[0], str(target[1]), str(delay_ms), str(jitter_ms),
    ]  # fmt: skip
    return JsonLinesProcess(argv, transcript)


class StdoutApp(AppProcess):
    """AppProcess reading its events from stdout, which is never rotated (the log file is)."""

    def events(self) -> list[dict[str, Any]]:
        if not self.stdout_file.exists():
            return []
        found = []
        for line in self.stdout_file.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line still being written
        return found


def in_namespace(app: AppProcess, ns_wrap: list[str]) -> AppProcess:
    """Run this app inside a network namespace (PulseAudio's unix socket works across them)."""
    app.command = [*ns_wrap, *app.command]
    return app
