"""One connection to the Sesame service, kept warm and brought back by itself.

Split by job, so each part can change alone:

    supervisor  `Link`: keeps one socket warm, reconnects (tenacity backoff), waits for tokens;
                the only part the session talks to
    retry       `classify(error)`: again, retry, need token or stop, from the error alone
    channel     one socket's protocol: handshake, calls, pings, bounded sends
    dispatch    the receive path with no I/O: a frame in, state updated, effects out
    transport   the WebSocket itself, behind send / receive / close / abort (replaceable)
    stats       counters for the log
"""

from .channel import IDLE_CLOSE_MIN_S, CallInfo, CallListener, Channel, check_handshake
from .errors import (
    IDLE_CLOSE,
    PLANNED_CLOSE,
    ROUTINE_CLOSES,
    AuthRefused,
    CallFailed,
    End,
    Ended,
    LinkDown,
    LinkLost,
)
from .retry import Verdict, classify
from .stats import IGNORED_NAME_CHARS, IGNORED_NAMES_MAX, LinkStats
from .supervisor import Link, LinkListener
from .transport import OVERSIZE_CLOSE_CODE, build_url, make_ssl_context

__all__ = [
    "IDLE_CLOSE",
    "IDLE_CLOSE_MIN_S",
    "IGNORED_NAMES_MAX",
    "IGNORED_NAME_CHARS",
    "OVERSIZE_CLOSE_CODE",
    "PLANNED_CLOSE",
    "ROUTINE_CLOSES",
    "AuthRefused",
    "CallFailed",
    "CallInfo",
    "CallListener",
    "Channel",
    "End",
    "Ended",
    "Link",
    "LinkDown",
    "LinkListener",
    "LinkLost",
    "LinkStats",
    "Verdict",
    "build_url",
    "check_handshake",
    "classify",
    "make_ssl_context",
]
