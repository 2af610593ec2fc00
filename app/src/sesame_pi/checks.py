"""`sesame-pi check`: is this appliance ready? Config, audio devices, token, a real handshake."""

from __future__ import annotations

import asyncio

from .auth import TokenError, TokenProvider, TokenServiceUnreachable
from .config import Config
from .link import AuthRefused, LinkLost, check_handshake


def _line(ok: bool, what: str, detail: str) -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {what}: {detail}")


def _audio_ok(cfg: Config) -> bool:
    """The configured microphone and speaker exist and take the formats a call opens (no stream
    is opened: the running app may hold them)."""
    from .devices import AudioDeviceError, configured_devices, portaudio

    try:
        pa = portaudio()
        try:
            mic, speaker = configured_devices(pa, cfg)
        finally:
            pa.terminate()
    except AudioDeviceError as exc:
        _line(False, "audio", str(exc))
        return False
    _line(True, "audio", f"microphone {mic.name!r}, speaker {speaker.name!r}")
    return True


async def run_checks(cfg: Config) -> bool:
    """Print one line per check; True if all passed."""
    _line(True, "config", f"server {cfg.server}, character {cfg.character}, button {cfg.button}")
    audio_ok = await asyncio.to_thread(_audio_ok, cfg)
    tokens = TokenProvider(cfg)
    try:
        info = tokens.load()
    except TokenError as exc:
        _line(False, "token", str(exc))
        return False
    seconds = info.seconds_left
    if seconds is None:
        left = "no expiry"
    elif seconds > 0:
        left = f"{seconds / 60:.0f} min left"
    else:
        left = f"expired {-seconds / 60:.0f} min ago" + (
            "; the refresh renews it" if tokens.can_refresh else ""
        )
    _line(
        not info.anonymous and (seconds is None or seconds > 0 or tokens.can_refresh),
        "token",
        left + (" (anonymous account: refused by the service)" if info.anonymous else ""),
    )
    try:
        token = await tokens.valid_token()
        session_id = await check_handshake(cfg, token)
    except AuthRefused as exc:
        _line(False, "server", f"{exc}; get a new token")
        return False
    except (LinkLost, TokenError, TokenServiceUnreachable) as exc:
        _line(False, "server", str(exc))
        return False
    _line(True, "server", f"handshake complete (session {session_id[:8]}...)")
    return audio_ok and not info.anonymous
