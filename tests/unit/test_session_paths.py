"""The session's two wrong paths, with the shared fakes: a hold while the call still connects,
and the resume window running out while the token is being renewed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sesame_pi.config import Config
from sesame_pi.link import CallInfo, End, LinkDown
from sesame_pi.session import Session
from sesame_pi.states import Earcon, State
from support.session_doubles import FakeLink, FeedbackLog, PacedMicrophone


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def go_live(session: Session, link: FakeLink) -> None:
    """The link up, a press, the call answered: live."""
    session.link_up()
    session.button_pressed()
    await settle()
    link.answer()
    await settle()
    assert session.state is State.LIVE


async def test_a_hold_while_connecting_abandons_the_placement() -> None:
    link, feedback = FakeLink(), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    session.link_up()
    session.button_pressed()
    await settle()
    assert session.state is State.CONNECTING and link.connecting
    session.button_held()  # before the call_connect_response
    await settle()
    assert link.abandoned == 1 and not link.connecting, "the placement was cancelled"
    assert session.state is State.IDLE and feedback.earcons[-1] is Earcon.END
    session.button_pressed()  # the next press places a new call
    await settle()
    assert link.calls.count("start_call") == 2 and link.connecting
    await session.close()


async def test_the_resume_window_running_out_while_a_token_is_renewed_does_not_flap() -> None:
    link, feedback = FakeLink(), FeedbackLog()
    cfg = Config(call_resume_window_s=0.05)
    session = Session(cfg, link=link, audio=PacedMicrophone(), feedback=feedback)
    await go_live(session, link)
    link.up = False
    session.token_needed("auth refused: HTTP 401")
    assert session.state is State.NEEDS_TOKEN
    await asyncio.sleep(0.15)  # the window runs out
    assert session.state is State.NEEDS_TOKEN
    assert feedback.states[-2:] == [State.LIVE, State.NEEDS_TOKEN], feedback.states
    assert feedback.earcons[-2:] == [Earcon.ERROR, Earcon.END], "the end is not cut off"
    assert link.ended, "the link heard the call is over (no more haste)"
    session.link_up()  # the new token works: idle, no resume
    await settle()
    assert session.state is State.IDLE and link.calls.count("resume") == 0
    await session.close()


def logged(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def test_the_first_boots_sign_in_is_shown_as_such_until_the_link_has_tried_its_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No token while the card's auth.json waits for the network: "signing in" (a person has
    nothing to do yet: no error tone, no error line), not "needs a token"; a refused sign-in or
    a refused stored token is."""
    caplog.set_level(logging.DEBUG)
    link, feedback = FakeLink(), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    session.signing_in()
    session.token_needed("no token yet")
    assert session.state is State.SIGNING_IN
    assert Earcon.ERROR not in feedback.earcons
    alert = logged(caplog, "token_needed")
    assert [r.levelno for r in alert] == [logging.INFO] and "signing in" in alert[0].action
    session.sign_in_over(stored=True)  # the link's token wait looks again in a few seconds
    assert session.state is State.SIGNING_IN
    session.link_up()
    await settle()
    assert session.state is State.IDLE
    assert State.NEEDS_TOKEN not in feedback.states, feedback.states
    changed = logged(caplog, "state_changed")[-1]
    assert (changed.state, changed.previous) == ("idle", "signing_in")
    session.token_needed("auth refused: HTTP 401")  # hours later: a person must act
    assert session.state is State.NEEDS_TOKEN and feedback.earcons[-1] is Earcon.ERROR
    assert logged(caplog, "token_needed")[-1].levelno == logging.ERROR

    heard = FeedbackLog()
    refused = Session(Config(), link=FakeLink(), audio=PacedMicrophone(), feedback=heard)
    refused.signing_in()
    refused.token_needed("no token yet")
    refused.sign_in_over(stored=False)
    assert refused.state is State.NEEDS_TOKEN and heard.earcons == [Earcon.ERROR]

    heard = FeedbackLog()
    tried = Session(Config(), link=FakeLink(), audio=PacedMicrophone(), feedback=heard)
    tried.signing_in()
    tried.token_needed("no token yet")
    tried.sign_in_over(stored=True)
    tried.token_needed("auth refused: HTTP 401")  # the stored token itself was refused
    assert tried.state is State.NEEDS_TOKEN and heard.earcons == [Earcon.ERROR], heard.earcons
    tried.token_needed("auth refused: HTTP 401")  # and again: the LED says it, no second tone
    assert heard.earcons == [Earcon.ERROR]
    for each in (session, refused, tried):
        await each.close()


