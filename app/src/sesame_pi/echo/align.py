"""Putting the far-end reference next to the microphone sample that hears it.

Three parts, each for one kind of delay:

- `FarEndStore`: what the playback callback handed the device, with the DAC time of its first
  sample. Filled on PortAudio's thread (a lock and a deque append, nothing else), drained on the
  event loop.
- `Timeline`: the reference at the capture rate on one sample axis shared with the microphone,
  where a position is (PortAudio time - origin) x capture rate. The time stamps say when a sample
  left the DAC and when one entered the ADC; positions keep counting samples between them and
  follow the stamps again only when they disagree for good (`Anchor`), so stamp jitter does not
  shake the alignment.
- `DelayEstimator`: what the stamps cannot know: the way through the codec, the amplifier, the
  air and back (about 370 ms on a ReSpeaker HAT). GCC-PHAT between the decimated microphone and
  the stamp-aligned reference, every half second while the far end talks; an estimate is taken
  only when its peak stands clear of the rest, and applied only when two in a row agree.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .resample import Resampler

Floats = npt.NDArray[np.float32]
Piece = tuple[float, int, bytes, bool]  # (dac_time, rate, pcm, after_gap)


class FarEndStore:
    """A bounded, lock-protected queue of (dac_time, rate, pcm, after_gap) from the playback
    thread."""

    CONTIGUOUS_S = 0.004  # stamps this close to where the previous piece ended: one run

    def __init__(self, max_seconds: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._chunks: collections.deque[Piece] = collections.deque()
        self._seconds = 0.0
        self._max_seconds = max_seconds
        self.dropped = 0

    def put(self, pcm: bytes, rate: int, dac_time: float, after_gap: bool = False) -> None:
        with self._lock:
            self._chunks.append((dac_time, rate, pcm, after_gap))
            self._seconds += len(pcm) / 2 / rate
            while self._seconds > self._max_seconds and len(self._chunks) > 1:
                _, old_rate, old, _ = self._chunks.popleft()
                self._seconds -= len(old) / 2 / old_rate
                self.dropped += 1

    @property
    def seconds(self) -> float:
        """How much audio waits (read without the lock: a float is replaced whole)."""
        return self._seconds

    def take(self) -> list[Piece]:
        """Everything stored, with pieces that followed each other without a gap joined: the
        loop then resamples and places one run, not every callback's piece."""
        with self._lock:
            chunks = list(self._chunks)
            self._chunks.clear()
            self._seconds = 0.0
        runs: list[Piece] = []
        pieces: list[bytes] = []
        for dac_time, rate, pcm, after_gap in chunks:
            if runs and pieces and not after_gap:
                start, run_rate, _, _ = runs[-1]
                ends = start + sum(map(len, pieces)) / 2 / run_rate
                if rate == run_rate and abs(dac_time - ends) <= self.CONTIGUOUS_S:
                    pieces.append(pcm)
                    continue
            if runs:
                runs[-1] = (*runs[-1][:2], b"".join(pieces), runs[-1][3])
            runs.append((dac_time, rate, b"", after_gap))
            pieces = [pcm]
        if runs:
            runs[-1] = (*runs[-1][:2], b"".join(pieces), runs[-1][3])
        return runs

    def clear(self) -> None:
        self.take()


class Anchor:
    """Where the next block of a stream goes: counted on from the last one, re-read from its time
    stamp only when the stamps disagree by more than `tolerance` several times in a row (a
    restarted stream), or at once when they disagree wildly or the stream says it ran dry
    (`follow`: counting on would put the audio after the gap where the gap was)."""

    def __init__(self, rate: int, tolerance_ms: float = 8.0, persist: int = 4) -> None:
        self._tolerance = rate * tolerance_ms / 1000
        self._jump = rate * 0.2
        self._persist = persist
        self._misses = 0
        self.next: int | None = None
        self.jumps = 0

    def place(self, stamped: int, follow: bool = False) -> int:
        if self.next is None:
            self.next = stamped
            return stamped
        off = abs(stamped - self.next)
        persisted = follow or self._misses + 1 >= self._persist
        if off > self._jump or (off > self._tolerance and persisted):
            self.next, self._misses = stamped, 0
            self.jumps += 1
        elif off > self._tolerance:
            self._misses += 1
        else:
            self._misses = 0
        return self.next

    def advance(self, count: int) -> None:
        if self.next is not None:
            self.next += count

    def reset(self) -> None:
        self.next, self._misses = None, 0


