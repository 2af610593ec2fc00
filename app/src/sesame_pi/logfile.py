"""The event log file, rotated by size: the file being written and `backups` older ones.

What `logging.handlers.RotatingFileHandler` does, kept here for two reasons. Importing
`logging.handlers` loads `pickle` for a socket handler the app never uses: 0.55 MB of resident
memory, a tenth of the app's lead over a bare PyAudio client on a 512 MB Pi (the "Latency" issue's
memory goal is 57 MB). And the standard handler formats each record twice, once to decide the
rollover and once to write it, which here means redacting every line twice.
"""

from __future__ import annotations

import logging
import os
import stat
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

    def _measure(self) -> tuple[int, bool]:
        """The open file's size, and whether it is a file rotation applies to."""
        assert self.stream is not None
        info = os.fstat(self.stream.fileno())
        return info.st_size, stat.S_ISREG(info.st_mode)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + self.terminator).encode("utf-8", "backslashreplace")
            if self._rotates and self._size > 0 and self._size + len(line) >= self.max_bytes:
                self._rotate()
            if self.stream is None:
                self.stream = self._open()
                self._size, self._rotates = self._measure()
            self.stream.buffer.write(line)  # (already encoded: the text layer has nothing to add)
            self.stream.buffer.flush()
            self._size += len(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _rotate(self) -> None:
        """Shift the backups up by one and start a fresh file."""
        base = self.baseFilename
        if self.stream is not None:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        try:
            for index in range(self.backups - 1, 0, -1):
                older = f"{base}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{base}.{index + 1}")
            os.replace(base, f"{base}.1")
            self.rotations += 1
        except OSError:
            pass  # the caller reopens `base` and appends: the line is written either way
