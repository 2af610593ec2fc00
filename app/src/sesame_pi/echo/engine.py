"""The small interface every echo canceller engine has: microphone and reference in 10 ms blocks
(one block or a few at a time), as much clean microphone out. Engines know nothing about time
stamps, rates or delays; the stage (stage.py) hands them blocks that are already aligned and at
the capture rate."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

BLOCK_MS = 10

Samples = npt.NDArray[np.int16]


class EchoUnavailable(RuntimeError):
    """An engine cannot run here. The text says which engine, why, and what to do."""


class Canceller(Protocol):
    name: str
    # How much delay the engine finds by itself: the stage shifts the reference only for the part
    # beyond it. Every shift is a jump in the echo path the engine must learn again.
    tracks_delay_ms: float

    def process(self, mic: Samples, ref: Samples) -> Samples:
        """A whole number of blocks (rate/100 samples each) of capture with the reference that
        was playing then."""

    def reset(self) -> None:
        """Forget the echo path (a new call)."""

    def close(self) -> None:
        """Free the native state; the engine is unusable afterwards."""


class Passthrough:
    """The "off" engine: the microphone unchanged."""

    name = "off"
    tracks_delay_ms = 0.0

    def process(self, mic: Samples, ref: Samples) -> Samples:
        return mic

    def reset(self) -> None:
        return None

    def close(self) -> None:
        return None
