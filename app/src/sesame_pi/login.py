"""`sesame-pi login`: hand the device what a signed-in browser holds, once.

The owner signs in at the Sesame web app in a desktop browser; Firebase keeps an auth-user record
there (`apiKey`, `email`, `stsTokenManager.refreshToken`, ...). We take that record (or a bare
refresh token), exchange the refresh token once at the secure-token endpoint with the same code the
running app refreshes with, and store the ID token, the rotated refresh token and the API key where
`run` finds them. Nothing is written until the exchange succeeded, so a refused, malformed or
unreachable login leaves every file as it was. No message here ever holds a token.

The SD image's first boot (and a fleet's play) leaves the record as a pending `auth.pending.json`
beside the token file; the app consumes it at start (`settle_pending`), retrying while the network
is down. (Not `auth.json`: a maker's own record of that name beside a `--token-file ./token` was
taken for a pending one, and deleted.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import textfile
from .auth import (
    AnswerUnusable,
    CredentialsUnusable,
    EndpointUnreachable,
    RefreshFailed,
    RefreshRefused,
    anonymous_account,
    api_key_path,
    credentials_lock,
    decode_claims,
    exchange_refresh_token,
    file_stamp,
    refresh_token_path,
    stored_api_key,
    write_secret_files,
)
from .config import Config
from .logs import event, register_secret

PENDING_NAME = "auth.pending.json"
RECHECK_S = 1.0  # how often a record waiting for the network looks whether it is still wanted
REFUSED_SUFFIX = ".refused"
GUIDE = 'see "Get your token" in the README'
# A refresh token is one long URL-safe word; an API key likewise (Google keys start with AIza).
_WORD = re.compile(r"[A-Za-z0-9_\-.:~+/=]{16,}")


ANONYMOUS = (
    "that sign-in is an anonymous visitor's (the web app signs everyone in so, until they sign "
    "in with an account), and the service refuses those: sign in with your account at the "
    f"Sesame web app, then copy the record again ({GUIDE})"
)


class LoginError(Exception):
    """One plain sentence that says what to do; never contains a token."""


class LoginRefused(LoginError):
    """The token endpoint said no: these credentials will not work again."""


class LoginUnreachable(LoginError):
    """No answer from the token endpoint: the same input may work later."""


class NoApiKey(LoginError):
    """A bare refresh token, and no API key on this device to exchange it with."""


class LoginSuperseded(LoginError):
    """The first boot's record was still being tried when a login by hand (`sesame-pi login`,
    the setup page) stored newer credentials and removed it: the record's result is not stored
    over them."""


class LoginNotStored(LoginError):
    """The sign-in worked but the files could not be written (permissions, a full or read-only
    card): nothing was changed, and the same input works once that is fixed."""


@dataclass(frozen=True)
class Credentials:
    """What the owner handed over: a refresh token, and the API key and email if the record had
    them."""

    refresh_token: str = field(repr=False)
    api_key: str | None
    email: str | None


@dataclass(frozen=True)
class LoginResult:
    email: str | None
    seconds_left: float  # the new ID token's time left
    token_file: Path
    refresh_token_file: Path
    # A login by hand that found the first boot's record still waiting (no network yet): the
    # record was removed, this login's credentials being newer.
    superseded_pending: bool = False
    # A first boot's record this login used but could not delete (why): it would be used again
    # at the next start.
    pending_left: str | None = None


# ---------------------------------------------------------------- parsing


def _clean(text: str) -> str:
    return text.replace("\ufeff", "").replace("\r", "").strip()


def _user_record(data: Any, depth: int = 0) -> dict[str, Any] | None:
    """The auth-user record inside any of the forms a browser gives it to us in."""
    if depth > 4:
        return None
    if isinstance(data, str):
        try:
            return _user_record(json.loads(_clean(data)), depth + 1)
        except (ValueError, RecursionError):  # (also an integer over 4300 digits)
            return None
    if isinstance(data, list):
        # A signed-in account before an anonymous one: a list of IndexedDB rows may hold a
        # guest session's row first, which hid the real account behind "anonymous".
        found = [r for r in (_user_record(item, depth + 1) for item in data) if r is not None]
        named = [r for r in found if r.get("isAnonymous") is not True]
        return (named or found)[0] if found else None
    if not isinstance(data, dict):
        return None
    manager = data.get("stsTokenManager")
    if isinstance(manager, dict) and manager.get("refreshToken"):
        return data
    if "value" in data:  # IndexedDB firebaseLocalStorage row: {"fbase_key": ..., "value": {...}}
        return _user_record(data["value"], depth + 1)
    return None


def _text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_credentials(text: str, api_key: str | None = None) -> Credentials:
    """The auth-user record (or its IndexedDB wrappers, or a JSON string of it), or a bare refresh
    token. `api_key` (e.g. `--api-key`) wins over the record's own `apiKey`."""
    given_key = _text_or_none(api_key)
    if given_key is not None and not _WORD.fullmatch(given_key):
        raise LoginError("the API key given is not a Firebase API key (one word, like AIza...)")
    cleaned = _clean(text)
    if not cleaned:
        raise LoginError(f"nothing was given; paste the auth record or a refresh token ({GUIDE})")
    if cleaned[0] in '{["':
        try:
            data = json.loads(cleaned)
        except (ValueError, RecursionError):  # (damaged, or nested beyond the parser's depth)
            raise LoginError(
                f"that looks like JSON but is cut off or damaged; copy the record again ({GUIDE})"
            ) from None
        if isinstance(data, str) and _WORD.fullmatch(data.strip()):
            # a bare refresh token copied with its quotes, as DevTools shows a string value
            return parse_credentials(data, api_key)
        record = _user_record(data)
        if record is None:
            raise LoginError(
                "that JSON is not a signed-in Firebase user record (it has no "
                f"stsTokenManager.refreshToken); copy the record again ({GUIDE})"
            )
        refresh = str(record["stsTokenManager"]["refreshToken"]).strip()
        register_secret(refresh)
        if record.get("isAnonymous") is True:
            raise LoginRefused(ANONYMOUS)
        if not _WORD.fullmatch(refresh):
            raise LoginError(f"the record's refresh token is damaged; copy it again ({GUIDE})")
        return Credentials(
            refresh,
            given_key or _text_or_none(record.get("apiKey")),
            _text_or_none(record.get("email")),
        )
    register_secret(cleaned)
    if cleaned.startswith("eyJ") and cleaned.count(".") == 2:
        raise LoginError(
            "that is an ID token (it lives one hour), not a refresh token; paste the auth record "
            f"or its stsTokenManager.refreshToken ({GUIDE})"
        )
    if not _WORD.fullmatch(cleaned):
        raise LoginError(
            f"that is neither an auth record (JSON) nor a refresh token (one long word) ({GUIDE})"
        )
    return Credentials(cleaned, given_key, None)


