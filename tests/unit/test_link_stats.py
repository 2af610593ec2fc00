"""The link's counters stay bounded whatever names the server gives its messages."""

from __future__ import annotations

from sesame_pi.link import IGNORED_NAME_CHARS, IGNORED_NAMES_MAX, LinkStats


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
