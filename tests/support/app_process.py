"""`sesame-pi run` as a child process, driven through the stdin button and read through its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class AppProcess:
    """The appliance under test. `events()` parses the JSON log file; `wait_event` polls it."""

    def __init__(
        self,
        tmp: Path,
        server_url: str,
        token_file: Path,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        launcher: tuple[str, ...] = (sys.executable, "-m", "sesame_pi.cli"),
        seen_as: Callable[[Path], str] = str,
        log_file: Path | None = None,
    ) -> None:
        """`launcher` runs the CLI (e.g. `docker run ... IMAGE`); `seen_as` maps a path here to
        the path the app sees (a bind mount), for the token and log file."""
        self.log_file = log_file or tmp / "app-events.jsonl"
        self.heartbeat_file = self.log_file.parent / "heartbeat.json"
        self.stdout_file = tmp / "app-stdout.txt"
        self.stderr_file = tmp / "app-stderr.txt"
        self.command = [
            *launcher, "run",
            "--config", "/dev/null",
            "--server", server_url,
            "--token-file", seen_as(token_file),
            "--button", "stdin",
            "--log-file", seen_as(self.log_file),
            "--heartbeat-file", seen_as(self.heartbeat_file),
            *extra_args,
        ]  # fmt: skip
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> AppProcess:
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=self.stdout_file.open("w"),
            stderr=self.stderr_file.open("w"),
            text=True,
            env=self.env,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ------------------------------------------------------------ the button

    def say(self, word: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def press(self) -> None:
        """A short press (well under the hold time)."""
        self.say("press")
        time.sleep(0.15)
        self.say("release")

    def hold(self, seconds: float) -> None:
        self.say("press")
        time.sleep(seconds)
        self.say("release")

    # ------------------------------------------------------------ the log

    def events(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        lines = self.log_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_event(
        self, name: str, timeout: float = 20, after: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The first event `name` (with matching fields) at index >= `after` in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for found in self.events()[after:]:
                if found.get("event") == name and all(found.get(k) == v for k, v in fields.items()):
                    return found
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the app exited ({self.proc.returncode}) before {name}: "
                    + self.stderr_file.read_text()[-2000:]
                )
            time.sleep(0.05)
        raise TimeoutError(f"no {name} {fields} within {timeout} s; last: {self.events()[-5:]}")

    def wait_state(self, state: str, timeout: float = 20, after: int = 0) -> dict[str, Any]:
        return self.wait_event("state_changed", timeout, after, state=state)

    def mark(self) -> int:
        """An index into the log: wait for what happens after now."""
        return len(self.events())

    # ------------------------------------------------------------ lifetime

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.kill()
