"""Earcon helpers: linear resampling and a clipping mix of s16le mono (never the call audio)."""

from __future__ import annotations

from array import array


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear resampling for short earcons only (the call audio never passes through here)."""
    if src_rate == dst_rate or not pcm:
        return pcm
    src = array("h", pcm[: len(pcm) - len(pcm) % 2])
    count = max(1, len(src) * dst_rate // src_rate)
    step = src_rate / dst_rate
    last = len(src) - 1
    out = array("h", bytes(count * 2))
    for i in range(count):
        pos = i * step
        j = min(int(pos), last)
        frac = pos - j
        nxt = src[min(j + 1, last)]
        out[i] = int(src[j] + (nxt - src[j]) * frac)
    return out.tobytes()


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two equal-length s16 buffers with clipping (only while an earcon overlaps speech)."""
    left, right = array("h", a), array("h", b)
    return array(
        "h", [max(-32768, min(32767, x + y)) for x, y in zip(left, right, strict=True)]
    ).tobytes()