# ---------------------------------------------------------------- the exchange


def login(
    text: str, cfg: Config, api_key: str | None = None, *, pending: Path | None = None
) -> LoginResult:
    """Exchange once, then store the ID token, the rotated refresh token and the API key (0600).

    Blocking (urllib); async callers wrap it in `asyncio.to_thread`. Raises LoginError (or its
    LoginRefused / LoginUnreachable / LoginNotStored / LoginSuperseded kinds) with the files
    untouched.

    `pending` is the first boot's record this login consumes. It waits for the network, maybe for
    hours, and the owner may sign in by hand meanwhile: whichever stores last would win, so the
    newer one is made to. A login by hand removes a waiting record as it stores; the record's
    own login stores only if the record is still there, both under the credentials lock.
    """
    creds = parse_credentials(text, api_key)
    try:
        key = creds.api_key or stored_api_key(cfg)
    except CredentialsUnusable as exc:
        raise LoginError(
            f"{exc.problem}, or delete it and paste the whole auth record (it carries apiKey)"
        ) from None
    if not key:
        raise NoApiKey(
            "no Firebase API key on this device for a bare refresh token: paste the whole auth "
            "record (it carries apiKey)"
        )
    try:
        answer = exchange_refresh_token(cfg, creds.refresh_token, key)
    except RefreshRefused as exc:
        raise LoginRefused(
            f"sign-in refused: {exc}; sign in at the Sesame web app again and copy a fresh "
            f"record ({GUIDE})"
        ) from None
    except AnswerUnusable as exc:
        # An answer that is no token service's (a public Wi-Fi's sign-in page, a proxy, an
        # `id_token` that is no JWT): not a verdict on the record, so a pending one is kept and
        # tried again.
        raise LoginUnreachable(
            f"the token service gave an unusable answer ({exc}); check the network (a Wi-Fi "
            "sign-in page?) and try again"
        ) from None
    except EndpointUnreachable as exc:
        raise LoginUnreachable(
            f"could not reach the token service ({exc}); check the network and try again"
        ) from None
    except RefreshFailed as exc:  # (the ca_file)
        raise LoginUnreachable(f"{exc}; then try again") from None
    except Exception as exc:
        # An answer that broke a parser, or a fault of ours: no verdict on the record either.
        # It ended a first boot's sign-in task (the device then asked for a token until a
        # restart) and printed a traceback at `sesame-pi login`. Only its kind is said: its
        # text may hold what the request carried.
        raise LoginUnreachable(
            f"the token service's answer could not be used ({type(exc).__name__}); check the "
            "network and try again"
        ) from None
    claims = decode_claims(answer.id_token)  # (a JWT: the exchange checked it)
    if anonymous_account(claims):
        raise LoginRefused(ANONYMOUS)  # (a bare refresh token says so only here)
    exp = claims.get("exp")
    seconds_left = float(exp) - time.time() if isinstance(exp, int | float) else 0.0
    email = creds.email or _text_or_none(claims.get("email"))
    refresh_file = refresh_token_path(cfg)
    # The key is stored even when it is the configured one: refreshes use the stored key first
    # (the one proven to go with this refresh token), so a later change of the configured key
    # cannot leave a stale stored one in charge.
    files = [(api_key_path(cfg), key), (refresh_file, answer.refresh_token or creds.refresh_token)]
    # The ID token last: its change is what a running app notices, and by then the rest is there.
    files.append((cfg.token_file, answer.id_token))
    superseded = False
    pending_left: str | None = None
    try:
        with credentials_lock(cfg):  # not while the app's own refresh writes its result
            if pending is not None and not pending.exists():
                raise LoginSuperseded(
                    f"{pending} was replaced by a login made meanwhile; its sign-in is not stored"
                )
            write_secret_files(files)
            if pending is None:
                superseded = _remove_waiting_record(cfg)
            else:  # used: gone before the lock is let go, so a login by hand cannot find it
                try:
                    pending.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:  # stored all the same: the sign-in worked
                    pending_left = exc.strerror or str(exc)
    except OSError as exc:
        raise LoginNotStored(
            f"signed in, but cannot write to {cfg.token_file.parent} ({exc.strerror or exc}); "
            "nothing was changed: run it as the app's user or as root (the files keep their "
            "owner), and check the card has space and is not read-only"
        ) from None
    return LoginResult(email, seconds_left, cfg.token_file, refresh_file, superseded, pending_left)


