"""Short generated tones (earcons): 16-bit mono PCM made once per (earcon, rate, volume), cached.

Each earcon is a tiny score of sine notes, told apart by pitch and direction: call start rises,
end falls, live is one bright note, error is two low notes, ready climbs three. Every note fades in
and out over a few milliseconds (a raised-cosine ramp) so the speaker does not click. Generation
is a one-off Python loop over a few thousand samples; the result is cached and reused.
"""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass
from functools import lru_cache

from .states import Earcon

FULL_SCALE = 32767
FADE_S = 0.005  # per note, in and out


@dataclass(frozen=True)
class Note:
    """One sine tone, then an optional silence before the next note."""

    freq_hz: float
    dur_s: float
    gap_s: float = 0.0


SCORES: dict[Earcon, tuple[Note, ...]] = {
    # Press accepted, placing the call: rising fourth-plus (D5 -> A5).
    Earcon.CALL_START: (Note(587.33, 0.07, 0.02), Note(880.0, 0.09)),
    # The agent is on the line: one bright, short note (D6).
    Earcon.LIVE: (Note(1174.66, 0.12),),
    # The call ended: falling (A5 -> D5), the mirror of call start.
    Earcon.END: (Note(880.0, 0.08, 0.02), Note(587.33, 0.12)),
    # Something needs attention: two low notes (B-flat 3), unlike any of the others.
    Earcon.ERROR: (Note(233.08, 0.09, 0.04), Note(233.08, 0.09)),
    # The service's call-length limit ended the call: three falling steps (G5 -> E5 -> C5).
    Earcon.LIMIT: (Note(783.99, 0.06, 0.02), Note(659.25, 0.06, 0.02), Note(523.25, 0.1)),
    # The setup page opened: two quick high E6 notes and an A6, like a doorbell.
    Earcon.SETUP: (Note(1318.51, 0.05, 0.03), Note(1318.51, 0.05, 0.03), Note(1760.0, 0.08)),
    # Ready for a press (the device without an LED says it so): a rising C major arpeggio, the
    # limit's steps the other way up (C5 -> E5 -> G5).
    Earcon.READY: (Note(523.25, 0.05, 0.02), Note(659.25, 0.05, 0.02), Note(783.99, 0.1)),
}


def duration_s(which: Earcon) -> float:
    """How long an earcon lasts, silences included."""
    return sum(note.dur_s + note.gap_s for note in SCORES[which])


def _note(note: Note, rate: int, amplitude: float) -> array[int]:
    count = max(1, round(note.dur_s * rate))
    fade = max(1, min(round(FADE_S * rate), count // 2))
    step = 2.0 * math.pi * note.freq_hz / rate
    out = array("h", bytes(2 * count))
    for i in range(count):
        edge = min(i, count - 1 - i)
        gain = 0.5 - 0.5 * math.cos(math.pi * edge / fade) if edge < fade else 1.0
        out[i] = round(amplitude * gain * math.sin(step * i))
    out.extend(array("h", bytes(2 * round(note.gap_s * rate))))
    return out


@lru_cache(maxsize=64)
def render(which: Earcon, rate: int, volume: float) -> bytes:
    """The earcon as little-endian signed 16-bit mono PCM at `rate`, peak = volume * full scale."""
    if rate < 8000:
        raise ValueError(f"earcon rate {rate} is below 8000 Hz")
    if not 0.0 <= volume <= 1.0:
        raise ValueError(f"earcon volume {volume} is not between 0 and 1")
    samples = array("h")
    for note in SCORES[which]:
        samples.extend(_note(note, rate, volume * FULL_SCALE))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
