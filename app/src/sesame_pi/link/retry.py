"""The supervisor's retry policy, decided from the error alone, and its backoff.

classify(error) -> AGAIN       reconnect at once with a fresh backoff: a planned close after a
                               call, the server's routine idle close, or a connection that
                               stayed healthy for `healthy_after_s` before it broke
                -> RETRY       reconnect after the backoff (exponential with jitter); also
                               for a token that ran out while its refresh cannot reach the
                               token service (an outage, not the person's to fix)
                -> NEED_TOKEN  the service refused the token, or we have none that is valid:
                               wait for a new one, at a bounded rate
                -> STOP        not a link problem (a bug): let it out
"""

from __future__ import annotations

from enum import StrEnum

import tenacity

from ..auth import TokenError, TokenServiceUnreachable
from ..config import Config
from .errors import AuthRefused, End, Ended, LinkLost

RESUME_BACKOFF_CAP_S = 1.5  # while a call waits to resume, a person is waiting


class Verdict(StrEnum):
    AGAIN = "again"
    RETRY = "retry"
    NEED_TOKEN = "need_token"
    STOP = "stop"


def classify(error: BaseException) -> Verdict:
    """What the supervisor does after `error`."""
    if isinstance(error, Ended):
        if error.kind is End.AUTH:  # however long the socket lived: the token is refused now
            return Verdict.NEED_TOKEN
        if error.kind in (End.PLANNED, End.IDLE) or error.healthy:
            return Verdict.AGAIN
        return Verdict.RETRY
    if isinstance(error, AuthRefused | TokenError):
        return Verdict.NEED_TOKEN
    if isinstance(error, LinkLost | TokenServiceUnreachable):
        return Verdict.RETRY
    return Verdict.STOP


def is_retry(error: BaseException) -> bool:
    return classify(error) is Verdict.RETRY


def backoff_s(cfg: Config, call_pending: bool, state: tenacity.RetryCallState) -> float:
    """Exponential backoff with jitter from `backoff_initial_s`, capped low while a call waits."""
    cap = min(cfg.backoff_max_s, RESUME_BACKOFF_CAP_S) if call_pending else cfg.backoff_max_s
    initial = cfg.backoff_initial_s
    strategy = tenacity.wait_exponential(multiplier=initial, max=cap) + tenacity.wait_random(
        0, initial
    )
    return min(float(strategy(state)), cap)