class Timeline:
    """A ring of the last `size` samples of the reference, addressed by absolute position."""

    def __init__(self, size: int) -> None:
        self._ring = np.zeros(size, np.float32)
        self._size = size
        self.end: int | None = None  # one past the newest position written

    def write(self, pos: int, data: Floats) -> None:
        n = len(data)
        if n == 0:
            return
        if n > self._size:
            pos, data, n = pos + n - self._size, data[-self._size :], self._size
        if self.end is not None and pos > self.end:  # a gap: nothing was played there
            gap = min(pos - self.end, self._size)
            self._put(pos - gap, np.zeros(gap, np.float32))
        self._put(pos, data)
        if self.end is None or pos + n > self.end:
            self.end = pos + n

    def kept_from(self) -> int:
        """The oldest position still held (anything before it was overwritten, or never was)."""
        return (self.end if self.end is not None else 0) - self._size

    def _put(self, pos: int, data: Floats) -> None:
        """Store at most `size` samples from pos: one slice copy, two where the ring wraps."""
        a = pos % self._size
        first = min(len(data), self._size - a)
        self._ring[a : a + first] = data[:first]
        if first < len(data):
            self._ring[: len(data) - first] = data[first:]

    def read(self, pos: int, n: int, dtype: type[np.generic] = np.float32) -> tuple[Any, int]:
        """n samples from pos as `dtype` (a copy); silence where nothing is stored. Also: how many
        were missing past the newest written sample (the playback side had not delivered them
        yet)."""
        if self.end is not None and pos >= self.end - self._size and pos + n <= self.end:
            a = pos % self._size
            if a + n <= self._size:  # the usual case: one slice, one conversion
                return self._ring[a : a + n].astype(dtype), 0
        out = np.zeros(n, np.float32)
        if self.end is None:
            return out.astype(dtype, copy=False), 0
        lo, hi = max(pos, self.end - self._size), min(pos + n, self.end)
        if hi > lo:
            a, b = lo % self._size, (hi - 1) % self._size + 1
            if a < b:
                out[lo - pos : hi - pos] = self._ring[a:b]
            else:  # wraps around the ring's end
                split = lo - pos + self._size - a
                out[lo - pos : split] = self._ring[a:]
                out[split : hi - pos] = self._ring[:b]
        return out.astype(dtype, copy=False), max(0, pos + n - max(self.end, pos))

    def clear(self) -> None:
        self._ring[:] = 0.0
        self.end = None


def fft_size(n: int) -> int:
    """The smallest length >= n with no prime factor above 5: as fast as a power of two for
    numpy's FFT, and up to half the size (5120 rather than 8192 for the default window)."""
    best = 1 << max(0, (n - 1).bit_length())
    f5 = 1
    while f5 < best:
        f3 = f5
        while f3 < best:
            f2 = f3
            while f2 < n:
                f2 *= 2
            best = min(best, f2)
            f3 *= 3
        f5 *= 5
    return best


@dataclass
class Estimate:
    delay_ms: float
    confidence: float