def _remove_waiting_record(cfg: Config) -> bool:
    """After a login by hand: the first boot's record, if it still waits, is older news."""
    waiting = pending_auth_path(cfg)
    try:
        waiting.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        event(
            "login_pending_not_removed",
            logging.WARNING,
            file=str(waiting),
            detail=exc.strerror or str(exc),
            action="delete it: the app would sign in with it when the network is up",
        )
        return False
    event("login_pending_superseded", file=str(waiting), by="a login by hand")
    return True


# ---------------------------------------------------------------- a pending record (first boot)


def pending_auth_path(cfg: Config) -> Path:
    """Where the image's first boot leaves the boot partition's `sesame-pi/auth.json`, and the
    fleet's play an auth record it was given."""
    return cfg.token_file.with_name(PENDING_NAME)


def record_text(path: Path, data: bytes) -> str:
    """An auth record file's text, decoded as every hand-written file is (`textfile`). An 8-bit
    code page (old Notepad's "ANSI") is read with replacement: only names suffer, never the
    refresh token or the key. No text at all is a LoginError that says how to save it."""
    try:
        return textfile.decode(data, lenient=True)
    except textfile.NotText as exc:
        raise LoginError(f"{path} {exc}; {textfile.SAVE_AS} ({GUIDE})") from None


