"""The echo stage's parts: resampling, the reference timeline, anchoring, the engines' errors."""

from __future__ import annotations

import importlib.machinery
import itertools
import sys
import threading
import types

import numpy as np
import pytest

from sesame_pi.echo import ENGINES, EchoStage, EchoUnavailable, resolve_engine
from sesame_pi.echo.align import Anchor, DelayEstimator, FarEndStore, Timeline, fft_size
from sesame_pi.echo.duck import Ducker
from sesame_pi.echo.engine import LsbDither, Passthrough
from sesame_pi.echo.resample import Resampler
from sesame_pi.echo.speex import SpeexCanceller
from sesame_pi.echo.stage import Stage
from sesame_pi.echo.webrtc import WebRtcCanceller


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (48000, 16000), (44100, 16000)])
def test_resampling_in_pieces_equals_resampling_at_once(src: int, dst: int) -> None:
    x = tone(440, src) + 0.3 * tone(3100, src)
    cuts = np.cumsum(np.random.default_rng(3).integers(1, 900, 60))
    cuts = cuts[cuts < len(x)]
    pieces = np.concatenate([Resampler(src, dst).process(x)])
    r = Resampler(src, dst)
    stream = np.concatenate([r.process(p) for p in np.split(x, cuts)])
    assert len(stream) == len(pieces) == dst
    assert np.max(np.abs(stream - pieces)) < 1e-4


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (16000, 2000), (8000, 16000)])
def test_resampling_by_phase_is_the_textbook_filter(src: int, dst: int) -> None:
    """The per-phase products give what the definition gives: zero-stuff by `up`, filter with
    the prototype, keep every `down`-th sample (the way the stage did it before, at 6 to 8 times
    the multiplications)."""
    r = Resampler(src, dst)
    x = tone(440, src, 0.5) + 0.3 * tone(min(2900, src / 5), src, 0.5)
    got = np.concatenate([r.process(piece) for piece in np.array_split(x, 7)])
    table = r._table  # (up, taps): phase p is taps p, p + up, ... of the prototype
    proto = table.T.reshape(-1)
    stuffed = np.zeros(len(x) * r.up, np.float32)
    stuffed[:: r.up] = x
    want = np.convolve(stuffed, proto)[: len(stuffed) : r.down]
    assert len(got) == len(want) == len(x) * dst // src
    assert np.max(np.abs(got - want)) < 1e-5


def test_resampling_keeps_speech_and_removes_what_would_alias() -> None:
    def gain_db(freq: float) -> float:
        y = Resampler(24000, 16000).process(tone(freq, 24000))[400:]
        return float(10 * np.log10(np.mean(y * y) / 0.5))

    assert abs(gain_db(1000)) < 0.1
    assert abs(gain_db(5000)) < 0.5
    assert gain_db(10000) < -60  # would fold back to 6 kHz


def test_timeline_reads_silence_where_nothing_was_played() -> None:
    t = Timeline(1000)
    t.write(100, np.ones(50, np.float32))
    t.write(300, np.full(50, 2.0, np.float32))  # a gap from 150 to 300
    data, missing = t.read(90, 260)
    assert missing == 0
    assert np.all(data[:10] == 0) and np.all(data[10:60] == 1)
    assert np.all(data[60:210] == 0) and np.all(data[210:260] == 2)
    data, missing = t.read(340, 20)
    assert missing == 10 and np.all(data[10:] == 0)


def test_anchor_counts_through_jitter_and_follows_a_real_jump() -> None:
    a = Anchor(16000, tolerance_ms=8, persist=3)
    assert a.place(0) == 0
    a.advance(320)
    assert a.place(320 + 50) == 320  # 3 ms of stamp jitter: keep counting
    a.advance(320)
    for _ in range(2):
        assert a.place(a.next + 400) != a.next + 400 or False  # 25 ms off, once or twice: wait
        a.advance(320)
    moved = a.place(a.next + 400)  # the third time in a row: follow the stamps
    assert moved == a.next and a.jumps == 1
    a.advance(320)
    assert a.place(a.next + 16000) == a.next and a.jumps == 2  # a second off: at once
    a.advance(320)
    assert a.place(a.next + 50, follow=True) != a.next + 50  # after a gap, jitter is jitter
    a.advance(320)
    assert a.place(a.next + 400, follow=True) == a.next and a.jumps == 3  # a gap: at once


