"""The echo stage between the microphone and the uplink: reference in from the speaker's thread,
clean capture frames out on the event loop.

`far_end` runs on PortAudio's playback thread and only stores bytes and a time stamp. `process`
runs on the loop with each capture frame and does only what that frame needs: the stored
reference moves onto the shared sample axis (resampled to the capture rate) when the frame needs
samples not there yet, and the engine gets the microphone with the reference delayed by the
estimated acoustic delay minus a small margin (so the adaptive filter also sees the first
reflections, and an estimate a little too long does not put the echo before the filter's start).
Both of the engine's inputs get a random lowest bit (`LsbDither`): on digital silence AEC3 cost
14 times its usual CPU. The stage times itself and the engine, for the call's summary.
Everything else waits for a round of bookkeeping every half second: the delay estimate over the
microphone and the stamp-aligned reference, and the call's ERLE. Per frame, that work cost as much
CPU as the canceller itself (numpy's fixed cost per call, measured live). Ducking, when asked for,
follows the engine and listens to the same aligned reference, per frame.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time

import numpy as np
import numpy.typing as npt

from ..logs import event
from .align import Anchor, DelayEstimator, FarEndStore, Timeline
from .duck import Ducker, level_dbfs
from .engine import BLOCK_MS, Canceller, EchoUnavailable, LsbDither, Passthrough, Samples
from .resample import Resampler

Floats = npt.NDArray[np.float32]

MARGIN_MS = 10  # the engine gets the reference this much earlier than the estimated delay
SHIFT_HYSTERESIS_MS = 25.0  # smaller moves of the estimate are left to the adaptive filter
STORE_SECONDS = 2.0  # reference waiting for the loop, at most (the loop stalled if more)
BOOK_FRAMES = 25  # capture frames per round of bookkeeping (delay estimate, ERLE): 0.5 s at 20 ms
PULL_AT_S = 0.1  # the reference waiting this long is moved even before a frame needs it (every
# fifth frame behind a 100 ms output buffer: each move is a dozen numpy calls)
FAR_ACTIVE_DBFS = -50.0  # the far end "plays" above this level (where ERLE is counted)


def open_engine(name: str, rate: int) -> Canceller:
    """The named engine ("webrtc", "speex" or "off"); EchoUnavailable if it cannot run here."""
    if name == "webrtc":
        from .webrtc import WebRtcCanceller

        return WebRtcCanceller(rate)
    if name == "speex":
        from .speex import SpeexCanceller

        return SpeexCanceller(rate)
    if name == "off":
        return Passthrough()
    raise EchoUnavailable(f"echo canceller {name!r} does not exist; choose webrtc, speex or off.")


class Stage:
    """See EchoStage in the package: this is its implementation, with an injectable engine."""

    def __init__(
        self,
        engine: Canceller,
        capture_rate: int = 16000,
        *,
        duck: bool = False,
        max_delay_ms: int = 500,
    ) -> None:
        if capture_rate % 100:
            raise ValueError("the capture rate must hold a whole number of samples in 10 ms")
        self.engine = engine
        self.engine_name = engine.name
        self.rate = capture_rate
        self.block = capture_rate * BLOCK_MS // 1000
        self.max_delay_ms = max_delay_ms
        # how far back the microphone can hear the far end, in whole blocks (the ERLE gate's reach)
        self._reach = capture_rate * max_delay_ms // 1000 // self.block * self.block
        self._store = FarEndStore(STORE_SECONDS)
        self._timeline = Timeline(capture_rate * (max_delay_ms + 2000) // 1000)
        self._estimator = DelayEstimator(capture_rate, max_delay_ms)
        self._ducker = Ducker(BLOCK_MS) if duck else None
        self._far_levels: collections.deque[float] = collections.deque(
            maxlen=max_delay_ms // BLOCK_MS + 1
        )
        self._resamplers: dict[int, Resampler] = {}
        self._mic_dither, self._ref_dither = LsbDither(1), LsbDither(2)
        self._far_anchor = Anchor(capture_rate)
        self._mic_anchor = Anchor(capture_rate)
        self._book: list[tuple[int, Samples, Samples]] = []  # (position, mic, cleaned) per frame
        self._origin: float | None = None
        self._last_far: float | None = None
        self._updates_before = 0  # the delay's updates before this call's last realignment
        self.reset()

    # ---------------------------------------------------------------- playback thread

    def far_end(self, pcm: bytes, rate: int, dac_time: float, after_gap: bool = False) -> None:
        """`pcm` reaches the speaker at `dac_time`; `after_gap`: the device played nothing of
        ours just before it (it ran dry), so the stamp, not the count, says where it goes."""
        self._store.put(pcm, rate, dac_time, after_gap)

    # ---------------------------------------------------------------- event loop

    def reset(self) -> None:
        """A new call: aligned afresh, and its figures start at zero."""
        self.realign()
        self._updates_before = 0
        self._store.dropped = 0
        self._stale_said = False
        self._frames = 0
        self._underflows = 0
        self._stale = 0  # frames whose reference was overwritten long ago: stamps disagree
        self._ducked_frames = 0
        self._mic_energy = 0.0
        self._out_energy = 0.0
        self._cpu_s = 0.0
        self._engine_s = 0.0

    def realign(self, keep_path: bool = False) -> None:
        """New streams mid-call (a device reopened): new time stamps, so the canceller aligns
        afresh; the call's figures go on (reset to zero here, the summary of a call with a
        hiccup in its last minute spoke of that minute only).

        `keep_path`: the same devices reopened (one side, on the same PortAudio): the room, the
        delay the stamps miss and the engine's filter are what they were, and only the
        streams' sample counts start again. Learning it all afresh let the agent's voice
        through for seconds after every hiccup (speex: about 4 s)."""
        self._far_anchor.reset()
        self._mic_anchor.reset()
        for r in self._resamplers.values():
            r.reset()
        if keep_path:
            return
        self._store.clear()
        self._timeline.clear()
        self._updates_before += self._estimator.updates
        self._estimator.reset()
        self._far_levels.clear()
        self._book.clear()
        self._origin = None
        self._last_far = None
        self.engine.reset()
        if self._ducker is not None:
            self._ducker.reset()
        self._shift = 0  # samples: reference read this far before the stamp-aligned position

    def _pos(self, t: float) -> int:
        if self._origin is None:
            self._origin = t
        return round((t - self._origin) * self.rate)

    def _pull_reference(self) -> None:
        for dac_time, rate, pcm, after_gap in self._store.take():
            if not pcm:
                continue
            resampler = self._resamplers.get(rate)
            if resampler is None:
                resampler = self._resamplers[rate] = Resampler(rate, self.rate)
            stamped = self._pos(dac_time)
            before = self._far_anchor.jumps
            pos = self._far_anchor.place(stamped, follow=after_gap)
            if self._far_anchor.jumps != before:
                resampler.reset()
            data = resampler.process(np.frombuffer(pcm, np.int16))
            np.clip(data, -32768, 32767, out=data)  # the filter's ripple may overshoot int16
            self._timeline.write(pos, data)
            self._far_anchor.advance(len(data))
            self._last_far = dac_time

    def process(self, mic: bytes, adc_time: float) -> bytes:
        t0 = time.thread_time()
        try:
            return self._process(mic, adc_time)
        finally:
            self._cpu_s += time.thread_time() - t0

    def _process(self, mic: bytes, adc_time: float) -> bytes:
        if self.engine_name == "off" and self._ducker is None:
            self._store.clear()  # nothing to do with the reference: "off" costs nothing
            self._frames += 1
            return mic
        samples = np.frombuffer(mic, np.int16)
        n = len(samples) - len(samples) % self.block
        if n == 0:
            return mic
        if n < len(samples):
            samples = samples[:n]
        start = self._mic_anchor.place(self._pos(adc_time))
        self._mic_anchor.advance(n)
        # The engine reads the reference `shift` before the frame (after it, for a negative
        # shift), the ducker at the frame itself: the reference must reach the later of both.
        reads_from = start - self._shift
        if self._ducker is not None:
            reads_from = max(start, reads_from)
        if self._reference_short(reads_from + n):
            self._pull_reference()
        # The whole frame goes through the engine in one call (a whole number of its blocks):
        # per-block Python work was half the stage's cost on top of the canceller itself.
        if self.engine_name != "off":
            ref, missing = self._timeline.read(start - self._shift, n, np.int16)
            if missing:
                self._underflows += 1
            elif self._timeline.kept_from() >= start - self._shift + n:
                self._reference_stale()
            t1 = time.thread_time()
            cleaned = self.engine.process(
                self._mic_dither.apply(samples), self._ref_dither.apply(ref)
            )
            self._engine_s += time.thread_time() - t1
        else:
            cleaned = samples
        self._book.append((start, samples, cleaned))
        if len(self._book) >= BOOK_FRAMES:
            self._keep_books()
        if self._ducker is not None:
            cleaned = self._duck(self._ducker, start, n, cleaned)
        self._frames += 1
        return cleaned.tobytes() if 2 * n == len(mic) else cleaned.tobytes() + mic[2 * n :]

    def _reference_stale(self) -> None:
        """The reference this frame needs was played seconds ago, by the stamps: the playback
        and capture stamps are not on one clock (the canceller then gets silence for a
        reference and cancels nothing). Said once a call; counted in the summary."""
        self._stale += 1
        if self._stale == BOOK_FRAMES and not self._stale_said:
            self._stale_said = True
            event(
                "echo_reference_misaligned",
                logging.WARNING,
                detail="the speaker's and the microphone's time stamps disagree by more than "
                f"{STORE_SECONDS + self.max_delay_ms / 1000:g} s: nothing is cancelled",
                action="please report this line with the sound card's name",
            )

    def _reference_short(self, needed_end: int) -> bool:
        """Whether the reference must move onto the timeline now: the frame needs samples past
        its end, or enough waits that one resampling call takes several playback pieces."""
        end = self._timeline.end
        return end is None or end < needed_end or self._store.seconds >= PULL_AT_S

    def _duck(self, ducker: Ducker, start: int, n: int, cleaned: Samples) -> Samples:
        """The half-duplex fallback on this frame, at the far end's level where the microphone
        hears it (one level per frame: a 20 ms matter for a gain with a 250 ms hangover)."""
        stamped, _ = self._timeline.read(start, n)
        level = level_dbfs(stamped)
        far_dbs = []
        for _ in range(n // self.block):
            self._far_levels.append(level)
            far_dbs.append(self._far_level_now())
        out = duck_blocks(ducker, cleaned, far_dbs, self.block)
        if ducker.active:
            self._ducked_frames += 1
        return out

    def _keep_books(self) -> None:
        """The half-second round: the delay estimate and the call's ERLE over the frames since
        the last round, each a few numpy calls over the whole batch."""
        book, self._book = self._book, []
        self._pull_reference()
        first = book[0][0]
        sizes = [len(m) for _, m, _ in book]
        starts = itertools.accumulate(sizes[:-1], initial=first)  # where each frame would be
        contiguous = all(pos == at for (pos, _, _), at in zip(book, starts, strict=True))
        mic = np.concatenate([m for _, m, _ in book]).astype(np.float32)
        if contiguous:  # one read: the batch's reference and the reach before it (for the ERLE)
            far, _ = self._timeline.read(first - self._reach, self._reach + len(mic))
            stamped = far[self._reach :]
        else:  # the microphone's stamps jumped within the batch: each frame where it was heard
            stamped = np.concatenate([self._timeline.read(p, len(m))[0] for p, m, _ in book])
        if self._estimator.feed(mic, stamped):
            self._apply_delay()
        if contiguous and len(set(sizes)) == 1:
            cleaned = np.concatenate([c for _, _, c in book]).astype(np.float32)
            self._count_energy(far, mic.reshape(len(book), -1), cleaned.reshape(len(book), -1))

    def _count_energy(self, far: Floats, mic: Floats, cleaned: Floats) -> None:
        """Microphone and uplink energy in frames where the far end plays where the microphone
        hears it (at the estimated delay; anywhere in the delay range while it is not known):
        the call's ERLE. `mic` and `cleaned` hold a frame per row; `far` is the reference from
        `_reach` samples before the first frame to the end of the last."""
        frames, size = mic.shape
        blocks = far.reshape(-1, self.block)
        power = np.einsum("ij,ij->i", blocks, blocks) / self.block
        per_frame = size // self.block
        reach_blocks = self._reach // self.block
        delay = self._estimator.delay_ms
        if delay is None:  # the loudest block in each frame's reach
            reach = np.lib.stride_tricks.sliding_window_view(power, reach_blocks + per_frame)
            loudest = reach[::per_frame].max(axis=1)[:frames]
        else:
            back = min(reach_blocks, round(max(0.0, delay) / BLOCK_MS))
            heard = power[reach_blocks - back :][: frames * per_frame]
            loudest = heard.reshape(frames, per_frame).max(axis=1)
        plays = loudest > 32768.0**2 * 10 ** (FAR_ACTIVE_DBFS / 10)
        if not plays.any():
            return
        self._mic_energy += float(np.einsum("ij,ij->", mic[plays], mic[plays]))
        self._out_energy += float(np.einsum("ij,ij->", cleaned[plays], cleaned[plays]))

    def _far_level_now(self) -> float:
        """The far end's level where the microphone hears it now: at the estimated delay, or the
        loudest over the whole delay range while the delay is not known yet."""
        if not self._far_levels:
            return -120.0
        delay = self._estimator.delay_ms
        if delay is None:
            return max(self._far_levels)
        back = int(max(0.0, delay) // BLOCK_MS) + 1
        return self._far_levels[-min(back, len(self._far_levels))]

    def _apply_delay(self) -> None:
        """Shift the reference by the part of the delay the engine does not track itself, and
        only when the echo leaves the span the engine copes with: the echo path drifts by a few
        ms (clock drift, a resampling sound server), which the adaptive filter follows, while
        each shift makes it learn the path again. Never with the echo ahead of its reference:
        no engine cancels an echo that comes before what it is the echo of, so a delay that
        shrinks, or an echo earlier than the stamps say, moves the reference at once (later
        samples, for the second: the stamps put them on the timeline before they play)."""
        delay = self._estimator.delay_ms
        if delay is None:
            return
        lead_ms = delay - self._shift * 1000 / self.rate  # where the echo lands in the reference
        span_ms = max(self.engine.tracks_delay_ms, MARGIN_MS + SHIFT_HYSTERESIS_MS)
        if MARGIN_MS / 2 <= lead_ms <= span_ms:
            return
        # The echo lands MARGIN_MS after the reference's start, or, within the engine's own
        # reach, the path is left alone: whichever is the smaller move (a delay that wanders
        # about the edge of that reach moved 140 ms there and back, and reset AEC3, each time).
        shift_ms = self._shift * 1000 / self.rate
        choices = [delay - MARGIN_MS]
        if MARGIN_MS / 2 <= delay <= self.engine.tracks_delay_ms:
            choices.append(0.0)
        wanted_ms = min(choices, key=lambda ms: abs(ms - shift_ms))
        wanted = round(wanted_ms * self.rate / 1000)
        if wanted == self._shift:
            return
        moved_ms = abs(wanted_ms - shift_ms)
        self._shift = wanted
        if self.engine.tracks_delay_ms and moved_ms >= SHIFT_HYSTERESIS_MS:
            # AEC3's delay tracker had settled on the old alignment and took about 4 s to let go
            # of a 290 ms jump (measured live); a fresh one converges in under a second. A few
            # ms it follows by itself. (Speex keeps its filter: with the echo in its tail it
            # adapts faster than it restarts.)
            self.engine.reset()
        event(
            "echo_delay",
            logging.DEBUG,
            delay_ms=round(delay, 1),
            confidence=round(self._estimator.confidence, 2),
        )

    def stats(self) -> dict[str, int | float]:
        if self._book:
            self._keep_books()
        erle = (
            10 * np.log10((self._mic_energy + 1e-9) / (self._out_energy + 1e-9))
            if self._mic_energy > 0
            else 0.0
        )
        delay = self._estimator.delay_ms
        return {
            "frames": self._frames,
            "delay_ms": round(delay, 1) if delay is not None else -1,
            "delay_updates": self._updates_before + self._estimator.updates,
            "erle_db": round(float(erle), 1),
            "ref_underflows": self._underflows,
            "ref_stale": self._stale,
            "ref_dropped": self._store.dropped,
            "ducked_frames": self._ducked_frames,
            "cpu_ms": round(self._cpu_s * 1000, 1),
            "engine_cpu_ms": round(self._engine_s * 1000, 1),
        }

    def close(self) -> None:
        self.engine.close()


def duck_blocks(
    ducker: Ducker, cleaned: npt.NDArray[np.int16], far_dbs: list[float], block: int
) -> npt.NDArray[np.int16]:
    """The ducker's gain over each block of a frame, at that block's far-end level."""
    out = cleaned.astype(np.float32)
    for i, far_db in enumerate(far_dbs):
        part = slice(i * block, (i + 1) * block)
        out[part] = ducker.process(out[part], far_db)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
