"""Two of the service's own habits, played by the stand-in against the session and a real link.

Idle closes: the service closes a socket that places no call after about 15 s (here scaled down);
the warm link treats that as routine: no warning, no backoff, no offline state, and a press right
after a close is live quickly. Duration limits: the service ends a call with a server
`call_disconnect` (`call_duration_limit_exceeded`); the session says so with its own event, earcon
and LED state, and with `redial_on_limit` places a new call by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sesame_pi import session as session_module
from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config, ConfigError, load
from sesame_pi.link import IDLE_CLOSE_MIN_S, Link, LinkDown
from sesame_pi.logs import setup_logging
from sesame_pi.session import CALL_LIMIT_REASON
from sesame_pi.standin import StandinOptions
from sesame_pi.states import Earcon, State
from support.credentials import make_token, write_token
from support.session_rig import session_rig

IDLE_CLOSE_S = 1.5
IDLE_WATCH_S = 7.5  # five idle closes


async def test_idle_closes_are_routine_and_a_press_after_one_is_live_fast(tmp_path: Path) -> None:
    options = StandinOptions(greeting_ms=0, idle_close_s=IDLE_CLOSE_S)
    async with session_rig(tmp_path, options) as r:
        await asyncio.sleep(IDLE_WATCH_S)
        record = r.standin.record
        closes = record.idle_closes
        assert closes >= 4, "the stand-in closed the idle socket every 1.5 s"
        assert record.connections <= closes + 1, "one new socket per close, no more"
        assert r.events("link_retry") == [], "no backoff: each close reconnects at once"
        downs = r.events("link_down")
        assert downs and all(down["routine"] for down in downs), downs
        assert State.OFFLINE not in r.feedback.states and r.session.state is State.IDLE

        while record.idle_closes == closes:  # noqa: ASYNC110 - waits for the next close
            await asyncio.sleep(0.005)
        closed_at = time.monotonic()
        r.session.button_pressed()
        live_at = await r.wait_state(State.LIVE, timeout=5)
        assert live_at - closed_at <= 1.5, f"press to live {live_at - closed_at:.2f} s"
        r.session.button_held()
        await r.wait_state(State.IDLE)
    warnings = [e for e in r.events() if logging.getLevelName(e["level"]) >= logging.WARNING]
    assert warnings == [], warnings
    assert record.violations == []


async def test_a_duration_limit_end_is_told_apart_and_a_press_calls_again(tmp_path: Path) -> None:
    async with session_rig(tmp_path, StandinOptions(greeting_ms=0, call_limit_s=1.0)) as r:
        r.session.button_pressed()
        await r.wait_state(State.LIVE)
        await r.wait_state(State.CALL_LIMIT, timeout=5)
        (limit,) = r.events("call_limit_reached")
        assert limit["level"] == "WARNING" and limit["redial"] is False
        assert 0.8 <= limit["lasted_s"] <= 2.0
        (ended,) = r.events("call_ended")
        assert ended["reason"] == f"server: {CALL_LIMIT_REASON}"
        assert r.feedback.earcons[-1] is Earcon.LIMIT and Earcon.END not in r.feedback.earcons
        assert r.feedback.states[-1] is State.CALL_LIMIT
        await asyncio.sleep(1.5)
        assert r.standin.record.calls == 1, "no redial unless asked for"
        assert r.session.state is State.CALL_LIMIT, "the LED keeps saying why"
        assert not r.session.link.urgent, "no call to resume: a later outage backs off fully"

        r.session.button_pressed()
        await r.wait_state(State.LIVE)
        r.session.button_held()
        await r.wait_state(State.IDLE)
    assert r.standin.record.limit_ends == 1 and r.standin.record.calls == 2
    assert r.standin.record.violations == []


async def test_redial_on_limit_places_a_new_call_by_itself(tmp_path: Path) -> None:
    options = StandinOptions(greeting_ms=0, call_limit_s=2.5)
    async with session_rig(tmp_path, options, redial_on_limit=True) as r:
        r.session.button_pressed()
        await r.wait_state(State.LIVE)
        async with asyncio.timeout(8):
            while r.standin.record.calls < 2 or r.session.state is not State.LIVE:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert r.feedback.states[-3:] == [State.CALL_LIMIT, State.CONNECTING, State.LIVE]
        (limit,) = r.events("call_limit_reached")
        assert limit["redial"] is True
        assert r.standin.record.calls == 2 and r.standin.record.limit_ends == 1
        assert r.feedback.earcons[-3:] == [Earcon.LIMIT, Earcon.CALL_START, Earcon.LIVE]
        r.session.button_held()  # before the second call reaches its limit
        await r.wait_state(State.IDLE)
    assert r.standin.record.disconnects == ["user_request"]
    assert r.standin.record.violations == []


async def test_redials_stop_after_their_share_of_a_press_and_a_press_gives_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each limit redialled, for ever: a device nobody was talking to any more kept its
    microphone streaming to the service. Redials stop after their share of a press (one here,
    three in the app), the LED says the limit ended it, and the next press earns a new share."""
    monkeypatch.setattr(session_module, "REDIALS_PER_PRESS", 1)
    options = StandinOptions(greeting_ms=0, call_limit_s=2.5)
    async with session_rig(tmp_path, options, redial_on_limit=True) as r:
        r.session.button_pressed()
        await r.wait_state(State.LIVE)
        async with asyncio.timeout(10):
            while len(r.events("call_limit_reached")) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        first, second = r.events("call_limit_reached")
        assert (first["redial"], first["redials"]) == (True, 0)
        assert (second["redial"], second["redials"]) == (False, 1)
        assert "redialled 1 times since the last press" in second["action"]
        await asyncio.sleep(1.0)
        assert r.standin.record.calls == 2, "no third call without a press"
        assert r.session.state is State.CALL_LIMIT

        r.session.button_pressed()
        await r.wait_state(State.LIVE)
        async with asyncio.timeout(8):
            while r.standin.record.calls < 4 or r.session.state is not State.LIVE:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert r.events("call_limit_reached")[-1]["redial"] is True
        r.session.button_held()
        await r.wait_state(State.IDLE)
    assert r.standin.record.violations == []


