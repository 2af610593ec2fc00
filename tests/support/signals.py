"""Test signals and the small amount of analysis the tests need (pure Python, no NumPy)."""

from __future__ import annotations

import math
from array import array


def sine(freq: float, seconds: float, rate: int, level: float = 0.4) -> bytes:
    count = int(seconds * rate)
    amp = level * 32767
    step = 2 * math.pi * freq / rate
    return array("h", (int(amp * math.sin(step * i)) for i in range(count))).tobytes()


def samples(pcm: bytes) -> array[int]:
    return array("h", pcm[: len(pcm) - len(pcm) % 2])


def rms(pcm: bytes) -> float:
    data = samples(pcm)
    if not data:
        return 0.0
    return math.sqrt(sum(x * x for x in data) / len(data))


def tone_power(pcm: bytes, freq: float, rate: int) -> float:
    """Goertzel: the share of the signal's power at `freq` (0..1)."""
    data = samples(pcm)
    if not data:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in data:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    total = sum(x * x for x in data) * len(data) / 2
    return power / total if total else 0.0


def loud_seconds(pcm: bytes, rate: int, threshold: float = 1000.0, window_ms: int = 20) -> float:
    """How many seconds of `pcm` carry sound above `threshold` RMS."""
    step = rate * window_ms // 1000 * 2
    windows = [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
    return sum(1 for w in windows if rms(w) > threshold) * window_ms / 1000
