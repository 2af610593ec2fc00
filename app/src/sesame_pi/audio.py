"""Full-duplex audio with PyAudio in callback mode: the microphone up, the agent and earcons out.

PortAudio calls us on its own threads. The capture callback queues each frame and wakes the event
loop with `call_soon_threadsafe` when nothing is waiting yet (no blocking, no copies beyond the one
PortAudio needs); the loop takes what queued at most CAPTURE_BACKLOG_FRAMES deep, so an overloaded
CPU sheds the oldest microphone audio instead of burying a press or a hold under it. The playback
callback drains a jitter buffer that the loop fills, mixing in an earcon when one is playing (or,
in writer mode, a thread with blocking writes does: see `speaker`; `output_mode = "auto"` takes it
where the speaker's fill level can be trusted, see `output_probe`). Rate
and format conversion is left to ALSA (`default` goes through plug), so the card may run at 48 kHz
while we capture 16 kHz and play the server's 24 kHz. A watchdog on the loop notices a stream that
stopped calling back or failed (a USB hiccup, a stalled sound server, a card pulled out); the engine
reopens the stream in trouble on a worker thread (both, on a fresh PortAudio, when both are in
trouble or a card came or went) and the uplink gets paced silence while the microphone is gone,
so the call goes on; only a device still gone after `device_grace_s` is reported, and the session
ends the call (see `hiccup`). Device listing and choice live in `devices`.

Echo: the playback callback hands the echo stage exactly what it gave the device (after the earcon
mix) with PortAudio's DAC time, and every capture frame reaches the stage with its ADC time, so the
reference can be matched to the microphone by time on one clock (see `echo`). The callbacks only
copy; the cancelling runs on the loop, one 20 ms frame at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Config
from .devices import (
    AudioDeviceError,
    DeviceInfo,
    configured_devices,
    device_list,
    format_devices,
    list_devices,
    open_hint,
    pa_reason,
    portaudio,
    resolve_device,
    sound_nodes,
)
from .heap import freeze_what_lasts, pause_meter
from .hiccup import DeviceGrace, SilencePacer
from .jitter import DelayTarget, JitterBuffer
from .logs import event
from .output_probe import reads_ahead
from .pcm import mix, resample, widen
from .speaker import STOP_WAIT_S, DrySpell, Learnt, Speaker
from .stall import stack_of

if TYPE_CHECKING:
    from .echo import EchoStage

log = logging.getLogger(__name__)

__all__ = [
    "AudioDeviceError",
    "AudioEngine",
    "DeviceInfo",
    "format_devices",
    "list_devices",
    "mix",
    "resample",
    "resolve_device",
]

SAMPLE_BYTES = 2
WATCHDOG_PERIOD_S = 0.5
STALL_AFTER_S = 1.5  # no callback for this long while running: the device is gone
EARCON_LOCK_WAIT_S = 0.05  # a tone waits this long at most for a worker holding the devices
IDLE_OUTPUT_CLOSE_S = 3.0  # keep the speaker open briefly after the last earcon
# How long the event loop waits for a writer to leave PortAudio (a worker waits STOP_WAIT_S): a
# healthy writer leaves within a period; one stuck in a write on a stalled device is left to
# close its stream itself, and the loop (the button, the LED) does not freeze for seconds.
LOOP_STOP_WAIT_S = 0.2
SPEAKER_PROBE_RATE = 24000  # the service's rate: "auto" tries the speaker as a call opens it
AUTO_CALLBACK_PERIOD_MS = 20  # callback mode behind a sound server: at least this period
PLAYOUT_NOTES_PER_CALL = 20  # underrun, dry and stall lines a call; the summary counts them all
CAPTURE_QUEUE_FRAMES = 25  # half a second at 20 ms: the uplink never lags further than this
# Frames waiting for the loop (before the echo stage): beyond this the oldest are shed. The loop
# runs this far behind only when the CPU cannot keep up (each frame's cancelling costs more than
# 20 ms) or it stalled for half a second; without a bound every frame's work queued ahead of the
# session's own, and the loop fell further behind every second (tests/unit/test_device_recovery).
CAPTURE_BACKLOG_FRAMES = 25
# A reopen takes 50-500 ms, a few seconds behind a stalled device; one still inside PortAudio
# after this is wedged in the driver (a USB device that never answers), and only a fresh process
# gets a working PortAudio: the engine says so and asks for a restart (`on_wedged`).
REOPEN_WEDGED_S = 30.0


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class Sides:
    """What a reopen closes and opens again; `rescan` takes a fresh PortAudio (both sides)."""

    microphone: bool
    speaker: bool
    rescan: bool = False


# A call's figures that say how things stand, not how often something happened: a resumed
# call's summary takes them from its last part (and the peak, the highest of its parts).
STATE_FIGURES = frozenset(
    {"buffered_ms", "prebuffer_ms", "lateness_target_ms", "device_held_ms", "device_target_ms",
     "playout_target_ms", "echo_delay_ms", "echo_erle_db"}
)  # fmt: skip
PEAK_FIGURES = frozenset({"prebuffer_peak_ms", "gc_pause_max_ms"})


def add_segments(
    earlier: dict[str, int | float], later: dict[str, int | float]
) -> dict[str, int | float]:
    """The figures of a call that was resumed: the audio stops while the link is down and
    starts afresh (counters at zero) when it returns, so each part's counts add up."""
    total = dict(earlier)
    for key, value in later.items():
        before = total.get(key)
        if before is None or key in STATE_FIGURES:
            total[key] = value
        elif key in PEAK_FIGURES:
            total[key] = max(before, value)
        else:
            summed = before + value
            total[key] = round(summed, 1) if isinstance(summed, float) else summed
    return total


def effective_grace_s(grace_s: float) -> float:
    """`device_grace_s`, but never so short that it runs out before the watchdog has seen the
    device gone (up to STALL_AFTER_S + a watchdog turn after its last sound, which the grace
    counts from) and tried one reopen: 1 s used to end the call at the first look, with no
    reopen and a message saying it had been waited for. 0 stays 0 (end at once)."""
    if grace_s <= 0:
        return 0.0
    return max(grace_s, STALL_AFTER_S + 2 * WATCHDOG_PERIOD_S)