def consume_pending(cfg: Config) -> LoginResult | None:
    """Log in with a pending auth record, if there is one.

    Done: the record is deleted (one that cannot be is named in a `login_pending_not_removed`
    line: it would sign in again at the next start). Refused, malformed or not text: renamed
    `auth.pending.json.refused` (it will never work) and the LoginError raised. Unreachable, or not
    stored (a full or read-only card): the record is kept for the next start, and the
    LoginError raised.
    """
    path = pending_auth_path(cfg)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LoginError(f"cannot read {path}: {exc.strerror}") from None
    try:
        result = login(record_text(path, data), cfg, pending=path)
    except LoginSuperseded as exc:
        event("login_pending_superseded", file=str(path), detail=str(exc))
        raise
    except LoginUnreachable:
        raise
    except LoginNotStored as exc:
        event("login_pending_not_stored", logging.ERROR, detail=str(exc), kept=str(path))
        raise
    except LoginError as exc:
        refused = path.with_name(path.name + REFUSED_SUFFIX)
        try:
            path.replace(refused)
        except OSError as move:
            note = f"could not rename it: {move.strerror or move}"
            event(
                "login_pending_refused", logging.ERROR, detail=str(exc), kept=str(path), note=note
            )
        else:
            event("login_pending_refused", logging.ERROR, detail=str(exc), moved_to=str(refused))
        raise
    event("login_pending_done", seconds_left=round(result.seconds_left), file=str(path))
    if result.pending_left is not None:
        event(
            "login_pending_not_removed",
            logging.WARNING,
            file=str(path),
            detail=result.pending_left,
            action="delete it: the app would sign in with it again at its next start",
        )
    return result


async def settle_pending(
    cfg: Config,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_wait_s: float = 60.0,
) -> LoginResult | None:
    """Consume a pending auth record at start, retrying (with backoff) while the network is down.

    Returns None when there is none or it was refused (the app then goes on with what it has);
    raises LoginSuperseded when a login by hand stored newer credentials meanwhile.
    """
    wait = 2.0
    retrying = False
    record = pending_auth_path(cfg)
    key_before = await asyncio.to_thread(file_stamp, api_key_path(cfg))
    while True:
        try:
            result = await asyncio.to_thread(consume_pending, cfg)
            if result is None and retrying:
                key_now = await asyncio.to_thread(file_stamp, api_key_path(cfg))
                _record_gone(record, replaced=key_now is not None and key_now != key_before)
            return result
        except LoginUnreachable as exc:
            event("login_pending_retry", logging.WARNING, detail=str(exc), retry_in_s=wait)
        except LoginSuperseded:
            raise
        except LoginError:
            return None
        await _pause_before_retry(record, wait, sleep)
        retrying = True
        wait = min(max_wait_s, wait * 2)


async def _pause_before_retry(
    record: Path, seconds: float, sleep: Callable[[float], Awaitable[None]]
) -> None:
    """The pause before the record's next try, cut short when the record goes: a login by hand
    removes it, and the LED should leave "signing in" then, not at the next try (up to a
    minute later)."""
    left = seconds
    while left > 0 and await asyncio.to_thread(record.exists):  # a stat on an SD card
        step = min(RECHECK_S, left)
        await sleep(step)
        left -= step


def _record_gone(record: Path, *, replaced: bool) -> None:
    """The record went while it waited for the network. With new credentials beside it (a new
    API key file: only a login writes it, the app's own refresh does not), a login by hand came
    first (LoginSuperseded: signed in); without them, someone deleted it, and the appliance
    still needs a token."""
    if not replaced:
        event("login_pending_gone", file=str(record), detail="deleted while it waited")
        return
    event("login_pending_gone", file=str(record), detail="replaced by a login by hand")
    raise LoginSuperseded(f"{record} was replaced by a login made while it waited")
