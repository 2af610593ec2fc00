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
stream that is bursting ahead (the level well above `adapt_max_ms` and draining) is left alone:
that audio is the server's lead, not our delay; a level that high that stands still for two
windows is a pile-up (after a stall of the loop or of the network) and is trimmed too. Each
underrun widens the margin by 10 ms for the rest of the call, so on a jittery link the trimmer
learns how much of the buffer the network really uses.

The margin is not a guess: `DelayTarget` watches how late each frame arrives against its place in
the stream (the way WebRTC's NetEq and Speex's jitter buffer do): a histogram of lateness whose
old counts fade with every frame, and the target is its 95th percentile. On a clean link the
target stays near zero and the writer (see `speaker`) hands frames to the device as they come; on
a jittery one it grows to what the network really needs, and fades again when the link calms.
The next call on the same link starts from what the last one learnt (`new_stream`): the agent
speaks first, before a fresh histogram knows anything, and on a jittery link a cushion learnt
from nothing ran dry in the call's first half second. The first call on a link never measured
(the app has just started) starts on the prebuffer instead, a guess that covers a jittery link's
first frames, and its trimmer's first window is short: on a clean link the guess is given back
(from quiet audio) half a second into the agent's audio.

Where the playout starts sets the cushion for the rest of a real-time stream, and the target can
grow after that (the link gets worse, or the first frames taught it). So the writer's buffer
(adaptive) also works the other way round from the trimmer: when its low water over a short
window stays below what the target asks for, it plays silence in the next quiet spot instead of
the audio there (`inserted_bytes`), which raises the level by as much, before a late frame finds
the buffer empty. Speech is never stretched, as it is never trimmed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LATENESS_BIN_MS = 5.0
LATENESS_BINS = 60  # up to 300 ms of lateness is tracked; later than that is a new talk spurt
# Quiet: every sample within -512..511 (about -36 dBFS): comfort noise and pauses, not speech.
# For 16-bit little-endian audio that is every high byte 0x00, 0x01, 0xfe or 0xff, which bytes
# methods check at C speed: the writer asks at every turn while a trim or an insertion waits for
# a pause, over up to a hundred milliseconds of audio (scanning it in Python, 47 us a look, was a
# fifth of the writer thread's samples in continuous speech; this takes 3 us).
QUIET_HIGH_BYTES = bytes((0x00, 0x01, 0xFE, 0xFF))
MARGIN_STEP_MS = 10.0  # how much each underrun widens the margin
STANDING_MS = 40.0  # two windows' low waters this close: the level stands (not a lead draining)
TRIM_PIECE_MS = 10.0  # the trimmer takes quiet audio in pieces this long, as pauses come
PAUSE_KEPT_MS = 100.0  # trimming a pile-up, each pause keeps this much: speech is not rushed
MARGIN_MAX_MS = 120.0
FIRST_TRIM_WINDOW_S = 0.5  # the trimmer's first window when the start was a guess (see above)
INSERT_WINDOW_MS = 200.0  # the low water the inserter watches is taken over this much playout
INSERT_MIN_MS = 10.0  # a shortfall smaller than this is left alone (a period's wobble)
INSERT_MAX_MS = 60.0  # the most silence one shortfall adds
RESCALE_ABOVE = 1e12


