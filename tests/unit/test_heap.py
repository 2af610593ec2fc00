"""The interpreter's pauses: start-up frozen out of the collector's way, and each call's longest
collection measured."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest

from sesame_pi.audio import AudioEngine
from sesame_pi.config import Config
from sesame_pi.heap import PauseMeter, pause_meter, settle_after_start


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test run collects as before


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_after_start_up_a_full_collection_walks_only_what_came_later(unfrozen: None) -> None:
    held = [Cycle() for _ in range(20_000)]  # start-up's objects, alive for good
    settle_after_start()
    assert gc.get_freeze_count() >= len(held)
    before = len(gc.get_objects())
    fresh = [Cycle() for _ in range(100)]
    assert len(gc.get_objects()) - before >= 100, "new objects are tracked as ever"
    assert len(gc.get_objects(generation=2)) < len(held), "the frozen are not walked"
    del fresh
    assert gc.collect() >= 100, "and what calls make is still collected"


def test_start_ups_garbage_is_collected_before_it_is_frozen(unfrozen: None) -> None:
    gc.disable()  # (so no collection frees them first)
    try:
        for _ in range(1000):
            Cycle()  # garbage: unreachable cycles
        settle_after_start()
    finally:
        gc.enable()
    gc.unfreeze()  # the frozen back among the tracked, where get_objects sees them
    assert not [obj for obj in gc.get_objects() if isinstance(obj, Cycle)], "none was frozen"


@pytest.fixture
def no_automatic_collections() -> Iterator[None]:
    """Only the test's own `gc.collect()` runs (an automatic one could land between a reset and
    the look at it)."""
    gc.disable()
    yield
    gc.enable()


def test_the_longest_collection_is_measured_and_starts_over(
    no_automatic_collections: None,
) -> None:
    meter = pause_meter()
    assert pause_meter() is meter, "one meter: the collector is the process's"
    meter.reset()
    assert meter.longest_ms == 0.0
    keep = [Cycle() for _ in range(50_000)]
    gc.collect()
    assert meter.longest_ms > 0.0
    del keep
    meter.reset()
    assert meter.longest_ms == 0.0


async def test_a_calls_figures_carry_its_longest_collection(
    no_automatic_collections: None,
) -> None:
    engine = AudioEngine(Config(), asyncio.get_running_loop(), lambda _message: None)
    engine._pauses.reset()
    assert engine.stats()["gc_pause_max_ms"] == 0.0
    keep = [Cycle() for _ in range(50_000)]
    gc.collect()
    assert engine.stats()["gc_pause_max_ms"] > 0.0
    del keep
    engine.close()


async def test_the_echo_stage_made_at_the_first_call_is_frozen_too(unfrozen: None) -> None:
    """numpy and the engine come with the first call that wants them and stay for the process:
    frozen then, or every full collection would walk them."""
    engine = AudioEngine(
        Config().replace(echo_cancel="speex"), asyncio.get_running_loop(), lambda _message: None
    )
    before = gc.get_freeze_count()
    engine._start_echo()
    assert engine._echo is not None and engine._echo.engine_name == "speex"
    assert gc.get_freeze_count() > before
    again = gc.get_freeze_count()
    engine._start_echo()  # the next call resets the stage: nothing new to freeze
    assert gc.get_freeze_count() <= again  # (frozen objects freed by the reset leave it)
    engine.close()


def test_a_collection_that_straddles_a_reset_does_not_carry_into_the_new_call(
    no_automatic_collections: None,
) -> None:
    """A collection on another thread that was under way when the loop reset the meter for a
    new call: the old `max(longest, this one)` could land after the reset and bring the last
    call's figure into the new one. The callbacks are driven by hand here, in the order that
    race takes."""
    meter = PauseMeter()
    try:
        meter._seen("start", {})
        meter._seen("stop", {})
        meter._seen("start", {})
        time.sleep(0.005)
        meter.reset()  # the new call begins while the collection runs
        meter._seen("stop", {})
        assert meter.longest_ms == 0.0
        meter._seen("start", {})
        time.sleep(0.002)
        meter._seen("stop", {})
        assert 2.0 <= meter.longest_ms < 1000.0, "a collection inside the call still counts"
        kept = meter.longest_ms
        meter._seen("start", {})
        meter._seen("stop", {})
        assert meter.longest_ms == kept, "the longest, not the last"
    finally:
        gc.callbacks.remove(meter._seen)
