"""The speaker's writer thread against a fake blocking PortAudio stream that plays in real time.

The fake drains its buffer a period at a time on the wall clock, as ALSA's pulse and dmix plugins
do, so these tests see what the real device would: how much the writer lets it hold, what time
each chunk is stamped with, and whether a device that runs dry is counted.
"""

from __future__ import annotations

import threading
import time

import pytest

from sesame_pi.output_probe import reads_ahead
from sesame_pi.speaker import MAX_RELAX_AFTER_S, RELAX_AFTER_S, DrySpell, Learnt, Speaker

RATE = 24000
PERIOD = RATE * 10 // 1000  # 10 ms, in frames


class FakeOutput:
    """A blocking output stream: `capacity` frames of buffer, drained one period per period."""

    def __init__(
        self, capacity: int = 3 * PERIOD, fail_after: int | None = None, channels: int = 1
    ) -> None:
        self.capacity = capacity
        self.channels = channels
        self.data = bytearray()  # everything written, as the device got it
        self.t0 = time.monotonic()
        self.written = 0  # frames ever written
        self.consumed_base = 0
        self.lock = threading.Lock()
        self.fail_after = fail_after
        self.writes: list[int] = []
        self.max_held = 0
        self.looks = 0  # get_write_available calls: behind a sound server, each a round trip

    def _played(self) -> int:
        periods = int((time.monotonic() - self.t0) * RATE) // PERIOD
        return periods * PERIOD

    def _held(self) -> int:
        played = self._played()
        if played - self.consumed_base > self.written:  # ran dry: the device restarts later
            self.consumed_base = played - self.written
        return self.written - (played - self.consumed_base)

    def get_write_available(self) -> int:
        with self.lock:
            self.looks += 1
            return self.capacity - self._held()

    def write(self, data: bytes, exception_on_underflow: bool = False) -> None:
        if self.fail_after is not None and len(self.writes) >= self.fail_after:
            raise OSError(-9999, "Unanticipated host error")
        with self.lock:
            frames = len(data) // (2 * self.channels)
            self.data += data
            self.written += frames
            self.writes.append(frames)
            self.max_held = max(self.max_held, self._held())

    def get_time(self) -> float:
        return time.monotonic()


def run_speaker(stream: FakeOutput, render, seconds: float, target_ms: int = 20, **more):  # type: ignore[no-untyped-def]
    played: list[tuple[int, float]] = []
    speaker = Speaker(
        stream,
        RATE,
        period_ms=10,
        device_target_ms=target_ms,
        render=render,
        on_played=lambda pcm, dac, _gap: played.append((len(pcm), dac)),
        stream_time=stream.get_time,
        **more,
    )
    speaker.start()
    time.sleep(seconds)
    speaker.stop()
    return speaker, played


def test_the_device_holds_no_more_than_the_target() -> None:
    stream = FakeOutput(capacity=6 * PERIOD)
    speaker, played = run_speaker(stream, lambda want, held: bytes(want), 0.5, target_ms=20)
    assert speaker.underflows == 0
    assert stream.max_held <= RATE * 20 // 1000, "a callback stream would hold all 60 ms"
    assert sum(n for n, _ in played) // 2 >= RATE * 0.4, "and it kept playing the whole time"
    assert speaker.failure is None


def test_the_writer_looks_at_the_device_about_once_a_period() -> None:
    """Each look is a round trip to a sound server (the ALSA pulse plugin asks PulseAudio), and
    waking twice more a period to see whether the device took its period cost the writer about
    a third of its CPU behind PulseAudio: it sleeps until the next period should fit instead."""
    stream = FakeOutput(capacity=6 * PERIOD)
    speaker, _ = run_speaker(stream, lambda want, held: bytes(want), 1.0, target_ms=20)
    assert speaker.underflows == 0 and len(stream.writes) >= 90
    assert stream.max_held <= RATE * 20 // 1000
    assert stream.looks / len(stream.writes) < 2.0, (stream.looks, len(stream.writes))  # was 3


