"""When a paste typed at a terminal is whole (`sesame-pi login`, echo and line mode off)."""

from __future__ import annotations

import json

import pytest

from sesame_pi.paste import _whole

RECORD = json.dumps({"uid": "u1", "stsTokenManager": {"refreshToken": "AMf-x"}}, indent=2)


@pytest.mark.parametrize(
    ("text", "whole"),
    [
        ("AMf-a-refresh-token\n", True),  # a bare token: one line
        ("\n", False),  # Enter before the paste
        (RECORD.split("\n", 2)[0] + "\n", False),  # a pretty record's first line only
        (RECORD + "\n", True),
        (RECORD.replace("\n", "\r\n") + "\r\n", True),  # copied on Windows
        ('[{"fbase_key": "x",\n', False),  # the IndexedDB rows, cut mid-way
        ('[{"fbase_key": "x", "value": {}}]\n', True),
        ('"{\\"uid\\": \\"u1\\"}"\n', True),  # the record as a JSON string
        ('{"uid": "damaged\n\n', True),  # Enter on its own ends even a damaged paste
    ],
)
def test_a_paste_is_whole_when_it_parses_or_enter_comes_on_its_own(text: str, whole: bool) -> None:
    assert _whole(text.replace("\r\n", "\n")) is whole
