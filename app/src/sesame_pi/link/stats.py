"""The link's counters: logged as events (link_down, call_ended), never per frame."""

from __future__ import annotations

import collections
import logging
from typing import Any

from ..logs import event

IGNORED_NAMES_MAX = 16  # distinct ignored type names counted by name; the rest count as "other"
IGNORED_NAME_CHARS = 64
SERVER_ERROR_LINES = 5  # server `error` frames logged a minute at most; the rest are counted


class LinkStats:
    """Counters over the link's lifetime (every connection adds to the same ones)."""

    def __init__(self) -> None:
        self.connects = 0
        self.frames_in = 0
        self.frames_out = 0
        self.audio_bytes_in = 0
        self.audio_bytes_out = 0
        self.pings_sent = 0
        self.pongs = 0
        self.server_pings = 0
        self.bad_frames: collections.Counter[str] = collections.Counter()
        self.ignored: collections.Counter[str] = collections.Counter()
        self.last_rtt_ms: float | None = None
        self.server_errors = 0
        self._warned: set[str] = set()
        self._error_lines: collections.deque[float] = collections.deque()
        self._errors_unsaid = 0

    def ignore(self, kind: str) -> None:
        """Count an ignored message by type, bounded: the server chooses the names, not us."""
        name = kind[:IGNORED_NAME_CHARS]
        if name not in self.ignored and len(self.ignored) >= IGNORED_NAMES_MAX:
            name = "other"
        self.ignored[name] += 1

    def bad(self, kind: str, detail: str) -> None:
        """Count a frame we could not use; each kind is logged once, then only counted."""
        self.bad_frames[kind] += 1
        if kind not in self._warned:
            self._warned.add(kind)
            event("bad_frame", logging.WARNING, kind=kind, detail=detail[:200])

    def server_error(self, now: float) -> int | None:
        """Count a server `error`; whether it gets a log line: None if not (SERVER_ERROR_LINES a
        minute at most: a server that answers every audio frame with one wrote 50 lines a
        second and rotated the call history out of the log), else how many went unsaid before."""
        self.server_errors += 1
        while self._error_lines and now - self._error_lines[0] >= 60.0:
            self._error_lines.popleft()
        if len(self._error_lines) >= SERVER_ERROR_LINES:
            self._errors_unsaid += 1
            return None
        self._error_lines.append(now)
        unsaid, self._errors_unsaid = self._errors_unsaid, 0
        return unsaid

    def as_dict(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "audio_bytes_in": self.audio_bytes_in,
            "audio_bytes_out": self.audio_bytes_out,
            "pings_sent": self.pings_sent,
            "ping_responses": self.pongs,
            "server_pings": self.server_pings,
            "server_errors": self.server_errors,
            "bad_frames": dict(self.bad_frames),
            "ignored": dict(self.ignored),
            "ping_rtt_ms": self.last_rtt_ms,
        }
