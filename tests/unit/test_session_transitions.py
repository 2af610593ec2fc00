"""Every (phase, event) pair, against the shared typed fakes: what the table allows happens (the
phase it names, its earcon and nothing else, one state_changed when the shown state changes);
every other pair leaves the session exactly as it was."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from sesame_pi.config import Config
from sesame_pi.link import CallFailed, End, LinkDown
from sesame_pi.session import CALL_LIMIT_REASON, SOUNDS, Occurrence, Session
from sesame_pi.states import Earcon, State
from sesame_pi.transitions import AFTER_CALL, REST, TRANSITIONS, Do, Event, Phase
from support.session_doubles import CALL, FakeLink, FeedbackLog, PacedMicrophone

FIRE: dict[Event, Callable[[Session], object]] = {
    Event.PRESS: lambda s: s.button_pressed(),
    Event.HOLD: lambda s: s.button_held(),
    Event.LONG_HOLD: lambda s: s.button_long_held(),
    Event.LINK_UP: lambda s: s.link_up(),
    Event.LINK_DOWN: lambda s: s.link_down(LinkDown(End.LOST, "connection reset")),
    Event.PLACED: lambda s: s.happen(Occurrence(Event.PLACED, info=CALL, connect_ms=5.0)),
    Event.CALL_FAILED: lambda s: s.happen(Occurrence(Event.CALL_FAILED, "refused", code=5000)),
    Event.HANGUP: lambda s: s.server_hangup("agent_hangup"),
    Event.LIMIT: lambda s: s.server_hangup(CALL_LIMIT_REASON),
    Event.REDIAL: lambda s: s.happen(Occurrence(Event.REDIAL)),
    Event.LIMIT_SHOWN: lambda s: s.happen(Occurrence(Event.LIMIT_SHOWN)),
    Event.TOKEN_NEEDED: lambda s: s.token_needed("auth refused: HTTP 401"),
    Event.DEVICE_ERROR: lambda s: s.audio_device_error("the microphone is gone"),
    Event.DEVICE_BACK: lambda s: s.happen(Occurrence(Event.DEVICE_BACK)),
    Event.RESUME_EXPIRED: lambda s: s.happen(Occurrence(Event.RESUME_EXPIRED)),
    Event.ENDED: lambda s: s.happen(Occurrence(Event.ENDED, "user_request", answered=True)),
    Event.STOP: lambda s: s.happen(Occurrence(Event.STOP)),
}
PAIRS = [(phase, what) for phase in Phase for what in Event]


def test_every_event_has_a_way_in() -> None:
    assert set(FIRE) == set(Event)


def test_no_transition_plays_two_earcons() -> None:
    """A new earcon cuts off the one playing: one sound per transition at most."""
    for pair, step in TRANSITIONS.items():
        assert sum(do in SOUNDS for do in step.does) <= 1, pair


def make(link_up: bool = True) -> tuple[Session, FakeLink, FeedbackLog]:
    link, feedback = FakeLink(up=link_up), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    return session, link, feedback


def logged(caplog: pytest.LogCaptureFixture, name: str) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


@pytest.mark.parametrize("link_up", [True, False], ids=["link-up", "link-down"])
@pytest.mark.parametrize(("phase", "what"), PAIRS, ids=[f"{p}-{e}" for p, e in PAIRS])
async def test_phase_event(
    phase: Phase, what: Event, link_up: bool, caplog: pytest.LogCaptureFixture
) -> None:
    session, link, feedback = make(link_up)
    session.phase = phase
    step = TRANSITIONS.get((phase, what))
    with caplog.at_level(logging.INFO):
        FIRE[what](session)
        after = session.phase  # before any task the step spawned has run
    try:
        changes = logged(caplog, "state_changed")
        if step is None:
            assert after is phase, "an ignored event changes nothing"
            assert feedback.earcons == [] and feedback.states == [] and changes == []
            assert link.calls == [] and len(session.tasks) == 0
            return
        if step.to is None:
            expected = phase
        elif step.to == REST:
            expected = Phase.IDLE if link_up else Phase.OFFLINE
        elif step.to == AFTER_CALL:  # (no outage was reported here: a call's socket closing)
            expected = Phase.IDLE
        else:
            expected = Phase(step.to)
        assert after is expected
        # (ready only where the step lands in idle: see the ready earcon's own test)
        sounds = [
            SOUNDS[do]
            for do in step.does
            if do in SOUNDS and (do is not Do.SOUND_READY or expected is Phase.IDLE)
        ]
        assert feedback.earcons == sounds
        if expected.shown is phase.shown:
            assert changes == [] and feedback.states == []
        else:
            (change,) = changes
            assert (change.state, change.previous) == (expected.shown.value, phase.shown.value)
            assert feedback.states == [expected.shown]
        ended = logged(caplog, "call_ended")
        assert len(ended) == (1 if Do.FINISH in step.does else 0)
        if Do.REFUSE_TOKEN in step.does:
            assert link.calls == ["wake"], "a press while a token is needed retries the link"
        if Do.PLACE in step.does or Do.RESUME in step.does:
            await asyncio.sleep(0)
            if link_up:
                assert link.connecting, "the call is being placed"
            else:
                assert "wait_up" in link.calls, "the call waits for the link first"
    finally:
        await session.close()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_press_places_a_call_that_goes_live_and_a_hold_ends_it() -> None:
    session, link, feedback = make()
    session.phase = Phase.IDLE
    session.button_pressed()
    await settle()
    assert session.state is State.CONNECTING and link.connecting
    link.answer()
    await settle()
    assert session.state is State.LIVE and session.calls_placed == 1
    session.button_pressed()  # the safeguard: a short press in a call does nothing
    assert session.state is State.LIVE
    session.button_held()
    await settle()
    assert session.state is State.IDLE and link.ended == ["user_request"]
    assert feedback.earcons == [Earcon.CALL_START, Earcon.LIVE, Earcon.END]
    audio = session.audio
    assert isinstance(audio, PacedMicrophone)
    assert (audio.ending, audio.stopped) == (1, 1), "told the audio stops, then stopped it"
    await session.close()


async def test_a_refused_call_rests_offline_when_the_link_is_down() -> None:
    session, link, feedback = make()
    session.phase = Phase.IDLE
    session.button_pressed()
    await settle()
    link.up = False
    link.refuse(CallFailed("call refused", 5000))
    await settle()
    assert session.state is State.OFFLINE and feedback.earcons[-1] is Earcon.ERROR
    await session.close()


async def test_a_lost_call_resumes_when_the_link_returns() -> None:
    session, link, _ = make()
    session.phase = Phase.LIVE
    session.link_down(LinkDown(End.LOST, "dead link: 4 pings unanswered"))
    assert session.state is State.RECONNECTING
    session.link_up()
    await settle()
    assert link.calls[-1] == "resume"
    link.answer()
    await settle()
    assert session.state is State.LIVE and session.calls_resumed == 1
    await session.close()


async def test_routine_closes_are_no_event() -> None:
    session, _link, feedback = make()
    session.phase = Phase.IDLE
    session.link_down(LinkDown(End.IDLE, "closed by server while idle"))
    session.link_down(LinkDown(End.PLANNED, "planned"))
    assert session.state is State.IDLE and feedback.states == []
    await session.close()


async def test_a_call_hung_up_while_the_link_is_down_rests_offline() -> None:
    """The link dropped mid-call and the person held to hang up: the call ended showing idle
    for the whole outage (the link reports an outage once), and the next press waited and
    failed with the error tone."""
    session, link, feedback = make()
    session.phase = Phase.LIVE
    session.link_down(LinkDown(End.LOST, "dead link: 4 pings unanswered"))
    link.up = False
    session.button_held()
    await settle()
    assert session.state is State.OFFLINE, session.state
    assert feedback.earcons[-1] is Earcon.END and feedback.states[-1] is State.OFFLINE
    await session.close()


async def test_the_ready_earcon_says_once_a_run_and_after_a_sign_in() -> None:
    """A device without an LED was silent until a press: nothing said it had come up, or that a
    sign-in on the setup page had worked. It says ready the first time, however late the
    network came; not at every Wi-Fi blip after that; and again when a token made it ready."""
    session, _link, feedback = make()
    session.link_down(LinkDown(End.LOST, "no route to host"))  # first boot: Wi-Fi comes late
    assert session.state is State.OFFLINE and feedback.earcons == []
    session.link_up()
    assert session.state is State.IDLE and feedback.earcons == [Earcon.READY]
    session.link_down(LinkDown(End.LOST, "connection reset"))
    session.link_up()
    assert feedback.earcons == [Earcon.READY], "a blip of the network is not announced"
    session.token_needed("auth refused: HTTP 401")
    assert feedback.earcons == [Earcon.READY, Earcon.ERROR]
    session.link_up()  # the setup page's sign-in worked
    assert session.state is State.IDLE
    assert feedback.earcons == [Earcon.READY, Earcon.ERROR, Earcon.READY]
    # A new token whose first try met a dead network (needs token -> offline) says it too.
    session.token_needed("auth refused: HTTP 401")
    session.link_down(LinkDown(End.LOST, "no route to host"))
    assert session.state is State.OFFLINE
    session.link_up()
    assert feedback.earcons[-2:] == [Earcon.ERROR, Earcon.READY]
    await session.close()


async def test_ready_is_said_when_the_devices_come_back_and_it_is_ready() -> None:
    """A microphone late at boot: the device error ignored the link coming up, and ready was
    first heard at a later Wi-Fi blip. It is said as the devices come back with the link up;
    with the link down, when the link comes."""
    session, link, feedback = make()
    session.audio_device_error("the microphone is gone")
    session.link_up()
    session.happen(Occurrence(Event.DEVICE_BACK))
    assert session.state is State.IDLE and feedback.earcons == [Earcon.ERROR, Earcon.READY]
    session.audio_device_error("the microphone is gone")
    link.up = False
    session.happen(Occurrence(Event.DEVICE_BACK))
    assert session.state is State.OFFLINE and feedback.earcons[-1] is Earcon.ERROR
    link.up = True
    session.link_up()
    assert feedback.earcons[-1] is Earcon.READY
    await session.close()


async def test_a_call_waits_out_a_reopen_of_the_devices_instead_of_failing() -> None:
    """The link came back while the devices were still being reopened after a hiccup: the call
    that was resuming was ended as a device failure (error tone, "check the microphone"), where
    the devices were only a moment away. It waits for them before it is placed (not after the
    answer, where a hang-up in the wait went unheard)."""
    session, link, feedback = make()
    audio = session.audio
    assert isinstance(audio, PacedMicrophone)
    audio.reopening = True
    session.phase = Phase.LIVE
    session.link_down(LinkDown(End.LOST, "dead link: 4 pings unanswered"))
    session.link_up()
    await asyncio.sleep(0.3)
    assert "resume" not in link.calls, "not placed while the devices are being reopened"
    audio.reopening = False
    for _ in range(10):
        await asyncio.sleep(0.1)
        if "resume" in link.calls:
            break
    link.answer()
    await settle()
    assert session.state is State.LIVE and audio.started == [CALL.sample_rate]
    assert Earcon.ERROR not in feedback.earcons and link.ended == []
    await session.close()


async def test_a_device_on_no_network_shows_offline_not_needs_token() -> None:
    """No Wi-Fi joined and no token: the LED asked for the setup page, which no browser could
    reach. The Wi-Fi is the thing to fix: shown as offline while there is no network."""
    session, _link, feedback = make()
    session.token_needed("no token file")
    assert session.state is State.NEEDS_TOKEN
    session.network_changed(False)
    assert session.state is State.OFFLINE and feedback.states[-1] is State.OFFLINE
    session.network_changed(True)
    assert session.state is State.NEEDS_TOKEN and feedback.states[-1] is State.NEEDS_TOKEN
    session.network_changed(False)
    session.link_up()  # a token came after all (a cable): ready, whatever the tables said
    assert session.state is State.IDLE
    await session.close()
