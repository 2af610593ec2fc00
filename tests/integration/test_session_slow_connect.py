"""The session's two wrong paths, against the stand-in and the product's own link.

A hold while the call is still connecting (the call_connect_response slower than the 2 s hold):
the call must not stay live on the server, and the next press must start on a clean socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config
from sesame_pi.link import Link
from sesame_pi.logs import setup_logging
from sesame_pi.session import Session
from sesame_pi.standin import Standin, StandinOptions
from sesame_pi.states import State
from support.credentials import make_token, write_token
from support.session_doubles import FeedbackLog, PacedMicrophone

SLOW_MS = 2600.0  # every server frame this late: the call_connect_response comes after the hold


@dataclass
class Rig:
    session: Session
    standin: Standin
    log_file: Path

    async def wait_state(self, state: State, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while self.session.state is not state:  # noqa: ASYNC110 - polls the product's state
                await asyncio.sleep(0.01)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log_file.read_text().splitlines() if line]
        return [line for line in lines if line.get("event") == name]


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, options: StandinOptions) -> AsyncIterator[Rig]:
    standin = Standin(options)
    port = await standin.start()
    cfg = Config(
        server=f"ws://127.0.0.1:{port}/agent-service-0/v1/connect",
        token_file=write_token(tmp_path / "token", make_token()),
        log_file=tmp_path / "events.jsonl",
        button="none",
    )
    setup_logging(cfg)
    tokens = TokenProvider(cfg)
    tokens.load()
    session = Session(cfg, link=Link(cfg, tokens), audio=PacedMicrophone(), feedback=FeedbackLog())
    runner = asyncio.create_task(session.run())
    try:
        built = Rig(session, standin, tmp_path / "events.jsonl")
        await built.wait_state(State.IDLE)
        yield built
    finally:
        await session.stop()
        await asyncio.wait_for(runner, 10)
        await standin.stop()


async def test_a_hold_while_connecting_leaves_no_call_on_the_server(tmp_path: Path) -> None:
    options = StandinOptions(mode="tone", greeting_ms=0, delay_ms=SLOW_MS)
    async with rig(tmp_path, options) as r:
        r.session.button_pressed()
        await r.wait_state(State.CONNECTING)
        await asyncio.sleep(2.0)
        r.session.button_held()  # the person gives up before the call_connect_response
        await r.wait_state(State.IDLE)
        async with asyncio.timeout(SLOW_MS / 1000 + 4):
            while r.standin.record.live_calls:  # noqa: ASYNC110 - polls the stand-in's record
                await asyncio.sleep(0.02)
        assert r.standin.record.calls == 1

        r.session.button_pressed()  # the next press: a clean socket, and a call that goes live
        await r.wait_state(State.LIVE, timeout=SLOW_MS / 1000 * 3 + 5)
        assert r.standin.record.violations == [], r.standin.record.violations
        assert r.standin.record.calls == 2 and r.standin.record.live_calls == 1
        assert [e["state"] for e in r.events("state_changed")][-1] == "live"
