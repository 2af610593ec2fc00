"""Earcons: short, distinct, click-free tones whose loudness follows the volume setting."""

from __future__ import annotations

import itertools
import math
from array import array

import pytest

from sesame_pi import earcons
from sesame_pi.states import Earcon

RATE = 24000


def samples(pcm: bytes) -> array[int]:
    out = array("h")
    out.frombytes(pcm)
    return out


def notes(pcm: bytes, rate: int) -> list[tuple[float, float]]:
    """(start_s, frequency_hz) of each sounding stretch, found in the audio itself.

    Stretches are split at runs of >= 2 ms of exact silence; the frequency is counted from
    zero crossings, so this measures what was rendered rather than reading the score back.
    """
    data = samples(pcm)
    min_gap = int(0.002 * rate)
    found: list[tuple[int, int]] = []
    start, zeros = None, 0
    for i, value in enumerate(data):
        if value == 0:
            zeros += 1
            if start is not None and zeros >= min_gap:
                found.append((start, i - zeros + 1))
                start = None
        else:
            if start is None:
                start = i
            zeros = 0
    if start is not None:
        found.append((start, len(data)))
    result = []
    for begin, end in found:
        part = data[begin:end]
        crossings = sum(1 for a, b in itertools.pairwise(part) if (a < 0) != (b < 0))
        result.append((begin / rate, crossings / 2 / ((end - begin) / rate)))
    return result


@pytest.mark.parametrize("which", list(Earcon))
def test_length_is_between_60_and_300_ms(which: Earcon) -> None:
    pcm = earcons.render(which, RATE, 0.5)
    seconds = len(pcm) / 2 / RATE
    assert 0.06 <= seconds <= 0.3
    assert seconds == pytest.approx(earcons.duration_s(which), abs=0.002)


@pytest.mark.parametrize("which", list(Earcon))
def test_rendered_pitches_follow_the_score(which: Earcon) -> None:
    heard = notes(earcons.render(which, RATE, 0.5), RATE)
    score = earcons.SCORES[which]
    assert len(heard) == len(score)
    for (_start, freq), note in zip(heard, score, strict=True):
        assert freq == pytest.approx(note.freq_hz, rel=0.04)


def test_earcons_are_told_apart_by_pitch_and_direction() -> None:
    heard = {which: notes(earcons.render(which, RATE, 0.5), RATE) for which in Earcon}
    pitches = {which: tuple(round(f, -1) for _, f in seq) for which, seq in heard.items()}
    assert len(set(pitches.values())) == len(Earcon)
    start, end = heard[Earcon.CALL_START], heard[Earcon.END]
    assert start[0][1] < start[-1][1], "call start rises"
    assert end[0][1] > end[-1][1], "end falls"
    lowest = min(f for seq in heard.values() for _, f in seq)
    assert all(f < 300 for _, f in heard[Earcon.ERROR]) and lowest < 300
    assert all(f > 500 for which, seq in heard.items() if which != Earcon.ERROR for _, f in seq)
    assert len({earcons.render(which, RATE, 0.5) for which in Earcon}) == len(Earcon)


@pytest.mark.parametrize("which", list(Earcon))
def test_fades_in_and_out_without_clicks(which: Earcon) -> None:
    volume = 0.8
    data = samples(earcons.render(which, RATE, volume))
    peak = volume * earcons.FULL_SCALE
    one_ms = RATE // 1000
    assert abs(data[0]) <= 0.01 * peak and abs(data[-1]) <= 0.05 * peak
    assert max(abs(v) for v in data[:one_ms]) < 0.25 * peak
    assert max(abs(v) for v in data[-one_ms:]) < 0.25 * peak
    # The largest step between samples is what a smooth sine of the highest note allows.
    top = max(note.freq_hz for note in earcons.SCORES[which])
    smooth = peak * 2 * math.pi * top / RATE
    worst = max(abs(b - a) for a, b in itertools.pairwise(data))
    assert worst <= smooth * 1.05 + 2


@pytest.mark.parametrize("volume", [0.05, 0.3, 1.0])
def test_volume_sets_the_peak(volume: float) -> None:
    for which in Earcon:
        peak = max(abs(v) for v in samples(earcons.render(which, RATE, volume)))
        assert peak == pytest.approx(volume * earcons.FULL_SCALE, rel=0.02)


def test_zero_volume_is_silence() -> None:
    assert set(samples(earcons.render(Earcon.LIVE, RATE, 0.0))) == {0}


def test_other_rates_keep_length_and_pitch() -> None:
    for rate in (16000, 48000):
        pcm = earcons.render(Earcon.END, rate, 0.5)
        assert len(pcm) / 2 / rate == pytest.approx(earcons.duration_s(Earcon.END), abs=0.002)
        heard = notes(pcm, rate)
        assert [f for _, f in heard] == pytest.approx(
            [n.freq_hz for n in earcons.SCORES[Earcon.END]], rel=0.04
        )


def test_generated_once_then_cached() -> None:
    earcons.render.cache_clear()
    first = earcons.render(Earcon.CALL_START, RATE, 0.3)
    again = earcons.render(Earcon.CALL_START, RATE, 0.3)
    assert again is first
    info = earcons.render.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="volume"):
        earcons.render(Earcon.LIVE, RATE, 1.5)
    with pytest.raises(ValueError, match="rate"):
        earcons.render(Earcon.LIVE, 4000, 0.5)
