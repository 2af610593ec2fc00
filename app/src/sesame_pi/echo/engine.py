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


class LsbDither:
    """A random lowest bit on the engine's int16 inputs, so they are never digital silence.

    AEC3 (and speex, less so) filters in floating point. On exact zeros (the reference before the
    agent speaks or while playout waits, a muted microphone) its filter states decay into
    subnormal floats, which x86 computes in microcode: AEC3 then took 97 ms of CPU per second of
    audio instead of 7 (measured on this machine; 5.6 with the dither). A random lowest bit keeps
    every state a normal number at about -96 dBFS, far below any microphone's own noise; an
    exclusive-or on that bit cannot overflow int16."""

    LENGTH = 16411  # a prime: the pattern does not line up with any frame size

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._bits = rng.integers(0, 2, self.LENGTH, dtype=np.int16)
        self._at = 0

    def apply(self, samples: Samples) -> Samples:
        """`samples` with their lowest bits flipped at random (a new array)."""
        n = len(samples)
        if self._at + n > self.LENGTH:
            if n > self.LENGTH:
                return np.bitwise_xor(samples, np.resize(self._bits, n))
            self._at = 0
        bits = self._bits[self._at : self._at + n]
        self._at += n
        return np.bitwise_xor(samples, bits)


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
