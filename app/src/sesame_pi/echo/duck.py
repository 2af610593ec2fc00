"""Half duplex done right: turn the microphone down while the agent is speaking, by its level.

The old rule muted the microphone while the playback buffer held bytes; the service streams
comfort noise between utterances, so the buffer is never empty and the person was muted for the
whole call. Here the decision is the far end's level, taken from the reference the speaker played
at the instant the microphone hears it (the stage aligns it): above `threshold_dbfs` (speech,
-20..-35 dBFS; comfort noise sits near -55) the agent is speaking, and for `hangover_ms` after it
stops, the room's reverberation still is. The gain moves smoothly (a quick attack, a slower
release) so the uplink never clicks. It is the choice for boxes where no canceller can keep up.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]

THRESHOLD_DBFS = -42.0
ATTENUATION_DB = -30.0
HANGOVER_MS = 250
ATTACK_MS = 10.0
RELEASE_MS = 60.0


def level_dbfs(samples: Floats) -> float:
    """RMS level of float samples on the int16 scale, in dB below full scale (one dot product:
    this runs for every capture frame)."""
    if len(samples) == 0:
        return -120.0
    power = float(np.dot(samples, samples)) / len(samples)
    return 10 * math.log10(power / 32768.0**2 + 1e-12)


class Ducker:
    """A smooth gain on 10 ms blocks, down while the far end speaks and for a hangover after."""

    def __init__(
        self,
        block_ms: int = 10,
        *,
        threshold_dbfs: float = THRESHOLD_DBFS,
        attenuation_db: float = ATTENUATION_DB,
        hangover_ms: int = HANGOVER_MS,
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._floor = 10 ** (attenuation_db / 20)
        self._hangover_blocks = max(1, hangover_ms // block_ms)
        self._attack = 1 - np.exp(-block_ms / ATTACK_MS)
        self._release = 1 - np.exp(-block_ms / RELEASE_MS)
        self.reset()

    def reset(self) -> None:
        self._gain = 1.0
        self._hold = 0

    @property
    def active(self) -> bool:
        return self._hold > 0

    def process(self, block: Floats, far_dbfs: float) -> Floats:
        if far_dbfs > self.threshold_dbfs:
            self._hold = self._hangover_blocks
        elif self._hold > 0:
            self._hold -= 1
        target = self._floor if self._hold > 0 else 1.0
        rate = self._attack if target < self._gain else self._release
        start, self._gain = self._gain, self._gain + (target - self._gain) * rate
        if abs(self._gain - target) < 1e-4:
            self._gain = target
        if start == self._gain == 1.0:
            return block
        ramp = np.linspace(start, self._gain, len(block), dtype=np.float32)
        return block * ramp
