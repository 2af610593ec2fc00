"""`sesame-pi check`: is this appliance ready? Config, token, and a real handshake."""

from __future__ import annotations

import asyncio
import contextlib

from .auth import TokenError, TokenProvider
from .config import Config
from .link import AuthRefused, Link, LinkLost


class _Quiet:
    """A listener that ignores everything: `check` only wants the handshake."""

    def link_up(self) -> None: ...
    def link_down(self, reason: str) -> None: ...
    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...
    def token_needed(self, detail: str) -> None: ...


def _line(ok: bool, what: str, detail: str) -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {what}: {detail}")


async def run_checks(cfg: Config) -> bool:
    """Print one line per check; True if all passed."""
    _line(True, "config", f"server {cfg.server}, character {cfg.character}, button {cfg.button}")
    tokens = TokenProvider(cfg)
    try:
        info = tokens.load()
    except TokenError as exc:
        _line(False, "token", str(exc))
        return False
    left = (
        f"{info.seconds_left / 60:.0f} min left" if info.seconds_left is not None else "no expiry"
    )
    _line(
        not info.anonymous,
        "token",
        left + (" (anonymous account: refused by the service)" if info.anonymous else ""),
    )
    link = Link(cfg, tokens, _Quiet())
    try:
        token = await tokens.valid_token()
        conn = await link.open_connection(token)
    except AuthRefused as exc:
        _line(False, "server", f"{exc}; get a new token")
        return False
    except (LinkLost, TokenError) as exc:
        _line(False, "server", str(exc))
        return False
    _line(True, "server", f"handshake complete (session {conn.session_id[:8]}...)")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.ws.close(), 2.0)
    return not info.anonymous
