"""Files a person writes by hand (the ID token, the refresh token, the API key, an auth record,
the config), decoded as the editors they use save them.

One decoder for all of them: each file type had its own, and they disagreed (an auth record
saved by Notepad as "Unicode" was read, the refresh token beside it was refused). Accepted:
UTF-8 with or without a byte order mark, and UTF-16 with its byte order mark (Notepad's and
PowerShell's "Unicode"). Refused, with a sentence saying how to save it: UTF-16 without a byte
order mark (it reads as text with a NUL beside every letter), and bytes that are no UTF-8 (an
8-bit code page, old Notepad's "ANSI"), unless the caller reads names only and asks for them
with replacement characters (`lenient`): a secret with a replaced character is no secret.
"""

from __future__ import annotations

import codecs
from pathlib import Path

SAVE_AS = 'save it as UTF-8 (or as "Unicode" with its byte order mark)'


class NotText(ValueError):
    """The bytes are no text this module reads; the message says what they look like."""


def decode(data: bytes, *, lenient: bool = False) -> str:
    """`data` as text; NotText if it is none of the encodings above."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:  # (cut off inside a letter)
            raise NotText("is UTF-16 text cut off in the middle of a letter") from None
    else:
        try:
            text = data.decode("utf-8-sig", errors="replace" if lenient else "strict")
        except UnicodeDecodeError:
            raise NotText("is not UTF-8 text (saved as ANSI?)") from None
    # (UTF-16 without a BOM reads as UTF-8 with a NUL beside each ASCII letter)
    if "\x00" in text:
        raise NotText("is not UTF-8 text (saved as UTF-16 without a byte order mark?)")
    return text


def read(path: Path, *, lenient: bool = False) -> str:
    """The file's text (OSError as `Path.read_bytes` raises it; NotText as `decode`)."""
    return decode(path.read_bytes(), lenient=lenient)
