"""The service's idle close at its own numbers: a socket with no call is closed every 15 s.

The real app (`sesame-pi run`, PortAudio over the virtual sound server) stays idle for a minute
against `sesame-pi standin --idle-close 15` on loopback. A warm link must take each close as
routine: no warning or error line in its JSON log, no backoff (no `link_retry`), no offline state,
one new socket per close (counted at the stand-in), and a press right after a close is live within
1.5 s. (tests/integration/test_service_habits.py runs the same at 1.5 s for every `make test`.)
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from faults.processes import event_time, standin_process
from sesame_pi.standin import PATH
from support.app_process import AppProcess
from support.virtual_audio import VirtualAudio

IDLE_CLOSE_S = float(os.environ.get("SESAME_PI_IDLE_CLOSE_S", "15"))
WATCH_S = 4 * IDLE_CLOSE_S  # a minute at the service's numbers
PRESS_TO_LIVE_S = 1.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_idle_closes_every_15_s_for_a_minute_stay_routine(
    tmp_path: Path, sound: VirtualAudio, token_file: Any, figures: Any
) -> None:
    _token, path = token_file()
    port = free_port()
    server = standin_process(
        [], "127.0.0.1", port, tmp_path / "standin.jsonl",
        "--greeting-ms", "0", "--idle-close", str(IDLE_CLOSE_S),
    ).start()  # fmt: skip
    app = AppProcess(tmp_path, f"ws://127.0.0.1:{port}{PATH}", path, env=sound.env)
    try:
        server.wait_event("standin_listening", timeout=20)
        app.start()
        app.wait_state("idle", timeout=30)
        time.sleep(WATCH_S)
        closes = server.count("standin_idle_close")
        connections = server.count("standin_connection")
        assert closes >= WATCH_S / IDLE_CLOSE_S - 1, server.tail()
        assert connections <= closes + 1, "one new socket per close, no more"

        mark = server.mark()
        closed = server.wait_event("standin_idle_close", after=mark, timeout=IDLE_CLOSE_S + 5)
        app_mark = app.mark()
        app.press()
        live = app.wait_event("call_live", after=app_mark, timeout=10)
        took = event_time(live) - closed["_at"]
        figures("idle closes in a minute (sockets opened)", f"{closes} ({connections})", "")
        figures("idle close -> press -> call live", round(took, 3), "s", f"<= {PRESS_TO_LIVE_S}")
        assert took <= PRESS_TO_LIVE_S, f"{took:.2f} s from the close to live"
        end_mark = app.mark()
        app.hold(2.5)
        app.wait_event("call_ended", after=end_mark)
    finally:
        app.kill()
        server.stop()
    events = app.events()
    loud = [e for e in events if e.get("level") in ("WARNING", "ERROR", "CRITICAL")]
    assert loud == [], loud
    assert [e for e in events if e.get("event") == "link_retry"] == [], "no backoff at all"
    states = [e.get("state") for e in events if e.get("event") == "state_changed"]
    assert "offline" not in states
    downs = [e for e in events if e.get("event") == "link_down"]
    assert len(downs) >= closes and all(down["routine"] for down in downs)