def test_chunks_are_stamped_with_when_they_reach_the_dac() -> None:
    stream = FakeOutput()
    _, played = run_speaker(stream, lambda want, held: bytes(want), 0.4)
    # Each chunk plays after everything written before it: stamps rise with what was written.
    stamps = [dac for _, dac in played[5:]]
    assert stamps == sorted(stamps)
    start = played[5][1]
    frames_before = sum(n for n, _ in played[5:-1]) // 2
    span = played[-1][1] - start
    assert span == pytest.approx(frames_before / RATE, abs=0.03)


def test_a_chunk_after_the_device_ran_dry_is_marked_as_after_a_gap() -> None:
    """The echo canceller counts its reference on from chunk to chunk; after the device ran dry
    (the network was late) it must take the next chunk's stamp instead, and only the writer
    knows the device held nothing. Streaming on, no chunk is marked."""
    stream = FakeOutput(capacity=8 * PERIOD)
    started = time.monotonic()
    marks: list[tuple[float, bool]] = []

    def render(want: int, held: int) -> bytes:
        return b"" if 0.3 < time.monotonic() - started < 0.4 else bytes(want)

    speaker = Speaker(
        stream, RATE, period_ms=10, device_target_ms=20, render=render,
        on_played=lambda pcm, dac, gap: marks.append((time.monotonic() - started, gap)),
        stream_time=stream.get_time,
    )  # fmt: skip
    speaker.start()
    time.sleep(0.7)
    speaker.stop()
    gaps = [at for at, gap in marks if gap]
    assert gaps[0] < 0.05, "the first chunk: nothing was playing before it"
    assert any(0.4 <= at < 0.45 for at in gaps[1:]), marks
    assert len(gaps) <= 2 + speaker.underflows, "streaming on, chunks are not marked"


def test_a_slow_render_does_not_make_the_stamp_late() -> None:
    """The fill the writer saw is true when it looked, not after it asked for audio: a render
    that takes 4 ms (the GIL, a lock) must not push the chunk's stamp 4 ms late, or the echo
    canceller's reference lands after the echo it should cancel."""
    stream = FakeOutput()
    looks: list[tuple[float, int]] = []  # (time of the look, what the device held then)
    look = stream.get_write_available

    def looking() -> int:
        free = look()
        looks.append((stream.get_time(), stream.capacity - free))
        return free

    stream.get_write_available = looking  # type: ignore[method-assign]

    def slow(want: int, held: int) -> bytes:
        time.sleep(0.004)
        return bytes(want)

    _, played = run_speaker(stream, slow, 0.3)
    assert len(played) >= 10
    for _, dac in played[3:]:  # each stamp: a look's time plus what the device held then
        best = min(abs(dac - (at + held / RATE)) for at, held in looks)
        assert best < 0.002, f"stamped {best * 1000:.1f} ms from any look's fill"


def test_nothing_to_play_writes_nothing() -> None:
    stream = FakeOutput()
    _, played = run_speaker(stream, lambda want, held: b"", 0.2)
    assert played == [] and stream.writes == []


def test_a_device_that_runs_dry_mid_stream_is_an_underflow() -> None:
    stream = FakeOutput()
    gap_until = time.monotonic() + 0.4  # a 100 ms gap once the stream has settled

    def render(want: int, held: int) -> bytes:
        return b"" if 0 < gap_until - time.monotonic() < 0.1 else bytes(want)

    speaker, _ = run_speaker(stream, render, 0.6)
    assert speaker.underflows >= 1


def test_a_failing_device_stops_the_writer_with_the_reason() -> None:
    stream = FakeOutput(fail_after=3)
    speaker, _ = run_speaker(stream, lambda want, held: bytes(want), 0.2)
    assert not speaker.running
    assert speaker.failure == "Unanticipated host error"


