"""The link's counters stay bounded whatever names the server gives its messages."""

from __future__ import annotations

import json
import logging

import pytest

from sesame_pi import protocol as p
from sesame_pi.link import IGNORED_NAME_CHARS, IGNORED_NAMES_MAX, LinkStats
from sesame_pi.link.dispatch import ChannelState, dispatch
from sesame_pi.link.stats import SERVER_ERROR_LINES


def test_ignored_type_names_are_bounded_the_rest_count_as_other() -> None:
    stats = LinkStats()
    for i in range(1000):
        stats.ignore(f"event_{i:04d}")
    stats.ignore("event_0000")
    assert len(stats.ignored) == IGNORED_NAMES_MAX + 1
    assert stats.ignored["event_0000"] == 2, "names already counted keep counting"
    assert stats.ignored["other"] == 1000 - IGNORED_NAMES_MAX
    assert sum(stats.ignored.values()) == 1001


def test_a_long_type_name_is_cut() -> None:
    stats = LinkStats()
    stats.ignore("x" * 100_000)
    assert [len(name) for name in stats.ignored] == [IGNORED_NAME_CHARS]


def test_a_server_that_answers_everything_with_an_error_cannot_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server answering each audio frame with an `error` (a call it dropped) wrote 50 warnings
    a second, each with a message of up to a MiB: the rotated log then held minutes, not the
    call history. A few lines a minute, cut short; the rest counted, and said on the next line."""
    stats = LinkStats()
    state = ChannelState("fuzz-session")
    error = p.decode(
        json.dumps({"type": "error", "content": {"code": 4004, "message": "m" * 100_000}})
    )
    with caplog.at_level(logging.INFO, logger="sesame_pi"):
        for i in range(1000):
            dispatch(state, error, stats, 100.0 + i * 0.02)  # 20 s of them
        dispatch(state, error, stats, 200.0)  # a minute after the first line
    lines = [r for r in caplog.records if getattr(r, "event", None) == "server_error"]
    assert len(lines) == SERVER_ERROR_LINES + 1
    assert all(len(r.message_) <= 200 for r in lines), "cut short"
    assert lines[-1].unlogged_before == 1000 - SERVER_ERROR_LINES
    assert stats.server_errors == 1001 and stats.as_dict()["server_errors"] == 1001
