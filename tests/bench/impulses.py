"""The latency probe signal and its analysis: short tone bursts, found again in a stereo recording.

The left channel of a recording carries what went into the microphone, the right channel what came
out of the speaker, both on one clock (see `tap.py`). Each burst appears once on each side; the gap
between the two copies is the delay of whatever sits between microphone and speaker.

A burst is 6 ms of a tone under a Hann window: short enough to time to a fraction of a millisecond,
band-limited so every resampler on the way (16 -> 24 -> 48 kHz) passes it intact. A copy may come
back seconds late (a jitter buffer that has filled up), after its successors were sent, and some
copies may be lost; so each burst is made recognisable: consecutive bursts cycle through four
pitches, and the gaps between them vary by up to +/-40 ms in a fixed pseudo-random pattern. A copy
is matched to the burst of its pitch whose delay its neighbours agree with (see `pair`). Anything
long on the speaker side (an earcon) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCHES_HZ = (1000.0, 1500.0, 2000.0, 2500.0)
BURST_S = 0.006
LEVEL = 0.5
THRESHOLD = 0.08  # of full scale: far above resampler noise, far below a burst's 0.5 peak
TAIL_S = (0.015, 0.045)  # a burst is over by then; a tone (an earcon) is not
REFRACTORY_S = 0.1
GAP_WOBBLE_S = 0.04
MAX_DELAY_S = 4.0  # beyond the app's 2 s jitter buffer bound, with room to spare
AGREE_S = 0.0015  # neighbours agree on a delay within this
NEIGHBOURS = 3  # on each side


def burst(rate: int, pitch_hz: float) -> np.ndarray:
    count = int(BURST_S * rate)
    t = np.arange(count) / rate
    return LEVEL * np.hanning(count) * np.sin(2 * np.pi * pitch_hz * t)


def schedule(count: int, period_s: float, lead_s: float = 0.3) -> list[float]:
    """When each burst starts (s): `period_s` apart on average, each gap off by up to 40 ms."""
    wobble = np.random.default_rng(2544).uniform(-GAP_WOBBLE_S, GAP_WOBBLE_S, count)
    return [lead_s + k * period_s + float(wobble[k]) / 2 for k in range(count)]


def impulse_train(count: int, period_s: float, rate: int, lead_s: float = 0.3) -> bytes:
    """`count` bursts on `schedule`, cycling through the pitches; s16le mono."""
    total = int((lead_s + count * period_s + 0.3) * rate)
    signal = np.zeros(total)
    for k, start_s in enumerate(schedule(count, period_s, lead_s)):
        one = burst(rate, PITCHES_HZ[k % len(PITCHES_HZ)])
        start = int(start_s * rate)
        signal[start : start + len(one)] = one
    return (signal * 32767).astype("<i2").tobytes()


@dataclass(frozen=True)
class Onset:
    time_s: float
    pitch: int  # index into PITCHES_HZ


def _pitch(segment: np.ndarray, rate: int) -> int:
    """Which of the four pitches a burst carries (the strongest one, by correlation)."""
    t = np.arange(segment.size) / rate
    power = [
        abs(np.dot(segment, np.exp(-2j * np.pi * hz * t))) for hz in PITCHES_HZ
    ]  # fmt: skip
    return int(np.argmax(power))


def _envelope(segment: np.ndarray, rate: int) -> np.ndarray:
    """Amplitude envelope: RMS under a centred 1.5 ms Hann window (no delay, no carrier ripple)."""
    width = max(3, int(0.0015 * rate))
    window = np.hanning(width)
    return np.sqrt(np.convolve(segment**2, window / window.sum(), mode="same"))


def onsets(channel: np.ndarray, rate: int) -> list[Onset]:
    """Where bursts start and their pitch.

    A start is where the burst's envelope first reaches 30 % of its own peak, interpolated between
    samples: independent of the carrier's phase and of the level, so both copies of a burst are
    timed alike even after different resamplers. Something that was already sounding just before
    (the tail of a tone) or still sounds 15 ms later (an earcon) is not a burst.
    """
    loud = np.flatnonzero(np.abs(channel) > THRESHOLD)
    found: list[Onset] = []
    last = -1.0
    span = int(BURST_S * rate)
    back = int(0.003 * rate)
    before = int(0.02 * rate)
    tail = (int(TAIL_S[0] * rate), int(TAIL_S[1] * rate))
    for index in loud.tolist():
        if index / rate - last < REFRACTORY_S:
            continue
        last = index / rate
        prior = channel[max(0, index - before) : max(0, index - back)]
        after = channel[index + tail[0] : index + tail[1]]
        if (prior.size and np.max(np.abs(prior)) > THRESHOLD) or (
            after.size and np.max(np.abs(after)) > THRESHOLD
        ):
            continue
        begin = max(0, index - back)
        envelope = _envelope(channel[begin : index + span + back], rate)
        level = 0.3 * envelope.max()
        i = int(np.argmax(envelope >= level))
        frac = 0.0
        if i > 0:
            frac = (level - envelope[i - 1]) / (envelope[i] - envelope[i - 1])
        start = begin + i - 1 + frac if i > 0 else float(begin)
        first = int(start)
        found.append(Onset(start / rate, _pitch(channel[first : first + span], rate)))
    return found


@dataclass(frozen=True)
class Pairing:
    """Each microphone burst and the delay of its speaker copy (None: never heard)."""

    mic_times: list[float]
    delays_ms: list[float | None]

    @property
    def found(self) -> list[float]:
        return [d for d in self.delays_ms if d is not None]

    @property
    def missing(self) -> int:
        return sum(1 for d in self.delays_ms if d is None)


def pair(stereo: np.ndarray, rate: int) -> Pairing:
    """Match each speaker-side copy (right) with its microphone-side burst (left).

    A copy's candidates are the earlier, not yet matched bursts of its pitch within MAX_DELAY_S
    (one per second of delay). The right one is the candidate whose delay the most neighbouring
    copies share, each having a burst of its own pitch at that delay before it (within 1.5 ms):
    with irregular gaps a wrong candidate's delay fits almost none. Ties go to the shortest delay.
    Bursts left unmatched were lost on the way.
    """
    left = onsets(stereo[:, 0], rate)
    right = onsets(stereo[:, 1], rate)
    times = np.array([b.time_s for b in left])
    delays: list[float | None] = [None] * len(left)
    for j, copy in enumerate(right):
        lo = int(np.searchsorted(times, copy.time_s - MAX_DELAY_S))
        hi = int(np.searchsorted(times, copy.time_s))
        nearby = right[max(0, j - NEIGHBOURS) : j] + right[j + 1 : j + 1 + NEIGHBOURS]
        best, best_score = -1, -1
        for k in range(hi - 1, lo - 1, -1):  # shortest delay first
            if left[k].pitch != copy.pitch or delays[k] is not None:
                continue
            delay = copy.time_s - left[k].time_s
            score = sum(_burst_at(left, times, o.time_s - delay, o.pitch) for o in nearby)
            if score > best_score:
                best, best_score = k, score
        if best >= 0:
            delays[best] = (copy.time_s - left[best].time_s) * 1000
    return Pairing([b.time_s for b in left], delays)


def _burst_at(left: list[Onset], times: np.ndarray, time_s: float, pitch: int) -> bool:
    """Is there a burst of `pitch` starting at `time_s` (within AGREE_S)?"""
    k = int(np.searchsorted(times, time_s - AGREE_S))
    return k < len(left) and left[k].time_s <= time_s + AGREE_S and left[k].pitch == pitch


def summary(delays_ms: list[float]) -> dict[str, float | int | None]:
    """p50, p95, max and count of a list of delays (ms), rounded for reading."""
    if not delays_ms:
        return {"count": 0, "p50": None, "p95": None, "max": None, "min": None}
    data = np.asarray(delays_ms)
    return {
        "count": int(data.size),
        "min": round(float(data.min()), 1),
        "p50": round(float(np.percentile(data, 50)), 1),
        "p95": round(float(np.percentile(data, 95)), 1),
        "max": round(float(data.max()), 1),
    }