class WatchedOutput(FakeOutput):
    """Records which thread makes each call, and can hold a write until released (a write
    blocked on a stalled device)."""

    def __init__(self) -> None:
        super().__init__(capacity=6 * PERIOD)
        self.callers: set[str] = set()
        self.hold_writes = threading.Event()
        self.inside_write = threading.Event()
        self.release = threading.Event()
        self.closed_by: str | None = None

    def get_write_available(self) -> int:
        self.callers.add(threading.current_thread().name)
        return super().get_write_available()

    def write(self, data: bytes, exception_on_underflow: bool = False) -> None:
        self.callers.add(threading.current_thread().name)
        if self.hold_writes.is_set():
            self.inside_write.set()
            self.release.wait(5.0)
        super().write(data)

    def close(self) -> None:
        self.closed_by = threading.current_thread().name


def watched_speaker(stream: WatchedOutput) -> Speaker:
    return Speaker(
        stream,
        RATE,
        period_ms=10,
        device_target_ms=20,
        render=lambda want, held: bytes(want),
        on_played=lambda pcm, dac, gap: None,
        stream_time=stream.get_time,
    )


def test_only_the_writer_thread_calls_into_the_stream_while_it_runs() -> None:
    """PortAudio recovers an underrun inside any call on the stream, and two threads recovering
    at once through ALSA's pulse plugin free its stream twice (the process aborts). The figures
    read what the writer last saw instead of asking the stream from the caller's thread."""
    stream = WatchedOutput()
    speaker = watched_speaker(stream)
    speaker.start()  # (before the thread starts, the caller's look is the only one)
    stream.callers.clear()
    seen: list[float] = []
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        seen.append(speaker.held_ms())
        time.sleep(0.005)
    assert speaker.stop()
    assert stream.callers == {"speaker"}, stream.callers
    assert max(seen) > 0 and max(seen) <= 20.0 + 1e-9, "the fill the writer saw, within its target"


def test_a_writer_stuck_in_a_write_is_left_to_close_its_stream_itself() -> None:
    stream = WatchedOutput()
    speaker = watched_speaker(stream)
    speaker.start()
    time.sleep(0.05)
    stream.hold_writes.set()
    assert stream.inside_write.wait(2.0)
    assert not speaker.stop(timeout=0.1), "still inside PortAudio"
    assert speaker.leave_to_writer(stream.close)
    assert stream.closed_by is None, "not closed from under the write"
    stream.release.set()
    speaker._thread.join(2.0)
    assert stream.closed_by == "speaker", "closed by the writer as it left"
    assert not speaker.leave_to_writer(stream.close), "gone: the caller closes from now on"


class StallingOutput(FakeOutput):
    """A device that takes nothing between `stall_from` and `stall_until` (seconds after start)."""

    def __init__(self, stall_from: float, stall_until: float) -> None:
        super().__init__()
        self.stall = (stall_from, stall_until)
        self.frozen_at: int | None = None

    def _played(self) -> int:
        elapsed = time.monotonic() - self.t0
        a, b = self.stall
        if elapsed < a:
            return super()._played()
        if elapsed < b:
            if self.frozen_at is None:
                self.frozen_at = super()._played()
            return self.frozen_at
        shift = int((b - a) * RATE) // PERIOD * PERIOD
        return super()._played() - shift


def test_a_stalled_device_is_reported_with_how_long_it_took_nothing() -> None:
    stream = StallingOutput(0.2, 0.6)
    stalls: list[float] = []
    speaker = Speaker(
        stream, RATE, period_ms=10, device_target_ms=20,
        render=lambda want, held: bytes(want), on_played=lambda pcm, dac, gap: None,
        stream_time=stream.get_time, on_stall=stalls.append,
    )  # fmt: skip
    speaker.start()
    time.sleep(0.9)
    speaker.stop()
    assert len(stalls) == 1 and 0.3 <= stalls[0] <= 0.55, stalls


