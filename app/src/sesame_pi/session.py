"""The one state machine: the link, audio, button and feedback report here, and only this decides.

What it decides is data: `transitions.TRANSITIONS`, one (phase, event) → step table beside its
diagram (see transitions.py). Every report becomes an `Event`; `_on` looks the pair up, runs the
step's actions (one `_do_<action>` method each) and moves to the step's phase, logging one
`state_changed` line when the shown state changes. A pair not in the table is ignored.

A short press while LIVE is ignored and logged: only a hold ends a call (the safeguard).
The parts are built first and attached here: the link (a `LinkPort`), audio and feedback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import tenacity

from .audio import AudioDeviceError, add_segments
from .config import Config
from .heartbeat import Heartbeat
from .link import CallFailed, CallInfo, LinkDown, LinkLost
from .link.errors import report_fault
from .logs import event
from .ports import AudioPort, FeedbackPort, LinkPort
from .states import Earcon, State
from .tasks import TaskSet
from .transitions import AFTER_CALL, REST, TRANSITIONS, Do, Event, Phase, Target

__all__ = ["AudioPort", "FeedbackPort", "LinkPort", "Session"]

RECENT_CALLS_KEPT = 5
CALL_LIMIT_REASON = "call_duration_limit_exceeded"  # the service's free-tier call length
LIMIT_SHOW_S = 60.0  # how long the LED says "the limit ended it" before it shows idle again
REDIAL_MIN_CALL_S = 2.0  # a call the limit ended sooner is not redialled (no tight loop)
# Redials after one press, at most: a device left talking (a person who walked away, a TV in the
# room) hangs up after four limits, not never, its microphone streaming to the service for good.
REDIALS_PER_PRESS = 3
USER_REQUEST = "user_request"
AUDIO_BUSY_WAIT_S = 5.0  # a reopen of the devices takes 50-500 ms; a stalled one, longer
# Agent audio held for a call about to go live: 2 s at the service's 24 kHz (1 s at 48), within
# what the playout buffer takes at once (jitter_max_ms), so none of it is dropped there.
EARLY_AUDIO_MAX_BYTES = 2 * 24000 * 2
# The agent's last words when the service ends the call (they arrive faster than real time):
# played out for up to this long before the audio stops and the end tone sounds.
PLAY_OUT_MAX_S = 2.5
SOUNDS = {
    Do.SOUND_START: Earcon.CALL_START,
    Do.SOUND_LIVE: Earcon.LIVE,
    Do.SOUND_END: Earcon.END,
    Do.SOUND_ERROR: Earcon.ERROR,
    Do.SOUND_LIMIT: Earcon.LIMIT,
    Do.SOUND_READY: Earcon.READY,
}


@dataclass
class Occurrence:
    """One event as it happened: what the actions need, and what state_changed logs with it."""

    event: Event
    reason: str = ""
    info: CallInfo | None = None  # PLACED
    resumed: bool = False  # PLACED
    connect_ms: float | None = None  # PLACED
    answered: bool | None = None  # ENDED: did the server answer our call_disconnect
    code: int | str | None = None  # CALL_FAILED
    logged: dict[str, object] = field(default_factory=dict)  # extra state_changed fields


class Session:
    """Owns the phase and every task that runs because of it."""

    def __init__(
        self,
        cfg: Config,
        *,
        link: LinkPort,
        audio: AudioPort,
        feedback: FeedbackPort,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.cfg = cfg
        self.link = link
        self.audio = audio
        self.feedback = feedback
        self.heartbeat = heartbeat
        self.phase = Phase.STARTING
        self._outage = False  # the link reported an outage it has not come back from
        self.tasks = TaskSet()
        self._placing: asyncio.Task[None] | None = None  # the call being placed or resumed
        self._ending: asyncio.Task[None] | None = None
        self._device_retry: asyncio.Task[None] | None = None
        self._uplink: asyncio.Task[None] | None = None
        self._resume_timer: asyncio.TimerHandle | None = None
        # When the lost call's resume window closes (loop time), and when its last part went
        # live: a part shorter than `healthy_after_s` does not earn a fresh window.
        self._resume_deadline: float | None = None
        self._live_at = 0.0
        # The call's audio figures from its parts before a resume, and whether they already hold
        # the audio's present figures (a lost link banked them; a resume starts it afresh).
        self._earlier_audio: dict[str, int | float] = {}
        self._audio_banked = False
        self._limit_timer: asyncio.TimerHandle | None = None
        self._redials = 0  # since the last press (REDIALS_PER_PRESS)
        # A call the service ended, its last words still playing: when they stop, and the
        # tone that then says the call is over.
        self._playing_out: asyncio.TimerHandle | None = None
        self._after_play_out: Earcon | None = None
        self._stopped = asyncio.Event()
        self.calls_placed = 0
        self.calls_resumed = 0
        self._call_started_at: float | None = None
        self._early_audio: list[bytes] = []  # agent audio read before the call went live
        self._early_audio_bytes = 0
        # The setup page's seams: a press it claims (pairing) starts no call; the long hold opens
        # it. It reads the last calls' summaries and the device problem from here.
        self.press_hook: Callable[[], bool] | None = None
        self.long_hold_hook: Callable[[], None] | None = None
        self.recent_calls: collections.deque[dict[str, object]] = collections.deque(
            maxlen=RECENT_CALLS_KEPT
        )
        self.device_problem: str | None = None
        # The link asked for a new token and has not come up since. The phase shows one problem
        # at a time: a device error and a token problem each hid the other when it cleared
        # (REST then lands on whichever is left: see `_resolve`).
        self._token_lacking = False
        self._press_began_out_of_call = False
        # The first boot's sign-in: None, "waiting" (for the network), or "stored" (its token
        # waits for the link to try it): shown as signing in, not as a token a person must give.
        self._sign_in: str | None = None
        self._refused_while_signing_in = False  # a token the link tried was refused meanwhile
        # The ready earcon is owed at start, after a token was needed and after a device error;
        # paid the first time the device lands in idle after that (not at every Wi-Fi blip).
        self._ready_owed = True
        self._on_a_network = True  # until netcheck says otherwise
        self._actions: dict[Do, Callable[[Occurrence], Event | None]] = {
            do: getattr(self, f"_do_{do.value}") for do in Do if do not in SOUNDS
        }
        link.attach(self)

    @property
    def state(self) -> State:
        """What the appliance shows (LED, heartbeat, setup page)."""
        return self._shown(self.phase)

    def _shown(self, phase: Phase) -> State:
        """A missing token while the setup's sign-in waits for the network is no call for a
        person to act yet: shown as signing in, not as needing a token. Nor is one on a device
        that is on no network at all: the setup page cannot be reached, the Wi-Fi is the
        thing to fix, and it is shown as offline."""
        shown = phase.shown
        if shown is State.NEEDS_TOKEN and self._sign_in is not None:
            return State.SIGNING_IN
        if shown is State.NEEDS_TOKEN and not self._on_a_network:
            return State.OFFLINE
        return shown

    def network_changed(self, up: bool) -> None:
        """The device joined or left a network (netcheck)."""
        before = self.state
        joined = up and not self._on_a_network
        self._on_a_network = up
        self._show(before, {"network": "up" if up else "none"})
        if joined and not self.link.up:
            self.link.wake()  # not the rest of a backoff sleep (30 s at most) after the outage

    def signing_in(self) -> None:
        """The sign-in with the auth record the setup left has begun."""
        self._refused_while_signing_in = False
        self._sign_in_is("waiting")

    def sign_in_over(self, stored: bool) -> None:
        """The sign-in stored a token (shown as signing in until the link has tried it: its
        token wait looks every few seconds) or failed (a person must act now). A refusal that
        came while the sign-in was still writing the token (the link tried the new file first)
        was that token's: a person must act."""
        stored = stored and not self._refused_while_signing_in
        self._sign_in_is("stored" if stored else None)

    def _sign_in_is(self, stage: str | None) -> None:
        before = self.state
        self._sign_in = stage
        self._show(before, {})

    def _sign_in_heard(self, what: Event) -> None:
        """Before a transition: what `what` says about the sign-in (it changes only what the
        needs-token phase is shown as, so the transition's own move reports it)."""
        if self.phase is not Phase.NEEDS_TOKEN:
            if self._sign_in == "stored":
                self._sign_in = None  # the link is past the stored token: a later need is new
            return
        if what is Event.TOKEN_NEEDED:  # in needs_token already: a token was tried and refused
            if self._sign_in == "waiting":
                self._refused_while_signing_in = True
            elif self._sign_in == "stored":
                self._sign_in = None

    # ------------------------------------------------------------ the machine

    def takes(self, what: Event) -> bool:
        """Would `what` do anything in the current phase?"""
        return (self.phase, what) in TRANSITIONS

    def _on(self, what: Event, reason: str = "") -> bool:
        return self.happen(Occurrence(what, reason))

    def happen(self, occurrence: Occurrence) -> bool:
        """Run the transition for this event in the current phase; False if the pair is ignored."""
        step = TRANSITIONS.get((self.phase, occurrence.event))
        if step is None:
            return False
        before = self.state
        self._sign_in_heard(occurrence.event)
        follow_ups = [self._act(do, occurrence, step.to) for do in step.does]
        self._move(self._resolve(step.to), occurrence.logged, before)
        for follow_up in follow_ups:
            if follow_up is not None:
                self._on(follow_up)
        return True

    def _act(self, do: Do, occurrence: Occurrence, to: Target) -> Event | None:
        """One action of a transition landing at `to` (the ready earcon plays only in idle)."""
        sound = SOUNDS.get(do)
        if sound is not None:
            if do is Do.SOUND_READY:
                if not self._ready_owed or self._resolve(to) is not Phase.IDLE:
                    return None
                self._ready_owed = False
            if self._playing_out is not None and do in (Do.SOUND_END, Do.SOUND_LIMIT):
                self._after_play_out = sound  # after the agent's last words, not over them
            elif not (occurrence.event is Event.TOKEN_NEEDED and self._sign_in == "waiting"):
                self.feedback.earcon(sound)  # (no error tone for a token on its way)
            return None
        return self._actions[do](occurrence)

    def _resolve(self, to: Target) -> Phase:
        """The phase `to` means now. The phase shows one problem at a time, so a device error
        and a token problem each hid the other when it cleared: a device still gone is shown
        where idle or offline would be (a press there placed a call on it), and REST, with the
        device back, is NEEDS_TOKEN while a token is needed."""
        if isinstance(to, Phase):
            phase = to
        elif to == REST:
            phase = Phase.IDLE if self.link.up else Phase.OFFLINE
            if self._token_lacking:
                phase = Phase.NEEDS_TOKEN
        elif to == AFTER_CALL:
            phase = Phase.OFFLINE if self._outage else Phase.IDLE
        else:
            phase = self.phase
        if self.device_problem is not None and phase in (Phase.IDLE, Phase.OFFLINE):
            return Phase.DEVICE_ERROR
        return phase

    def _move(self, new: Phase, fields: dict[str, object], before: State) -> None:
        """`before`: what was shown before the transition began (its actions may change it)."""
        self.phase = new
        self._show(before, fields)

    def _show(self, before: State, fields: dict[str, object]) -> None:
        """Tell the log, the LED and the heartbeat what the appliance shows now, if it changed."""
        now = self.state
        if now is before:
            return
        event("state_changed", state=now.value, previous=before.value, **fields)
        self.feedback.show(now)
        if before is State.SIGNING_IN and now is State.NEEDS_TOKEN:
            # the sign-in or its token was refused: a person must act now, and hears it once
            # (the transitions into needs_token play it; from signing in none of them did)
            self.feedback.earcon(Earcon.ERROR)
        if self.heartbeat is not None:
            self.heartbeat.update(now)

    # ------------------------------------------------------------ button (ButtonListener)

    def button_pressed(self) -> None:
        event("button_pressed", state=self.state.value)
        out_of_call = self.state not in (
            State.CONNECTING,
            State.LIVE,
            State.RECONNECTING,
            State.ENDING,
        )
        if out_of_call and self.press_hook is not None and self.press_hook():
            self._press_began_out_of_call = False  # the press was the setup page's
            return
        self._press_began_out_of_call = out_of_call
        self._redials = 0  # someone is there
        self._on(Event.PRESS)

    def button_held(self) -> None:
        event("button_held", state=self.state.value)
        self._on(Event.HOLD, USER_REQUEST)

    def button_long_held(self) -> None:
        """The setup hold (5 s), begun out of a call: the 2 s hold already ended the call that
        this press placed, so only the setup page opens."""
        event("button_long_held", state=self.state.value)
        self._on(Event.LONG_HOLD)

    def button_released(self, held: bool) -> None:
        event("button_released", held=held)

    # ------------------------------------------------------------ link (LinkListener)

    def link_up(self) -> None:
        self._outage = False
        self._token_lacking = False  # (the link comes up only with a token the service took)
        self._on(Event.LINK_UP)

    def link_down(self, down: LinkDown) -> None:
        if down.routine:
            return  # after a call, or the server's idle close: the supervisor reopens at once
        self._outage = True  # (reported once: see AFTER_CALL)
        # A try of a new token met a dead network: whether the token is good is the network's
        # to say now (the link says again if it is refused).
        self._token_lacking = False
        self.happen(Occurrence(Event.LINK_DOWN, down.detail, logged={"reason": down.detail}))

    def server_audio(self, pcm: bytes) -> None:
        """The data path, not an event: agent audio plays while live. What comes between the
        server's answer and the call going live (the agent's first words, often in the same read
        as the answer) waits for it, a few loop turns."""
        if self.phase is Phase.LIVE:
            self.audio.play(pcm)
        elif (
            self.phase in (Phase.CONNECTING, Phase.RECONNECTING)
            and self._early_audio_bytes + len(pcm) <= EARLY_AUDIO_MAX_BYTES
        ):
            self._early_audio.append(pcm)
            self._early_audio_bytes += len(pcm)

    def server_hangup(self, reason: str) -> None:
        self._on(Event.LIMIT if reason == CALL_LIMIT_REASON else Event.HANGUP, reason)

    def token_needed(self, detail: str) -> None:
        self._on(Event.TOKEN_NEEDED, detail)

    def audio_device_error(self, message: str) -> None:
        """Called by the audio engine (on the loop) when a stream dies."""
        self._on(Event.DEVICE_ERROR, message)

    # ------------------------------------------------------------ actions: calls

    def _do_place(self, _: Occurrence) -> None:
        self._start_placing(resume=False)

    def _do_resume(self, _: Occurrence) -> None:
        self._start_placing(resume=True)

    def _start_placing(self, resume: bool) -> None:
        """One placement at a time. One cancelled but not yet over (its socket takes up to 2 s
        to close) is waited for, not taken for a live one: a press in that moment, after a
        resume gave up, left CONNECTING with nothing placing and every press refused."""
        previous = self._placing
        if previous is not None and not previous.done() and not previous.cancelling():
            return  # (a resume already under way when the link came up again)
        self._end_play_out()  # (the last call's last words: the new call's audio starts afresh)
        name = "resume" if resume else "place-call"
        self._placing = self.tasks.spawn(self._place(resume, after=previous), name)

    def _take_early_audio(self) -> list[bytes]:
        early, self._early_audio, self._early_audio_bytes = self._early_audio, [], 0
        return early

    async def _place(self, resume: bool, after: asyncio.Task[None] | None = None) -> None:
        pressed = time.monotonic()
        if after is not None and not after.done():
            await asyncio.wait([after])  # (its outcome was the cancelled placement's to report)
        try:
            await self._try_placing(resume, pressed)
        except Exception as exc:  # a fault of ours: CONNECTING has no other way out, and a
            # device stuck there refuses every press under a connecting LED
            reason = report_fault(exc, "the call was not placed; please report this line")
            # (the fault may have come after the server placed it, or the audio started)
            self._stop_audio()
            with contextlib.suppress(Exception):
                await self.link.end_call("error")
            self._on(Event.CALL_FAILED, reason)

    async def _try_placing(self, resume: bool, pressed: float) -> None:
        self._take_early_audio()  # a failed placement's, if any
        await self._audio_free()
        try:
            if not self.link.up and not await self.link.wait_up(self.cfg.handshake_timeout_s):
                raise LinkLost("the service cannot be reached")
            info = await self.link.start_call(reconnect=resume)
        except LinkLost as exc:
            if not resume:  # a resume tries again at the next link_up, until the window closes
                self._on(Event.CALL_FAILED, str(exc))
            return
        except CallFailed as exc:
            self.happen(Occurrence(Event.CALL_FAILED, str(exc), code=exc.code))
            return
        if not self.takes(Event.PLACED):
            await self.link.end_call(USER_REQUEST)  # the person gave up while we were connecting
            return
        try:
            # (no wait here: between the answer and going live the session must hear all the
            # link says, and a hang-up or a lost link in a wait here went unheard)
            self.audio.start_call(info.sample_rate)
        except AudioDeviceError as exc:
            self._on(Event.DEVICE_ERROR, str(exc))  # ends the call on the server too
            return
        if not resume:
            self._earlier_audio = {}
        self._audio_banked = False
        connect_ms = round((time.monotonic() - pressed) * 1000, 1)
        self.happen(Occurrence(Event.PLACED, info=info, resumed=resume, connect_ms=connect_ms))

    async def _audio_free(self) -> None:
        """Before the call is placed: wait out a reopen of the devices after the last fault (a
        moment, on a worker thread). start_call refused it as a failure, and a call the
        service would have resumed after a lost link was ended with an error tone. Still busy
        after AUDIO_BUSY_WAIT_S: the call goes on and the device error says so."""
        waited = 0.0
        while self.audio.reopening and waited < AUDIO_BUSY_WAIT_S:
            await asyncio.sleep(0.1)
            waited += 0.1

    def _do_go_live(self, occurrence: Occurrence) -> None:
        info, resumed = occurrence.info, occurrence.resumed
        assert info is not None
        self._close_resume_window()
        self._live_at = asyncio.get_running_loop().time()
        if resumed:
            self.calls_resumed += 1
        else:
            self._resume_deadline = None  # a new call: its first loss opens a whole window
            self._call_started_at = time.monotonic()
            self.calls_placed += 1
        occurrence.logged.update(
            call_id=str(info.call_id),
            server_rate=info.sample_rate,
            resumed=resumed,
            connect_ms=occurrence.connect_ms,
        )
        event("call_live", call_id=str(info.call_id), resumed=resumed, server_rate=info.sample_rate)
        for pcm in self._take_early_audio():
            self.audio.play(pcm)
        self._uplink = self.tasks.spawn(self._run_uplink(), "uplink")

    async def _run_uplink(self) -> None:
        """Microphone frames to the link, continuously (the server does its own turn detection)."""
        first = True
        while self.phase is Phase.LIVE:
            try:
                frame = await self.audio.next_frame()
            except AudioDeviceError as exc:
                self._on(Event.DEVICE_ERROR, str(exc))
                return
            try:
                await self.link.send_audio(frame)
            except LinkLost:
                return  # link_down moves us to RECONNECTING
            if first:
                first = False
                event("uplink_started", frame_bytes=len(frame))

    def _do_end(self, occurrence: Occurrence) -> None:
        occurrence.logged["reason"] = occurrence.reason
        self._stop_uplink()
        self.audio.call_ending()
        if self._ending is None or self._ending.done():
            self._ending = self.tasks.spawn(self._end(occurrence.reason), "end-call")

    async def _end(self, reason: str) -> None:
        """A placement still connecting is cancelled (its socket closes, so no call the server
        places stays up); a call is ended with call_disconnect; then ENDED."""
        placing = self._placing
        answered = False
        try:
            if placing is not None and not placing.done():
                placing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await placing
            answered = await self.link.end_call(reason)
        except Exception as exc:  # a fault of ours: ENDING has no other way out, and a device
            # stuck there ignores every press and hold while its heartbeat says "ending"
            report_fault(exc, "the call was ended here; please report this line")
        self.happen(Occurrence(Event.ENDED, reason, answered=answered))

    def _do_cancel_placing(self, _: Occurrence) -> None:
        placing = self._placing
        if placing is not None and placing is not asyncio.current_task():
            placing.cancel()

    def _do_lose(self, _: Occurrence) -> None:
        """The live call's link is gone: stop the audio and try to resume it for a while."""
        self._stop_uplink()
        self._bank_audio_figures()  # a resume starts the audio's counters afresh
        self._stop_audio()
        if self._resume_timer is None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            lasted = now - self._live_at
            if self._resume_deadline is None or lasted >= self.cfg.healthy_after_s:
                self._resume_deadline = now + self.cfg.call_resume_window_s
            # else the window the first loss opened goes on: a call the service drops seconds
            # after each resume was resumed for ever, a "live" tone every few seconds
            self._resume_timer = loop.call_at(self._resume_deadline, self._on, Event.RESUME_EXPIRED)

    def _do_finish(self, occurrence: Occurrence) -> None:
        self._close_resume_window()
        self._stop_uplink()
        reason = occurrence.reason
        if occurrence.event in (Event.HANGUP, Event.LIMIT):
            reason = f"server: {reason}"
        elif occurrence.event is Event.RESUME_EXPIRED:
            reason = "link lost; could not resume"
        summary = self._call_summary(reason)
        left_s = self.audio.play_out() if occurrence.event in (Event.HANGUP, Event.LIMIT) else 0
        if left_s > 0:
            wait_s = min(left_s, PLAY_OUT_MAX_S)
            self._playing_out = asyncio.get_running_loop().call_later(wait_s, self._played_out)
        else:
            self._stop_audio()
        self._log_call_ended(summary, occurrence.answered)

    def _played_out(self) -> None:
        """The agent's last words have played (or PLAY_OUT_MAX_S passed): the audio stops, and
        the end tone held back for them sounds. A new call placed meanwhile ends this sooner."""
        self._playing_out = None
        self._stop_audio()
        sound, self._after_play_out = self._after_play_out, None
        if sound is not None:
            self.feedback.earcon(sound)

    def _end_play_out(self, *, sound: bool = True) -> None:
        if self._playing_out is not None:
            self._playing_out.cancel()
            if not sound:
                self._after_play_out = None
            self._played_out()

    def _do_forget(self, _: Occurrence) -> None:
        self.tasks.spawn(self.link.end_call("link lost"), "forget-call")

    def _do_fail(self, occurrence: Occurrence) -> None:
        event("call_failed", logging.ERROR, reason=occurrence.reason, code=occurrence.code)
        occurrence.logged["reason"] = occurrence.reason

    def _do_limit_reached(self, occurrence: Occurrence) -> Event | None:
        """The service ended the call at its length limit: say so plainly; redial if asked to."""
        started = self._call_started_at
        lasted = time.monotonic() - started if started is not None else 0.0
        wanted = self.cfg.redial_on_limit and lasted >= REDIAL_MIN_CALL_S
        redial = wanted and self._redials < REDIALS_PER_PRESS
        action = "a new call starts by itself" if redial else "press to start a new call"
        if wanted and not redial:
            action += f" (redialled {self._redials} times since the last press)"
        event(
            "call_limit_reached",
            logging.WARNING,
            lasted_s=round(lasted, 1),
            redial=redial,
            redials=self._redials,
            action=action,
        )
        if redial:
            self._redials += 1
            return Event.REDIAL
        if self._limit_timer is not None:
            self._limit_timer.cancel()
        self._limit_timer = asyncio.get_running_loop().call_later(
            LIMIT_SHOW_S, self._on, Event.LIMIT_SHOWN
        )
        return None

    def _do_give_up(self, _: Occurrence) -> None:
        event("call_resume_gave_up", logging.ERROR, window_s=self.cfg.call_resume_window_s)
        self._resume_timer = None
        placing = self._placing
        if placing is not None:
            placing.cancel()

    def _call_summary(self, reason: str) -> dict[str, object]:
        """The call's figures, all its parts if it was resumed; taken before the audio stops,
        which drops the jitter buffer's."""
        started, self._call_started_at = self._call_started_at, None
        duration = time.monotonic() - started if started else 0.0
        self._bank_audio_figures()
        audio, self._earlier_audio = self._earlier_audio, {}
        self._audio_banked = False  # (the next call's audio is counted whether placed or not)
        return {"reason": reason, "duration_s": round(duration, 2), "audio": audio}

    def _bank_audio_figures(self) -> None:
        """Add the audio's figures to the call's, once per start of the audio (after a lost
        link they stay what they were until a resume starts it again)."""
        if not self._audio_banked:
            self._audio_banked = True
            self._earlier_audio = add_segments(self._earlier_audio, self.audio.stats())

    def _log_call_ended(self, summary: dict[str, object], answered: bool | None) -> None:
        """One call_ended line per call, however it ended."""
        link = self.link.stats.as_dict()
        event("call_ended", **summary, disconnect_answered=answered, link=link)
        self.recent_calls.append({**summary, "ended_at": time.time(), "link": link})

    def _close_resume_window(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def _stop_uplink(self) -> None:
        task, self._uplink = self._uplink, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _stop_audio(self) -> None:
        with contextlib.suppress(AudioDeviceError):
            self.audio.stop_call()

    # ------------------------------------------------------------ actions: token, presses

    def _do_token_alert(self, occurrence: Occurrence) -> None:
        self._ready_owed = True  # said again once a token makes it ready
        self._token_lacking = True
        self._end_play_out(sound=False)  # (the error tone says enough; no end tone after it)
        if self._sign_in == "waiting":  # nothing for a person to do yet
            event(
                "token_needed",
                detail=occurrence.reason,
                action="none yet: signing in with the setup's auth record when the network is up",
            )
            occurrence.logged["detail"] = occurrence.reason
            return
        event(
            "token_needed",
            logging.ERROR,
            detail=occurrence.reason,
            action=(
                "sign in again: `sesame-pi login`, the setup page, or a fresh token in "
                f"{self.cfg.token_file}"
            ),
        )
        occurrence.logged["detail"] = occurrence.reason

    def _do_setup(self, _: Occurrence) -> None:
        if self._press_began_out_of_call and self.long_hold_hook is not None:
            self.long_hold_hook()

    def _do_refuse_in_call(self, _: Occurrence) -> None:
        event("press_ignored", reason="call in progress; hold to end it", state=self.state.value)

    def _do_refuse_ending(self, _: Occurrence) -> None:
        event("press_ignored", reason="the last call is still ending; press again in a moment")

    def _do_refuse_token(self, _: Occurrence) -> None:
        if self.state is State.SIGNING_IN:
            event("press_ignored", reason="signing in first: calls wait for the network")
        else:
            event("press_ignored", logging.WARNING, reason="a new token is needed first")
        self.link.wake()

    def _do_refuse_device(self, _: Occurrence) -> None:
        event("press_ignored", logging.WARNING, reason="audio device unavailable")

    # ------------------------------------------------------------ actions: devices

    def _do_drop_for_device(self, _: Occurrence) -> None:
        """Summarise the call before its audio stops; end it with the service in the background."""
        summary = self._call_summary("audio device error")
        self.tasks.spawn(self._end_for_device(summary), "end-device")

    async def _end_for_device(self, summary: dict[str, object]) -> None:
        answered = await self.link.end_call("error")
        self._log_call_ended(summary, answered)

    def _do_device_failed(self, occurrence: Occurrence) -> None:
        message = occurrence.reason
        self._ready_owed = True  # said again once the devices are back and it is ready
        event(
            "audio_device_error",
            logging.ERROR,
            detail=message,
            action="check the microphone and speaker; `sesame-pi devices` lists them",
        )
        occurrence.logged["detail"] = message
        self.device_problem = message
        self._end_play_out(sound=False)
        self._stop_uplink()
        self._stop_audio()
        self._close_resume_window()  # no resume onto a device that is gone
        if self._device_retry is None or self._device_retry.done():
            self._device_retry = self.tasks.spawn(self._wait_for_device(), "device-retry")

    async def _wait_for_device(self) -> None:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(AudioDeviceError),
            wait=tenacity.wait_exponential(multiplier=0.5, max=10.0) + tenacity.wait_random(0, 1.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await asyncio.to_thread(self.audio.probe)
        event("audio_device_back")
        self._on(Event.DEVICE_BACK)

    def _do_device_ok(self, _: Occurrence) -> None:
        self.device_problem = None

    # ------------------------------------------------------------ lifetime

    async def run(self) -> None:
        """Run until `stop()`: the link supervisor and the heartbeat."""
        self.tasks.spawn(self.link.run(), "link")
        if self.heartbeat is not None:
            self.tasks.spawn(self._beat(self.heartbeat), "heartbeat")
        try:
            await self._stopped.wait()
        finally:
            await self.link.stop()
            await self.close()

    async def close(self) -> None:
        """Cancel the timers and every task this session started, and wait for the tasks."""
        self._close_resume_window()
        if self._limit_timer is not None:
            self._limit_timer.cancel()
        self._end_play_out(sound=False)
        await self.tasks.close()

    async def _beat(self, heartbeat: Heartbeat) -> None:
        while True:
            heartbeat.update(self.state, link_up=self.link.up)
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        """Graceful: end a call (bounded), then stop everything."""
        if self._on(Event.HOLD, USER_REQUEST) and self._ending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(self._ending), self.cfg.disconnect_timeout_s + 2
                )
        self._on(Event.STOP)
        self._stopped.set()
