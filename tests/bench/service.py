"""How quickly a person is talking: press to live on a warm link, and back in service after a crash.

Times come from two clocks that agree: this process's wall clock at the moment it writes `press` to
the app's stdin button (or kills the server), and the `ts` of the app's own events (wall clock, ms).
The first microphone frame's arrival is the stand-in's monotonic clock, in this same process.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

from support.app_process import AppProcess
from support.standin_thread import StandinThread

HOLD_S = 2.1  # past the app's 2.0 s hold time: ends the call
OUTAGE_S = 1.0


def event_time(found: dict[str, Any]) -> float:
    """An app event's `ts` as a Unix time."""
    return datetime.fromisoformat(str(found["ts"])).timestamp()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def wait_warm(app: AppProcess, after: int) -> None:
    """After a call the app closes its socket and opens a fresh one: wait for that, then idle."""
    app.wait_event("link_up", after=after, timeout=15)
    app.wait_state("idle", after=after, timeout=15)
    time.sleep(0.5)


def first_audio_at(server: StandinThread, timeout: float = 5.0) -> float | None:
    """When the stand-in got the call's first microphone frame (its monotonic clock), or None."""
    deadline = time.monotonic() + timeout
    while server.record.first_audio_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.record.first_audio_at


def press_to_live(app: AppProcess, server: StandinThread, presses: int) -> dict[str, Any]:
    runs = []
    for _ in range(presses):
        mark = app.mark()
        server.record.first_audio_at = None
        pressed_wall, pressed_mono = time.time(), time.monotonic()
        app.press()
        live = app.wait_event("call_live", after=mark)
        uplink = app.wait_event("uplink_started", after=mark)
        button = app.wait_event("button_pressed", after=mark)
        first_audio = first_audio_at(server)
        runs.append(
            {
                "press_to_live_ms": _ms(event_time(live) - pressed_wall),
                "press_to_uplink_started_ms": _ms(event_time(uplink) - pressed_wall),
                "press_to_first_frame_at_server_ms": (
                    _ms(first_audio - pressed_mono) if first_audio is not None else None
                ),
                "button_event_to_live_ms": _ms(event_time(live) - event_time(button)),
            }
        )
        time.sleep(1.0)
        mark = app.mark()
        app.hold(HOLD_S)
        app.wait_event("call_ended", after=mark)
        wait_warm(app, mark)
    return {"runs": runs, **_medians(runs)}


def back_in_service(app: AppProcess, server: StandinThread, restarts: int) -> dict[str, Any]:
    """Crash the server mid-call, bring it back on the same port after OUTAGE_S, time the resume."""
    mark = app.mark()
    app.press()
    app.wait_event("call_live", after=mark, resumed=False)
    runs = []
    for _ in range(restarts):
        time.sleep(2.0)
        mark = app.mark()
        server.record.first_audio_at = None
        crashed_wall, crashed_mono = time.time(), time.monotonic()
        server.restart_server()
        time.sleep(OUTAGE_S)
        back_wall = time.time()
        server.start()  # the same StandinThread keeps its port
        resumed = app.wait_event("call_live", after=mark, timeout=30, resumed=True)
        first_audio = first_audio_at(server)
        runs.append(
            {
                "restart_to_live_ms": _ms(event_time(resumed) - crashed_wall),
                "server_back_to_live_ms": _ms(event_time(resumed) - back_wall),
                "restart_to_first_frame_at_server_ms": (
                    _ms(first_audio - crashed_mono) if first_audio is not None else None
                ),
                "outage_ms": _ms(back_wall - crashed_wall),
            }
        )
    mark = app.mark()
    app.hold(HOLD_S)
    app.wait_event("call_ended", after=mark)
    wait_warm(app, mark)
    return {"runs": runs, **_medians(runs)}


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for key in runs[0] if runs else ():
        values = [r[key] for r in runs if r[key] is not None]
        figures[f"median_{key}"] = round(statistics.median(values), 1) if values else None
        figures[f"max_{key}"] = max(values) if values else None
    return figures
