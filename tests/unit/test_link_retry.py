"""The supervisor's policy: what it does after each kind of error, decided from the error alone."""

from __future__ import annotations

import pytest

from sesame_pi.auth import TokenError, TokenServiceUnreachable
from sesame_pi.link import AuthRefused, End, Ended, LinkLost, Verdict, classify


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (Ended("planned", End.PLANNED, healthy=False), Verdict.AGAIN),
        (Ended("closed by server while idle", End.IDLE, healthy=False), Verdict.AGAIN),
        (Ended("closed: 1006", End.LOST, healthy=True), Verdict.AGAIN),
        (Ended("closed: 1006", End.LOST, healthy=False), Verdict.RETRY),
        (Ended("auth close 4401", End.AUTH, healthy=False), Verdict.NEED_TOKEN),
        # an hour-old socket closed for its token: not a fault to redial at once
        (Ended("auth close 4401", End.AUTH, healthy=True), Verdict.NEED_TOKEN),
        (LinkLost("connect failed: ConnectionRefusedError"), Verdict.RETRY),
        (AuthRefused("auth refused: HTTP 403"), Verdict.NEED_TOKEN),
        (TokenError("token file missing"), Verdict.NEED_TOKEN),
        (TokenServiceUnreachable("the token expired and ... cannot be reached"), Verdict.RETRY),
        (RuntimeError("a bug"), Verdict.STOP),
    ],
)
def test_classify(error: BaseException, verdict: Verdict) -> None:
    assert classify(error) is verdict