async def test_a_refusal_while_the_sign_in_still_writes_its_token_is_that_tokens() -> None:
    """The link may try the new token file before the sign-in has returned: its refusal comes
    while the sign-in still waits, and no second token_needed follows. The state must say a
    person must act, not "signing in" for ever."""
    feedback = FeedbackLog()
    session = Session(Config(), link=FakeLink(), audio=PacedMicrophone(), feedback=feedback)
    session.signing_in()
    session.token_needed("no token yet")
    session.token_needed("auth refused: HTTP 401")  # the link tried the file before we returned
    assert session.state is State.SIGNING_IN
    session.sign_in_over(stored=True)
    assert session.state is State.NEEDS_TOKEN and feedback.states[-1] is State.NEEDS_TOKEN
    assert feedback.earcons == [Earcon.ERROR], "a person must act now, and hears it once"
    await session.close()


async def test_a_sign_in_that_lands_while_the_link_works_leaves_later_needs_honest() -> None:
    """An auth.json the fleet's play put down on a working Pi: signed in while idle. A refusal
    hours later is a token a person must see to, not "signing in"."""
    link, feedback = FakeLink(), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    session.link_up()
    session.signing_in()
    session.sign_in_over(stored=True)
    assert session.state is State.IDLE
    link.up = False
    session.token_needed("auth refused: HTTP 401")
    assert session.state is State.NEEDS_TOKEN
    await session.close()


async def test_a_press_while_signing_in_is_refused_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    feedback = FeedbackLog()
    session = Session(Config(), link=FakeLink(), audio=PacedMicrophone(), feedback=feedback)
    session.signing_in()
    session.token_needed("no token yet")
    session.button_pressed()
    ignored = logged(caplog, "press_ignored")
    assert [r.levelno for r in ignored] == [logging.INFO] and "signing in" in ignored[0].reason
    assert feedback.earcons == [Earcon.ERROR], "the press is told no (it places no call)"
    await session.close()


async def test_a_new_token_that_meets_a_dead_network_shows_offline_not_signing_in() -> None:
    """The sign-in stored its token, and the link's try with it found no network: the appliance
    is offline (it retries by itself), not "signing in" until the network is back; the token is
    judged when the link comes up (idle) or is refused (needs a token, with the tone)."""
    link, feedback = FakeLink(), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    session.signing_in()
    session.token_needed("no token yet")
    session.sign_in_over(stored=True)
    assert session.state is State.SIGNING_IN
    session.link_down(LinkDown(End.LOST, "connect failed: network unreachable"))
    assert session.state is State.OFFLINE
    session.token_needed("auth refused: HTTP 401")  # the network back, the token refused
    assert session.state is State.NEEDS_TOKEN and feedback.earcons[-1] is Earcon.ERROR
    session.link_down(LinkDown(End.LOST, "connect failed: network unreachable"))
    assert session.state is State.OFFLINE  # a person's new token meets a dead network
    session.link_up()
    await settle()
    assert session.state is State.IDLE
    await session.close()


class BrokenEnd(FakeLink):
    async def end_call(self, reason: str = "user_request") -> bool:
        await super().end_call(reason)
        raise RuntimeError("a fault of ours while ending")


async def test_a_fault_while_ending_a_call_still_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    """ENDING leaves only on ENDED: a fault in ending the call kept the device there for good,
    deaf to every press and hold, with nothing in the log and a heartbeat saying "ending"."""
    caplog.set_level(logging.INFO)
    link, feedback = BrokenEnd(), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    await go_live(session, link)
    session.button_held()
    await settle()
    assert session.state is State.IDLE and feedback.earcons[-1] is Earcon.END
    faults = [r for r in caplog.records if getattr(r, "event", None) == "link_error"]
    assert len(faults) == 1 and "a fault of ours" in str(faults[0].__dict__.get("detail"))
    session.button_pressed()  # and the next press places a call
    await settle()
    assert link.calls.count("start_call") == 2
    await session.close()


async def test_a_task_that_dies_of_a_fault_says_so() -> None:
    """A spawned task's exception was kept until its owner closed, never logged."""
    from sesame_pi.tasks import TaskSet

    async def broken() -> None:
        raise ValueError("nobody heard this")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("sesame_pi")
    logger.addHandler(handler)
    try:
        tasks = TaskSet()
        tasks.spawn(broken(), "broken-part")
        await settle()
        await tasks.close()
    finally:
        logger.removeHandler(handler)
    failed = [r for r in records if getattr(r, "event", None) == "task_failed"]
    assert len(failed) == 1
    assert failed[0].__dict__["task"] == "broken-part"
    assert "ValueError: nobody heard this" in failed[0].__dict__["detail"]