class ServerOutput(FakeOutput):
    """A sound server's stream: `queued` is what ALSA reports the stream holds; each period the
    server does `_period()` with it, and `_settle()` after any catching up."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.queued = 0
        self.last = time.monotonic()

    def _period(self) -> None: ...

    def _settle(self) -> None: ...

    def _advance(self) -> None:
        periods = int((time.monotonic() - self.last) * RATE) // PERIOD
        self.last += periods * PERIOD / RATE
        for _ in range(periods):
            self._period()
        self._settle()

    def get_write_available(self) -> int:
        with self.lock:
            self._advance()
            return self.capacity - self.queued

    def write(self, data: bytes, exception_on_underflow: bool = False) -> None:
        with self.lock:
            self._advance()
            self.queued += len(data) // 2
            self.written += len(data) // 2
            self.writes.append(len(data) // 2)


class PrebufferingOutput(ServerOutput):
    """Once dry (and at its start) it plays only when it holds `prebuf` frames, as PulseAudio
    does with the ALSA pulse plugin's stream (prebuf = its target length)."""

    def __init__(self, prebuf: int, capacity: int) -> None:
        super().__init__(capacity)
        self.prebuf = prebuf
        self.playing = False
        self.played_frames = 0

    def _period(self) -> None:
        self.playing = self.playing or self.queued >= self.prebuf
        if self.playing:
            take = min(self.queued, PERIOD)
            self.queued -= take
            self.played_frames += take
            self.playing = self.queued > 0


def test_a_sound_server_waiting_for_its_prebuffer_is_filled_until_it_plays() -> None:
    """Topped up only to the lean 20 ms target, a stream that waits for 40 ms would never play
    again while the call's audio piled up in the playout buffer."""
    stream = PrebufferingOutput(prebuf=4 * PERIOD, capacity=8 * PERIOD)
    speaker, _ = run_speaker(stream, lambda want, held: bytes(want), 0.6, target_ms=20)
    assert speaker.kicks >= 1
    assert stream.played_frames >= RATE * 0.45, "it started within a few periods and kept on"
    assert speaker.failure is None


class CatchingUpOutput(ServerOutput):
    """Plays a period a period, but takes nothing from 0.2 s to 0.35 s after its start (a sound
    server that stalled), then takes all it holds at once as it catches up."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.stalled = False

    def _period(self) -> None:
        since = self.last - self.t0
        if 0.2 <= since < 0.35:
            self.stalled = True
        elif self.stalled:
            self.stalled, self.queued = False, 0
        else:
            self.queued = max(0, self.queued - PERIOD)


def test_a_dry_spell_after_a_stall_counts_the_emptiness_from_the_last_look() -> None:
    """A device that held its audio through a stall has not been empty since the write before
    it: the writer saw it full at every look meanwhile. The spell after the catch-up says so
    (it was taken at once, not played: well below a period), not the stall's 150 ms."""
    spells: list[DrySpell] = []
    stream = CatchingUpOutput(capacity=8 * PERIOD)
    run_speaker(stream, lambda want, held: bytes(want), 0.6, on_dry=spells.append)
    # (the writer on time: on a busy machine a late nap makes spells of its own, which say so)
    on_time = [s for s in spells if s.writer_late and s.nap_over_ms < 5 and s.look_ms < 5]
    assert on_time, spells
    assert all(spell.empty_ms < 15.0 for spell in on_time), spells


class ReadAheadOutput(ServerOutput):
    """The server pulls everything queued into its own buffer whenever that holds less than
    `ahead` frames, and plays from there a period per period: the fill ALSA reports reads empty
    while the audio still waits to play."""

    def __init__(self, ahead: int, capacity: int) -> None:
        super().__init__(capacity)
        self.ahead = ahead
        self.server = 0

    def _period(self) -> None:
        self._settle()
        self.server -= min(self.server, PERIOD)

    def _settle(self) -> None:  # the pull
        if self.server < self.ahead:
            self.server, self.queued = self.server + self.queued, 0


