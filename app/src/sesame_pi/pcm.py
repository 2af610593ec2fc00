"""s16le helpers: the device's channel layout for any audio, and, for earcons only (never the call
audio), linear resampling and a clipping mix, at C speed (audioop: the mix runs in the playback
callback or the writer, where a per-sample Python loop took about 180 us a chunk on x86, and the
Python loop would cost several times that on a Pi's Cortex-A53; audioop adds about 70 KB, numpy
some 16 MB)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():  # (3.11 and 3.12 warn that 3.13 drops it: audioop-lts there)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear resampling for short earcons only (the call audio never passes through here):
    `len * dst / src` samples, the tail held at the last sample."""
    if src_rate == dst_rate or not pcm:
        return pcm
    src = pcm[: len(pcm) - len(pcm) % 2]
    count = len(src) // 2 * dst_rate // src_rate
    out, _ = audioop.ratecv(src, 2, 1, src_rate, dst_rate, None)
    return out[: 2 * count] + src[-2:] * max(0, count - len(out) // 2)


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two equal-length s16 buffers, clipped to int16 (only while an earcon overlaps
    speech). ValueError if their lengths differ."""
    if len(a) != len(b):
        raise ValueError(f"mixing {len(a)} bytes with {len(b)}")
    return audioop.add(a, b, 2)


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