class SlowAbandon(FakeLink):
    """A placement cancelled takes a moment to end, as the real link's does (it closes the
    socket the call was placed on: up to 2 s)."""

    async def start_call(self, reconnect: bool = False) -> CallInfo:
        try:
            return await super().start_call(reconnect)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise


async def test_a_press_while_a_given_up_resume_still_closes_places_the_call() -> None:
    """The resume window ran out while a resume waited for its answer; the person heard the
    error and pressed again before the cancelled resume's socket had closed. The press found a
    placement still running and started none: CONNECTING for good, every press refused."""
    link = SlowAbandon()
    session = Session(
        Config(call_resume_window_s=0.1), link=link, audio=PacedMicrophone(), feedback=FeedbackLog()
    )
    await go_live(session, link)
    session.link_down(LinkDown(End.LOST, "dead link: 4 pings unanswered"))
    session.link_up()  # the resume is placed and waits for its answer
    await settle()
    assert session.state is State.RECONNECTING and link.calls[-1] == "resume"
    await asyncio.sleep(0.15)  # the window runs out: the resume is cancelled, slowly
    assert session.state is State.IDLE
    session.button_pressed()
    await asyncio.sleep(0.3)  # the cancelled resume is over by now
    assert link.calls[-1] == "start_call" and link.connecting, link.calls
    link.answer()
    await settle()
    assert session.state is State.LIVE
    await session.close()


class BrokenStart(FakeLink):
    async def start_call(self, reconnect: bool = False) -> CallInfo:
        self.calls.append("start_call")
        raise RuntimeError("a fault of ours while placing")


async def test_a_fault_while_placing_a_call_fails_it_instead_of_connecting_for_ever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    link, feedback = BrokenStart(), FeedbackLog()
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=feedback)
    session.link_up()
    session.button_pressed()
    await settle()
    assert session.state is State.IDLE and feedback.earcons[-1] is Earcon.ERROR
    faults = logged(caplog, "link_error")
    assert len(faults) == 1 and "while placing" in str(faults[0].__dict__.get("detail"))
    assert len(logged(caplog, "call_failed")) == 1
    await session.close()


async def test_a_call_dropped_seconds_after_each_resume_gives_up_when_its_window_ends() -> None:
    """Each loss opened a fresh resume window: a service that dropped the call a moment after
    every resume had the device place it again for ever, a "live" tone every few seconds."""
    link, feedback = FakeLink(), FeedbackLog()
    cfg = Config(call_resume_window_s=0.4, healthy_after_s=5.0)
    session = Session(cfg, link=link, audio=PacedMicrophone(), feedback=feedback)
    await go_live(session, link)
    began = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - began < 1.0 and session.state is not State.IDLE:
        session.link_down(LinkDown(End.LOST, "closed 1011"))
        session.link_up()
        await settle()
        if link.connecting:
            link.answer()  # resumed, live for a moment
        await asyncio.sleep(0.05)
    assert session.state is State.IDLE, session.state
    assert link.calls.count("resume") <= 0.4 / 0.05 + 1, link.calls.count("resume")
    await session.close()


async def test_a_resumed_part_that_lasted_earns_a_whole_window_again() -> None:
    link = FakeLink()
    cfg = Config(call_resume_window_s=0.5, healthy_after_s=0.3)
    session = Session(cfg, link=link, audio=PacedMicrophone(), feedback=FeedbackLog())
    await go_live(session, link)
    session.link_down(LinkDown(End.LOST, "dead link"))
    session.link_up()
    await settle()
    link.answer()  # resumed at once
    await asyncio.sleep(0.35)  # and it lasted
    session.link_down(LinkDown(End.LOST, "dead link"))
    await asyncio.sleep(0.3)  # past the first loss's window, inside the second's
    assert session.state is State.RECONNECTING
    await session.close()


async def test_joining_a_network_wakes_the_link_from_its_backoff() -> None:
    """After an outage the LED said offline for up to the rest of a 30 s backoff sleep."""
    link = FakeLink(up=False)
    session = Session(Config(), link=link, audio=PacedMicrophone(), feedback=FeedbackLog())
    session.network_changed(False)
    assert "wake" not in link.calls
    session.network_changed(True)
    assert link.calls.count("wake") == 1
    session.network_changed(True)  # (netcheck's next look: nothing new)
    assert link.calls.count("wake") == 1
    await session.close()


class BrokenAudioStart(PacedMicrophone):
    def start_call(self, playback_rate: int) -> None:
        raise RuntimeError("a fault of ours as the audio starts")