def test_a_server_that_reads_ahead_is_told_from_a_device_whose_fill_is_the_truth() -> None:
    """`output_mode = "auto"` asks this before choosing the writer: behind a server that pulls
    the stream ahead, the fill reads empty while the audio still waits (a writer counting by it
    saw a dry device at almost every turn, and primed its playout buffer again each time)."""
    assert reads_ahead(ReadAheadOutput(ahead=4 * PERIOD, capacity=8 * PERIOD), RATE, PERIOD)


@pytest.mark.parametrize(
    "device",
    [
        pytest.param(lambda: FakeOutput(capacity=6 * PERIOD), id="a DAC taking a period at once"),
        pytest.param(lambda: PrebufferingOutput(4 * PERIOD, 8 * PERIOD), id="a late starter"),
        pytest.param(lambda: StallingOutput(0.05, 0.15), id="a device that stalls"),
    ],
)
def test_a_device_that_plays_in_real_time_is_not_taken_for_a_server(device) -> None:  # type: ignore[no-untyped-def]
    """A card (or dmix) takes a period at a time, up to a period ahead of the clock; one that
    starts only when it holds enough, or stops a while, takes less than real time, never more."""
    stream = device()
    assert not reads_ahead(stream, RATE, PERIOD)
    assert stream.written >= 2 * PERIOD, "it was tried, not just opened"


class LateWaking(threading.Event):
    """The writer's naps on a busy machine: every 100 ms one of them lasts 30 ms too long."""

    def __init__(self) -> None:
        super().__init__()
        self.last_absence = time.monotonic()

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        if time.monotonic() - self.last_absence > 0.1:
            time.sleep(0.03)  # the writer thread did not get the CPU in time
            self.last_absence = time.monotonic()
        return woken


