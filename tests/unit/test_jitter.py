"""The playback buffer: prebuffer, underruns, overruns, adaptation, flush."""

from __future__ import annotations

import random
from array import array

from sesame_pi.jitter import DelayTarget, JitterBuffer

RATE = 24000
MS20 = RATE * 20 // 1000 * 2  # bytes in 20 ms


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pcm(ms: int, value: int = 1) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (RATE * ms // 1000)


def test_silence_until_the_prebuffer_is_in_then_audio_in_order() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=1000)
    buf.write(pcm(40, 7))
    assert buf.read(MS20) == bytes(MS20), "still priming"
    buf.write(pcm(20, 9))
    assert buf.read(MS20) == pcm(20, 7)
    assert buf.read(MS20) == pcm(20, 7)
    assert buf.read(MS20) == pcm(20, 9)
    assert buf.underruns == 0 and buf.bytes_played == 3 * MS20


def test_running_dry_counts_an_underrun_pads_and_primes_again() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=1000)
    buf.write(pcm(30, 5))
    assert buf.read(MS20) == pcm(20, 5)
    out = buf.read(MS20)
    assert out[: MS20 // 2] == pcm(10, 5) and out[MS20 // 2 :] == bytes(MS20 // 2)
    assert buf.underruns == 1
    buf.write(pcm(10, 5))
    assert buf.read(MS20) == bytes(MS20), "priming again, not a second underrun"
    assert buf.underruns == 1


def test_idle_silence_is_not_an_underrun() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=1000)
    for _ in range(50):
        assert buf.read(MS20) == bytes(MS20)
    assert buf.underruns == 0


def test_overrun_drops_the_oldest_audio_and_keeps_samples_aligned() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=100)
    buf.write(pcm(80, 1))
    buf.write(pcm(41, 2))  # 121 ms > 100 ms bound
    assert buf.overruns == 1
    assert buf.buffered_ms <= 100
    assert buf.dropped_bytes % 2 == 0
    played = array("h", buf.read(MS20) + buf.read(MS20 * 4))
    assert set(played) <= {1, 2}, "whole samples only, never a byte-shifted one"
    assert played[-1] == 2, "the newest audio was kept"


def test_prebuffer_grows_after_underruns_and_relaxes_when_calm() -> None:
    clock = FakeClock()
    buf = JitterBuffer(
        RATE, prebuffer_ms=40, max_ms=1000, adapt_max_ms=100, relax_after_s=5, clock=clock
    )
    for _ in range(5):
        buf.write(pcm(110))
        for _ in range(6):
            buf.read(MS20)  # the sixth runs dry
    assert buf.underruns == 5
    assert buf.prebuffer_ms == 100, "capped at adapt_max"
    clock.now = 10.0
    buf.write(pcm(400))
    for _ in range(10):
        buf.read(MS20)
        clock.now += 6
    assert buf.prebuffer_ms == 40, "back to the base after a calm stretch"


def test_flush_drops_audio_and_resets_adaptation() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=1000)
    buf.write(pcm(20))
    buf.read(MS20)
    buf.read(MS20)  # underrun raises the prebuffer
    buf.write(pcm(200))
    buf.flush()
    assert not buf.pending() and buf.prebuffer_ms == 20
    assert buf.read(MS20) == bytes(MS20)


MS10 = MS20 // 2


def steady_call(buf: JitterBuffer, seconds: float, value: int, late_every: int = 0) -> None:
    """A real-time stream: a 20 ms chunk in, two 10 ms device reads out.

    With late_every=N every Nth chunk arrives one read late (10 ms of network jitter).
    """
    for i in range(int(seconds * 50)):
        if late_every and i % late_every == late_every - 1:
            buf.read(MS10)
            buf.write(pcm(20, value))
            buf.read(MS10)
        else:
            buf.write(pcm(20, value))
            buf.read(MS10)
            buf.read(MS10)