def test_far_end_store_is_bounded_and_thread_safe() -> None:
    store = FarEndStore(max_seconds=0.5)
    chunk = bytes(960)  # 20 ms at 24 kHz

    def writer(base: float) -> None:
        for i in range(100):
            store.put(chunk, 24000, base + i * 0.02)

    threads = [threading.Thread(target=writer, args=(k * 10.0,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = sum(len(c[2]) for c in store.take())
    assert kept / 2 / 24000 <= 0.5
    assert store.dropped == 400 - kept // len(chunk)
    assert store.take() == []


def test_far_end_store_joins_pieces_that_follow_each_other() -> None:
    store = FarEndStore()
    piece = bytes(480)  # 10 ms at 24 kHz
    for i in range(3):
        store.put(piece, 24000, 1.0 + i * 0.010 + 0.001)  # stamps jitter by a millisecond
    store.put(piece, 24000, 1.100)  # an underflow: 70 ms the device played nothing of ours
    store.put(bytes(320), 16000, 1.110)  # the speaker reopened at another rate
    store.put(bytes(320), 16000, 1.120, after_gap=True)  # ran dry for a moment too short to see
    runs = store.take()
    assert [(round(t, 3), rate, len(pcm), gap) for t, rate, pcm, gap in runs] == [
        (1.001, 24000, 1440, False),
        (1.1, 24000, 480, False),
        (1.11, 16000, 320, False),
        (1.12, 16000, 320, True),
    ]


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_off_returns_the_microphone_unchanged(frame_ms: int) -> None:
    stage = EchoStage("off")
    assert stage.engine_name == "off"
    rng = np.random.default_rng(1)
    for i in range(20):
        mic = rng.integers(-3000, 3000, 16 * frame_ms).astype(np.int16).tobytes()
        stage.far_end(rng.integers(-3000, 3000, 480).astype(np.int16).tobytes(), 24000, i * 0.02)
        assert stage.process(mic, i * frame_ms / 1000) == mic
    assert stage.stats()["frames"] == 20
    stage.close()


@pytest.mark.parametrize("engine", ["webrtc", "speex"])
def test_engines_keep_the_frame_length(engine: str) -> None:
    stage = EchoStage(engine)
    for i in range(10):
        stage.far_end(bytes(960), 24000, i * 0.02)
        assert len(stage.process(bytes(640), i * 0.02)) == 640
    stage.reset()
    assert stage.stats()["frames"] == 0
    stage.close()


def test_a_realignment_mid_call_keeps_the_calls_figures() -> None:
    """A device reopened mid-call: the canceller aligns afresh, and the call's summary still
    counts the whole call (it spoke of the time since the last reopen only)."""
    stage = EchoStage("off")
    rng = np.random.default_rng(2)
    for i in range(20):
        stage.far_end(rng.integers(-3000, 3000, 480).astype(np.int16).tobytes(), 24000, i * 0.02)
        stage.process(rng.integers(-3000, 3000, 320).astype(np.int16).tobytes(), i * 0.02)
    stage._estimator.updates = 3  # as if the delay had been found three times
    stage.realign()
    stage._estimator.updates += 2
    figures = stage.stats()
    assert figures["frames"] == 20 and figures["delay_updates"] == 5, figures
    stage.reset()  # a new call starts at zero
    assert stage.stats()["frames"] == 0 and stage.stats()["delay_updates"] == 0
    stage.close()


class RecordingEngine:
    """An engine that keeps both inputs it was given and halves the microphone."""

    name = "recording"
    tracks_delay_ms = 150.0

    def __init__(self) -> None:
        self.refs: list[np.ndarray] = []
        self.mics: list[np.ndarray] = []

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        self.refs.append(ref.copy())
        self.mics.append(mic.copy())
        return (mic // 2).astype(np.int16)

    def reset(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("lead_ms", [0, 10, 60])
def test_the_engine_gets_the_reference_that_played_even_when_it_arrives_just_in_time(
    lead_ms: int,
) -> None:
    """The reference moves onto the timeline only when a frame needs it or enough waits: a
    piece handed over just before its frame (writer mode: the device holds 20 ms) must still
    be there, sample for sample, and not counted as missing."""
    engine = RecordingEngine()
    stage = Stage(engine)
    far = (tone(300, 16000, 2.0) * 8000).astype(np.int16)
    frame = 320
    for i in range(len(far) // frame):
        # the far end at 16 kHz (no resampling), handed over `lead_ms` before the microphone
        # frame that hears it is processed; its DAC time equals that frame's ADC time
        stage.far_end(far[i * frame : (i + 1) * frame].tobytes(), 16000, i * 0.02)
        if lead_ms == 0 or i >= lead_ms // 20:
            j = i - lead_ms // 20
            stage.process(bytes(2 * frame), j * 0.02)
    got = np.concatenate(engine.refs).astype(np.int32)
    # sample for sample, up to the dither's lowest bit (LsbDither)
    assert np.abs(got - far[: len(got)]).max() <= 1
    assert stage.stats()["ref_underflows"] == 0


def test_audio_after_the_speaker_ran_dry_is_placed_by_its_stamp_at_once() -> None:
    """Writer mode on a late network: the device plays nothing of ours for 60 ms, and the audio
    after the gap is stamped 60 ms later than counting on would put it. The writer says it ran
    dry (`after_gap`), so the very first frame after the gap gets its own reference. Counting
    on, as before, put that audio where the gap was for four placements (about 80 ms of echo
    with the wrong reference)."""
    engine = RecordingEngine()
    stage = Stage(engine)
    far = (tone(300, 16000, 2.0) * 8000 * np.linspace(0.2, 1, 32000)).astype(np.int16)
    frame, gap_frames = 320, 3
    pieces = [far[k * frame : (k + 1) * frame] for k in range(50)]
    stamped = {k if k < 25 else k + gap_frames: piece for k, piece in enumerate(pieces)}
    for j in range(50 + gap_frames):
        if j in stamped:
            stage.far_end(stamped[j].tobytes(), 16000, j * 0.02, after_gap=j == 25 + gap_frames)
        stage.process(bytes(2 * frame), j * 0.02)
    for j, got in enumerate(engine.refs):
        expected = stamped.get(j, np.zeros(frame, np.int16)).astype(np.int32)
        assert np.abs(got.astype(np.int32) - expected).max() <= 1, f"frame {j}"


def test_the_engine_never_gets_digital_silence() -> None:
    """Zeros on both inputs (before the agent speaks, a muted microphone) reach the engine as a
    random lowest bit, different on each input: AEC3's float filters run 14 times slower on the
    subnormal numbers that silence decays into (tests/bench/echo_offline.py prints it)."""
    engine = RecordingEngine()
    stage = Stage(engine)
    for i in range(100):
        stage.far_end(bytes(640), 16000, i * 0.02)
        stage.process(bytes(640), i * 0.02)
    mic, ref = np.concatenate(engine.mics), np.concatenate(engine.refs)
    for got in (mic, ref):
        assert set(np.unique(got)) == {0, 1}
        assert 0.4 < np.mean(got) < 0.6
    assert np.mean(mic == ref) < 0.6  # not the same pattern on both


def test_the_dither_cannot_overflow_and_covers_any_length() -> None:
    dither = LsbDither(3)
    loud = np.array([32767, -32768] * 8000, np.int16)
    for _ in range(3):  # past the pattern's end: it starts over
        out = dither.apply(loud)
        assert out.dtype == np.int16
        assert np.abs(out.astype(np.int32) - loud).max() == 1
        assert out.min() >= -32768 and out.max() <= 32767
    long = np.zeros(LsbDither.LENGTH + 5, np.int16)
    assert len(dither.apply(long)) == len(long)


def test_erle_counts_the_frames_of_an_unfinished_round() -> None:
    """ERLE is kept in half-second rounds; the call's figure includes the frames after the last
    round (a call that ends 0.3 s into one)."""
    stage = Stage(RecordingEngine())
    far = (tone(300, 16000, 1.0) * 8000).astype(np.int16)
    for i in range(15):  # 300 ms: less than a round
        pcm = far[i * 320 : (i + 1) * 320].tobytes()
        stage.far_end(pcm, 16000, i * 0.02)
        stage.process(pcm, i * 0.02)
    assert stage.stats()["erle_db"] == pytest.approx(6.0, abs=0.1)  # the engine halves


def test_ducking_hears_the_far_end_handed_over_just_in_time_beyond_a_learnt_delay() -> None:
    """The ducker reads the far end's level at the frame's own position, the engine reads it the
    learnt delay earlier: once a delay is learnt, the reference must still be moved onto the
    timeline for the frame itself, or the ducker misses what the agent says in between."""
    stage = Stage(Passthrough(), duck=True)
    rng = np.random.default_rng(5)
    frame = 320
    learn = (rng.standard_normal(16000 * 2) * 4000).astype(np.int16)  # 2 s: the delay is learnt
    blips = np.zeros(16000 * 4, np.int16)  # then 4 s of 20 ms blips, 400 ms apart (> hangover)
    for at in range(0, len(blips), 20 * frame):
        blips[at : at + frame] = (rng.standard_normal(frame) * 4000).astype(np.int16)
    far = np.concatenate([learn, blips])
    echo = np.concatenate([np.zeros(1600), far[:-1600] * 0.3]).astype(np.int16)  # 100 ms later
    ducked_after_learning = 0
    for i in range(len(far) // frame):
        part = slice(i * frame, (i + 1) * frame)
        stage.far_end(far[part].tobytes(), 16000, i * 0.02)  # just in time, as in writer mode
        stage.process(echo[part].tobytes(), i * 0.02)
        if i == len(learn) // frame - 1:
            assert stage.stats()["delay_ms"] > 50  # the engine's reference now comes ~90 ms back
            ducked_after_learning = stage.stats()["ducked_frames"]
    ducked = stage.stats()["ducked_frames"] - ducked_after_learning
    # every blip ducks the microphone for its hangover (250 ms of each 400 ms)
    assert ducked >= 0.5 * len(blips) // frame


def test_ducker_moves_smoothly() -> None:
    d = Ducker()
    block = np.full(160, 1000.0, np.float32)
    gains = [float(d.process(block, -20.0)[-1]) / 1000 for _ in range(10)]
    assert all(b <= a for a, b in itertools.pairwise(gains))
    assert gains[0] > 0.2 and gains[-1] < 0.04  # no step, yet -28 dB within 100 ms
    steps = np.abs(np.diff(d.process(block, -60.0)))
    assert steps.max() < 50  # a ramp across the block, not a click


def test_speex_missing_says_what_to_do() -> None:
    with pytest.raises(EchoUnavailable, match=r"'speex'.*libspeexdsp-none\.so\.9.*apt-get"):
        SpeexCanceller(16000, library="libspeexdsp-none.so.9")


def test_webrtc_missing_says_what_to_do() -> None:
    with pytest.raises(EchoUnavailable, match=r"'webrtc'.*no_such_webrtc.*speex"):
        WebRtcCanceller(16000, module="no_such_webrtc")


def test_engine_names() -> None:
    assert ENGINES == ("auto", "webrtc", "speex", "off")
    assert resolve_engine("auto") == "webrtc"  # this machine (x86_64) has the wheel
    assert resolve_engine("speex") == "speex"
    with pytest.raises(EchoUnavailable, match="does not exist"):
        resolve_engine("loud")
    assert EchoStage("auto").engine_name == "webrtc"


def test_auto_takes_speex_when_the_webrtc_module_is_there_but_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A placeholder or broken pywebrtc_audio (armv7 gets an empty 0.0.1 from PyPI): "auto"
    still cancels, with speex, instead of turning cancelling off."""
    placeholder = types.ModuleType("pywebrtc_audio")
    placeholder.__spec__ = importlib.machinery.ModuleSpec("pywebrtc_audio", None)
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", placeholder)
    assert resolve_engine("auto") == "webrtc"  # the module is found...
    assert EchoStage("auto").engine_name == "speex"  # ...but does not work
    with pytest.raises(EchoUnavailable):
        EchoStage("webrtc")  # asked for by name: said plainly, no quiet substitute


def test_auto_with_no_engine_that_runs_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An armv7 board without libspeexdsp1: "auto" has nothing to run. The engine says so in an
    `echo_unavailable` line with what to install, once, and the call goes on uncancelled (it
    used to go quietly to "off", the README's promised line never written)."""
    import asyncio

    from sesame_pi import echo
    from sesame_pi.audio import AudioEngine
    from sesame_pi.config import Config

    def no_library(library: str) -> None:
        raise EchoUnavailable(f"echo canceller 'speex' is unavailable: {library} is not here")

    monkeypatch.setattr(echo.platform, "machine", lambda: "armv7l")
    monkeypatch.setattr("sesame_pi.echo.speex._load", no_library)
    assert resolve_engine("auto") == "off"
    with pytest.raises(EchoUnavailable, match=r"armv7l.*apt-get install libspeexdsp1"):
        EchoStage("auto")

    async def two_calls() -> AudioEngine:
        engine = AudioEngine(Config(), asyncio.get_running_loop(), lambda _detail: None)
        for _ in range(2):
            engine._start_echo()
        return engine

    with caplog.at_level("WARNING", logger="sesame_pi"):
        engine = asyncio.run(two_calls())
    said = [r for r in caplog.records if r.getMessage() == "echo_unavailable"]
    assert len(said) == 1 and engine._echo is None


def test_reference_dropped_is_counted_per_call() -> None:
    """The store sheds the oldest reference when the loop stalls; the count is the call's (and,
    after a resume, the part's, which the session adds up), not the process's."""
    stage = Stage(Passthrough(), 16000)
    piece = bytes(480 * 2)  # 20 ms at 24 kHz
    for k in range(150):  # 3 s of reference and no frame to take it: the store keeps 2 s
        stage.far_end(piece, 24000, 100 + k * 0.02)
    assert stage.stats()["ref_dropped"] > 0
    stage.reset()
    assert stage.stats()["ref_dropped"] == 0


def test_the_call_summary_carries_the_cancellers_own_cost() -> None:
    """The stage times itself and its engine (thread CPU time), so an owner reads the
    canceller's cost on their own device from a call's summary; "off" runs no engine."""
    far = (tone(300, 16000, 1.0) * 8000).astype(np.int16)
    for engine, runs_engine in ((WebRtcCanceller(16000), True), (Passthrough(), False)):
        stage = Stage(engine)
        for i in range(len(far) // 320):
            block = far[i * 320 : (i + 1) * 320].tobytes()
            stage.far_end(block, 16000, i * 0.02)
            stage.process(block, i * 0.02)
        stats = stage.stats()
        assert stats["cpu_ms"] >= stats["engine_cpu_ms"] >= 0.0
        assert (stats["engine_cpu_ms"] > 0.0) == runs_engine
        stage.close()


@pytest.mark.parametrize(("level_dbfs", "found"), [(-20.0, True), (-65.0, False)])
def test_the_delay_is_estimated_while_the_far_end_talks_not_over_its_comfort_noise(
    level_dbfs: float, found: bool
) -> None:
    """The estimator's gate is in dB of full scale: the far end at -20 dBFS is heard and its
    delay found; the service's comfort noise between sentences (-65 dBFS here) is not taken
    for talk, so no GCC-PHAT runs over it and none of it blurs the averaged correlation. (Read
    as dB of one int16 step, the gate once passed anything above -140 dBFS.)"""
    rate, delay_ms = 16000, 120
    rng = np.random.default_rng(5)
    far = rng.standard_normal(rate * 4) * 32768 * 10 ** (level_dbfs / 20)
    lag = rate * delay_ms // 1000
    mic = np.concatenate((np.zeros(lag), far[:-lag])) * 0.5
    estimator = DelayEstimator(rate, 500)
    for at in range(0, len(far), 320):
        estimator.feed(mic[at : at + 320].astype(np.float32), far[at : at + 320].astype(np.float32))
    if found:
        assert estimator.delay_ms is not None and abs(estimator.delay_ms - delay_ms) <= 2
    else:
        assert estimator.delay_ms is None and estimator.updates == 0


def test_the_correlation_length_is_the_smallest_with_factors_two_three_and_five() -> None:
    """GCC-PHAT's FFT is as long as the window needs, rounded up to a length numpy's FFT does as
    fast as a power of two (5120 for the default window, not 8192): checked against a plain
    search for every length up to 3000 and around the ones in use."""

    def smooth(k: int) -> bool:
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        return k == 1

    for n in [*range(1, 3001), 5080, 5121, 8192, 8193, 9079]:
        size = fft_size(n)
        assert size >= n and smooth(size), (n, size)
        assert not any(smooth(k) for k in range(n, size)), (n, size)
    assert fft_size(5080) == 5120
    estimator = DelayEstimator(16000, 500)  # 1 s window + 500 ms reach + 40 ms lead, at 2 kHz
    assert estimator._nfft == 5120


def test_stamps_on_two_clocks_are_counted_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """A speaker stamped with the wall clock beside a microphone stamped with the monotonic
    clock (decades apart): the reference each frame needs was overwritten long ago, so the
    canceller would get silence. The call's summary counts it and the log says it once."""
    stage = Stage(Passthrough(), 16000)
    stage.engine_name = "stamps"  # (an engine that reads the reference: "off" never does)
    far = (np.sin(np.arange(480) / 3) * 8000).astype(np.int16).tobytes()
    mic = bytes(640)
    wall, monotonic = 1.76e9, 5000.0
    with caplog.at_level("WARNING", logger="sesame_pi"):
        for k in range(60):
            stage.far_end(far, 24000, wall + k * 0.02)
            stage.process(mic, monotonic + k * 0.02)
    stats = stage.stats()
    assert stats["ref_stale"] >= 55, stats
    said = [r for r in caplog.records if r.getMessage() == "echo_reference_misaligned"]
    assert len(said) == 1
    aligned = Stage(Passthrough(), 16000)
    aligned.engine_name = "stamps"
    for k in range(60):
        aligned.far_end(far, 24000, monotonic + k * 0.02)
        aligned.process(mic, monotonic + k * 0.02)
    assert aligned.stats()["ref_stale"] == 0


class CountingResets(RecordingEngine):
    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


def test_a_delay_wandering_about_the_edge_of_aec3s_reach_does_not_flip_the_shift() -> None:
    """Estimates of 146, 153, 147.5 ... ms (a room near AEC3's 150 ms reach, with clock drift)
    moved the reference 0, 143, 0, 142 ... ms and reset AEC3 at each move, a second of echo
    each time. The smaller move wins: one shift, one reset."""
    engine = CountingResets()
    stage = Stage(engine)
    engine.resets = 0  # (the stage starts its engine afresh)
    shifts = []
    for delay in (146.0, 153.0, 147.5, 152.5, 148.0, 151.0, 146.5):
        stage._estimator.delay_ms = delay
        stage._apply_delay()
        shifts.append(stage._shift / 16)
    assert engine.resets == 1, shifts
    assert shifts[0] == 0.0 and all(135 <= s <= 143 for s in shifts[1:]), shifts


def test_a_delay_that_shrinks_a_little_moves_the_reference_without_resetting_aec3() -> None:
    engine = CountingResets()
    stage = Stage(engine)
    engine.resets = 0
    for delay, shift_ms in ((380.0, 370.0), (368.0, 358.0), (372.0, 358.0), (-6.0, -16.0)):
        stage._estimator.delay_ms = delay
        stage._apply_delay()
        assert stage._shift / 16 == shift_ms, (delay, stage._shift / 16)
    assert engine.resets == 2, "the 370 ms and the 374 ms moves; not the 12 ms one"


@pytest.mark.parametrize("duck", [False, True])
def test_a_reference_read_after_the_frame_is_there_with_ducking_too(duck: bool) -> None:
    """An echo earlier than its stamps moves the reference later than the frame; with ducking
    on (which reads the reference at the frame itself), only the frame's end was pulled onto
    the timeline, and the engine got silence for most frames."""
    engine = RecordingEngine()
    stage = Stage(engine, duck=duck)
    stage._estimator.delay_ms = -20.0
    stage._apply_delay()
    assert stage._shift < 0
    far = (tone(300, 16000, 2.0) * 8000).astype(np.int16)
    frame = 320
    for i in range(len(far) // frame - 2):
        # the speaker stamps its audio 40 ms ahead of the frame that hears it
        stage.far_end(far[i * frame : (i + 1) * frame].tobytes(), 16000, i * 0.02)
        if i >= 2:
            stage.process(bytes(2 * frame), (i - 2) * 0.02)
    assert stage.stats()["ref_underflows"] == 0
