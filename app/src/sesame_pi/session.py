"""The one state machine: the link, audio, button and feedback report here, and only this decides.

    STARTING ─link up─► IDLE;  STARTING/IDLE ─link down (or no first connect)─► OFFLINE ─up─► IDLE
    IDLE ─press─► CONNECTING ─call_connect_response─► LIVE ─held─► ENDING ─► IDLE
    LIVE ─link lost─► RECONNECTING ─link back─► LIVE (a new call_connect, no press needed)
    LIVE ─server ends it at its length limit─► CALL_LIMIT ─press, or redial_on_limit─► CONNECTING
    any ─auth refused / token expired─► NEEDS_TOKEN ─new token─► IDLE
    CONNECTING/LIVE ─device error─► DEVICE_ERROR ─device back─► IDLE

A short press while LIVE is ignored and logged: only a hold ends a call (the safeguard).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import tenacity

from .audio import AudioDeviceError
from .config import Config
from .heartbeat import Heartbeat
from .link import ROUTINE_CLOSES, CallFailed, Link, LinkLost
from .logs import event
from .states import Earcon, State

CALL_STATES = frozenset({State.CONNECTING, State.LIVE, State.RECONNECTING})
RECENT_CALLS_KEPT = 5
CALL_LIMIT_REASON = "call_duration_limit_exceeded"  # the service's free-tier call length
LIMIT_SHOW_S = 60.0  # how long the LED says "the limit ended it" before it shows idle again
REDIAL_MIN_CALL_S = 2.0  # a call the limit ended sooner is not redialled (no tight loop)


class AudioPort(Protocol):
    """What the session needs from the audio engine (see audio.AudioEngine)."""

    def start_call(self, playback_rate: int) -> None: ...
    def stop_call(self) -> None: ...
    async def next_frame(self) -> bytes: ...
    def play(self, pcm: bytes) -> None: ...
    def probe(self) -> None: ...
    def stats(self) -> dict[str, int | float]: ...


class FeedbackPort(Protocol):
    """What the session needs from feedback (see feedback.Feedback)."""

    def show(self, state: State) -> None: ...
    def earcon(self, which: Earcon) -> None: ...


class Session:
    """Owns the state and every task that runs because of it."""

    def __init__(
        self,
        cfg: Config,
        link_factory: type[Link] | None = None,
        *,
        audio: AudioPort,
        feedback: FeedbackPort,
        tokens: object,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.cfg = cfg
        self.audio = audio
        self.feedback = feedback
        self.heartbeat = heartbeat
        factory = link_factory or Link
        self.link = factory(cfg, tokens, self)  # type: ignore[arg-type]
        self.state = State.STARTING
        self._call_task: asyncio.Task[None] | None = None
        self._uplink_task: asyncio.Task[None] | None = None
        self._resume_pending = False
        self._resume_timer: asyncio.TimerHandle | None = None
        self._device_task: asyncio.Task[None] | None = None
        self._end_task: asyncio.Task[Any] | None = None
        self._stopped = asyncio.Event()
        self.calls_placed = 0
        self.calls_resumed = 0
        self._call_started_at: float | None = None
        # The setup page's seams: a press it claims (pairing) starts no call; the long hold opens
        # it. It reads the last calls' summaries and the device problem from here.
        self.press_hook: Callable[[], bool] | None = None
        self.long_hold_hook: Callable[[], None] | None = None
        self.recent_calls: collections.deque[dict[str, object]] = collections.deque(
            maxlen=RECENT_CALLS_KEPT
        )
        self.device_problem: str | None = None
        self._press_began_out_of_call = False

    # ------------------------------------------------------------ state

    def _set(self, new: State, **fields: object) -> None:
        if new == self.state:
            return
        previous, self.state = self.state, new
        event("state_changed", state=new.value, previous=previous.value, **fields)
        self.feedback.show(new)
        if self.heartbeat is not None:
            self.heartbeat.update(new)

    # ------------------------------------------------------------ button (ButtonListener)

    def button_pressed(self) -> None:
        event("button_pressed", state=self.state.value)
        out_of_call = self.state not in CALL_STATES and self.state is not State.ENDING
        if out_of_call and self.press_hook is not None and self.press_hook():
            self._press_began_out_of_call = False  # the press was the setup page's
            return
        self._press_began_out_of_call = out_of_call
        if self.state in (State.IDLE, State.OFFLINE, State.STARTING, State.CALL_LIMIT):
            self._begin_call()
        elif self.state in CALL_STATES:
            event(
                "press_ignored", reason="call in progress; hold to end it", state=self.state.value
            )
        elif self.state is State.NEEDS_TOKEN:
            event("press_ignored", logging.WARNING, reason="a new token is needed first")
            self.feedback.earcon(Earcon.ERROR)
            self.link.wake()
        elif self.state is State.DEVICE_ERROR:
            event("press_ignored", logging.WARNING, reason="audio device unavailable")
            self.feedback.earcon(Earcon.ERROR)

    def button_held(self) -> None:
        event("button_held", state=self.state.value)
        if self.state in CALL_STATES or self._resume_pending:
            self._spawn_end("user_request")

    def button_long_held(self) -> None:
        """The setup hold (5 s), begun out of a call: the 2 s hold already ended the call that
        this press placed, so only the setup page opens."""
        event("button_long_held", state=self.state.value)
        if not self._press_began_out_of_call or self.state in (State.CONNECTING, State.LIVE):
            return
        if self.long_hold_hook is not None:
            self.long_hold_hook()

    def button_released(self, held: bool) -> None:
        event("button_released", held=held)

    # ------------------------------------------------------------ link (LinkListener)

    def link_up(self) -> None:
        if self._resume_pending:
            self._set(State.RECONNECTING)
            if self._call_task is None or self._call_task.done():
                self._call_task = asyncio.create_task(self._place_call(resume=True), name="resume")
        elif self.state in (State.STARTING, State.OFFLINE, State.NEEDS_TOKEN):
            self._set(State.IDLE)

    def link_down(self, reason: str) -> None:
        if reason in ROUTINE_CLOSES:
            return  # after a call, or the server's idle close: the supervisor reopens at once
        if self.state is State.LIVE:
            self._lose_call()
            self._set(State.RECONNECTING, reason=reason)
        elif self.state in (State.STARTING, State.IDLE, State.CALL_LIMIT):
            self._set(State.OFFLINE, reason=reason)  # also a first connect that failed at boot

    def _lose_call(self) -> None:
        """The live call's link is gone: stop the audio and try to resume it for a while."""
        self._stop_uplink()
        self._stop_audio()
        self._resume_pending = True
        self.link.set_call_pending(True)
        if self._resume_timer is None:
            window = self.cfg.call_resume_window_s
            self._resume_timer = asyncio.get_running_loop().call_later(window, self._give_up_resume)

    def server_audio(self, pcm: bytes) -> None:
        if self.state is State.LIVE:
            self.audio.play(pcm)

    def server_hangup(self, reason: str) -> None:
        if self.state in CALL_STATES and reason == CALL_LIMIT_REASON:
            self._call_limit_reached()
        elif self.state in CALL_STATES:
            self._finish_call(f"server: {reason}")

    def _call_limit_reached(self) -> None:
        """The service ended the call at its length limit: say so plainly; redial if asked to."""
        started = self._call_started_at
        lasted = time.monotonic() - started if started is not None else 0.0
        redial = self.cfg.redial_on_limit and lasted >= REDIAL_MIN_CALL_S
        event(
            "call_limit_reached",
            logging.WARNING,
            lasted_s=round(lasted, 1),
            redial=redial,
            action="a new call starts by itself" if redial else "press to start a new call",
        )
        reason = f"server: {CALL_LIMIT_REASON}"
        self._finish_call(reason, earcon=Earcon.LIMIT, then=State.CALL_LIMIT)
        if redial:
            self._begin_call()
        else:
            asyncio.get_running_loop().call_later(LIMIT_SHOW_S, self._limit_shown)

    def _limit_shown(self) -> None:
        if self.state is State.CALL_LIMIT:
            self._set(State.IDLE if self.link.up else State.OFFLINE)

    def token_needed(self, detail: str) -> None:
        event(
            "token_needed",
            logging.ERROR,
            detail=detail,
            action=f"put a fresh token in {self.cfg.token_file}",
        )
        if self.state is State.LIVE:
            self._lose_call()  # resumes by itself if a new token arrives within the window
        self._set(State.NEEDS_TOKEN, detail=detail)
        self.feedback.earcon(Earcon.ERROR)

    # ------------------------------------------------------------ calls

    def _begin_call(self) -> None:
        if self._call_task is not None and not self._call_task.done():
            return
        self._call_task = asyncio.create_task(self._place_call(resume=False), name="place-call")

    async def _place_call(self, resume: bool) -> None:
        if not resume:
            self._set(State.CONNECTING)
            self.feedback.earcon(Earcon.CALL_START)
            self.link.set_call_pending(True)
        pressed = time.monotonic()
        try:
            if not self.link.up and not await self.link.wait_up(self.cfg.handshake_timeout_s):
                raise LinkLost("the service cannot be reached")
            info = await self.link.start_call(reconnect=resume)
        except LinkLost as exc:
            if resume:
                return  # the next link_up tries again, until the resume window closes
            self._call_failed(str(exc))
            return
        except CallFailed as exc:
            self._call_failed(str(exc), code=exc.code)
            return
        if self.state not in (State.CONNECTING, State.RECONNECTING):
            await self.link.end_call("user_request")  # the person gave up while we were connecting
            return
        try:
            self.audio.start_call(info.sample_rate)
        except AudioDeviceError as exc:
            await self.link.end_call("error")
            self._device_failed(str(exc))
            return
        self._clear_resume()
        self._call_started_at = self._call_started_at if resume else time.monotonic()
        if resume:
            self.calls_resumed += 1
        else:
            self.calls_placed += 1
        self._set(
            State.LIVE,
            call_id=str(info.call_id),
            server_rate=info.sample_rate,
            resumed=resume,
            connect_ms=round((time.monotonic() - pressed) * 1000, 1),
        )
        event("call_live", call_id=str(info.call_id), resumed=resume, server_rate=info.sample_rate)
        self.feedback.earcon(Earcon.LIVE)
        self._uplink_task = asyncio.create_task(self._uplink(), name="uplink")

    async def _uplink(self) -> None:
        """Microphone frames to the link, continuously (the server does its own turn detection)."""
        first = True
        while self.state is State.LIVE:
            try:
                frame = await self.audio.next_frame()
            except AudioDeviceError as exc:
                self._device_failed(str(exc))
                return
            try:
                await self.link.send_audio(frame)
            except LinkLost:
                return  # link_down moves us to RECONNECTING
            if first:
                first = False
                event("uplink_started", frame_bytes=len(frame))

    def _spawn_end(self, reason: str) -> None:
        if self._end_task is None or self._end_task.done():
            self._end_task = asyncio.create_task(self._end_call(reason), name="end-call")

    async def _end_call(self, reason: str) -> None:
        if self.state not in CALL_STATES and not self._resume_pending:
            return
        was = self.state
        self._set(State.ENDING, reason=reason)
        self._stop_uplink()
        if self._call_task is not None and was is not State.LIVE:
            self._call_task.cancel()
        answered = await self.link.end_call(reason)
        self._finish_call(reason, answered=answered)

    def _finish_call(
        self,
        reason: str,
        answered: bool | None = None,
        earcon: Earcon = Earcon.END,
        then: State = State.IDLE,
    ) -> None:
        self._clear_resume()
        self._stop_uplink()
        summary = self._call_summary(reason)
        self._stop_audio()
        self.link.set_call_pending(False)
        self._log_call_ended(summary, answered)
        self.feedback.earcon(earcon)
        self._set(then)

    def _call_summary(self, reason: str) -> dict[str, object]:
        """The call's figures; taken before the audio stops, which drops the jitter buffer's."""
        started, self._call_started_at = self._call_started_at, None
        duration = time.monotonic() - started if started else 0.0
        return {"reason": reason, "duration_s": round(duration, 2), "audio": self.audio.stats()}

    def _log_call_ended(self, summary: dict[str, object], answered: bool | None) -> None:
        """One call_ended line per call, however it ended."""
        link = self.link.stats.as_dict()
        event("call_ended", **summary, disconnect_answered=answered, link=link)
        self.recent_calls.append({**summary, "ended_at": time.time(), "link": link})

    def _call_failed(self, reason: str, code: int | str | None = None) -> None:
        event("call_failed", logging.ERROR, reason=reason, code=code)
        self.link.set_call_pending(False)
        self.feedback.earcon(Earcon.ERROR)
        self._set(State.IDLE if self.link.up else State.OFFLINE, reason=reason)

    def _clear_resume(self) -> None:
        self._resume_pending = False
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def _give_up_resume(self) -> None:
        self._resume_timer = None
        if not self._resume_pending:
            return
        event("call_resume_gave_up", logging.ERROR, window_s=self.cfg.call_resume_window_s)
        if self._call_task is not None:
            self._call_task.cancel()
        needs_token = self.state is State.NEEDS_TOKEN
        self._finish_call("link lost; could not resume")
        self.feedback.earcon(Earcon.ERROR)
        if needs_token:
            self._set(State.NEEDS_TOKEN)

    def _stop_uplink(self) -> None:
        task, self._uplink_task = self._uplink_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _stop_audio(self) -> None:
        with contextlib.suppress(AudioDeviceError):
            self.audio.stop_call()

    # ------------------------------------------------------------ devices

    def audio_device_error(self, message: str) -> None:
        """Called by the audio engine (on the loop) when a stream dies."""
        self._device_failed(message)

    def _device_failed(self, message: str) -> None:
        if self.state is State.DEVICE_ERROR:
            return
        event(
            "audio_device_error",
            logging.ERROR,
            detail=message,
            action="check the microphone and speaker; `sesame-pi devices` lists them",
        )
        self.device_problem = message
        in_call = self.state in CALL_STATES or self._resume_pending
        self._stop_uplink()
        summary = self._call_summary("audio device error") if in_call else None
        self._stop_audio()
        self._clear_resume()  # no resume onto a device that is gone
        self.link.set_call_pending(False)
        self._set(State.DEVICE_ERROR, detail=message)
        self.feedback.earcon(Earcon.ERROR)
        if summary is not None:
            self._end_task = asyncio.create_task(self._end_for_device(summary), name="end-device")
        if self._device_task is None or self._device_task.done():
            self._device_task = asyncio.create_task(self._wait_for_device(), name="device-retry")

    async def _end_for_device(self, summary: dict[str, object]) -> None:
        """End the call with the service, then summarise it like any other call."""
        answered = await self.link.end_call("error")
        self._log_call_ended(summary, answered)

    async def _wait_for_device(self) -> None:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(AudioDeviceError),
            wait=tenacity.wait_exponential_jitter(initial=0.5, max=10.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await asyncio.to_thread(self.audio.probe)
        event("audio_device_back")
        self.device_problem = None
        self._set(State.IDLE if self.link.up else State.OFFLINE)

    # ------------------------------------------------------------ lifetime

    async def run(self) -> None:
        """Run until `stop()`: the link supervisor and the heartbeat."""
        link_task = asyncio.create_task(self.link.run(), name="link")
        beat_task = asyncio.create_task(self._beat(), name="heartbeat") if self.heartbeat else None
        try:
            await self._stopped.wait()
        finally:
            await self.link.stop()
            for task in (link_task, beat_task, self._device_task, self._call_task):
                if task is not None:
                    task.cancel()
            for task in (link_task, beat_task):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _beat(self) -> None:
        assert self.heartbeat is not None
        while True:
            self.heartbeat.update(self.state, link_up=self.link.up)
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        """Graceful: end a live call (bounded), then stop everything."""
        if self.state in CALL_STATES:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._end_call("user_request"), self.cfg.disconnect_timeout_s + 2
                )
        self._set(State.STOPPING)
        self._stopped.set()