def test_a_writer_that_wakes_late_earns_the_device_a_deeper_buffer() -> None:
    """A busy machine keeps the writer away for 30 ms now and then: with 20 ms in the device it
    runs dry, and each dry spell with audio waiting widens the target by a period."""
    stream = FakeOutput(capacity=8 * PERIOD)
    targets: list[int] = []
    spells: list[DrySpell] = []
    speaker = Speaker(
        stream, RATE, period_ms=10, device_target_ms=20, render=lambda want, held: bytes(want),
        on_played=lambda pcm, dac, gap: None, stream_time=stream.get_time,
        on_target=targets.append, on_dry=spells.append,
    )  # fmt: skip
    speaker._stop = LateWaking()
    speaker.start()
    time.sleep(1.0)
    speaker.stop()
    assert speaker.underflows >= 1
    assert len(spells) == speaker.underflows and all(spell.writer_late for spell in spells)
    assert spells[0].target_ms == 20.0  # said with the target it ran dry at (then widened)
    # said with how long the device had been empty when the writer came back (30 ms late, less
    # the 10-20 ms the device still held when it should have woken): after the moment it emptied
    assert spells[0].empty_ms > 0, spells
    # and where the time went: the nap before the look overran by the 30 ms, which covers it
    # (mostly: a device that takes a period at a time can show its emptiness a turn later)
    after_late_naps = [s for s in spells if s.nap_over_ms >= max(25.0, s.empty_ms)]
    assert len(after_late_naps) >= max(1, len(spells) // 2), spells
    assert all(spell.look_ms >= 0 and spell.write_ms >= 0 for spell in spells), spells
    assert sum(spell.look_ms + spell.write_ms < 25.0 for spell in spells) >= len(spells) // 2
    assert speaker.target_frames > speaker.base_target_frames == RATE * 20 // 1000
    assert targets == sorted(targets) and targets[-1] == speaker.target_frames
    assert speaker.target_frames <= speaker.max_target_frames == RATE * 60 // 1000


class SlowWriting(FakeOutput):
    """A device behind a sound server whose writes now and then wait 30 ms (for its client
    library's lock, or for room)."""

    def __init__(self) -> None:
        super().__init__(capacity=8 * PERIOD)
        self.last_wait = time.monotonic()

    def write(self, data: bytes, exception_on_underflow: bool = False) -> None:
        super().write(data, exception_on_underflow)
        if time.monotonic() - self.last_wait > 0.1:
            time.sleep(0.03)
            self.last_wait = time.monotonic()


def test_a_dry_spell_after_a_slow_write_says_so() -> None:
    """The writer napped as planned, but the write before its nap held it up: the dry spell's
    account names the write, not the nap."""
    spells: list[DrySpell] = []
    stream = SlowWriting()
    speaker = Speaker(
        stream, RATE, period_ms=10, device_target_ms=20, render=lambda want, held: bytes(want),
        on_played=lambda pcm, dac, gap: None, stream_time=stream.get_time, on_dry=spells.append,
    )  # fmt: skip
    speaker.start()
    time.sleep(1.0)
    speaker.stop()
    assert spells, "30 ms writes empty a device that held 10-20 ms"
    # (on a busy machine a nap may overrun too: most spells, not all, follow a slow write)
    after_slow_writes = [spell for spell in spells if spell.write_ms >= 25.0]
    assert len(after_slow_writes) >= max(1, len(spells) // 2), spells
    assert sum(spell.nap_over_ms < 10.0 for spell in after_slow_writes) >= len(spells) // 2


def test_the_widened_target_goes_back_a_period_per_calm_spell() -> None:
    targets: list[int] = []
    speaker = Speaker(
        FakeOutput(), RATE, period_ms=10, device_target_ms=20, render=lambda want, held: b"",
        on_played=lambda pcm, dac, gap: None, stream_time=time.monotonic, on_target=targets.append,
    )  # fmt: skip
    for _ in range(6):
        speaker._widen()
    assert speaker.target_frames == speaker.max_target_frames, "never beyond 60 ms"
    speaker._relax()
    assert speaker.target_frames == speaker.max_target_frames, "not calm long enough yet"
    for _ in range(6):
        speaker._calm_since -= 11.0  # as if 10 s passed without running dry
        speaker._relax()
    assert speaker.target_frames == speaker.base_target_frames
    assert targets == [720, 960, 1200, 1440, 1200, 960, 720, 480]


def test_a_leaner_target_that_does_not_hold_waits_twice_as_long_next_time() -> None:
    """A machine that cannot keep the lean target ran dry again soon after every relaxation (a
    gap every ten seconds); each relapse now doubles the calm the next relaxation needs."""
    speaker = Speaker(
        FakeOutput(), RATE, period_ms=10, device_target_ms=20, render=lambda want, held: b"",
        on_played=lambda pcm, dac, gap: None, stream_time=time.monotonic,
    )  # fmt: skip
    speaker._widen()
    speaker._widen()  # two dry spells in a row: no relaxation between them, nothing learnt
    assert speaker.relax_after_s == RELAX_AFTER_S
    speaker._calm_since -= RELAX_AFTER_S + 1
    speaker._relax()  # 40 -> 30 ms
    speaker._widen()  # dry again at once: 30 ms did not hold
    assert speaker.relax_after_s == 2 * RELAX_AFTER_S
    speaker._widen()  # and again in the same busy burst: judged once, not doubled again
    assert speaker.relax_after_s == 2 * RELAX_AFTER_S
    assert speaker.target_frames == RATE * 50 // 1000
    speaker._calm_since -= RELAX_AFTER_S + 1
    speaker._relax()
    assert speaker.target_frames == RATE * 50 // 1000, "10 s of calm is not enough any more"
    speaker._calm_since -= RELAX_AFTER_S
    speaker._relax()
    assert speaker.target_frames == RATE * 40 // 1000
    speaker._relaxed_at -= 2 * RELAX_AFTER_S + 1  # type: ignore[operator]
    speaker._widen()  # this time the leaner level held as long as the calm that earned it
    assert speaker.relax_after_s == 2 * RELAX_AFTER_S
    for _ in range(10):
        speaker._calm_since -= MAX_RELAX_AFTER_S + 1
        speaker._relax()
        speaker._widen()
    assert speaker.relax_after_s == MAX_RELAX_AFTER_S
    while speaker.target_frames > speaker.base_target_frames:
        speaker._calm_since -= MAX_RELAX_AFTER_S + 1
        speaker._relax()
    assert speaker.relax_after_s == MAX_RELAX_AFTER_S  # just back at the lean target
    speaker._calm_since -= MAX_RELAX_AFTER_S + 1
    speaker._relax()  # and it held there that long: the machine is calm again
    assert speaker.relax_after_s == RELAX_AFTER_S


def test_the_next_speaker_starts_where_the_last_one_left_the_target() -> None:
    """The output closes a few seconds after a call: what its writer learnt (a wider target, a
    longer calm to earn a leaner one) goes on to the next speaker on the same device, so a busy
    machine does not begin each call lean and run dry again. Another rate or period starts
    afresh; a learnt target is held within this speaker's bounds."""

    def speaker(learnt: Learnt | None, rate: int = RATE) -> Speaker:
        return Speaker(
            FakeOutput(), rate, period_ms=10, device_target_ms=20, render=lambda want, held: b"",
            on_played=lambda pcm, dac, gap: None, stream_time=time.monotonic, learnt=learnt,
        )  # fmt: skip

    first = speaker(None)
    first._widen()
    first._relax()
    first._calm_since -= RELAX_AFTER_S + 1
    first._relax()  # 30 -> 20 ms
    first._widen()  # dry again at once: 20 ms did not hold here
    learnt = first.learnt()
    assert learnt.target_frames == RATE * 30 // 1000 and learnt.relax_after_s == 2 * RELAX_AFTER_S
    after = speaker(learnt)
    assert after.target_frames == learnt.target_frames
    assert after.relax_after_s == 2 * RELAX_AFTER_S
    after._relax()
    assert after.target_frames == learnt.target_frames, "it ran dry just now: no calm to spend"
    elsewhere = speaker(learnt, rate=48000)
    assert elsewhere.target_frames == elsewhere.base_target_frames
    assert elsewhere.relax_after_s == RELAX_AFTER_S
    too_wide = speaker(Learnt(RATE, PERIOD, 10 * RATE, RELAX_AFTER_S, 0.0, None))
    assert too_wide.target_frames == too_wide.max_target_frames


def test_short_calls_add_up_to_the_calm_that_gives_a_period_back() -> None:
    """Calls shorter than the calm a relaxation waits for: the calm each speaker saw goes on to
    the next, so a Pi that takes only short calls is not held on a widened target for good
    (and a relapse right after a new speaker relaxed is still judged one)."""
    learnt = Learnt(RATE, PERIOD, RATE * 40 // 1000, RELAX_AFTER_S, 0.0, None)
    for _ in range(2):  # two calls of 6 s each, neither long enough alone
        each = Speaker(
            FakeOutput(), RATE, period_ms=10, device_target_ms=20, render=lambda want, held: b"",
            on_played=lambda pcm, dac, gap: None, stream_time=time.monotonic, learnt=learnt,
        )  # fmt: skip
        each._relax()
        assert each.target_frames == RATE * 40 // 1000
        each._calm_since -= 6.0
        learnt = each.learnt()
    third = Speaker(
        FakeOutput(), RATE, period_ms=10, device_target_ms=20, render=lambda want, held: b"",
        on_played=lambda pcm, dac, gap: None, stream_time=time.monotonic, learnt=learnt,
    )  # fmt: skip
    third._relax()
    assert third.target_frames == RATE * 30 // 1000, "12 s of calm, over two calls"
    fourth = Speaker(
        FakeOutput(), RATE, period_ms=10, device_target_ms=20, render=lambda want, held: b"",
        on_played=lambda pcm, dac, gap: None, stream_time=time.monotonic, learnt=third.learnt(),
    )  # fmt: skip
    fourth._widen()  # dry at once in the next call: the leaner target did not hold
    assert fourth.relax_after_s == 2 * RELAX_AFTER_S


def test_only_seconds_with_audio_to_play_count_as_calm() -> None:
    """A speaker stays open a few seconds after a call with nothing to play: those seconds say
    nothing of a writer keeping up, and counted as calm they relaxed a widened target (the next
    call then ran dry on it). Here 0.4 s of audio, then 0.6 s of nothing."""
    started = time.monotonic()

    def render(want: int, held: int) -> bytes:
        return bytes(want) if time.monotonic() - started < 0.4 else b""

    speaker, played = run_speaker(FakeOutput(), render, 1.0)
    assert played, "it played"
    calm = speaker.learnt().calm_s
    assert 0.3 < calm < 0.6, f"{calm:.2f} s of calm in 0.4 s of audio and 0.6 s of nothing"


def test_a_device_dry_because_the_network_was_late_keeps_its_lean_target() -> None:
    """Nothing to play for 100 ms (the network was late): the device runs dry and that is
    counted, but the writer was on time, so the device's target stays; the playout buffer's
    lateness target is what learns from the network."""
    stream = FakeOutput(capacity=8 * PERIOD)
    started = time.monotonic()

    def render(want: int, held: int) -> bytes:
        return b"" if 0.3 < time.monotonic() - started < 0.4 else bytes(want)

    dry: list[tuple[bool, float]] = []
    speaker, _ = run_speaker(
        stream,
        render,
        0.7,
        target_ms=20,
        on_dry=lambda spell: dry.append((spell.writer_late, spell.target_ms)),
    )
    assert speaker.underflows >= 1
    assert speaker.target_frames == speaker.base_target_frames
    assert dry == [(False, 20.0)] * speaker.underflows  # said, with the network as its cause


def test_a_device_quiet_while_the_playout_buffer_primes_has_not_run_dry() -> None:
    """The live earcon plays, the device goes quiet while the playout buffer primes, and the
    agent's first audio begins a run (`run_starts` moves): no gap in anything the person was
    hearing, so no underflow and no line (a 10-minute bench call counted it as its one)."""
    stream = FakeOutput(capacity=8 * PERIOD)
    started = time.monotonic()
    starts = 0

    def render(want: int, held: int) -> bytes:
        nonlocal starts
        elapsed = time.monotonic() - started
        if elapsed < 0.1:
            return bytes(want)  # the earcon
        if elapsed < 0.25:
            return b""  # the playout buffer primes
        if starts == 0:
            starts = 1  # and begins to play
        return bytes(want)

    dry: list[tuple[bool, float]] = []
    speaker, _ = run_speaker(
        stream, render, 0.6, run_starts=lambda: starts,
        on_dry=lambda spell: dry.append((spell.writer_late, spell.target_ms)),
    )  # fmt: skip
    assert starts == 1 and stream.written > RATE * 0.4
    assert speaker.underflows == 0 and dry == []


def test_on_a_stereo_device_each_channel_gets_the_agent_and_the_frames_add_up() -> None:
    """The audio role opens the shared stereo output as it is (no ALSA channel converter): the
    writer puts every mono sample on both channels, and counts the device in frames as before."""
    stream = FakeOutput(channels=2)
    ramp = bytes(range(256)) * 60  # distinct bytes: a misplaced one shows

    def render(want: int, held: int) -> bytes:
        return ramp[:want]

    speaker = Speaker(
        stream, RATE, period_ms=10, device_target_ms=20, render=render,
        on_played=lambda pcm, dac, gap: None, stream_time=stream.get_time, channels=2,
    )  # fmt: skip
    speaker.start()
    time.sleep(0.3)
    speaker.stop()
    frames = bytes(stream.data)
    assert len(frames) == 4 * stream.written > 0
    left = b"".join(frames[i : i + 2] for i in range(0, len(frames), 4))
    right = b"".join(frames[i + 2 : i + 4] for i in range(0, len(frames), 4))
    assert left == right
    assert left[: 2 * PERIOD] == ramp[: 2 * PERIOD]
    assert stream.max_held <= 2 * PERIOD + PERIOD, "the lean target is kept in frames"