async def test_a_fault_after_the_server_placed_the_call_ends_it_there_too() -> None:
    """The catch-all failed the call here, but the server had placed it: it ran on there, the
    service waiting for audio that never came."""
    link, feedback = FakeLink(), FeedbackLog()
    session = Session(Config(), link=link, audio=BrokenAudioStart(), feedback=feedback)
    session.link_up()
    session.button_pressed()
    await settle()
    link.answer()
    await settle()
    assert session.state is State.IDLE and feedback.earcons[-1] is Earcon.ERROR
    assert link.ended == ["error"], link.ended
    await session.close()


class UnpluggedAudio(PacedMicrophone):
    """The sound card is gone until `plugged` is set: every probe of the device retry fails."""

    plugged: bool = False

    def probe(self) -> None:
        from sesame_pi.audio import AudioDeviceError

        if not self.plugged:
            raise AudioDeviceError("no sound card")


async def test_a_device_error_and_a_token_problem_do_not_hide_each_other() -> None:
    """The phase shows one problem at a time. A token problem, then a device error: once the
    device came back the LED said offline, and a press waited and failed as if the Wi-Fi were
    down. A device error, then a token problem (the first boot: no card, no token): the new
    token brought "ready" and its tone, and the next press placed a call on no sound card."""
    link, feedback = FakeLink(), FeedbackLog()
    audio = UnpluggedAudio()
    session = Session(Config(), link=link, audio=audio, feedback=feedback)
    session.link_up()
    link.up = False
    session.token_needed("auth refused: HTTP 401")
    session.audio_device_error("no sound card")
    assert session.state is State.DEVICE_ERROR
    audio.plugged = True
    for _ in range(100):  # the device retry finds it back
        await asyncio.sleep(0.02)
        if session.state is not State.DEVICE_ERROR:
            break
    assert session.state is State.NEEDS_TOKEN, "the token is still needed"
    assert Earcon.READY not in feedback.earcons[1:]

    audio.plugged = False
    session.audio_device_error("no sound card")
    session.token_needed("auth refused: HTTP 401")
    assert session.state is State.NEEDS_TOKEN
    earcons = len(feedback.earcons)
    link.up = True
    session.link_up()  # a new token works
    assert session.state is State.DEVICE_ERROR, "the sound card is still gone"
    assert Earcon.READY not in feedback.earcons[earcons:]
    session.button_pressed()
    await settle()
    assert "start_call" not in link.calls, "no call is placed on a device that is gone"
    audio.plugged = True
    for _ in range(200):
        await asyncio.sleep(0.02)
        if session.state is State.IDLE:
            break
    assert session.state is State.IDLE and feedback.earcons[-1] is Earcon.READY
    await session.close()


async def test_the_agents_last_words_play_out_when_the_service_ends_the_call() -> None:
    """The agent's goodbye arrives faster than real time, and the service's call_disconnect
    right after it: the audio was stopped at once, the last up to two seconds of speech
    dropped, and the end tone played over what was left. The words play out first (bounded),
    then the tone; the device is idle (a press works) meanwhile, and a new call ends it."""
    link, feedback = FakeLink(), FeedbackLog()
    audio = PacedMicrophone(left_to_play_s=0.3)
    session = Session(Config(), link=link, audio=audio, feedback=feedback)
    await go_live(session, link)
    session.server_hangup("agent_hangup")
    assert session.state is State.IDLE
    assert audio.stopped == 0 and feedback.earcons[-1] is not Earcon.END, "the words play on"
    await asyncio.sleep(0.4)
    assert audio.stopped == 1 and feedback.earcons[-1] is Earcon.END, "then the tone"

    link.calls.clear()
    await go_live(session, link)
    session.server_hangup("agent_hangup")
    session.button_pressed()  # someone presses again at once: the new call's audio is its own
    assert audio.stopped == 2 and feedback.earcons[-2:] == [Earcon.END, Earcon.CALL_START]
    await asyncio.sleep(0.4)
    assert audio.stopped == 2, "the play-out stopped once, not again under the new call"
    await session.close()


async def test_a_device_error_during_the_play_out_ends_it_without_a_late_end_tone() -> None:
    link, feedback = FakeLink(), FeedbackLog()
    audio = PacedMicrophone(left_to_play_s=0.3)
    session = Session(Config(), link=link, audio=audio, feedback=feedback)
    await go_live(session, link)
    session.server_hangup("agent_hangup")
    session.audio_device_error("speaker unplugged")
    assert audio.stopped >= 1, "the play-out stops with the device"
    await asyncio.sleep(0.5)
    assert Earcon.END not in feedback.earcons, "no end tone after the error tone"
    await session.close()
