"""s16le helpers: the device's channel layout for any audio, and, for earcons only (never the call
audio), linear resampling and a clipping mix."""

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


def widen(mono: bytes, channels: int) -> bytes:
    """The same s16le samples on every one of `channels` channels (interleaved), for a speaker
    opened with the device's own channel count (`output_channels` says why). Byte slices: no
    per-sample loop."""
    if channels == 1:
        return mono
    frame = 2 * channels
    out = bytearray(len(mono) // 2 * frame)
    for channel in range(channels):
        out[2 * channel :: frame] = mono[0::2]
        out[2 * channel + 1 :: frame] = mono[1::2]
    return bytes(out)
