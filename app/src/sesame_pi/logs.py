"""JSON event lines (python-json-logger) to stdout and a size-rotated file, with token redaction.

One line per event: `ts`, `level`, `event`, `logger`, then the event's fields. The redaction runs in
the formatter, after the line is complete, so no path can bypass it: not the message, not a nested
field, not an exception text or traceback, not a third-party logger that reaches our handlers.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from .config import Config
from .logfile import SizeRotatedFile

LOGGER_NAME = "sesame_pi"
PYTHON_WARNING = "python_warning"  # the event of a line a `warnings.warn` became
REDACTED = "[REDACTED]"
# A JWT: three base64url segments, the header starting with eyJ ('{"').
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
QUERY_SECRET = re.compile(r"((?:id_token|refresh_token|key)=)[^&\s\"'\\]+")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}

# The secrets registered last, oldest first. Bounded: a token is registered at every hourly
# refresh, and every log line scanned the whole set, sorted anew (8,760 after a year up). One
# replaced long ago is held nowhere any more, and any JWT is caught by its shape besides.
SECRETS_KEPT = 32
_secrets: dict[str, None] = {}
_secrets_longest_first: tuple[str, ...] = ()  # what `redact` scans (a longer one may hold another)
_secrets_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Never print this value; auth registers every token it reads."""
    global _secrets_longest_first
    value = secret.strip()
    if len(value) >= 8:
        with _secrets_lock:
            _secrets.pop(value, None)
            _secrets[value] = None
            while len(_secrets) > SECRETS_KEPT:
                del _secrets[next(iter(_secrets))]
            _secrets_longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """Remove registered secrets, JWT-shaped strings and secret query values."""
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = JWT_PATTERN.sub(REDACTED, text)
    return QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with our field names and redaction of the whole line."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        if not log_data.get("event"):
            log_data["event"] = PYTHON_WARNING if record.name == "py.warnings" else "log"
            log_data["msg"] = record.getMessage()
        log_data.pop("message", None)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _formatter() -> RedactingJsonFormatter:
    # ASCII out: a lone surrogate a server frame carried (or a non-UTF-8 name from the
    # environment) then stays one valid line instead of failing the file handler's encoding.
    return RedactingJsonFormatter(json_ensure_ascii=True, reserved_attrs=list(_RESERVED))


def _without_our_handlers() -> logging.Logger:
    """The root logger, with the handlers an earlier set-up of ours added taken off and closed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_sesame_pi", False)]:
        root.removeHandler(handler)
        handler.close()
    return root


def command_logging(stderr: TextIO | None = None) -> None:
    """For the one-shot commands (`token`, `check`, `login`, ...): their warnings and errors as
    whole JSON lines on stderr, fields and all (the `chmod` to run, say), redacted like the
    app's; without it Python's last-resort handler printed the bare event name."""
    root = _without_our_handlers()  # (a second command in one process: one handler, not two)
    handler = logging.StreamHandler(stderr or sys.stderr)
    handler.setFormatter(_formatter())
    handler.setLevel(logging.WARNING)
    handler._sesame_pi = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.captureWarnings(True)


def setup_logging(cfg: Config, stdout: TextIO | None = None) -> None:
    """Route our events (and warnings from libraries) to stdout and the rotating file."""
    root = _without_our_handlers()
    handlers: list[logging.Handler] = [logging.StreamHandler(stdout or sys.stdout)]
    file_problem = None
    if cfg.log_file is not None:
        try:
            cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(SizeRotatedFile(cfg.log_file, cfg.log_max_bytes, cfg.log_backups))
        except OSError as exc:
            file_problem = f"cannot write log file {cfg.log_file}: {exc.strerror}"
    for handler in handlers:
        handler.setFormatter(_formatter())
        handler._sesame_pi = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # A library's `warnings.warn` (a deprecation, a pin it could not use) went to stderr as bare
    # text, outside the JSON log an owner collects: it is a `python_warning` line now.
    logging.captureWarnings(True)
    logging.getLogger(LOGGER_NAME).setLevel(cfg.log_level)
    # websockets logs every connection failure with a traceback at ERROR: our link says it better.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    if file_problem:
        event("log_file_unavailable", logging.ERROR, detail=file_problem)


def event(name: str, level: int = logging.INFO, /, **fields: object) -> None:
    """Log one event line. Field values must be JSON-friendly; anything else is str()-ed."""
    logging.getLogger(LOGGER_NAME).log(level, name, extra={"event": name, **_safe(fields)})


def raised_at(error: BaseException) -> str:
    """`file.py:line` where `error` was raised (for a fault's log line; no traceback, which
    could carry a token in its locals' reprs)."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""


def _safe(fields: dict[str, object]) -> dict[str, object]:
    clean: dict[str, object] = {}
    for key, value in fields.items():
        name = key if key not in _RESERVED else f"{key}_"
        clean[name] = (
            value
            if isinstance(value, str | int | float | bool | type(None) | dict | list)
            else str(value)
        )
    return clean


def log_file_paths(log_file: Path) -> list[Path]:
    """The log file and its rotated backups (for tests and log collection)."""
    return sorted(log_file.parent.glob(log_file.name + "*"))