def test_a_standing_excess_on_a_steady_stream_is_trimmed_from_quiet_audio() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=1000)
    steady_call(buf, 1.0, value=40)
    before = buf.buffered_ms
    steady_call(buf, 3.0, value=40)
    assert buf.trimmed_ms >= 20, "the prebuffer that absorbed no jitter is given back"
    assert buf.buffered_ms < before and buf.buffered_ms >= 10, "a margin stays"
    assert buf.underruns == 0


def test_speech_is_never_trimmed() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=1000)
    steady_call(buf, 5.0, value=8000)
    assert buf.trimmed_bytes == 0 and buf.buffered_ms >= 40


def test_a_server_running_ahead_is_not_trimmed_while_its_lead_plays_out() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=5000)
    buf.write(pcm(3000, 40))  # a burst: the server sent three seconds ahead
    for _ in range(100):  # then half as fast as real time, while the lead plays
        buf.write(pcm(20, 40))
        for _ in range(4):
            buf.read(MS10)
    assert buf.trimmed_bytes == 0 and 900 <= buf.buffered_ms <= 1100


def test_a_pile_up_after_a_stall_is_trimmed_from_the_pauses_and_speech_stays_whole() -> None:
    """The loop (or the network) stalled for half a second; the audio it held back arrives at
    once and then the stream goes on in real time. That level stands above `adapt_max` for
    good: left alone (a bench run, 2026-12-06), every turn came half a second late for the rest
    of the call. It is trimmed from the pauses, each keeping PAUSE_KEPT_MS, not from speech."""
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=5000)
    talk = [pcm(20, 4000)] * 5 + [pcm(20, 40)] * 15  # 100 ms of speech, a 300 ms pause
    sent, out = bytearray(), bytearray()

    def send() -> None:
        sent.extend(talk[len(sent) // MS20 % len(talk)])
        buf.write(sent[-MS20:])

    for _ in range(100):  # two seconds of a steady call
        send()
        out += buf.read(MS10) + buf.read(MS10)
    for _ in range(25):  # the stall's half second, then all of it at once
        send()
    piled = buf.buffered_ms
    for _ in range(750):  # fifteen more seconds in real time
        send()
        out += buf.read(MS10) + buf.read(MS10)
    assert piled >= 500 and buf.buffered_ms <= 100, (piled, buf.buffered_ms)
    assert buf.trimmed_ms >= 400 and buf.underruns == 0

    def speech(pcm_bytes: bytes) -> int:
        return sum(1 for sample in memoryview(pcm_bytes).cast("h") if sample == 4000)

    assert speech(bytes(out)) + speech(bytes(buf._data)) == speech(bytes(sent)), "none dropped"
    samples = memoryview(bytes(out)).cast("h")
    runs, quiet = [], 0  # every pause the person heard, once speech began
    for s in samples[RATE // 10 :]:
        if s == 4000:
            if quiet:
                runs.append(quiet)
            quiet = 0
        else:
            quiet += 1
    assert min(runs) >= RATE * 100 // 1000, "no pause shorter than PAUSE_KEPT_MS"


def test_the_part_of_the_buffer_that_absorbs_jitter_is_kept() -> None:
    steady = JitterBuffer(RATE, prebuffer_ms=30, max_ms=1000)
    steady_call(steady, 6.0, value=40)
    assert steady.trimmed_ms == 10, "on a steady stream 10 ms stand above the margin"
    jittery = JitterBuffer(RATE, prebuffer_ms=30, max_ms=1000)
    steady_call(jittery, 6.0, value=40, late_every=25)
    assert jittery.trimmed_bytes == 0, "late chunks use those 10 ms"
    assert jittery.underruns == 0


def test_an_underrun_widens_the_margin_so_the_trimmer_keeps_more() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=1000)
    steady_call(buf, 1.0, value=40)
    assert buf.margin == buf.base_margin
    while buf.pending():  # the network stalls: the buffer runs dry
        buf.read(MS10)
    buf.read(MS10)
    assert buf.underruns == 1 and buf.margin == buf.base_margin + MS10
    steady_call(buf, 6.0, value=40)
    assert buf.buffered_ms >= 20, "the wider margin stays in the buffer"
    buf.flush()
    assert buf.margin == buf.base_margin


# --------------------------------------------------------------------------- the playout target


def feed(target: DelayTarget, clock: FakeClock, frames: int, jitter_ms: float, seed: int) -> None:
    """20 ms frames sent in real time, each arriving up to `jitter_ms` late (uniformly)."""
    rng = random.Random(seed)
    start = clock.now
    for i in range(frames):
        clock.now = start + i * 0.020 + rng.uniform(0, jitter_ms) / 1000
        target.arrived(i * 0.020 + start)


def test_a_clean_link_needs_almost_no_playout_delay() -> None:
    clock = FakeClock()
    target = DelayTarget(clock=clock)
    feed(target, clock, 500, jitter_ms=1, seed=1)
    assert target.target_ms <= 5


def test_the_target_covers_the_links_jitter_and_fades_when_it_calms() -> None:
    clock = FakeClock()
    target = DelayTarget(clock=clock)
    feed(target, clock, 1500, jitter_ms=20, seed=2)  # 30 s of 0..20 ms lateness
    assert 15 <= target.target_ms <= 25, "the 95th percentile of 0..20 ms"
    feed(target, clock, 1500, jitter_ms=1, seed=3)  # 30 s of a calm link
    assert target.target_ms <= 10, "old jitter is forgotten"


def faded_quantile(
    lateness_ms: list[float], forget: float = 0.995, quantile: float = 0.95
) -> float:
    """The target by its definition: every old count faded by `forget` at each new frame, then
    the first 5 ms bin where the running total reaches the quantile."""
    hist = [0.0] * 60
    for late in lateness_ms:
        hist = [count * forget for count in hist]
        hist[int(late // 5)] += 1 - forget
    need, total = quantile * sum(hist), 0.0
    for index, count in enumerate(hist):
        total += count
        if total >= need:
            return (index + 1) * 5.0
    return 300.0


def test_the_target_is_the_faded_quantile_over_a_long_call() -> None:
    """The histogram fades by weighing each new count more instead of scaling every old one;
    over a long call (well past the rescaling, about 5500 frames) it gives the same target as
    fading every count at every frame, frame by frame."""
    target = DelayTarget()
    rng = random.Random(7)
    lateness: list[float] = []
    for i in range(12000):  # four minutes of frames; the link worsens, then calms
        late_ms = rng.uniform(0, 40 if 3000 <= i < 7000 else 8)
        target.count(late_ms)
        lateness.append(late_ms)
        if i % 500 == 499:
            assert target.target_ms == faded_quantile(lateness), i


def test_a_server_that_sends_ahead_is_not_late() -> None:
    clock = FakeClock()
    target = DelayTarget(clock=clock)
    for i in range(100):  # two seconds of audio in one burst, then real time
        target.arrived(i * 0.020)
    for i in range(100, 600):
        clock.now = (i - 100) * 0.020
        target.arrived(i * 0.020)
    assert target.target_ms <= 5


def test_take_hands_the_writer_what_there_is_and_counts_a_dry_device() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=1000, adaptive=True)
    assert buf.take(MS20, device_held_bytes=0) == b"", "nothing yet"
    buf.write(pcm(30, 4))
    assert buf.take(MS20, device_held_bytes=0) == pcm(20, 4)
    assert buf.take(MS20, device_held_bytes=MS20) == pcm(10, 4), "only what there is"
    assert buf.take(MS20, device_held_bytes=MS20) == b""
    assert buf.underruns == 0, "the device still plays: not an underrun yet"
    assert buf.take(MS20, device_held_bytes=0) == b""
    assert buf.underruns == 1, "the device ran dry mid-stream"
    assert buf.starts == 1, "one run so far (the speaker does not count the quiet before it)"
    buf.write(pcm(40, 4))
    assert buf.take(MS20, device_held_bytes=0) == pcm(20, 4)
    assert buf.starts == 2, "primed again after the underrun: a new run"


def test_the_prebuffers_peak_is_kept_after_it_relaxes() -> None:
    clock = FakeClock()
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=1000, relax_after_s=10.0, clock=clock)
    buf.write(pcm(20, 3))
    buf.read(MS20)
    buf.read(MS20)  # dry: +20 ms
    assert (buf.prebuffer_ms, buf.ms(buf.prebuffer_peak)) == (40.0, 40.0)
    for _ in range(3):
        clock.now += 11.0
        buf.write(pcm(60, 3))
        buf.read(MS20)
    assert buf.prebuffer_ms == 20.0 and buf.ms(buf.prebuffer_peak) == 40.0


def test_when_the_call_is_ending_running_dry_is_the_end_of_the_audio() -> None:
    """The hold ends the call and the agent's audio stops: the buffer running dry then was
    counted as an underrun (one of the writer's three in the ten-minute jittery call)."""
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=1000)
    buf.write(pcm(30, 4))
    assert buf.read(MS20) == pcm(20, 4)
    buf.end_of_stream()
    assert buf.read(MS20)[MS20 // 2 :] == bytes(MS20 // 2), "what is left, then silence"
    assert buf.underruns == 0 and buf.margin == buf.base_margin
    buf.flush()  # the call is over; the next one counts again
    buf.write(pcm(30, 4))
    buf.read(MS20)
    buf.read(MS20)
    assert buf.underruns == 1


def test_the_writer_is_not_told_of_an_underrun_at_the_end_of_the_call() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=1000, adaptive=True)
    buf.write(pcm(30, 4))
    assert buf.take(MS20, device_held_bytes=0) == pcm(20, 4)
    buf.end_of_stream()
    assert buf.take(MS20, device_held_bytes=MS20) == pcm(10, 4)
    assert buf.take(MS20, device_held_bytes=0) == b""
    assert buf.underruns == 0 and buf.margin == buf.base_margin


def test_after_a_device_stall_the_late_audio_is_dropped_down_to_the_margin() -> None:
    buf = JitterBuffer(RATE, prebuffer_ms=20, max_ms=5000, adaptive=True, device_ms=5)
    buf.write(pcm(1500, 3))  # what piled up while the device took nothing for 1.5 s
    buf.drop_stale(1.5)
    kept = buf.buffered_ms
    assert 5 <= kept <= 10, "a 10 ms period plus the lateness target, less the device's 5 ms"
    assert buf.stale_bytes == len(pcm(1500)) - len(pcm(int(kept)))
    buf.drop_stale(1.0)
    assert buf.buffered_ms == kept, "never below the margin"


def test_the_devices_own_audio_counts_toward_the_margin() -> None:
    """A late frame finds the device's audio ahead of it as much as the buffer's: a device that
    holds more than the margin and the lateness target needs no standing audio in the buffer."""
    lean = JitterBuffer(RATE, prebuffer_ms=20, max_ms=5000, adaptive=True, device_ms=5)
    held = JitterBuffer(RATE, prebuffer_ms=20, max_ms=5000, adaptive=True, device_ms=40)
    for buf in (lean, held):
        buf.write(pcm(500, 3))
        buf.drop_stale(0.5)
    assert lean.buffered_ms >= 5
    assert held.buffered_ms == 0


def test_the_next_call_starts_with_the_lateness_the_last_one_learnt() -> None:
    """The agent speaks first: a fresh histogram knows nothing and its cushion ran dry half a
    second into a call on a jittery link. The next call on the same link starts from what the
    last one learnt, with the stream's timing forgotten (its media time starts at 0 again)."""
    clock = FakeClock()
    first = JitterBuffer(RATE, prebuffer_ms=20, max_ms=5000, adaptive=True, clock=clock)
    feed(first.lateness, clock, 1500, jitter_ms=20, seed=4)
    learnt = first.lateness.target_ms
    assert learnt >= 15
    fresh = JitterBuffer(RATE, prebuffer_ms=20, max_ms=5000, adaptive=True, clock=clock)
    carried = JitterBuffer(
        RATE, prebuffer_ms=20, max_ms=5000, adaptive=True, clock=clock, lateness=first.lateness
    )
    assert carried.lateness.target_ms == learnt and fresh.lateness.target_ms == 0
    # the new stream's first frame, media time 0, an hour later: on time, not an hour late
    clock.now += 3600
    carried.write(pcm(20, 5))
    assert carried.lateness.target_ms == learnt
    # and the carried cushion holds playback back until a late frame would find audio ahead
    fresh.write(pcm(20, 5))
    assert fresh.take(MS20, device_held_bytes=0) == pcm(20, 5)
    assert carried.take(MS20, device_held_bytes=0) == b""


# --------------------------------------------------------------------------- the inserter


def writer_call(
    buf: JitterBuffer, clock: FakeClock, seconds: float, value: int, jitter_ms: float
) -> None:
    """A real-time stream through the writer's `take`: each 20 ms frame arrives up to
    `jitter_ms` late (the lateness the target learns), two 10 ms periods go to a device that
    keeps 20 ms."""
    rng = random.Random(7)
    start = clock.now
    for i in range(int(seconds * 50)):
        clock.now = start + i * 0.020 + rng.uniform(0, jitter_ms) / 1000
        buf.write(pcm(20, value))
        buf.take(MS10, device_held_bytes=MS20)
        buf.take(MS10, device_held_bytes=MS20)


def adaptive_buffer(
    clock: FakeClock, trim_window_s: float = 2.0, lateness: DelayTarget | None = None
) -> JitterBuffer:
    return JitterBuffer(
        RATE,
        prebuffer_ms=60,
        max_ms=1000,
        adaptive=True,
        device_ms=20,
        margin_ms=10,
        trim_window_s=trim_window_s,
        clock=clock,
        lateness=lateness,
    )


def measured_clean(clock: FakeClock) -> DelayTarget:
    """A link an earlier call measured as clean: the next call starts lean on it."""
    target = DelayTarget(clock=clock)
    feed(target, clock, 200, jitter_ms=0, seed=1)
    return target


def test_a_cushion_the_link_needs_is_played_in_as_silence_in_quiet_audio() -> None:
    """Started lean (the link was clean in the last call), the buffer lacks what the now
    jittery link's target asks for: silence in quiet spots raises its level before a late frame
    finds it empty."""
    clock = FakeClock()
    buf = adaptive_buffer(clock, lateness=measured_clean(clock))
    writer_call(buf, clock, 3.0, value=40, jitter_ms=40)
    wanted = buf.ms(buf._margin())
    assert wanted >= 20, wanted
    assert buf.inserted_bytes > 0 and buf.inserted_bytes % 2 == 0
    assert buf.buffered_ms >= wanted - 10, (buf.buffered_ms, wanted)
    assert buf.ms(buf.inserted_bytes) <= wanted + 20, "about the shortfall, not more"
    assert buf.underruns == 0 and buf.trimmed_bytes == 0


def test_the_inserters_window_is_its_own() -> None:
    """The trimmer's window closing (every `trim_window_s`) does not restart the inserter's:
    with a trim window shorter than the inserter's 200 ms, a shared restart kept the inserter
    from ever finishing a window, and the cushion the link needs never came."""
    clock = FakeClock()
    buf = adaptive_buffer(clock, trim_window_s=0.15, lateness=measured_clean(clock))
    writer_call(buf, clock, 3.0, value=40, jitter_ms=40)
    assert buf.inserted_bytes > 0 and buf.underruns == 0


def test_speech_is_never_stretched() -> None:
    clock = FakeClock()
    buf = adaptive_buffer(clock, lateness=measured_clean(clock))
    writer_call(buf, clock, 3.0, value=8000, jitter_ms=40)
    assert buf._margin() > 0 and buf.inserted_bytes == 0


# --------------------------------------------------------------------------- the first call


def device_call(
    buf: JitterBuffer, clock: FakeClock, seconds: float, jitter_ms: float, seed: int
) -> list[float]:
    """A real-time stream into a device that plays 10 ms every 10 ms and is topped up to 20 ms
    by the writer (`take`); 20 ms frames arrive up to `jitter_ms` late. Returns when (s into
    the call) each underrun was counted."""
    rng = random.Random(seed)
    start = clock.now
    arrivals = sorted(
        (start + i * 0.020 + rng.uniform(0, jitter_ms) / 1000, i) for i in range(int(seconds * 50))
    )
    held_ms, dry_at, underruns = 0, [], 0
    for tick in range(int(seconds * 100)):
        clock.now = start + tick * 0.010
        while arrivals and arrivals[0][0] <= clock.now:
            arrivals.pop(0)
            buf.write(pcm(20, 40))
        held_ms = max(0, held_ms - 10)  # the device played a period
        while held_ms < 20 and (chunk := buf.take(MS10, device_held_bytes=held_ms * RATE // 500)):
            held_ms += buf.ms(len(chunk))
        if buf.underruns != underruns:
            underruns = buf.underruns
            dry_at.append(round(clock.now - start, 2))
    return dry_at


def test_the_first_call_on_an_unmeasured_link_starts_on_the_prebuffer() -> None:
    """The agent speaks first: with nothing measured, a lean start ran dry in the first half
    second of a jittery link. A link the last call measured starts lean (device and margin)."""
    clock = FakeClock()
    fresh, known = adaptive_buffer(clock), adaptive_buffer(clock, lateness=measured_clean(clock))
    for buf in (fresh, known):
        buf.write(pcm(40, 5))
    assert fresh.take(MS10, device_held_bytes=0) == b"", "60 ms before it starts"
    # the lean start: the device's 20 ms and the margin (10 ms + 5 ms of lateness - the device's
    # 20 ms: none), so 20 ms would do
    assert known.take(MS10, device_held_bytes=0) == pcm(10, 5)
    fresh.write(pcm(20, 5))
    assert fresh.take(MS10, device_held_bytes=0) == pcm(10, 5)


def test_on_a_jittery_link_the_first_call_does_not_run_dry_at_its_start() -> None:
    """Twenty first calls on a link whose frames come up to 40 ms late (a 20 +/- 10 ms link
    both ways, as the echo of the microphone comes back): none runs dry in its first seconds."""
    dry = []
    for seed in range(20):
        clock = FakeClock()
        buf = adaptive_buffer(clock)
        dry += device_call(buf, clock, 3.0, jitter_ms=40, seed=seed)
        assert buf.starts == 1 and buf.bytes_played >= RATE * 2 * 2, "it played the call"
    assert dry == []


def test_on_a_clean_link_the_first_calls_guess_is_given_back_from_quiet_audio() -> None:
    """The prebuffer's guess stands only for the trimmer's short first window: a second into
    the call, a clean link holds no more than the device's share and the margin."""
    clock = FakeClock()
    buf = adaptive_buffer(clock)
    assert buf.trim_window == buf._bytes(500)
    assert device_call(buf, clock, 1.0, jitter_ms=0, seed=1) == []
    assert buf.trimmed_bytes > 0
    assert buf.buffered_ms <= 10, buf.buffered_ms
    assert buf.trim_window == buf._bytes(2000), "then windows as usual"


def test_a_clean_link_gets_no_silence() -> None:
    clock = FakeClock()
    buf = adaptive_buffer(clock)
    writer_call(buf, clock, 3.0, value=40, jitter_ms=0)
    assert buf.inserted_bytes == 0 and buf.buffered_ms <= 10


def test_quiet_means_every_sample_within_minus_512_to_511() -> None:
    """The quiet check reads the samples' high bytes (C speed); it must say what the rule says,
    at the edges too, for any length the writer asks about."""
    rng = random.Random(11)
    edges = [-32768, -513, -512, -511, -1, 0, 1, 255, 256, 511, 512, 513, 32767]
    for trial in range(400):
        n = rng.randint(1, 300)
        quiet_level = rng.random() < 0.5
        samples = [
            rng.randint(-512, 511) if quiet_level else rng.randint(-600, 600) for _ in range(n)
        ]
        if trial % 3 == 0:
            samples[rng.randrange(n)] = rng.choice(edges)
        buf = JitterBuffer(RATE, prebuffer_ms=60, max_ms=1000)
        buf.write(array("h", samples).tobytes())
        asked = rng.randint(1, 2 * n + 10)  # sometimes more than there is
        head = samples[: min(asked, 2 * n) // 2]
        assert buf._quiet_head(asked) == (bool(head) and all(-512 <= x <= 511 for x in head))