def test_redial_on_limit_is_a_checked_setting() -> None:
    assert Config().redial_on_limit is False
    assert load(Path("/dev/null"), {"SESAME_PI_REDIAL_ON_LIMIT": "yes"}).redial_on_limit is True
    with pytest.raises(ConfigError, match="redial_on_limit"):
        load(Path("/dev/null"), {"SESAME_PI_REDIAL_ON_LIMIT": "sometimes"})


async def test_a_call_placed_as_the_server_closes_the_idle_socket_goes_out_on_the_next(
    tmp_path: Path,
) -> None:
    """The race a press can meet: the idle close crosses call_connect on the wire."""
    sockets: list[str] = []

    async def server(ws: ServerConnection) -> None:
        sockets.append("open")
        await ws.send(json.dumps({"type": "initialize", "session_id": f"s{len(sockets)}"}))
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] != "call_connect":
                continue
            if len(sockets) == 1:
                await ws.close(1000, "inactive_close")  # too late for this call_connect
                return
            answer = {"call_id": 7, "sample_rate": 24000}
            reply = {"type": "call_connect_response", "request_id": message["request_id"]}
            await ws.send(json.dumps({**reply, "content": answer}))

    async with serve(server, "127.0.0.1", 0) as listening:
        port = listening.sockets[0].getsockname()[1]
        cfg = Config(
            server=f"ws://127.0.0.1:{port}/x",
            token_file=write_token(tmp_path / "token", make_token()),
            log_file=tmp_path / "events.jsonl",
        )
        setup_logging(cfg)
        link = Link(cfg, TokenProvider(cfg), Quiet())
        supervisor = asyncio.create_task(link.run())
        try:
            assert await link.wait_up(5)
            await asyncio.sleep(IDLE_CLOSE_MIN_S + 0.1)  # an idle close, not a refusal
            info = await link.start_call()
        finally:
            await link.stop()
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
    assert info.call_id == 7 and len(sockets) == 2
    log = (tmp_path / "events.jsonl").read_text()
    assert "call_retry_after_idle_close" in log and '"WARNING"' not in log


class Quiet:
    def link_up(self) -> None: ...
    def link_down(self, down: LinkDown) -> None: ...
    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...
    def token_needed(self, detail: str) -> None: ...
