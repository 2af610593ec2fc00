"""What can go wrong on the link, as exceptions the supervisor classifies (see retry.classify)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from ..logs import event, raised_at


class LinkLost(Exception):
    """The socket is gone or never came up; the supervisor retries."""


class AuthRefused(Exception):
    """The service refused our credentials; retrying the same token would only hammer it."""


class CallFailed(Exception):
    """The service answered call_connect with an error, or not at all."""

    def __init__(self, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class End(StrEnum):
    """How an open connection ended, as far as the supervisor cares."""

    PLANNED = "planned"  # we closed it after a call (as the web client does)
    IDLE = "idle"  # the server closed a socket with no call on it, cleanly (its inactive_close)
    AUTH = "auth"  # the server closed with an auth close code
    LOST = "lost"  # anything else: reset, dead link, server error, a close during a call


PLANNED_CLOSE = "planned"  # link_down's reason after a planned close
IDLE_CLOSE = "closed by server while idle"  # link_down's reason after a routine idle close
ROUTINE_CLOSES = frozenset({PLANNED_CLOSE, IDLE_CLOSE})  # nothing to tell the person


@dataclass(frozen=True)
class LinkDown:
    """Why the link went down, as the listener hears it: the kind steers policy, the detail is
    for the person and the log (never parsed)."""

    kind: End
    detail: str

    @property
    def routine(self) -> bool:
        """A close after a call, or the server's idle close: the supervisor reopens at once."""
        return self.kind in (End.PLANNED, End.IDLE)

    def __str__(self) -> str:
        return self.detail


class Ended(LinkLost):
    """An open connection ended. `reason` is what link_down said; the rest is for classify()."""

    def __init__(self, reason: str, kind: End, healthy: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.healthy = healthy


def report_fault(error: BaseException, action: str, **fields: object) -> str:
    """Log a fault of ours (not the network's, not the token's) as `link_error`, with the file
    and line it was raised at; return the reason link_down gives for it."""
    event(
        "link_error",
        logging.ERROR,
        detail=f"{type(error).__name__}: {str(error)[:200]}",
        at=raised_at(error),
        action=action,
        **fields,
    )
    return f"internal error ({type(error).__name__})"