class DelayTarget:
    """A high quantile of arrival lateness, with forgetting: how much audio must wait to cover
    the network's jitter. `arrived(media_s)` per frame; `target_ms` says how much to hold."""

    def __init__(
        self,
        quantile: float = 0.95,
        forget: float = 0.995,  # per frame: at 50 frames a second, old news fades in ~10 s
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.quantile = quantile
        self.forget = forget
        self._clock = clock or time.monotonic
        # Counts are kept unscaled: each new one weighs 1/forget times the one before, which is
        # the same as fading every old count by `forget` (the quantile needs only their ratios)
        # without a pass over the bins per frame.
        self._hist = [0.0] * LATENESS_BINS
        self._weight = 0.0
        self._step = 1.0
        self._base: float | None = None  # earliest (arrival - media time) seen: on-time frames
        self._last_base_at = 0.0

    def arrived(self, media_s: float) -> None:
        """A frame that starts `media_s` into the stream has just arrived."""
        now = self._clock()
        offset = now - media_s
        if self._base is not None:
            # Let the base creep up by 1 ms a second, so clock drift does not read as lateness.
            self._base += min(now - self._last_base_at, 1.0) * 0.001
        if self._base is None or offset < self._base:
            self._base = offset  # earlier than ever: the server sent ahead, or a better path
        self._last_base_at = now
        late_ms = (offset - self._base) * 1000
        if late_ms >= LATENESS_BIN_MS * LATENESS_BINS:
            self._base = offset  # a pause in the stream, not lateness: start from here
            late_ms = 0.0
        self.count(late_ms)

    def count(self, late_ms: float) -> None:
        """One frame `late_ms` behind the on-time ones (below LATENESS_BINS bins' worth)."""
        self._step /= self.forget
        self._hist[int(late_ms // LATENESS_BIN_MS)] += self._step
        self._weight += self._step
        if self._step > RESCALE_ABOVE:  # (after some 5500 frames at 0.995) keep the floats small
            self._hist = [count / self._step for count in self._hist]
            self._weight /= self._step
            self._step = 1.0

    @property
    def measured(self) -> bool:
        """Whether any frame has been counted: the link's lateness is known, not a guess."""
        return self._weight > 0

    def new_stream(self) -> None:
        """The next call's audio starts at media time 0 on the same network: forget where the
        last stream's on-time frames were, keep what the link's lateness looked like (it fades
        with the new call's frames as any old news does)."""
        self._base = None

    @property
    def target_ms(self) -> float:
        if self._weight <= 0:
            return 0.0
        need = self.quantile * self._weight
        total = 0.0
        for index, count in enumerate(self._hist):
            total += count
            if total >= need:
                return (index + 1) * LATENESS_BIN_MS
        return LATENESS_BIN_MS * LATENESS_BINS


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
        adaptive: bool = False,
        device_ms: float = 0.0,
        lateness: DelayTarget | None = None,
    ) -> None:
        self.rate = rate
        self.base_prebuffer = self._bytes(prebuffer_ms)
        self.prebuffer = self.base_prebuffer
        self.prebuffer_peak = self.prebuffer  # how far it grew in this call (it relaxes again)
        self.max_bytes = max(self._bytes(max_ms), self.base_prebuffer + 2)
        self.adapt_max = max(self._bytes(adapt_max_ms), self.base_prebuffer)
        self.relax_after_s = relax_after_s
        self._clock = clock or time.monotonic
        self._data = bytearray()
        self._lock = threading.Lock()
        self._playing = False
        self._last_trouble = self._clock()
        self.starts = 0  # times playout began: at the call's start, and after each underrun
        self.underruns = 0
        self.overruns = 0
        self.dropped_bytes = 0
        self.bytes_written = 0
        self.bytes_played = 0
        self.trimmed_bytes = 0
        self.stale_bytes = 0  # dropped after a device stall
        self.inserted_bytes = 0  # silence played in quiet spots to build the cushion (adaptive)
        self._insert_due = 0
        self._short_low: int | None = None  # the inserter's low water and window
        self._short_played = 0
        self.base_margin = self._bytes(margin_ms)
        self.margin = self.base_margin
        self._trim_window = self._bytes(trim_window_s * 1000)
        self._window_played = 0
        self._window_low: int | None = None
        self._window_high = 0
        self._last_window_low: int | None = None  # the previous trim window's low water
        self._trim_due = 0
        self._trim_keeps = 0  # quiet each pause keeps while the due trim is taken
        if lateness is not None:
            lateness.new_stream()
        self.lateness = lateness or DelayTarget(clock=self._clock)
        self.adaptive = adaptive
        # The start is the prebuffer, a guess (the link is unmeasured), until the first window.
        self._guessing = adaptive and not self.lateness.measured
        self.device = self._bytes(device_ms)  # what the writer keeps in the device (adaptive)
        self._ending = False

    def _bytes(self, ms: float) -> int:
        return int(self.rate * ms / 1000) * 2

    def ms(self, nbytes: int) -> float:
        """How long `nbytes` of this buffer's audio plays, in ms."""
        return nbytes / 2 / self.rate * 1000

    @property
    def buffered_ms(self) -> float:
        return self.ms(len(self._data))

    @property
    def prebuffer_ms(self) -> float:
        return self.ms(self.prebuffer)

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self.lateness.arrived(self.bytes_written / 2 / self.rate)
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
                self.starts += 1
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
            self._dry()
            return chunk

    def take(self, max_bytes: int, device_held_bytes: int) -> bytes:
        """For a writer thread: up to `max_bytes` of audio, or b"" when there is none to give.

        Playback starts once the buffer and the device together hold the prebuffer; a device
        found empty mid-stream is an underrun (the writer could not keep it fed): count it and
        prime again, as `read` does.
        """
        with self._lock:
            if self._playing and device_held_bytes == 0 and not self._data:
                self._dry()
            if not self._playing:
                if not self._data or len(self._data) + device_held_bytes < self._start_level():
                    return b""
                self._playing = True
                self.starts += 1
            if not self._data:
                return b""
            if self._insert_due and self._quiet_head(max_bytes):  # (False under 2 bytes)
                return self._insert(max_bytes)
            size = min(max_bytes, len(self._data))
            size -= size % 2
            chunk = bytes(self._data[:size])
            del self._data[:size]
            self.bytes_played += size
            self._relax()
            self._watch_level(len(self._data), size)
            return chunk

    def _quiet_head(self, nbytes: int) -> bool:
        """Whether the first `nbytes` waiting (all there is, if less) are pauses or comfort
        noise: the only audio the trimmer drops and the inserter delays."""
        return self._quiet_span(0, nbytes)

    def _quiet_span(self, start: int, nbytes: int) -> bool:
        """The same for the `nbytes` from byte `start` (even)."""
        end = min(start + nbytes, len(self._data)) // 2 * 2
        return end > start and not self._data[start + 1 : end : 2].translate(None, QUIET_HIGH_BYTES)

    def _insert(self, max_bytes: int) -> bytes:
        """Silence instead of the quiet audio at the head, which waits: the level rises."""
        size = min(self._insert_due, max_bytes)
        size -= size % 2
        self._insert_due -= size
        self.inserted_bytes += size
        if not self._insert_due:
            self._reset_window()  # the levels seen so far predate the insertion
        return bytes(size)

    def drop_stale(self, seconds: float) -> None:
        """The device stalled for `seconds` while audio kept arriving: that much of the oldest
        audio is late already; drop it (down to the margin) rather than keep it as delay."""
        with self._lock:
            size = min(self._bytes(seconds * 1000), len(self._data) - self._margin())
            size -= size % 2
            if size > 0:
                del self._data[:size]
                self.stale_bytes += size
                self._reset_window()

    def _start_level(self) -> int:
        """How much must be in before playback starts: the prebuffer, or (adaptive) the device's
        share plus the margin, so the first late frame already finds a cushion; on a link not
        yet measured, the prebuffer too (the margin knows nothing of the link yet)."""
        if not self.adaptive:
            return self.prebuffer
        learnt = self.device + self._margin()
        return max(learnt, self.base_prebuffer) if self._guessing else learnt

    def end_of_stream(self) -> None:
        """The far end stops sending (the call is ending): running dry from now on is the end
        of the audio, not an underrun, and teaches the margins nothing."""
        self._ending = True

    def _dry(self) -> None:
        self._playing = False
        self._reset_window()
        self._insert_due = 0  # priming again builds the cushion
        if self._ending:
            return
        self.underruns += 1
        self._last_trouble = self._clock()
        self.prebuffer = min(self.adapt_max, self.prebuffer + self._bytes(20))
        self.prebuffer_peak = max(self.prebuffer_peak, self.prebuffer)
        self.margin = min(self._bytes(MARGIN_MAX_MS), self.margin + self._bytes(MARGIN_STEP_MS))

    def _relax(self) -> None:
        calm_for = self._clock() - self._last_trouble
        if self.prebuffer > self.base_prebuffer and calm_for > self.relax_after_s:
            self.prebuffer = max(self.base_prebuffer, self.prebuffer - self._bytes(10))
            self._last_trouble = self._clock()

    def _watch_level(self, left: int, nbytes: int) -> None:
        """Track the window's low water (after a read) and high water (before it); trim a
        standing excess from quiet audio."""
        if self.adaptive:
            self._watch_shortfall(left, nbytes)
        self._window_low = left if self._window_low is None else min(self._window_low, left)
        self._window_high = max(self._window_high, left + nbytes)
        self._window_played += nbytes
        if self._trim_due:
            self._trim_quiet()
        if self._window_played < self.trim_window:
            return
        low = self._window_low
        excess = low - self._margin()
        if not self._trim_due and self._standing(low) and excess >= self._bytes(5):
            self._trim_due = excess - excess % 2
            # A pile-up may be long: it is taken from every pause as it comes, down to a pause
            # a person still hears as one; a small excess goes from the first quiet spot.
            piled_up = self._window_high > self.adapt_max
            self._trim_keeps = self._bytes(PAUSE_KEPT_MS) if piled_up else 0
        self._reset_trim_window()  # (the inserter's shorter window runs on: it has its own end)
        self._last_window_low = low
        self._guessing = False  # a first window has judged the guess: windows as usual

    @property
    def trim_window(self) -> int:
        """The trimmer's window (bytes of playout): short while the start is a guess."""
        if self._guessing:
            return min(self._trim_window, self._bytes(FIRST_TRIM_WINDOW_S * 1000))
        return self._trim_window

    def _standing(self, low: int) -> bool:
        """Whether the window's level is latency that stands, not the server's lead: at most
        `adapt_max`, or, above it, as low as the window before (a lead drains as the agent's
        turn plays out; a pile-up after a stall, of the loop or the network, never does, and
        left alone it added half a second to every turn for the rest of a call)."""
        if self._window_high <= self.adapt_max:
            return True
        last = self._last_window_low
        return last is not None and abs(low - last) <= self._bytes(STANDING_MS)

    def _watch_shortfall(self, left: int, nbytes: int) -> None:
        """The inserter's half of `_watch_level`: a low water below the margin, over a short
        window, is a cushion the link needs and the buffer lacks; play it in as silence."""
        if self._insert_due:
            return
        low = self._short_low
        self._short_low = left if low is None else min(low, left)
        self._short_played += nbytes
        if self._short_played < self._bytes(INSERT_WINDOW_MS):
            return
        short = self._margin() - self._short_low
        self._short_low, self._short_played = None, 0
        if short >= self._bytes(INSERT_MIN_MS):
            self._insert_due = min(short, self._bytes(INSERT_MAX_MS))

    def _margin(self) -> int:
        """What the trimmer leaves: the underrun-grown margin (one device period to start with)
        plus, when adaptive, the learnt lateness target less what the device itself holds: a
        late frame finds the device's audio ahead of it as much as the buffer's."""
        if self.adaptive:
            return max(0, self.margin + self._bytes(self.lateness.target_ms) - self.device)
        return self.margin

    def _trim_quiet(self) -> None:
        """Drop as much of the due excess from the front as is quiet there, a piece at a time
        (a pile-up of half a second rarely meets a pause that long at once), keeping
        `_trim_keeps` of each pause; the rest on the next reads, as pauses come."""
        size = min(self._trim_due, len(self._data) - self._margin())
        if size <= 0:
            self._trim_due = 0
            return
        piece = self._bytes(TRIM_PIECE_MS)
        reach = size + self._trim_keeps  # what is dropped, and the pause kept after it
        quiet = 0
        while quiet < reach:
            step = min(piece, reach - quiet)
            if not self._quiet_span(quiet, step):
                break
            quiet += step
        drop = min(size, quiet - self._trim_keeps)
        if drop <= 0:
            return
        del self._data[:drop]
        self.trimmed_bytes += drop
        self._trim_due -= drop
        if not self._trim_due:
            self._reset_window()  # the levels seen so far predate the trim

    def _reset_window(self) -> None:
        """Both watchers start over: the level changed under them (a trim, an insertion, a dry
        buffer, stale audio dropped)."""
        self._reset_trim_window()
        self._last_window_low = None
        self._short_low, self._short_played = None, 0

    def _reset_trim_window(self) -> None:
        self._window_played = 0
        self._window_low = None
        self._window_high = 0

    @property
    def trimmed_ms(self) -> float:
        return self.ms(self.trimmed_bytes)

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
            self._insert_due = 0
            self._ending = False
