"""A session on the product's own link against the stand-in, with the audio and feedback doubles:
for tests of how the session meets the service's habits over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
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


async def wait_for_state(session: Session, state: State, timeout: float = 10) -> float:
    """Wait until the session shows `state`; when it did (monotonic)."""
    async with asyncio.timeout(timeout):
        while session.state is not state:  # noqa: ASYNC110 - polls the product's state
            await asyncio.sleep(0.005)
    return time.monotonic()


@dataclass
class Rig:
    session: Session
    standin: Standin
    feedback: FeedbackLog
    log_file: Path

    async def wait_state(self, state: State, timeout: float = 10) -> float:
        """Wait for `state`; when it was reached (monotonic)."""
        return await wait_for_state(self.session, state, timeout)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log_file.read_text().splitlines() if line]
        return [line for line in lines if name is None or line.get("event") == name]


@contextlib.asynccontextmanager
async def session_rig(
    tmp_path: Path, options: StandinOptions, **changes: Any
) -> AsyncIterator[Rig]:
    """The stand-in with `options`, and a session idle on a link to it (config `changes`)."""
    standin = Standin(options)
    port = await standin.start()
    cfg = Config(
        server=f"ws://127.0.0.1:{port}/agent-service-0/v1/connect",
        token_file=write_token(tmp_path / "token", make_token()),
        log_file=tmp_path / "events.jsonl",
        button="none",
        **changes,
    )
    setup_logging(cfg)
    tokens = TokenProvider(cfg)
    tokens.load()
    feedback = FeedbackLog()
    session = Session(cfg, link=Link(cfg, tokens), audio=PacedMicrophone(), feedback=feedback)
    runner = asyncio.create_task(session.run())
    try:
        built = Rig(session, standin, feedback, tmp_path / "events.jsonl")
        await built.wait_state(State.IDLE)
        yield built
    finally:
        await session.stop()
        await asyncio.wait_for(runner, 10)
        await standin.stop()