class AudioEngine:
    """Owns PortAudio and both streams. Call its methods from the event loop thread."""

    def __init__(
        self,
        cfg: Config,
        loop: asyncio.AbstractEventLoop,
        on_device_error: Callable[[str], None],
        portaudio_factory: Callable[[], Any] = portaudio,
        on_wedged: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.loop = loop
        self.on_device_error = on_device_error
        self.on_wedged = on_wedged  # a reopen stuck in the driver: only a restart helps
        self._factory = portaudio_factory
        self._pa: Any = None
        self._lock = threading.RLock()  # PortAudio open/close is not safe from two threads at once
        self._echo_lock = threading.Lock()  # the echo stage is made once, by the probe or a call
        self._input: Any = None
        self._output: Any = None
        self._speaker: Speaker | None = None  # the writer thread, in writer mode
        # (speaker, underflows, kicks) as the call began: a speaker kept open from the last call
        # (or the start tone) counts on, and the call's figures are what it added since
        self._speaker_base: tuple[Speaker | None, int, int] = (None, 0, 0)
        # What the last writer learnt of this machine and speaker, and which speaker it was.
        self._device_learnt: tuple[str, Learnt] | None = None
        self._output_name = ""  # the open speaker's PortAudio name
        self._writers_inside: list[Any] = []  # PortAudio instances a stopped writer still uses
        self._auto_mode: str | None = None  # what "auto" chose for the speaker probed last
        self._auto_device: str | None = None
        self._closed = False
        self._choose_when_free = False  # "auto" found the speaker open: choose once it closes
        self._output_rate = 0
        self._in_call = False
        self._frames: collections.deque[bytes] = collections.deque()
        self._frame_ready: asyncio.Future[None] | None = None
        self._failure: AudioDeviceError | None = None
        self._jitter: JitterBuffer | None = None
        self._earcon = bytearray()
        self._earcon_lock = threading.Lock()
        self._earcon_new = False  # an earcon waits whose first piece the writer has not taken
        self._earcons_begun = 0  # earcons whose first piece the writer took (runs of audio)
        self._watchdog: asyncio.TimerHandle | None = None
        self._idle_close: asyncio.TimerHandle | None = None
        self._last_input_cb = 0.0
        self._last_output_cb = 0.0
        self.frame_bytes = cfg.capture_rate * cfg.frame_ms // 1000 * SAMPLE_BYTES
        # PortAudio's ALSA stream holds two periods: a short capture period keeps that delay
        # small, and the callback joins periods into uplink frames (fewer, larger messages).
        self._capture = bytearray()  # touched only on PortAudio's input thread
        # Frames and ADC times from the input thread to the loop; one wake-up at a time.
        self._captured: collections.deque[tuple[bytes, float]] = collections.deque()
        self._drain_pending = False
        self._capture_t0 = 0.0  # ADC time of the first sample in self._capture
        self._echo: EchoStage | None = None
        self._echo_wanted = cfg.echo_cancel
        self.counters: collections.Counter[str] = collections.Counter()
        # Riding out a device hiccup (see `hiccup`): the streams are reopened on a worker thread
        # while the uplink gets paced silence; `_call_gen` tells a late worker its call is over.
        self._grace = DeviceGrace(effective_grace_s(cfg.device_grace_s))
        self._silence = SilencePacer(cfg.frame_ms / 1000)
        self._mic_gone = False
        self._reopening = False
        self._reopened_at = 0.0
        self._reopen_failed = False  # the last reopen attempt left a device unopened
        self._reopen_thread: int | None = None  # the worker inside a reopen (for its stack)
        self._reopen_overdue: asyncio.TimerHandle | None = None
        self._pa_nodes: frozenset[tuple[str, int]] | None = None  # see `_needs_rescan`
        # The speaker's part of a hiccup (the agent's audio piles up only while none plays):
        # since when no speaker has played (from the last sign of life of the one a reopen
        # closes until its successor opens), and the sum of those spells; None: no reopen yet.
        self._speaker_down_at: float | None = None
        self._speaker_unheard_s: float | None = None
        self._heard_at = 0.0  # when the loop last got a real microphone frame
        self._call_rate = 0
        self._call_gen = 0
        self._lateness: DelayTarget | None = None  # carried from call to call (same network)
        self._pauses = pause_meter()  # the interpreter's longest pause in a call (see `heap`)

    # ------------------------------------------------------------ devices

    def _ensure_pa(self) -> Any:
        if self._pa is None:
            self._pa_nodes = sound_nodes()  # what this PortAudio's device list was taken from
            self._pa = self._factory()
        return self._pa

    def _needs_rescan(self) -> bool:
        """Whether a reopen must take a fresh PortAudio: a card came or went since this one
        listed the devices (or, where the kernel's nodes cannot be read, the last reopen on it
        failed). A rescan closes both streams, so a reopen of one side avoids it when it can."""
        if self._pa is None:
            return True
        nodes = sound_nodes()
        if nodes is None:
            return self._reopen_failed
        return nodes != self._pa_nodes

    def probe(self) -> None:
        """Check both configured devices can do our formats; rescans, so a replugged card is seen.

        Runs in a worker thread (the session's device retry loop) or at start.
        """
        with self._lock:
            if self._input is None and self._output is None:
                self._drop_pa()
            pa = self._ensure_pa()
            mic, speaker = configured_devices(pa, self.cfg)
            # (with the speaker still open for an earcon, the choice waits until it closes)
            unknown = self.cfg.output_mode == "auto" and self._auto_device != speaker.name
            self._choose_when_free = unknown and self._output is not None
            if unknown and self._output is None:
                self._choose_output_mode(pa, speaker.index, speaker.name)
        event(
            "audio_devices",
            input=mic.name,
            input_index=mic.index,
            output=speaker.name,
            output_index=speaker.index,
        )
        self._make_echo()  # the first call's canceller, made here rather than at its press

    @property
    def output_mode(self) -> str:
        """Writer or callback: as configured, or what "auto" found (callback until then)."""
        if self.cfg.output_mode != "auto":
            return self.cfg.output_mode
        return self._auto_mode or "callback"

    @property
    def output_period_ms(self) -> int:
        """The speaker's period. Callback mode chosen by "auto" (a sound server) keeps at least
        20 ms: 10 made PortAudio fall into underflow storms through the ALSA pulse plugin."""
        period = self.cfg.output_period_ms
        if self.cfg.output_mode == "auto" and self.output_mode == "callback":
            return max(period, AUTO_CALLBACK_PERIOD_MS)
        return period

    def _choose_output_mode(self, pa: Any, index: int, name: str) -> None:
        """For "auto": the writer where the speaker's fill level is the truth, callback where a
        sound server reads ahead of it (see `output_probe`). A fraction of a second of silence,
        once per device, before any call."""
        period = SPEAKER_PROBE_RATE * self.cfg.output_period_ms // 1000
        try:
            stream = self._open_speaker(pa, index, SPEAKER_PROBE_RATE, period, callback=None)
            try:
                ahead = reads_ahead(
                    stream, SPEAKER_PROBE_RATE, period, channels=self.cfg.output_channels
                )
            finally:
                self._close_stream(stream, abort=True)
        except OSError as exc:  # busy or gone: callback for now, and the next probe tries again
            self._auto_mode = "callback"
            reason = f"the speaker could not be tried ({pa_reason(exc)}); callback until it can"
            event(
                "output_mode_chosen", logging.WARNING, output=name, mode="callback", reason=reason
            )
            return
        mode, reason = (
            ("callback", "a sound server reads ahead of the device's fill level")
            if ahead
            else ("writer", "the device's fill level is what it holds")
        )
        self._auto_mode, self._auto_device = mode, name
        event("output_mode_chosen", output=name, mode=mode, reason=reason)

    def _device(self, pa: Any, wanted: str, direction: str) -> DeviceInfo:
        return resolve_device(device_list(pa), wanted, direction)

    # ------------------------------------------------------------ call lifetime

    @property
    def reopening(self) -> bool:
        return self._reopening

    def start_call(self, playback_rate: int) -> None:
        """Open the microphone and make sure the speaker runs at the server's rate."""
        if self._reopening:  # the last call's reopen still holds the devices: not on the loop
            raise AudioDeviceError(
                "the microphone and speaker are still being reopened after the last call's "
                "failure; the app tries again in a moment"
            )
        self._failure = None
        self._frames.clear()
        self._captured.clear()
        self.counters = collections.Counter()  # figures are per call
        self._pauses.reset()
        self._grace = DeviceGrace(effective_grace_s(self.cfg.device_grace_s))
        self._speaker_unheard_s = self._speaker_down_at = None
        self._mic_gone = False
        self._reopen_failed = False
        self._call_rate = playback_rate
        self._call_gen += 1
        self._jitter = JitterBuffer(
            playback_rate,
            prebuffer_ms=self.cfg.prebuffer_ms,
            max_ms=self.cfg.jitter_max_ms,
            adaptive=self.output_mode == "writer",
            device_ms=max(self.cfg.device_target_ms, 2 * self.output_period_ms),
            margin_ms=self.output_period_ms,
            lateness=self._lateness,  # the link's lateness as the last call learnt it
        )
        self._lateness = self._jitter.lateness
        speaker = self._speaker
        if speaker is not None:
            self._speaker_base = (speaker, speaker.underflows, speaker.kicks)
        self._start_echo()
        with self._lock:
            self._cancel_idle_close()
            self._ensure_output(playback_rate)
            if self._speaker is not None:  # as the last call left it, or learnt before that
                self._jitter.device = self._speaker.target_frames * SAMPLE_BYTES
            self._open_input()
            self._in_call = True
            self._log_opened()
        self._arm_watchdog()

    def _start_echo(self) -> None:
        """Reset the echo stage for a call (made now if the probe has not made it yet)."""
        if self._echo is None:
            self._make_echo()
        if self._echo is not None:
            self._echo.reset()

    def _make_echo(self) -> None:
        """Make the echo stage once; a missing engine degrades, not fails. The probe makes it at
        start, on its worker thread: numpy's import and the engine took 109 ms of the first
        press on this x86 machine (several times that on a Pi Zero), with the loop held."""
        with self._echo_lock:
            if self._echo is not None or self._closed:
                return
            duck = self.cfg.mute_mic_while_playing
            if self._echo_wanted == "off" and not duck:
                return  # nothing stands between microphone and uplink: no stage, no numpy
            from .echo import EchoStage, EchoUnavailable  # numpy and an engine: only when used

            try:
                self._echo = EchoStage(
                    self._echo_wanted,
                    self.cfg.capture_rate,
                    duck=duck,
                    max_delay_ms=self.cfg.echo_max_delay_ms,
                )
                freeze_what_lasts()  # made once, kept for the process: out of the collector's way
            except EchoUnavailable as exc:
                event(
                    "echo_unavailable", logging.WARNING, wanted=self._echo_wanted, detail=str(exc)
                )
                self._echo_wanted = "off"  # say it once, not once per call
                self._echo = EchoStage("off", self.cfg.capture_rate, duck=duck) if duck else None

    def _log_opened(self) -> None:
        """What PortAudio really opened: the device's share of the round trip, for the record."""
        figures: dict[str, object] = {
            "echo_engine": self._echo.engine_name if self._echo else "off",
            "ducking": self.cfg.mute_mic_while_playing,
            "output_mode": self.output_mode,
            "output_period_ms": self.output_period_ms,
        }
        for name, stream, getter in (
            ("input_latency_ms", self._input, "get_input_latency"),
            ("output_latency_ms", self._output, "get_output_latency"),
        ):
            with contextlib.suppress(OSError, AttributeError, TypeError):
                figures[name] = round(float(getattr(stream, getter)()) * 1000, 1)
        event("audio_opened", **figures)

    def call_ending(self) -> None:
        """The call is being ended: the agent's audio stops now, and the playout running dry is
        the end of the stream, not an underrun."""
        jitter = self._jitter
        if jitter is not None:
            jitter.end_of_stream()

    def play_out(self) -> float:
        """The service ended the call: the agent's audio already here (its goodbye, arrived
        faster than real time) plays out. Seconds until it has; `stop_call` after that."""
        jitter = self._jitter
        if jitter is None:
            return 0.0
        jitter.end_of_stream()
        held_ms = self._speaker.held_ms() if self._speaker is not None else 0.0
        return (jitter.buffered_ms + held_ms) / 1000

    def stop_call(self) -> None:
        """Close the microphone and drop unplayed agent audio; the speaker lingers for earcons."""
        self._in_call = False
        self._mic_gone = False
        self._call_gen += 1
        self._disarm_watchdog()
        if not self._reopening:
            with self._lock:
                stream, self._input = self._input, None
                self._close_stream(stream, abort=True)
        # else: the reopen worker holds the lock, perhaps for seconds behind a stalled device;
        # waiting for it here would freeze the loop. It sees the call's generation has moved on
        # and closes the microphone itself (see `_reopen`).
        jitter, self._jitter = self._jitter, None
        if jitter is not None:
            self._fold_counters(jitter)
            jitter.flush()
        self._frames.clear()
        self._captured.clear()
        self._wake_reader()
        self._schedule_idle_close()

    def _open_input(self) -> None:
        import pyaudio

        pa = self._ensure_pa()
        index = self._device(pa, self.cfg.input_device, "input").index
        frames = self.cfg.capture_rate * min(self.cfg.capture_period_ms, self.cfg.frame_ms) // 1000
        self._capture = bytearray()
        try:
            self._input = pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.cfg.capture_rate,
                input=True,
                input_device_index=index,
                frames_per_buffer=frames,
                stream_callback=self._capture_callback,
            )
        except OSError as exc:
            raise AudioDeviceError(
                f"cannot open the microphone ({pa_reason(exc)}); "
                + open_hint(exc, "microphone", self.cfg.capture_rate)
            ) from exc
        self._last_input_cb = time.monotonic()

    def _open_speaker(
        self, pa: Any, index: int, rate: int, period_frames: int, callback: Any
    ) -> Any:
        """The speaker stream as every use opens it: 16-bit, the configured channels; blocking
        when `callback` is None."""
        import pyaudio

        return pa.open(
            format=pyaudio.paInt16,
            channels=self.cfg.output_channels,
            rate=rate,
            output=True,
            output_device_index=index,
            frames_per_buffer=period_frames,
            stream_callback=callback,
        )

    def _ensure_output(self, rate: int) -> None:
        if self._output is not None and self._output_rate == rate and self._output_running():
            return
        # Without draining: the speaker here has failed or stopped (a drain on a stalled device
        # waits about 20 s, on the loop when an earcon or a call reopens it), or takes a new rate.
        self._close_output(abort=True)
        pa = self._ensure_pa()
        chosen = self._device(pa, self.cfg.output_device, "output")
        index, self._output_name = chosen.index, chosen.name
        writer = self.output_mode == "writer"
        try:
            self._output = self._open_speaker(
                pa,
                index,
                rate,
                rate * self.output_period_ms // 1000,
                callback=None if writer else self._playback_callback,
            )
        except OSError as exc:
            raise AudioDeviceError(
                f"cannot open the speaker at {rate} Hz ({pa_reason(exc)}); "
                + open_hint(exc, "speaker", rate)
            ) from exc
        self._output_rate = rate
        self._last_output_cb = time.monotonic()
        if writer:
            self._speaker = Speaker(
                self._output,
                rate,
                self.output_period_ms,
                self.cfg.device_target_ms,
                channels=self.cfg.output_channels,
                render=self._take,
                on_played=self._played,
                stream_time=time.monotonic,  # the clock the capture stamps are put on
                on_stall=self._speaker_stalled,
                on_target=self._device_target_changed,
                on_dry=self._speaker_ran_dry,
                run_starts=self._playout_starts,
                learnt=self._learnt_for(self._output_name),
            )
            try:
                self._speaker.start()
            except OSError as exc:  # opened, but its first look gives an error code: failing
                self._close_output(abort=True)
                raise AudioDeviceError(
                    f"the speaker opened but does not work ({pa_reason(exc)}); is it connected?"
                ) from exc

    def _learnt_for(self, name: str) -> Learnt | None:
        """What the last writer learnt, if it wrote to this speaker (another card starts lean)."""
        if self._device_learnt is None or self._device_learnt[0] != name:
            return None
        return self._device_learnt[1]

    def _output_running(self) -> bool:
        if self._speaker is not None:
            return self._speaker.running
        return _active(self._output)

    def _close_output(self, abort: bool = False) -> None:
        """Stop the writer (if any), then the stream; safe to call twice. A writer still inside
        PortAudio when its wait is over closes the stream itself as it leaves (see `speaker`)."""
        speaker, self._speaker = self._speaker, None
        stream, self._output = self._output, None
        if speaker is not None:
            waits_s = LOOP_STOP_WAIT_S if self._on_loop() else STOP_WAIT_S
            stopped = speaker.stop(waits_s)
            self._device_learnt = (self._output_name, speaker.learnt())
            self.counters["output_underflows"] += self._this_calls(speaker)[0]
            pa = self._pa
            if not stopped and speaker.leave_to_writer(
                functools.partial(self._writer_left, stream, pa)
            ):
                self._writers_inside.append(pa)
                event(
                    "speaker_slow_to_stop",
                    logging.WARNING,
                    waited_s=waits_s,
                    action="the writer closes the speaker when its write returns",
                )
                # (this may run on a reopen worker: the timer is set from the loop, which is
                # gone only once the app has stopped)
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(
                        self.loop.call_later, REOPEN_WEDGED_S, self._writer_wedged, speaker
                    )
                return
        self._close_stream(stream, abort)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:  # a worker thread
            return False

    def _writer_left(self, stream: Any, pa: Any) -> None:
        """Writer thread, after a stop that timed out: close the stream it was inside, and its
        PortAudio instance too when the engine has moved on to a new one."""
        with self._lock:
            self._close_stream(stream, abort=True)
            self._writers_inside.remove(pa)
            if pa is not None and pa is not self._pa and pa not in self._writers_inside:
                pa.terminate()

    def _drop_pa(self) -> None:
        """Forget PortAudio (only a new instance sees devices that came back). Terminated now,
        unless a writer is still inside one of its streams: that writer terminates it."""
        pa, self._pa = self._pa, None
        if pa is not None and pa not in self._writers_inside:
            pa.terminate()

    def _close_stream(self, stream: Any, abort: bool = False) -> None:
        """`abort` closes without draining: stopping a stream on a stalled device (a suspended
        sound server) waits about 20 s for audio that never moves, where closing takes ms."""
        if stream is None:
            return
        if not abort:
            with contextlib.suppress(OSError):
                stream.stop_stream()
        with contextlib.suppress(OSError):
            stream.close()

    # ------------------------------------------------------------ capture

    def _capture_callback(
        self, in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[None, int]:
        """PortAudio thread: hand the frame and its ADC time to the loop and return at once."""
        import pyaudio

        self._last_input_cb = time.monotonic()
        if status & pyaudio.paInputOverflow:
            self.counters["input_overflows"] += 1
        if not in_data:
            return None, pyaudio.paContinue
        if not self._capture:
            self._capture_t0 = _on_pa_clock(time_info, "input_buffer_adc_time")
        self._capture += in_data
        if len(self._capture) < self.frame_bytes:
            return None, pyaudio.paContinue
        frame = bytes(self._capture[: self.frame_bytes])
        del self._capture[: self.frame_bytes]
        adc_time = self._capture_t0
        self._capture_t0 += self.cfg.frame_ms / 1000  # where the leftover, if any, began
        self._captured.append((frame, adc_time))
        if self._drain_pending:
            return None, pyaudio.paContinue  # the loop has yet to take the earlier ones
        self._drain_pending = True
        try:
            self.loop.call_soon_threadsafe(self._drain_captured)
        except RuntimeError:  # the loop is closing
            return None, pyaudio.paComplete
        return None, pyaudio.paContinue

    def _drain_captured(self) -> None:
        """Loop: the frames the input thread queued, the newest CAPTURE_BACKLOG_FRAMES of them.

        The flag drops first, so a frame queued while we work wakes the loop again, and it waits
        for that turn: the other callbacks and tasks come first."""
        self._drain_pending = False
        captured = self._captured
        shed = len(captured) - CAPTURE_BACKLOG_FRAMES
        for _ in range(max(0, shed)):
            captured.popleft()
        if shed > 0 and self._in_call:
            self.counters["frames_shed"] += shed
        for _ in range(len(captured)):
            frame, adc_time = captured.popleft()
            self._deliver(frame, adc_time)

    def _deliver(self, frame: bytes, adc_time: float = 0.0) -> None:
        if not self._in_call:
            return
        if not self._reopening:  # (a frame still in flight from a stream being replaced is not)
            self._heard_at = time.monotonic()
            self._mic_gone = False  # real frames again: the silence stops
        if self._echo is not None:
            frame = self._echo.process(frame, adc_time)
        if len(self._frames) >= CAPTURE_QUEUE_FRAMES:
            self._frames.popleft()  # the uplink is stuck; keep the newest speech
            self.counters["frames_dropped"] += 1
        self._frames.append(frame)
        self.counters["frames_captured"] += 1
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter, self._frame_ready = self._frame_ready, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frame(self) -> bytes:
        """The next microphone frame (frame_ms of 16 kHz s16le mono); while the microphone is
        gone in a hiccup, a frame of silence every frame_ms on the loop's clock."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._frames:
                return self._frames.popleft()
            if not self._in_call:
                raise AudioDeviceError("the microphone is closed")
            wait = self._silence.wait_s(self.loop.time()) if self._mic_gone else None
            if wait == 0.0:
                self._silence.took(self.loop.time())
                self.counters["silence_frames"] += 1
                return bytes(self.frame_bytes)
            self._frame_ready = self.loop.create_future()
            timer = None if wait is None else self.loop.call_later(wait, self._wake_reader)
            try:
                await self._frame_ready
            finally:
                if timer is not None:
                    timer.cancel()

    # ------------------------------------------------------------ playback

    def _playback_callback(
        self, _in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[bytes, int]:
        """PortAudio thread: exactly frame_count frames, agent audio mixed with any earcon; the
        echo stage gets a copy of what the device was handed, stamped with its DAC time."""
        import pyaudio

        self._last_output_cb = time.monotonic()
        underflow = bool(status & pyaudio.paOutputUnderflow)
        if underflow:
            self.counters["output_underflows"] += 1
        out = self._render(frame_count * SAMPLE_BYTES)
        echo = self._echo
        if echo is not None and self._in_call:
            dac_time = _on_pa_clock(time_info, "output_buffer_dac_time")
            echo.far_end(out, self._output_rate, dac_time, after_gap=underflow)
        return widen(out, self.cfg.output_channels), pyaudio.paContinue

    def _take(self, max_bytes: int, held_bytes: int) -> bytes:
        """Writer thread: what to hand the device next (b"" for nothing), earcons mixed in."""
        jitter = self._jitter
        speech = b""
        if jitter is not None:
            underruns = jitter.underruns
            speech = jitter.take(max_bytes, held_bytes)
            if jitter.underruns != underruns:
                self._note_playout("playout_underrun", jitter, held_bytes)
        if not self._earcon:
            return speech
        with self._earcon_lock:
            size = max(len(speech), min(max_bytes, len(self._earcon)))
            tone = bytes(self._earcon[:size])
            del self._earcon[:size]
            if self._earcon_new:
                self._earcon_new = False
                self._earcons_begun += 1
        tone += bytes(size - len(tone))
        if not any(speech):
            return tone
        return mix(speech + bytes(size - len(speech)), tone)

    def _device_target_changed(self, frames: int) -> None:
        """Writer thread: the device keeps more (or less) audio now; the playout margin counts
        it."""
        jitter = self._jitter
        if jitter is not None:
            jitter.device = frames * SAMPLE_BYTES
        self.counters["device_target_changes"] += 1

    def _playout_starts(self) -> int:
        """Writer thread: how many runs of audio have begun: each time the call's playout
        buffer began playing, and each earcon (a device quiet before one has not run dry)."""
        jitter = self._jitter
        return self._earcons_begun + (jitter.starts if jitter is not None else 0)

    def _speaker_ran_dry(self, spell: DrySpell) -> None:
        """Writer thread: the device played all it had mid-stream (a gap the person hears). Said
        with its cause, so an owner (and the bench) can tell a busy machine from a late network,
        with the device's target when it ran dry and how long it had been empty when the writer
        looked, had it played its audio in real time (for "the writer woke late", well above 0:
        the writer was held up that long; for "nothing to play in time", how late the audio came
        too; below minus a period: the device, or the sound server behind it, took its audio
        faster than it plays), and where a late writer's time went: its nap overran
        (`nap_over_ms`: the scheduler, or another thread holding the interpreter), its look at the
        fill or its write before it was slow (`look_ms`, `write_ms`: behind a sound server, its
        client library's lock, or a wait for room)."""
        jitter = self._jitter
        if jitter is not None:
            cause = "the writer woke late" if spell.writer_late else "nothing to play in time"
            self._note_playout(
                "speaker_ran_dry",
                jitter,
                0,
                cause=cause,
                device_target_ms=round(spell.target_ms),
                empty_for_ms=round(spell.empty_ms, 1),
                nap_over_ms=round(spell.nap_over_ms, 1),
                look_ms=round(spell.look_ms, 1),
                write_ms=round(spell.write_ms, 1),
            )

    def _speaker_stalled(self, seconds: float) -> None:
        """Writer thread: the device took nothing for `seconds`; drop what piled up meanwhile."""
        self.counters["speaker_stalls"] += 1
        jitter = self._jitter
        if jitter is not None:
            self._note_playout("speaker_stalled", jitter, 0, stalled_ms=round(seconds * 1000))
            jitter.drop_stale(seconds)

    def _note_playout(
        self, name: str, jitter: JitterBuffer, held_bytes: int, **more: float | str
    ) -> None:
        """Writer thread: one event line about the playout, written by the loop (a file write
        here could stall the speaker), and at most PLAYOUT_NOTES_PER_CALL of them a call."""
        if self.counters["playout_notes"] >= PLAYOUT_NOTES_PER_CALL:
            return
        self.counters["playout_notes"] += 1
        fields = {
            "buffered_ms": round(jitter.buffered_ms, 1),
            "device_held_ms": round(jitter.ms(held_bytes), 1),
            "lateness_target_ms": jitter.lateness.target_ms,
            "margin_ms": round(jitter.ms(jitter.margin), 1),
            "underruns": jitter.underruns,
            **more,
        }
        with contextlib.suppress(RuntimeError):  # the loop closed while the speaker stopped
            self.loop.call_soon_threadsafe(functools.partial(event, name, logging.INFO, **fields))

    def _played(self, pcm: bytes, dac_time: float, after_gap: bool) -> None:
        """Writer thread: the echo canceller's reference is exactly what reached the device."""
        echo = self._echo
        if echo is not None and self._in_call:
            echo.far_end(pcm, self._output_rate, dac_time, after_gap=after_gap)

    def _render(self, nbytes: int) -> bytes:
        """The next `nbytes` for the speaker: agent audio, an earcon, both, or silence."""
        jitter = self._jitter
        speech = jitter.read(nbytes) if jitter is not None else None
        if not self._earcon:
            return speech or bytes(nbytes)
        with self._earcon_lock:
            tone = bytes(self._earcon[:nbytes])
            del self._earcon[:nbytes]
        tone += bytes(nbytes - len(tone))
        if speech is None or not any(speech):
            return tone
        return mix(speech, tone)

    def play(self, pcm: bytes) -> None:
        """Agent audio from the link (at the rate start_call was given)."""
        if self._jitter is not None:
            self._jitter.write(pcm)
            if self._speaker is not None:
                self._speaker.notify()

    def play_earcon(self, pcm: bytes, rate: int) -> None:
        """Play a short tone now, in a call or not. Opening the speaker when idle takes a few ms.
        While a reopen worker holds the devices (perhaps for seconds behind a stalled one), the
        tone waits for the speaker it opens; while the device retry's rescan holds them, the tone
        is skipped and logged (no speaker comes of it). Either way the loop does not wait for the
        worker: the button and the LED run on it."""
        try:
            if self._reopening:  # the speaker it opens plays the tone
                pcm = resample(pcm, rate, self._output_rate or rate)
            elif not self._lock.acquire(timeout=EARCON_LOCK_WAIT_S):
                # the device retry's rescan: no speaker comes of it, so the tone is not kept
                raise AudioDeviceError("the sound devices are being looked for again")
            else:
                try:
                    if self._output is None or not self._output_running():
                        self._ensure_output(self._output_rate or rate)
                    pcm = resample(pcm, rate, self._output_rate)
                finally:
                    self._lock.release()
            with self._earcon_lock:
                self._earcon[:] = pcm  # a new earcon replaces one still playing
                self._earcon_new = True
            speaker = self._speaker  # (once: a reopen may replace it meanwhile)
            if speaker is not None:
                speaker.notify()
        except AudioDeviceError as exc:
            event("earcon_unplayable", logging.WARNING, detail=str(exc))
            return
        if not self._in_call:
            self._schedule_idle_close(len(pcm) / SAMPLE_BYTES / (self._output_rate or rate))

    def _drop_earcon_if_unplayed(self) -> None:
        """A speaker that took none of its tone since the idle close was due is frozen: the
        tone is dropped so the speaker closes. Kept, it put the close off for good, its writer
        looked at the dead device twenty times a second, and the device retry never took a
        fresh PortAudio (the card replugged under a new number stayed unseen)."""
        quiet_s = time.monotonic() - self._output_alive_at()
        if quiet_s < IDLE_OUTPUT_CLOSE_S:
            return
        with self._earcon_lock:
            self._earcon.clear()
        event(
            "earcon_unplayable",
            logging.WARNING,
            detail=f"the speaker took none of the tone for {quiet_s:.0f} s; it is closed",
        )

    def _schedule_idle_close(self, after_s: float = 0.0) -> None:
        self._cancel_idle_close()
        if self._output is not None:
            self._idle_close = self.loop.call_later(after_s + IDLE_OUTPUT_CLOSE_S, self._close_idle)

    def _cancel_idle_close(self) -> None:
        if self._idle_close is not None:
            self._idle_close.cancel()
            self._idle_close = None

    def _close_idle(self) -> None:
        self._idle_close = None
        if self._earcon and not (self._in_call or self._reopening):
            self._drop_earcon_if_unplayed()
        if self._in_call or self._earcon or self._reopening:
            self._schedule_idle_close()
            return
        with self._lock:
            # Without draining: it has played its last earcon seconds ago, and draining a
            # speaker that stalled meanwhile held the loop (the button, the LED) for seconds.
            self._close_output(abort=True)
        if self._choose_when_free:
            # The probe found the speaker open (an earcon at start) and could not choose the
            # output mode: it does now, while the speaker is free; else every call of the
            # uptime stayed in callback mode. (Once: a speaker busy with another program is
            # the next probe's, as before.)
            self._choose_when_free = False
            self.loop.run_in_executor(None, self._choose_while_free)

    def _choose_while_free(self) -> None:
        """Worker thread: the probe once more, for the output mode. Under the lock throughout,
        so a close meanwhile waits and then terminates what it made (a press meanwhile waits
        too: once, for a fraction of a second). A device gone meanwhile is the device retry's
        to report; anything else is logged, not lost in an unread future."""
        with self._lock:
            if self._closed or self._output is not None:
                return
            try:
                self.probe()
            except (AudioDeviceError, OSError):
                pass
            except Exception as exc:  # a fault of ours, on a thread nobody waits for
                event("output_mode_probe_failed", logging.ERROR, detail=repr(exc)[:300])

    # ------------------------------------------------------------ watchdog

    def _arm_watchdog(self) -> None:
        self._disarm_watchdog()
        self._watchdog = self.loop.call_later(WATCHDOG_PERIOD_S, self._check_streams)

    def _disarm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_streams(self) -> None:
        """A stream whose callbacks stopped, or that PortAudio stopped, means a device in
        trouble: reopen it and go on with the call; only one still gone after the grace is
        reported as lost (the session then ends the call)."""
        self._watchdog = None
        if not self._in_call:
            return
        grace = self._grace
        if not self._reopening:
            found = self._stream_problem(time.monotonic())
            if found is not None and not grace.active:
                if grace.grace_s <= 0:
                    self._fail(found[0])
                    return
                self._begin_hiccup(*found)
            elif found is None and grace.active and self._heard_at > self._reopened_at:
                self._recovered()
            if found is not None and not grace.expired() and grace.should_try():
                self._start_reopen()
        if grace.expired():
            self._fail(f"{grace.detail}; still gone after {grace.grace_s:g} s")
            return
        self._arm_watchdog()

    def _stream_problem(self, now: float) -> tuple[str, float] | None:
        """What is wrong, and when that device last showed life; None when both run."""
        if self._microphone_in_trouble(now):
            return (
                "the microphone stopped delivering audio (unplugged or failed)",
                self._last_input_cb,
            )
        if self._speaker_in_trouble(now):
            return "the speaker stopped playing (unplugged or failed)", self._output_alive_at()
        return None

    def _microphone_in_trouble(self, now: float) -> bool:
        return (
            self._input is None
            or not _active(self._input)
            or now - self._last_input_cb > STALL_AFTER_S
        )

    def _speaker_in_trouble(self, now: float) -> bool:
        return (
            self._output is None
            or not self._output_running()
            or now - self._output_alive_at() > STALL_AFTER_S
        )

    def _begin_hiccup(self, problem: str, since: float) -> None:
        self._grace.begin(problem, since)
        event(
            "audio_device_hiccup",
            logging.WARNING,
            detail=problem,
            grace_s=self._grace.grace_s,
            action="reopening the devices; the call goes on",
        )

    def _start_reopen(self) -> None:
        """Reopen on a worker thread (a fresh PortAudio takes 50-500 ms); silence meanwhile.

        Only the side in trouble, on the running PortAudio, unless both are or a card came or
        went: a USB microphone pulled out used to close the working speaker at every try, once a
        second for the whole grace, and the agent's voice broke up while the person waited."""
        self._grace.tried()
        now = time.monotonic()
        microphone, speaker = self._microphone_in_trouble(now), self._speaker_in_trouble(now)
        # Both in trouble: a rescan closes nothing that works (and a container's /dev/snd,
        # made once as it starts, may never show a card that came back).
        if (microphone and speaker) or self._needs_rescan():
            sides = Sides(microphone=True, speaker=True, rescan=True)
            self.counters["device_rescans"] += 1
        else:
            sides = Sides(microphone, speaker)
        if sides.microphone and not self._mic_gone:  # (the speaker alone: the person is heard)
            self._silence.start(self.loop.time())
            self._mic_gone = True
            self._wake_reader()
        self._reopening = True
        gen = self._call_gen
        self._reopen_overdue = self.loop.call_later(REOPEN_WEDGED_S, self._reopen_wedged)
        done = self.loop.run_in_executor(None, self._reopen, gen, self._input, sides)
        done.add_done_callback(lambda future: self._reopen_done(future, gen, sides))

    def _reopen_wedged(self) -> None:
        """The reopen worker has been inside PortAudio for REOPEN_WEDGED_S: the devices stay
        unusable (every call says they are still being reopened) until the process restarts."""
        if self._reopening:
            self._wedged("a sound device's reopen", self._reopen_thread)

    def _writer_wedged(self, speaker: Speaker) -> None:
        """A stopped writer still inside a write REOPEN_WEDGED_S later holds its PortAudio
        instance, and PortAudio's set-up is process-wide: no rescan sees a replugged card."""
        if not (speaker.has_left or self._closed):
            self._wedged("the speaker's last write", speaker.thread_id)

    def _wedged(self, what: str, thread_id: int | None) -> None:
        event(
            "audio_device_wedged",
            logging.CRITICAL,
            stuck=what,
            stuck_s=REOPEN_WEDGED_S,
            where=stack_of(thread_id),
            action="the sound driver never returned: restarting the app for a fresh PortAudio"
            if self.on_wedged
            else "restart the app (unplug and replug a USB sound device first)",
        )
        if self.on_wedged is not None:
            self.on_wedged(f"{what} stuck in the sound driver for {REOPEN_WEDGED_S:.0f} s")

    def _reopen(self, gen: int, microphone: Any, sides: Sides) -> str | None:
        """Worker thread: close the sides in trouble without draining (and, for a rescan, take
        a fresh PortAudio), open them again. None, or why it could not."""
        self._reopen_thread = threading.get_ident()
        with self._lock:
            stale = self._input if self._input is microphone else None
            if gen != self._call_gen:  # the call ended meanwhile: its microphone is ours to close
                self._close_stream(stale, abort=True)
                if stale is not None:
                    self._input = None
                return None
            down_at = self._speaker_down_at  # (still set after a reopen that failed)
            if sides.speaker and down_at is None:
                down_at = self._speaker_down_at = min(self._output_alive_at(), time.monotonic())
            if sides.microphone:
                self._close_stream(self._input, abort=True)
                self._input = None
            if sides.speaker:
                self._close_output(abort=True)
            if sides.rescan:
                self._drop_pa()
            self._reopened_at = time.monotonic()
            # Each side on its own: a speaker that cannot be opened (a USB DAC pulled out) left
            # the working microphone closed for the whole grace, the person unheard.
            failed: list[str] = []
            if not sides.speaker or down_at is None:  # it played on: no audio waited for it
                self._speaker_unheard_s = self._speaker_unheard_s or 0.0
            else:
                try:
                    self._ensure_output(self._call_rate)
                    unheard = time.monotonic() - down_at
                    self._speaker_unheard_s = (self._speaker_unheard_s or 0.0) + unheard
                    self._speaker_down_at = None
                except (AudioDeviceError, OSError) as exc:
                    failed.append(str(exc))
            if sides.microphone:
                try:
                    self._open_input()
                except (AudioDeviceError, OSError) as exc:
                    failed.append(str(exc))
            if gen != self._call_gen:  # it ended while we opened: not its microphone any more
                self._close_stream(self._input, abort=True)
                self._input = None
        return "; ".join(failed) or None

    def _reopen_done(self, future: asyncio.Future[str | None], gen: int, sides: Sides) -> None:
        self._reopening = False
        if self._reopen_overdue is not None:
            self._reopen_overdue.cancel()
            self._reopen_overdue = None
        if gen != self._call_gen or future.cancelled():
            if not self._in_call:  # it ended after the worker's last look: close what it opened
                with self._lock:  # (free now: the worker is done)
                    stream, self._input = self._input, None
                    self._close_stream(stream, abort=True)
                # and the speaker, as after any call (the call's end found none open to time)
                self._schedule_idle_close()
            return
        error = future.exception()
        reason = str(error) if error is not None else future.result()
        self._reopen_failed = bool(reason)
        if reason:
            self.counters["device_reopen_failures"] += 1
            event(
                "audio_device_reopen_failed", detail=reason, gone_s=round(self._grace.gone_s(), 1)
            )
            return
        if self._echo is not None:
            # New streams, new sample counts. The same devices (no rescan): the same room and
            # delays, which the canceller keeps; a fresh PortAudio may have found another card.
            self._echo.realign(keep_path=not sides.rescan)

    def _recovered(self) -> None:
        gap = self._grace.end()
        # What arrived while the speaker played nothing is late: not a new delay. Only the
        # speaker's part of the gap: a microphone that stopped beside a speaker that played on
        # cost the agent's audio only the reopen (dropping the whole gap cut up to two seconds
        # of the agent's speech, mid-word, from a server sending ahead).
        unheard = gap if self._speaker_unheard_s is None else self._speaker_unheard_s
        self._speaker_unheard_s = self._speaker_down_at = None
        if self._jitter is not None:
            self._jitter.drop_stale(unheard)
        event(
            "audio_device_recovered",
            gap_ms=round(gap * 1000),
            speaker_gap_ms=round(unheard * 1000),
            hiccups=self._grace.hiccups,
            reopens=self._grace.reopens,
        )

    def _fail(self, problem: str) -> None:
        """The device is lost: close what is left and tell the session (it ends the call)."""
        self._failure = AudioDeviceError(problem)
        self.counters["device_failures"] += 1
        self._mic_gone = False
        self._call_gen += 1  # a reopen still running leaves the streams alone
        self._wake_reader()
        if not self._reopening:
            with self._lock:
                self._close_stream(self._input, abort=True)
                self._input = None
                self._close_output(abort=True)
        # else: the reopen worker holds the lock, perhaps for seconds inside a stalled device;
        # the loop does not wait for it. The call is over once the session hears of it, and
        # `_reopen_done` then closes what the worker opened.
        self.on_device_error(problem)

    def _output_alive_at(self) -> float:
        """When the speaker last showed life: its callback, or its writer's last turn."""
        if self._speaker is not None:
            return self._speaker.alive_at
        return self._last_output_cb

    # ------------------------------------------------------------ figures and shutdown

    def _this_calls(self, speaker: Speaker) -> tuple[int, int]:
        """The speaker's underflows and kicks since this call began."""
        base, underflows, kicks = self._speaker_base
        if base is not speaker:
            return speaker.underflows, speaker.kicks  # opened during the call
        return speaker.underflows - underflows, speaker.kicks - kicks

    @staticmethod
    def _jitter_counters(jitter: JitterBuffer) -> dict[str, int]:
        """The playback buffer's counters, the same ones whether it is folded in or still live."""
        return {
            "underruns": jitter.underruns,
            "overruns": jitter.overruns,
            "bytes_played": jitter.bytes_played,
            "trimmed_bytes": jitter.trimmed_bytes,
            "inserted_bytes": jitter.inserted_bytes,
            "stale_bytes": jitter.stale_bytes,
        }

    def _fold_counters(self, jitter: JitterBuffer) -> None:
        self.counters.update(self._jitter_counters(jitter))

    def stats(self) -> dict[str, int | float]:
        """Counters for the call summary event (never one log line per frame)."""
        figures: dict[str, int | float] = dict(self.counters)
        jitter = self._jitter
        if jitter is not None:
            for key, value in self._jitter_counters(jitter).items():
                figures[key] = figures.get(key, 0) + value
            figures["buffered_ms"] = round(jitter.buffered_ms, 1)
            figures["prebuffer_ms"] = round(jitter.prebuffer_ms, 1)
            figures["prebuffer_peak_ms"] = round(jitter.ms(jitter.prebuffer_peak), 1)
            # How late the link's audio came (its 95th percentile): the jitter this call met,
            # whether or not the buffer ran dry over it.
            figures["lateness_target_ms"] = jitter.lateness.target_ms
        if self._speaker is not None:
            underflows, kicks = self._this_calls(self._speaker)
            figures["output_underflows"] = figures.get("output_underflows", 0) + underflows
            figures["device_held_ms"] = round(self._speaker.held_ms(), 1)
            figures["device_kicks"] = kicks
            figures["device_target_ms"] = round(self._speaker.target_ms, 1)
        if jitter is not None and jitter.adaptive:
            figures["playout_target_ms"] = jitter.lateness.target_ms
        if self._echo is not None:
            figures.update({f"echo_{k}": v for k, v in self._echo.stats().items()})
        figures.update(self._grace.figures())
        figures["gc_pause_max_ms"] = round(self._pauses.longest_ms, 1)
        return figures

    def close(self) -> None:
        self._closed = True
        self._in_call = False
        self._call_gen += 1
        self._disarm_watchdog()
        self._cancel_idle_close()
        if self._reopen_overdue is not None:
            self._reopen_overdue.cancel()
        with self._lock:
            self._close_stream(self._input, abort=True)
            self._input = None
            # Without draining: on a stalled speaker a stop waits about 20 s, past the 10 s a
            # container gets to stop before it is killed (the log's last lines lost with it).
            self._close_output(abort=True)
            self._drop_pa()
        if self._echo is not None:
            self._echo.close()
            self._echo = None


def _on_pa_clock(time_info: Any, key: str) -> float:
    """A PortAudio ADC or DAC time, on the monotonic clock (the speaker writer's too).

    These are smooth (each callback's stamp one period after the last), where a clock read in
    the callback would carry the callback's own scheduling jitter into the echo canceller's
    alignment. PortAudio passes on the clock ALSA stamped the stream's status with, and that
    depends on the device: a card, and dmix or dsnoop over it (the Pi), stamp with the monotonic
    clock; the pulse plugin (a desktop, the benches) with the wall clock. The two are decades
    apart, so a stamp's clock is the nearer one; a host that leaves the stamps 0 gets the
    monotonic clock now, and the delay estimator finds the rest.
    """
    try:
        stamp = float(time_info.get(key) or 0.0) or float(time_info.get("current_time") or 0.0)
    except (AttributeError, TypeError, ValueError):
        stamp = 0.0
    return on_monotonic_clock(stamp) if stamp else time.monotonic()


def on_monotonic_clock(stamp: float) -> float:
    """`stamp` (a monotonic or a wall-clock time) as a monotonic time."""
    monotonic = time.monotonic()
    offset = time.time() - monotonic
    return stamp if abs(stamp - monotonic) < abs(stamp - monotonic - offset) else stamp - offset


def _active(stream: Any) -> bool:
    try:
        return bool(stream.is_active())
    except OSError:
        return False
