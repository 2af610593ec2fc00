"""The session's bookkeeping around a call's end and a link that never came up, with a fake link."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sesame_pi.config import Config
from sesame_pi.link import LinkStats
from sesame_pi.session import Session
from sesame_pi.states import Earcon, State


class FakeLink:
    """Just enough of Link for the session: always up, every call ends answered."""

    def __init__(self, cfg: Config, tokens: object, listener: object) -> None:
        self.stats = LinkStats()
        self.up = True
        self.ended: list[str] = []

    def set_call_pending(self, pending: bool) -> None: ...

    async def end_call(self, reason: str = "user_request") -> bool:
        self.ended.append(reason)
        return True


class JitterAudio:
    """An AudioPort whose jitter figures exist only while a call runs, as in AudioEngine."""

    def __init__(self) -> None:
        self.running = True
        self.counters: dict[str, int | float] = {}

    def start_call(self, playback_rate: int) -> None: ...
    def stop_call(self) -> None:
        self.running = False

    async def next_frame(self) -> bytes:
        return b""

    def play(self, pcm: bytes) -> None: ...
    def probe(self) -> None: ...
    def stats(self) -> dict[str, int | float]:
        return {**self.counters, "prebuffer_ms": 120.0} if self.running else dict(self.counters)


class Lights:
    def show(self, state: State) -> None: ...
    def earcon(self, which: Earcon) -> None: ...


def make_session() -> tuple[Session, JitterAudio]:
    audio = JitterAudio()
    session = Session(Config(), FakeLink, audio=audio, feedback=Lights(), tokens=object())  # type: ignore[arg-type]
    return session, audio


def call_ended(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "event", None) == "call_ended"]


def test_a_failed_first_connect_leaves_starting_for_offline() -> None:
    session, _audio = make_session()
    session.link_down("connect failed: gaierror")
    assert session.state is State.OFFLINE


async def test_the_summary_keeps_the_jitter_figures(caplog: pytest.LogCaptureFixture) -> None:
    session, _audio = make_session()
    session.state = State.LIVE
    with caplog.at_level(logging.INFO):
        session._finish_call("user_request", answered=True)
    (ended,) = call_ended(caplog)
    assert ended.audio["prebuffer_ms"] == 120.0


async def test_a_call_lost_to_the_device_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    session, audio = make_session()
    session.state = State.LIVE
    audio.counters["device_failures"] = 1
    with caplog.at_level(logging.INFO):
        session._device_failed("the microphone stopped delivering audio")
        assert session._device_task is not None and session._end_task is not None
        session._device_task.cancel()  # no device probing here
        await asyncio.gather(session._device_task, session._end_task, return_exceptions=True)
    (ended,) = call_ended(caplog)
    assert ended.reason == "audio device error" and ended.disconnect_answered is True
    assert ended.audio["device_failures"] == 1 and "prebuffer_ms" in ended.audio
    assert session.state is State.DEVICE_ERROR