class DelayEstimator:
    """Coarse acoustic delay (reference -> microphone) by GCC-PHAT on 2 kHz copies of both
    (200-900 Hz, where speech carries most of its energy: half the work of 4 kHz copies, the same
    estimates on the synthetic room)."""

    RATE = 2000
    WINDOW_S = 1.0
    PERIOD_S = 0.5
    MIN_LEAD_MS = 40.0  # the echo may come a little earlier than the stamps say
    ACTIVE_DBFS = -50.0
    MIN_CONFIDENCE = 1.5  # main peak over the next one more than 3 ms away
    MIN_SHARPNESS = 6.0  # main peak in standard deviations of the whole correlation
    AGREE_MS = 2.0
    SURE = 3.0  # a peak this clear is taken without waiting for a second one
    SMOOTHING = 0.6  # per update (0.5 s): the average forgets in about a second

    def __init__(self, capture_rate: int, max_delay_ms: int) -> None:
        self._mic_dec = Resampler(capture_rate, self.RATE)
        self._ref_dec = Resampler(capture_rate, self.RATE)
        self._max = int(self.RATE * max_delay_ms / 1000)
        self._lead = int(self.RATE * self.MIN_LEAD_MS / 1000)
        self._win = int(self.RATE * self.WINDOW_S)
        self._hist = self._win + self._max + self._lead
        self._period_in = int(capture_rate * self.PERIOD_S)  # capture samples per estimate
        n = self._nfft = fft_size(self._hist + self._win)
        freqs = np.fft.rfftfreq(n, 1 / self.RATE)
        self._band = ((freqs > 200) & (freqs < 900)).astype(np.float32)
        self._lags = np.arange(-self._max - self._lead, 1)  # correlation lags that are delays
        self.reset()

    def reset(self) -> None:
        self._mic_dec.reset()
        self._ref_dec.reset()
        self._mic = np.zeros(self._hist, np.float32)
        self._ref = np.zeros(self._hist, np.float32)
        self._fill = 0
        self._pending_mic: list[Floats] = []
        self._pending_ref: list[Floats] = []
        self._pending = 0
        self._cross = np.zeros(self._nfft // 2 + 1, np.complex64)
        self._last: float | None = None
        self.delay_ms: float | None = None
        self.confidence = 0.0
        self.updates = 0

    def feed(self, mic: Floats, ref: Floats) -> bool:
        """Add a capture block and the stamp-aligned reference; True when the delay changed.

        Blocks wait at the capture rate and are decimated together once per period: one filter
        pass per half second rather than two per capture frame."""
        self._pending_mic.append(mic)
        self._pending_ref.append(ref)
        self._pending += len(mic)
        if self._pending < self._period_in:
            return False
        m = self._mic_dec.process(np.concatenate(self._pending_mic))
        r = self._ref_dec.process(np.concatenate(self._pending_ref))
        self._pending_mic.clear()
        self._pending_ref.clear()
        self._pending = 0
        k = min(len(m), self._hist)
        self._mic = np.concatenate((self._mic[k:], m[len(m) - k :]))
        self._ref = np.concatenate((self._ref[k:], r[len(r) - k :]))
        self._fill += k
        if self._fill < self._win + self._lead:
            return False
        est = self.estimate()
        if est is None:
            return False
        self.confidence = est.confidence
        agreed = est.confidence >= self.SURE or (
            self._last is not None and abs(est.delay_ms - self._last) <= self.AGREE_MS
        )
        self._last = est.delay_ms
        if not agreed:
            return False
        if self.delay_ms is not None and abs(est.delay_ms - self.delay_ms) <= self.AGREE_MS:
            return False
        self.delay_ms = est.delay_ms
        self.updates += 1
        return True

    def estimate(self) -> Estimate | None:
        """One GCC-PHAT over the current window, or None when the far end was too quiet."""
        mic = self._mic[self._max : self._max + self._win]
        ref = self._ref
        # the reference must carry sound over the span the microphone window could have heard
        blocks = ref[: len(ref) // 40 * 40].reshape(-1, 40)
        # (in dB of full scale: the samples are int16's, so a power is over 32768 squared; read
        # as dB of one step, the gate once passed comfort noise and digital near-silence alike)
        power = np.mean(blocks * blocks, axis=1) / 32768.0**2
        if np.mean(power > 10 ** (self.ACTIVE_DBFS / 10)) < 0.3:
            return None
        # single precision throughout (float32 in, complex64 out: numpy >= 2 keeps the type),
        # half the work of double; the peak test needs nothing finer
        cross = np.fft.rfft(mic, self._nfft) * np.conj(np.fft.rfft(ref, self._nfft))
        # the cross spectrum is averaged over successive windows (it forgets in a couple of
        # seconds), then whitened: one reverberant window alone gives too ragged a peak
        norm = np.float32(np.sum(np.abs(cross)) + 1e-12)
        self._cross *= self.SMOOTHING
        self._cross += (1 - self.SMOOTHING) / norm * cross
        spec = self._band * self._cross / (np.abs(self._cross) + np.float32(1e-12))
        cc = np.fft.irfft(spec, self._nfft)
        # mic[j] (history index max + j) hears ref[max + j - d]: the correlation lag is d - max
        lags = self._lags
        values = cc[lags % self._nfft]
        delays = lags + self._max
        best = int(np.argmax(values))
        peak = float(values[best])
        aside = np.abs(delays - delays[best]) > self.RATE * 0.003
        rest = float(np.max(values[aside])) if np.any(aside) else 0.0
        spread = float(np.std(values)) + 1e-12
        confidence = peak / max(rest, 1e-12)
        if peak <= 0 or confidence < self.MIN_CONFIDENCE or peak / spread < self.MIN_SHARPNESS:
            return None
        return Estimate(float(delays[best]) * 1000 / self.RATE, confidence)
