"""The speaker: a blocking PyAudio stream fed by one writer thread that keeps the device lean.

Why not a callback stream: in callback mode PortAudio's ALSA host fills the whole output buffer
with silence at start and refills everything that is free on each wake, so the device always holds
its whole buffer (PyAudio cannot lower `suggestedLatency`), and every sample of the agent waits
behind it. A blocking stream holds only what was written. This writer tops the device up to
`device_target_ms` and no further; the rest waits in the playout buffer, where the playout policy
(see `jitter`) can still decide about it. When there is nothing to play the writer writes nothing:
the device runs dry between a call's frames only if the network is late, which the policy then
learns from. If it runs dry although audio was waiting, the writer itself woke too late (a busy
machine): the device's target then grows by a period (up to MAX_DEVICE_MS) and shrinks again
after a calm spell, so the lean target is kept only where the machine can keep it.

The writer stamps each chunk with the time its first sample will reach the DAC (now plus what the
device still holds, on PortAudio's clock) and hands both to `on_played`: the echo canceller's
reference is what the speaker really played, when it played it.

Only the writer thread calls into the stream once it runs. PortAudio recovers an underrun inside
any call on a stream (a look at the fill level too), and ALSA's pulse plugin recovers by building
its stream anew, letting go of its lock while it waits for the old one to end: two threads doing
that at once free the same stream twice, and the process aborts. So other threads read the fill
the writer last saw, and a stream whose writer does not stop in time is closed by the writer
itself on its way out (`leave_to_writer`), never from under it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .pcm import widen

SAMPLE_BYTES = 2
STREAMING_GAP_S = 0.25  # writes closer than this are one stream: the device should not run dry
STALL_S = 0.1  # a device that takes nothing for longer than this (5-10 periods) has stalled
SETTLE_S = 0.2  # a sound server takes the first periods of a stream greedily: not underflows
MIN_SLEEP_S = 0.002  # the writer's shortest nap
STOP_WAIT_S = 2.0  # how long `stop` waits for the writer to leave PortAudio
IDLE_WAIT_S = 0.05  # with nothing playing, it looks again this often (the watchdog sees it turn)
KICK_AFTER_PERIODS = 3  # a device holding audio that has played none for this long is waiting
MAX_DEVICE_MS = 60  # a writer that keeps waking late earns the device up to this much audio
RELAX_AFTER_S = 10.0  # and gives a period of it back after this long without running dry,
MAX_RELAX_AFTER_S = 160.0  # twice as long after each leaner target that did not hold as long


@dataclass(frozen=True)
class Learnt:
    """What a writer learnt of this machine, for the next speaker on the same device: the target
    it had widened to and the calm a leaner one must earn. The output closes a few seconds after
    a call; a busy Pi otherwise began every call on the lean target again and ran dry again."""

    rate: int
    period_frames: int
    target_frames: int
    relax_after_s: float
    calm_s: float  # played this long since it last ran dry (what a relaxation waits for)
    since_relaxed_s: float | None  # since a period last went back, if one did since that


@dataclass(frozen=True)
class DrySpell:
    """A device that ran dry mid-stream, with what the writer knows of why (all in ms but the
    flag). `empty_ms`: how long the device had been empty when the writer looked, had it played
    what it was fed (or held at the last look) in real time (a device that takes a period at a
    time reads up to a period early; well below that, it took its audio faster than it plays, as
    a sound server reading ahead or catching up after a stall does). Where a late writer's time
    went: `nap_over_ms`, how much later than asked its last nap ended (the scheduler, or another
    thread holding the interpreter's lock); `look_ms`, how long its look at the device's fill
    took, and `write_ms`, how long its write before that took (behind a sound server, waits for
    the client library's lock or for room)."""

    writer_late: bool  # audio was waiting: the writer, not the network, was late
    target_ms: float  # what the writer kept in the device then
    empty_ms: float
    nap_over_ms: float
    look_ms: float
    write_ms: float


class Speaker:
    """One output stream and its writer thread. `render(max_bytes, held_bytes)` gives what to
    play next (b"" for nothing now); `on_played(pcm, dac_time, after_gap)` sees every chunk
    written, `after_gap` when the device held nothing before it (it ran dry, or had not begun):
    the chunk does not follow the last one, its stamp says where it goes. `on_dry(spell)` hears
    of each dry spell (a DrySpell)."""

    def __init__(
        self,
        stream: Any,
        rate: int,
        period_ms: int,
        device_target_ms: int,
        *,
        render: Callable[[int, int], bytes],
        on_played: Callable[[bytes, float, bool], None],
        stream_time: Callable[[], float],
        on_stall: Callable[[float], None] = lambda _seconds: None,
        on_target: Callable[[int], None] = lambda _frames: None,
        on_dry: Callable[[DrySpell], None] = lambda _spell: None,
        run_starts: Callable[[], int] = lambda: 0,
        channels: int = 1,
        learnt: Learnt | None = None,
    ) -> None:
        self.stream = stream
        self.channels = channels  # mono audio is written on each of the device's channels
        self.rate = rate
        self.period_frames = rate * period_ms // 1000
        # The device takes a period at a time: below two, it would run dry at every take.
        self.base_target_frames = max(rate * device_target_ms // 1000, 2 * self.period_frames)
        self.target_frames = self.base_target_frames
        self.max_target_frames = max(self.base_target_frames, rate * MAX_DEVICE_MS // 1000)
        self.on_target = on_target
        self.on_dry = on_dry
        self.run_starts = run_starts
        # The calm is counted on a clock that runs only while the device has audio: the seconds
        # a speaker idles after a call (the output closes a few seconds later) prove nothing of
        # a writer that keeps up. It goes on across speakers (Learnt).
        self._played_s = 0.0  # the clock: how long the device has had audio since this opened
        self._played_mark = time.monotonic()
        self._playing = False  # the device held audio at the writer's last look or write
        self._calm_since = 0.0  # on that clock
        self.relax_after_s = RELAX_AFTER_S
        self._relaxed_at: float | None = None  # when a period of a widened target last went back
        if learnt is not None and (learnt.rate, learnt.period_frames) == (rate, self.period_frames):
            self.target_frames = min(
                self.max_target_frames, max(self.base_target_frames, learnt.target_frames)
            )
            self.relax_after_s = learnt.relax_after_s
            self._calm_since = -learnt.calm_s  # short calls add up to a relaxation
            if learnt.since_relaxed_s is not None:
                self._relaxed_at = -learnt.since_relaxed_s
        self.render = render
        self.on_played = on_played
        self.stream_time = stream_time
        self.on_stall = on_stall
        self.stalls = 0
        self.kicks = 0  # times the device was filled to make a waiting sound server start again
        self._waited_for_audio = False  # the last turn found nothing to play
        self._nap_over = 0.0  # how much longer than asked the last nap took (s)
        self._write_took = 0.0  # how long the last write took (s)
        self._kicking = False
        self._prev_held = 0
        self._progress_at = time.monotonic()  # when the device was last seen taking audio
        self.capacity = 0
        self._last_write = 0.0
        self._fed_until = 0.0  # when what the device was fed runs out, played in real time
        self._stream_began = 0.0
        self._had_nothing_at = 0.0  # when the writer last had no audio to give the device
        self.underflows = 0
        self.failure: str | None = None
        self.held_frames = 0  # what the device held at the writer's last look
        self._exit_lock = threading.Lock()
        self._exited = False
        self._finish: Callable[[], None] | None = None  # run by the writer as it leaves
        self._stop = threading.Event()
        self._more = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)

    def start(self) -> None:
        self.capacity = int(self.stream.get_write_available())
        if self.capacity < 0:  # PortAudio's error code, as PyAudio passes it on: not working
            raise OSError(self.capacity, f"the speaker reports PortAudio error {self.capacity}")
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT_S) -> bool:
        """Ask the writer to stop and wait for it; False when it is still inside PortAudio (a
        write blocked on a stalled device): then the stream is not the caller's to close yet."""
        self._stop.set()
        self._more.set()
        if threading.current_thread() is self._thread:
            return True
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def leave_to_writer(self, finish: Callable[[], None]) -> bool:
        """Have the writer thread run `finish` (closing its stream) as it leaves, after a `stop`
        that timed out. False when it has left meanwhile: the caller runs `finish` itself."""
        with self._exit_lock:
            if self._exited:
                return False
            self._finish = finish
            return True

    @property
    def has_left(self) -> bool:
        """Whether the writer thread is out of PortAudio for good (run its last `finish`)."""
        with self._exit_lock:
            return self._exited

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    @property
    def alive_at(self) -> float:
        """For the watchdog: when the writer last saw the device empty or taking audio, or had
        nothing to give it (a sound server keeps a short tail unplayed until its prebuffer fills:
        no fault while no audio comes). A device that holds audio and takes none while the writer
        waits to give it more is no sign of life, however often the writer turns."""
        return max(self._progress_at, self._had_nothing_at)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.failure is None

    @property
    def target_ms(self) -> float:
        """What the writer keeps in the device now (ms)."""
        return self.target_frames / self.rate * 1000

    def learnt(self) -> Learnt:
        """For the next speaker on this device (see Learnt)."""
        now = self._played_at(time.monotonic())  # (read, not moved: the writer thread's clock)
        relaxed_at = self._relaxed_at
        return Learnt(
            self.rate,
            self.period_frames,
            self.target_frames,
            self.relax_after_s,
            calm_s=now - self._calm_since,
            since_relaxed_s=None if relaxed_at is None else now - relaxed_at,
        )

    def held_ms(self) -> float:
        """What the device held at the writer's last look (ms); for the figures. Read, not
        asked of the stream: the stream is the writer thread's alone (see the module's doc)."""
        return self.held_frames / self.rate * 1000

    def notify(self) -> None:
        """New audio (or an earcon) is waiting: wake the writer if it sleeps for want of data."""
        self._more.set()

    def _run(self) -> None:
        try:
            self._turns()
        finally:
            with self._exit_lock:
                self._exited = True
                finish = self._finish
            if finish is not None:
                finish()

    def _turns(self) -> None:
        try:
            while not self._stop.is_set():
                self._relax()
                nap_over, self._nap_over = self._nap_over, 0.0  # the nap that led to this turn
                asked = time.monotonic()
                free = self._free()
                looked_mono = time.monotonic()
                look = (looked_mono - asked, nap_over)
                looked_at = self.stream_time()  # `held` was true then: the chunk plays after it
                held = max(0, self.capacity - free)
                self.held_frames = held
                # What it holds now lasts at least that long: a device that held its audio
                # through a stall (or a kick) is not empty since the write before it.
                if held:
                    self._fed_until = max(self._fed_until, looked_mono + held / self.rate)
                self._playing = held > 0
                self._watch_progress(held)
                target = self._target(held)
                if target - held < self.period_frames or free < self.period_frames:
                    self._sleep(self._stop, self._nap(held, target))  # no room for a period yet
                    continue
                want = self.period_frames * SAMPLE_BYTES  # a whole period fits (above)
                self._more.clear()  # before asking, so audio that lands after it still wakes us
                starts = self.run_starts()
                chunk = self.render(want, held * SAMPLE_BYTES)
                if not chunk:
                    self._had_nothing_at = time.monotonic()  # (see alive_at)
                    self._waited_for_audio = True
                    # Nothing due: sleep until audio arrives, or the device is about to run dry
                    # (the playout buffer may be priming, and must see that moment).
                    until_dry = held / self.rate - MIN_SLEEP_S
                    self._sleep(self._more, until_dry if held else IDLE_WAIT_S)
                    continue
                self.on_played(chunk, looked_at + held / self.rate, held == 0)
                self._write(chunk, held, looked_mono, look, begins_run=self.run_starts() != starts)
                self._prev_held = held + len(chunk) // SAMPLE_BYTES
                self._playing = True
                # Asleep until the device should have room for the next period again (a little
                # before: the moment it takes its period is only known by looking).
                lead = self._prev_held - (target - self.period_frames) - self.period_frames // 8
                # (counted from the look: the render, the reference and the write took some)
                nap = lead / self.rate - (time.monotonic() - looked_mono)
                if nap > 0:
                    self._sleep(self._stop, nap)
        except OSError as exc:  # the device went away mid-write
            self.failure = str(exc.args[1] if len(exc.args) >= 2 else exc)

    def _sleep(self, event: threading.Event, seconds: float) -> None:
        """Nap until `event` or for `seconds`, noting how much longer than asked a nap that ran
        its course took (for a dry spell's account: the writer was held up, or looked late)."""
        seconds = max(0.0, seconds)
        began = time.monotonic()
        if not event.wait(seconds):
            self._nap_over = max(0.0, time.monotonic() - began - seconds)

    def _free(self) -> int:
        """The room in the device's buffer, in frames. PyAudio passes PortAudio's error code on
        as a negative count (-9999 for a USB speaker pulled out) instead of raising: no room, for
        now. A failed underrun recovery passes; a device that keeps failing takes nothing while
        the writer has audio for it, and the watchdog sees that (alive_at)."""
        return max(0, int(self.stream.get_write_available()))

    def _nap(self, held: int, target: int) -> float:
        """How long to wait, found with no room for a period: until there should be, if the
        device drains smoothly; a quarter period at most when that moment is near or past, since
        a device that takes a period at a time frees it all at once, a little later or sooner.
        Behind a sound server each look is a round trip to it: looking three times a period
        instead of about 1.4, the writer thread used 1.8 % of a core against 1.2 (one pair of
        calls behind PulseAudio)."""
        room = min(target - held, self.capacity - held)
        frames = self.period_frames - room  # until a period fits
        if frames > self.period_frames:  # well above the target (after a kick): most of the way
            frames -= self.period_frames // 4
        else:
            frames = min(frames, self.period_frames // 4)
        return min(max(frames / self.rate, MIN_SLEEP_S), 0.05)

    def _widen(self) -> None:
        """The device ran dry while the writer was away (the machine did not schedule it in
        time): keep a period more in the device from now on, up to MAX_DEVICE_MS. A leaner
        target that ran dry sooner than the calm that earned it was too lean for this machine:
        the next period goes back only after twice that calm (a relapse at every relaxation was
        a dry spell every ten seconds on a machine that cannot keep the lean target)."""
        now = self._played()
        if self._relaxed_at is not None and now - self._relaxed_at < self.relax_after_s:
            self.relax_after_s = min(MAX_RELAX_AFTER_S, 2 * self.relax_after_s)
        self._relaxed_at = None  # judged: more dry spells in the same busy burst double nothing
        self._calm_since = now
        wider = min(self.max_target_frames, self.target_frames + self.period_frames)
        if wider != self.target_frames:
            self.target_frames = wider
            self.on_target(wider)

    def _relax(self) -> None:
        """After `relax_after_s` without running dry, a period of the widened target goes back;
        after MAX_RELAX_AFTER_S at the lean target, the relapses learnt are forgotten."""
        now = self._played()
        calm = now - self._calm_since
        if self.target_frames > self.base_target_frames and calm > self.relax_after_s:
            leaner = self.target_frames - self.period_frames
            self.target_frames = max(self.base_target_frames, leaner)
            self._calm_since = self._relaxed_at = now
            self.on_target(self.target_frames)
        elif calm > MAX_RELAX_AFTER_S:  # the lean target held that long: the busy spell is over
            self.relax_after_s = RELAX_AFTER_S

    def _played_at(self, now: float) -> float:
        """The calm's clock (s) at monotonic `now`: on by the time since its last move if the
        device had audio then (a speaker idling with nothing to play stands it still)."""
        return self._played_s + (now - self._played_mark if self._playing else 0.0)

    def _played(self) -> float:
        """The calm's clock, moved to now (the writer thread's: each turn's state starts here)."""
        now = time.monotonic()
        self._played_s, self._played_mark = self._played_at(now), now
        return self._played_s

    def _target(self, held: int) -> int:
        """How much the device should hold: the lean target, or its whole buffer while it holds
        audio but plays none. A sound server that ran dry waits for its own prebuffer (the ALSA
        pulse plugin's is the stream's whole target length) before it plays again; topped up
        only to the lean target it would wait for ever while the call's audio piles up."""
        waiting = time.monotonic() - self._progress_at
        kicking = held > 0 and waiting > KICK_AFTER_PERIODS * self.period_frames / self.rate
        if kicking and not self._kicking:
            self.kicks += 1
        self._kicking = kicking
        return self.capacity if kicking else self.target_frames

    def _watch_progress(self, held: int) -> None:
        """A device that holds audio but takes none for a while has stalled (a sound server
        that stalls, a USB hiccup); say how long once it moves again, so the playout buffer can
        drop what piled up meanwhile instead of keeping it as delay for the rest of the call."""
        now = time.monotonic()
        if held < self._prev_held or held == 0:
            stalled = now - self._progress_at
            if stalled > STALL_S:
                self.stalls += 1
                self.on_stall(stalled)
            self._progress_at = now
        self._prev_held = held

    def _write(
        self,
        chunk: bytes,
        held: int,
        looked_mono: float,
        look: tuple[float, float] = (0.0, 0.0),
        begins_run: bool = False,
    ) -> None:
        """Write. A device found empty although it was fed a moment ago ran dry: an underflow.
        Not when `chunk` begins a run of the source's audio (`run_starts` moved) on a quiet
        device: it went quiet because the source was priming (the call's first audio after the
        live earcon; audio after an underrun the source counted itself), not for want of it;
        like any new stream, its first SETTLE_S are not judged either. `look`: how long the look
        at the fill took, and how much the nap before it overran (s), for the DrySpell.

        (PyAudio can raise on PortAudio's own underflow flag, but then closes the stream.)
        """
        now = time.monotonic()
        dry: DrySpell | None = None
        if now - self._last_write >= STREAMING_GAP_S or (begins_run and held == 0):
            self._stream_began = now  # a new run of audio; the device settles in its first periods
        elif held == 0 and now - self._stream_began > SETTLE_S:
            self.underflows += 1
            dry = DrySpell(
                writer_late=not self._waited_for_audio,  # audio waited: the writer was late
                target_ms=self.target_ms,
                empty_ms=(looked_mono - self._fed_until) * 1000,
                nap_over_ms=look[1] * 1000,
                look_ms=look[0] * 1000,
                write_ms=self._write_took * 1000,  # the write before this one
            )
        self._waited_for_audio = False
        self.stream.write(widen(chunk, self.channels), exception_on_underflow=False)
        frames = len(chunk) // SAMPLE_BYTES
        self._fed_until = max(looked_mono + held / self.rate, now) + frames / self.rate
        self._last_write = time.monotonic()
        self._write_took = self._last_write - now
        if dry is not None:  # after the write: an empty device is fed first
            if dry.writer_late:
                self._widen()
            self.on_dry(dry)
