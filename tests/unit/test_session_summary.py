"""The session's bookkeeping around a call's end and a link that never came up, with the fakes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sesame_pi.audio import AudioDeviceError
from sesame_pi.config import Config
from sesame_pi.link import End, LinkDown
from sesame_pi.session import Occurrence, Session
from sesame_pi.states import State
from sesame_pi.transitions import Event, Phase
from support.session_doubles import FakeLink, FeedbackLog


class JitterAudio:
    """An AudioPort whose jitter figures exist only while a call runs, as in AudioEngine."""

    def __init__(self) -> None:
        self.running = True
        self.counters: dict[str, int | float] = {}

    def start_call(self, playback_rate: int) -> None: ...
    def stop_call(self) -> None:
        self.running = False

    def call_ending(self) -> None: ...

    async def next_frame(self) -> bytes:
        return b""

    def play(self, pcm: bytes) -> None: ...
    def probe(self) -> None:
        raise AudioDeviceError("still gone")  # the device stays away while the test looks

    def stats(self) -> dict[str, int | float]:
        return {**self.counters, "prebuffer_ms": 120.0} if self.running else dict(self.counters)


def make_session() -> tuple[Session, JitterAudio, FakeLink]:
    audio, link = JitterAudio(), FakeLink()
    return Session(Config(), link=link, audio=audio, feedback=FeedbackLog()), audio, link


def call_ended(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "event", None) == "call_ended"]


def test_a_failed_first_connect_leaves_starting_for_offline() -> None:
    session, _audio, _link = make_session()
    session.link_down(LinkDown(End.LOST, "connect failed: gaierror"))
    assert session.state is State.OFFLINE


async def test_the_summary_keeps_the_jitter_figures(caplog: pytest.LogCaptureFixture) -> None:
    session, _audio, _link = make_session()
    session.phase = Phase.ENDING
    with caplog.at_level(logging.INFO):
        session.happen(Occurrence(Event.ENDED, "user_request", answered=True))
    (ended,) = call_ended(caplog)
    assert ended.audio["prebuffer_ms"] == 120.0 and ended.disconnect_answered is True


async def test_a_call_lost_to_the_device_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    session, audio, link = make_session()
    session.phase = Phase.LIVE
    audio.counters["device_failures"] = 1
    with caplog.at_level(logging.INFO):
        session.audio_device_error("the microphone stopped delivering audio")
        for _ in range(5):
            await asyncio.sleep(0)
    (ended,) = call_ended(caplog)
    assert ended.reason == "audio device error" and ended.disconnect_answered is True
    assert ended.audio["device_failures"] == 1 and "prebuffer_ms" in ended.audio
    assert session.state is State.DEVICE_ERROR and link.ended == ["error"]
    await session.close()
