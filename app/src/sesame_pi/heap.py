"""The interpreter's own pauses: what lasts kept out of the cyclic collector's way, and each
call's longest collection measured.

A full collection (the oldest generation) walks every object the process holds: 10-17 ms on the
bench's x86 server core for what the running app holds, several times that on a Pi Zero 2 W's
Cortex-A53. Meanwhile the speaker's writer, which keeps 25 ms in the device, and the capture
callback, due every 20 ms, wait for the GIL: a pause that long is a gap the person hears. What
start-up makes (modules, settings, the parts) lives as long as the process, so after one
collection it is frozen (`gc.freeze`), and later full collections walk only what came after.
The echo stage (numpy and an engine) is made by the device probe at start (or by the first
call, if the probe could not run) and kept: it is frozen then (`freeze_what_lasts`).
"""

from __future__ import annotations

import gc
import time
from typing import Any


def settle_after_start() -> None:
    """Collect start-up's garbage once, then keep what is left out of every later collection.
    (Frozen objects are still freed when nothing refers to them; only a cycle among them is
    never collected, so only what lives as long as the process should be there.)"""
    gc.collect()
    gc.freeze()


def freeze_what_lasts() -> None:
    """After start-up made something that lasts (the echo stage): freeze it too. Without a
    collection first (a full one, at a call's start, is the pause this avoids): what the call
    holds now is frozen with it, and a cycle among those, if one is ever dropped, stays; a
    one-time, bounded cost against walking numpy's objects at every full collection."""
    gc.freeze()


class PauseMeter:
    """The longest collection since `reset` (ms), seen through `gc.callbacks` on whichever
    thread the collector ran (collections never overlap: the collector runs one at a time; a
    finalizer it runs may let other threads in, and their time counts too).

    `reset` (the loop, at a call's start) can come between a collection's end on another thread
    reading the longest so far and writing it back: a plain maximum would carry the last call's
    figure into the new one. So each figure is stored with the round it belongs to, in one
    assignment, and one from a round that has ended (or a collection that began in it) reads as
    nothing."""

    def __init__(self) -> None:
        self._round = 0
        self._longest: tuple[int, float] = (0, 0.0)  # (round, ms): one atomic assignment
        self._began: tuple[int, float] = (0, 0.0)  # (round, perf_counter) of the running one
        gc.callbacks.append(self._seen)

    @property
    def longest_ms(self) -> float:
        round_, longest = self._longest
        return longest if round_ == self._round else 0.0

    def reset(self) -> None:
        self._round += 1

    def _seen(self, phase: str, _info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._began = (self._round, now)
            return
        round_, began = self._began
        if round_ != self._round:  # began before a reset: it belongs to the round that ended
            return
        kept_round, kept = self._longest
        longest = kept if kept_round == round_ else 0.0
        self._longest = (round_, max(longest, (now - began) * 1000))


_meter: PauseMeter | None = None


def pause_meter() -> PauseMeter:
    """The process's one meter (the collector is the process's): made on first use."""
    global _meter
    if _meter is None:
        _meter = PauseMeter()
    return _meter
