"""Reading a pasted secret (`sesame-pi login`) from a person at a terminal.

A terminal in its usual line mode echoes the paste (the refresh token lands on the screen and
in the scrollback), keeps at most 4095 characters of a line (the rest of a long record is
dropped without a word), and ends the read only at a Ctrl-D on an empty line, so a record copied
without a line end needed two. At a terminal the paste is therefore read with echo and line
mode off, and ends with Enter once it is whole (JSON that parses, or a bare token), with Enter
on its own, or with Ctrl-D. Piped input is read to its end, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import termios
from typing import TextIO

CTRL_D = 0x04


def _whole(text: str) -> bool:
    """Whether a paste that just got a line end is complete: a token (one line), JSON that
    parses (a record, or the IndexedDB rows, copied with line breaks ends at its last bracket),
    or anything at all followed by an empty line (Enter on its own: a damaged paste is then
    login's to name, not a wait with nothing on the screen)."""
    stripped = text.strip()
    if not stripped:
        return False
    if text.endswith("\n\n") or not stripped.startswith(("{", "[", '"')):
        return True
    with contextlib.suppress(ValueError):
        json.loads(stripped)
        return True
    return False


def read_paste(prompt: str, stream: TextIO | None = None) -> str:
    """The pasted text; `prompt` goes to stderr when a person is at a terminal."""
    stream = stream or sys.stdin
    if not stream.isatty():
        return stream.read()
    fd = stream.fileno()
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return stream.read()
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)  # (ISIG stays: Ctrl-C still cancels)
    quiet[6] = list(saved[6])
    quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    received = bytearray()
    try:
        print(prompt, file=sys.stderr, flush=True)
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if CTRL_D in chunk:
                received += chunk[: chunk.index(CTRL_D)]
                break
            received += chunk
            text = received.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
            if chunk.endswith((b"\n", b"\r")) and _whole(text):
                break
    finally:
        # TCSAFLUSH: what is left of the paste goes, not to the shell (it would echo the rest
        # of a refresh token on the screen and into the shell's history).
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
    print(f"(received {len(received.strip())} characters)", file=sys.stderr, flush=True)
    return received.decode("utf-8")
