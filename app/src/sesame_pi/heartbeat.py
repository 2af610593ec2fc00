"""A small status file the app rewrites every few seconds, so a container HEALTHCHECK (or a person)
can tell a live appliance from a hung one without talking to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path

from .logs import event
from .states import State

# States that mean "running, but a person must act"; `status` reports them as unhealthy.
UNHEALTHY = frozenset({State.NEEDS_TOKEN, State.DEVICE_ERROR})


class Heartbeat:
    """Writes {"ts", "state", "pid", "link_up", "tasks"} atomically to one file.

    `tasks` (the event loop's live task count) lets a soak test or a person see a task leak.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._link_up: bool | None = None
        self._failing = False  # the last write failed (said once per spell of failures)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the appliance runs on; `status` will say there is no heartbeat
            event(
                "heartbeat_unavailable",
                logging.WARNING,
                detail=f"cannot create {path.parent}: {exc.strerror or exc}",
                action="set heartbeat_file to a writable path",
            )

    def update(self, state: State, link_up: bool | None = None) -> None:
        if link_up is not None:
            self._link_up = link_up
        body = {
            "ts": time.time(),
            "state": state.value,
            "pid": os.getpid(),
            "link_up": self._link_up,
            "tasks": _task_count(),
        }
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            temp.write_text(json.dumps(body))
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()  # (no half-written beat left beside it)
            # A full or read-only disk must not stop the appliance; but a health check that
            # fails with nothing in the log sends its owner looking in the wrong place.
            if not self._failing:
                event(
                    "heartbeat_unavailable",
                    logging.WARNING,
                    detail=f"cannot write {self.path}: {exc.strerror or exc}",
                    action=f"make {self.path.parent} writable for the app, or set "
                    "heartbeat_file to a writable path (the health check fails until then)",
                )
            self._failing = True
        else:
            self._failing = False


def _task_count() -> int | None:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a test, or the first beat before the loop)
        return None


def check(path: Path, max_age_s: float = 30.0) -> tuple[bool, str]:
    """(healthy, one line for a person) from the heartbeat file."""
    try:
        body = json.loads(path.read_text())
        age = time.time() - float(body["ts"])
        state = State(body["state"])
    except FileNotFoundError:
        return False, f"no heartbeat at {path}: is `sesame-pi run` running with --heartbeat-file?"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"heartbeat at {path} is unreadable: {exc}"
    if age > max_age_s:
        return False, f"heartbeat is {age:.0f} s old (state {state.value}): {_not_rewritten(path)}"
    if age < -max_age_s:  # written before the clock stepped back (NTP): a live app rewrites it
        return False, (
            f"heartbeat is dated {-age:.0f} s ahead of the clock (state {state.value}): the "
            f"clock stepped back and it was not rewritten since: {_not_rewritten(path)}"
        )
    link = body.get("link_up")
    link_text = "up" if link else "down" if link is False else "unknown"
    line = f"state {state.value}, link {link_text}, {age:.0f} s ago"
    if state in UNHEALTHY:
        return False, line
    return True, line


def _not_rewritten(path: Path) -> str:
    """Why a heartbeat went stale, as far as the file's directory can tell: an app that cannot
    write it (a full card, a read-only mount) looks exactly like a hung one by the file's age,
    and the two send a person to different places."""
    probe = path.with_name(f".{path.name}.status-probe.{os.getpid()}")
    try:
        probe.write_bytes(bytes(256))  # about a beat's size: a full disk refuses the data
    except OSError as exc:
        return (
            f"it cannot be written here ({exc.strerror or exc}): the app may be running; free "
            f"space on or make {path.parent} writable (its log says heartbeat_unavailable)"
        )
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return "the app looks hung"
