"""The playback (jitter) buffer between the event loop and PortAudio's output callback.

The server sends audio in bursts, often faster than real time; the speaker wants a steady stream.
The buffer holds bytes, starts playing once a small prebuffer is in, outputs silence and counts an
underrun when it runs dry mid-stream (then primes again), and drops the oldest audio when it would
exceed its bound (an overrun). The prebuffer adapts: it grows after an underrun and shrinks slowly
while playback is smooth, so a calm network gets low latency and a jittery one stops stuttering.

A prebuffer only sets where playback starts; on a steady real-time stream the level then stays
there for the whole call, adding its full length to every round trip although the network never
needed it. So the buffer also watches its own low-water mark: when, over a window of steady
playback, it never fell below `margin_ms`, that standing excess is latency that absorbed no
jitter, and it is trimmed, only from quiet audio (pauses, comfort noise), never from speech. A
stream that is bursting ahead (the level well above `adapt_max_ms`) is left alone: that audio is
the server's lead, not our delay. Each underrun widens the margin by 10 ms for the rest of the
call, so on a jittery link the trimmer learns how much of the buffer the network really uses.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable

QUIET_PEAK = 512  # about -36 dBFS: comfort noise and pauses are below it, speech is not
MARGIN_STEP_MS = 10.0  # how much each underrun widens the margin
MARGIN_MAX_MS = 120.0


class JitterBuffer:
    """Thread-safe: `write` from the loop, `read` from the audio callback. s16le mono."""

    def __init__(
        self,
        rate: int,
        prebuffer_ms: float,
        max_ms: float,
        adapt_max_ms: float = 240.0,
        relax_after_s: float = 10.0,
        clock: Callable[[], float] | None = None,
        margin_ms: float = 10.0,
        trim_window_s: float = 2.0,
    ) -> None:
        self.rate = rate
        self.base_prebuffer = self._bytes(prebuffer_ms)
        self.prebuffer = self.base_prebuffer
        self.max_bytes = max(self._bytes(max_ms), self.base_prebuffer + 2)
        self.adapt_max = max(self._bytes(adapt_max_ms), self.base_prebuffer)
        self.relax_after_s = relax_after_s
        self._clock = clock or time.monotonic
        self._data = bytearray()
        self._lock = threading.Lock()
        self._playing = False
        self._last_trouble = self._clock()
        self.underruns = 0
        self.overruns = 0
        self.dropped_bytes = 0
        self.bytes_written = 0
        self.bytes_played = 0
        self.trimmed_bytes = 0
        self.base_margin = self._bytes(margin_ms)
        self.margin = self.base_margin
        self.trim_window = self._bytes(trim_window_s * 1000)
        self._window_played = 0
        self._window_low: int | None = None
        self._window_high = 0
        self._trim_due = 0

    def _bytes(self, ms: float) -> int:
        return int(self.rate * ms / 1000) * 2

    @property
    def buffered_ms(self) -> float:
        return len(self._data) / 2 / self.rate * 1000

    @property
    def prebuffer_ms(self) -> float:
        return self.prebuffer / 2 / self.rate * 1000

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._data += pcm
            self.bytes_written += len(pcm)
            excess = len(self._data) - self.max_bytes
            if excess > 0:
                excess += excess % 2
                del self._data[:excess]
                self.overruns += 1
                self.dropped_bytes += excess

    def read(self, nbytes: int) -> bytes:
        """Exactly `nbytes` for the device: audio, or silence while priming or starved."""
        with self._lock:
            if not self._playing:
                if len(self._data) < self.prebuffer or not self._data:
                    return bytes(nbytes)
                self._playing = True
            if len(self._data) >= nbytes:
                chunk = bytes(self._data[:nbytes])
                del self._data[:nbytes]
                self.bytes_played += nbytes
                self._relax()
                self._watch_level(len(self._data), nbytes)
                return chunk
            # Ran dry mid-stream: play what is left, pad with silence, prime again.
            chunk = bytes(self._data) + bytes(nbytes - len(self._data))
            self.bytes_played += len(self._data)
            self._data.clear()
            self._playing = False
            self._reset_window()
            self.underruns += 1
            self._last_trouble = self._clock()
            self.prebuffer = min(self.adapt_max, self.prebuffer + self._bytes(20))
            self.margin = min(self._bytes(MARGIN_MAX_MS), self.margin + self._bytes(MARGIN_STEP_MS))
            return chunk

    def _relax(self) -> None:
        calm_for = self._clock() - self._last_trouble
        if self.prebuffer > self.base_prebuffer and calm_for > self.relax_after_s:
            self.prebuffer = max(self.base_prebuffer, self.prebuffer - self._bytes(10))
            self._last_trouble = self._clock()

    def _watch_level(self, left: int, nbytes: int) -> None:
        """Track the window's low water (after a read) and high water (before it); trim a
        standing excess from quiet audio."""
        self._window_low = left if self._window_low is None else min(self._window_low, left)
        self._window_high = max(self._window_high, left + nbytes)
        self._window_played += nbytes
        if self._trim_due:
            self._trim_quiet()
        if self._window_played < self.trim_window:
            return
        excess = self._window_low - self.margin
        steady = self._window_high <= self.adapt_max
        if not self._trim_due and steady and excess >= self._bytes(5):
            self._trim_due = excess - excess % 2
        self._reset_window()

    def _trim_quiet(self) -> None:
        """Drop the due excess from the front if that audio is quiet; else try on the next read."""
        size = min(self._trim_due, len(self._data) - self.margin)
        if size <= 0:
            self._trim_due = 0
            return
        head = array("h", bytes(self._data[:size]))
        if max(head) > QUIET_PEAK or -min(head) > QUIET_PEAK:
            return
        del self._data[:size]
        self.trimmed_bytes += size
        self._trim_due = 0
        self._reset_window()  # the levels seen so far predate the trim

    def _reset_window(self) -> None:
        self._window_played = 0
        self._window_low = None
        self._window_high = 0

    @property
    def trimmed_ms(self) -> float:
        return self.trimmed_bytes / 2 / self.rate * 1000

    def pending(self) -> bool:
        return bool(self._data)

    def flush(self) -> None:
        with self._lock:
            self._data.clear()
            self._playing = False
            self.prebuffer = self.base_prebuffer
            self.margin = self.base_margin
            self._reset_window()
            self._trim_due = 0
