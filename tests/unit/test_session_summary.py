"""The session's bookkeeping around a call's end and a link that never came up, with the fakes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sesame_pi.audio import AudioDeviceError, add_segments
from sesame_pi.config import Config
from sesame_pi.link import End, LinkDown
from sesame_pi.session import Occurrence, Session
from sesame_pi.states import State
from sesame_pi.transitions import Event, Phase
from support.session_doubles import FakeLink, FeedbackLog


class JitterAudio:
    """An AudioPort whose jitter figures exist only while a call runs, as in AudioEngine."""

    reopening = False

    def __init__(self) -> None:
        self.running = True
        self.counters: dict[str, int | float] = {}

    def start_call(self, playback_rate: int) -> None: ...
    def stop_call(self) -> None:
        self.running = False

    def call_ending(self) -> None: ...

    def play_out(self) -> float:
        return 0.0

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


class PartsAudio(JitterAudio):
    """Counters start at zero with every start of the audio, as AudioEngine's do."""

    def start_call(self, playback_rate: int) -> None:
        self.running = True
        self.counters = {"frames_captured": 0}


async def test_a_resumed_calls_summary_counts_all_its_parts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The link drops mid-call and the call resumes: the audio stops and starts afresh, so the
    summary adds up both parts (it held only the last one: 10 frames of a 48-frame call, and
    none of the first part's hiccup), and takes how things stand from the last."""
    audio, link = PartsAudio(), FakeLink()
    session = Session(Config(), link=link, audio=audio, feedback=FeedbackLog())
    session.phase = Phase.LIVE
    audio.counters = {"frames_captured": 38, "device_hiccups": 1, "device_gap_ms": 466}
    session.link_down(LinkDown(End.LOST, "dead link: 4 pings unanswered"))
    session.link_up()
    for _ in range(5):
        await asyncio.sleep(0)
    link.answer()
    for _ in range(5):
        await asyncio.sleep(0)
    assert session.state is State.LIVE and session.calls_resumed == 1
    audio.counters["frames_captured"] += 10  # the part after the resume
    session.phase = Phase.ENDING
    with caplog.at_level(logging.INFO):
        session.happen(Occurrence(Event.ENDED, "user_request", answered=True))
    (ended,) = call_ended(caplog)
    assert ended.audio["frames_captured"] == 48
    assert ended.audio["device_hiccups"] == 1 and ended.audio["device_gap_ms"] == 466
    assert ended.audio["prebuffer_ms"] == 120.0
    await session.close()


async def test_a_call_that_never_came_back_is_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lost, and the resume window ran out: the audio stopped with the link, and its figures are
    in the summary once (stopped, it still shows the same counters)."""
    audio, link = PartsAudio(), FakeLink()
    session = Session(Config(call_resume_window_s=0.01), link=link, audio=audio,
                      feedback=FeedbackLog())  # fmt: skip
    session.phase = Phase.LIVE
    audio.counters = {"frames_captured": 38}
    with caplog.at_level(logging.INFO):
        session.link_down(LinkDown(End.LOST, "dead link: 4 pings unanswered"))
        await asyncio.sleep(0.1)
    (ended,) = call_ended(caplog)
    assert ended.audio["frames_captured"] == 38
    await session.close()


def test_figures_of_the_parts_add_up_and_states_come_from_the_last() -> None:
    earlier = {"underruns": 2, "echo_cpu_ms": 10.25, "buffered_ms": 40.0, "prebuffer_peak_ms": 90.0,
               "gc_pause_max_ms": 1.5}  # fmt: skip
    later = {"underruns": 1, "echo_cpu_ms": 5.5, "buffered_ms": 20.0, "prebuffer_peak_ms": 60.0,
             "gc_pause_max_ms": 0.5}  # fmt: skip
    total = add_segments(earlier, later)
    assert total == {
        "underruns": 3, "echo_cpu_ms": 15.8, "buffered_ms": 20.0, "prebuffer_peak_ms": 90.0,
        "gc_pause_max_ms": 1.5,
    }  # fmt: skip
    assert add_segments({}, later) == later
