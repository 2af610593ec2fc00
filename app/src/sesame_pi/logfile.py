"""The event log file, rotated by size: the file being written and `backups` older ones.

What `logging.handlers.RotatingFileHandler` does, kept here because the standard one falls short
on an appliance's card: a flush that fails as it closes the file for a rotation (a full card)
leaves it writing to a closed file until the next rotation, so the log stops; a line longer than
the limit first rotates an empty file; and it formats each record twice (to decide the rollover,
then to write), which here means redacting every line twice. Also, `logging.handlers` imports
`pickle` for a socket handler the app never uses (measured in a call: about 0.1 MB of the app's
peak resident memory, whose goal is 57 MB).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
from pathlib import Path


class SizeRotatedFile(logging.FileHandler):
    """Appends lines to `path`; before a line would take the file to `max_bytes`, the file
    becomes `path.1` (`path.1` becomes `path.2`, and so on; the oldest past `backups` goes).

    A line is never split across two files. A path that is not a regular file (`/dev/null`, a
    pipe) is written to and never rotated. A rotation that fails (a read-only directory) leaves
    the file as it is and logging goes on in it: a log that grows is better than one that stops.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        if max_bytes <= 0 or backups <= 0:
            raise ValueError("a rotated log needs max_bytes > 0 and backups > 0")
        super().__init__(path, mode="a", encoding="utf-8")
        self.max_bytes = max_bytes
        self.backups = backups
        self.rotations = 0
        self._size, self._rotates = self._measure()
        self._retry_at = 0  # after a failed rotation: the size at which to try again
        self._failing = False  # said so on stderr, until a line is written again

    def _measure(self) -> tuple[int, bool]:
        """The open file's size, and whether it is a file rotation applies to."""
        assert self.stream is not None
        info = os.fstat(self.stream.fileno())
        return info.st_size, stat.S_ISREG(info.st_mode)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + self.terminator).encode("utf-8", "backslashreplace")
            if self._due(len(line)):
                self._rotate()
            if self.stream is None:
                self.stream = self._open()
                self._size, self._rotates = self._measure()
                if self._ends_torn():  # a line cut off by a full card: this one starts afresh
                    line = b"\n" + line
            self.stream.buffer.write(line)  # (already encoded: the text layer has nothing to add)
            self.stream.buffer.flush()
            self._size += len(line)
            self._failing = False
        except RecursionError:
            raise
        except Exception as exc:
            # (A full card, say.) The next line opens the file afresh and measures it again:
            # what this one left in the buffer may or may not have reached the disk.
            self._drop_stream()
            self._say_failing(exc)

    def _ends_torn(self) -> bool:
        """Whether the file's last line lacks its end (written in part before the card filled)."""
        if self._size == 0 or not self._rotates:
            return False
        try:  # (the handler's own descriptor is write-only)
            fd = os.open(self.baseFilename, os.O_RDONLY)
        except OSError:
            return False
        try:
            return os.pread(fd, 1, self._size - 1) != b"\n"
        except OSError:
            return False
        finally:
            os.close(fd)

    def _say_failing(self, exc: Exception) -> None:
        """One JSON line on stderr while the file cannot be written, not logging's plain-text
        report for every line (23 lines each, with the record's arguments unredacted)."""
        if self._failing:
            return
        self._failing = True
        said = {
            "event": "log_file_unavailable",
            "level": "ERROR",
            "file": self.baseFilename,
            "detail": f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or 'write failed'}",
            "action": "free space on the card or fix the log directory (stdout has every line)",
        }
        with contextlib.suppress(Exception):
            sys.stderr.write(json.dumps(said) + "\n")

    def _due(self, line_bytes: int) -> bool:
        size = self._size
        return (
            self._rotates and size > 0 and size + line_bytes >= max(self.max_bytes, self._retry_at)
        )

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None  # type: ignore[assignment]
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    def _rotate(self) -> None:
        """Shift the backups up by one and start a fresh file."""
        base = self.baseFilename
        self._drop_stream()
        try:
            for index in range(self.backups - 1, 0, -1):
                older = f"{base}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{base}.{index + 1}")
            os.replace(base, f"{base}.1")
        except OSError:
            # The caller reopens `base` and appends: the line is written either way. The next
            # try waits until the file has grown by another tenth of the limit, rather than
            # closing and reopening it for every line.
            self._retry_at = self._size + self.max_bytes // 10
            return
        self.rotations += 1
        self._retry_at = 0
