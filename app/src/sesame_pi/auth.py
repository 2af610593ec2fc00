"""Where the ID token comes from: the token file, its expiry (PyJWT), and an optional refresh.

The token is a Firebase ID token (a JWT valid for an hour). We read `exp` without verifying the
signature (the service verifies it; we only need to know when to refresh). Every token we touch is
registered with the log redaction first, and no message, repr or exception here contains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http.client
import json
import logging
import os
import ssl
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from . import textfile
from .config import Config
from .logs import event, raised_at, register_secret
from .tls import client_context

MIN_VALID_S = 60.0
_UNSEEN = object()
CLOCK_TOLERANCE_S = 60.0  # a fresh token's `iat` this far from our clock: the clock is off
REFRESH_BACKOFF_MAX_S = 600.0  # after refusals and bad answers: nothing changes by itself soon
UNREACHABLE_BACKOFF_MAX_S = 60.0  # after an outage: back within a minute of the network


class TokenError(Exception):
    """A token problem a person must fix; the text says what to do and never holds the token."""


class TokenMissing(TokenError):
    pass


class TokenInvalid(TokenError):
    pass


class TokenExpired(TokenError):
    pass


class RefreshFailed(TokenError):
    pass


class RefreshRefused(RefreshFailed):
    """The endpoint answered and said no: the same credentials will not work on a retry."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class CredentialsUnusable(RefreshFailed):
    """The refresh token or API key file on this device cannot be read (permissions, not plain
    text): nothing on the network will fix it, a person must. `problem` is the text without the
    advice to sign in again (for `sesame-pi login` itself)."""

    def __init__(self, problem: str, advice: str = "or run `sesame-pi login`") -> None:
        joined = ", " if advice.startswith("or ") else "; "
        super().__init__(f"{problem}{joined}{advice}" if advice else problem)
        self.problem = problem


class EndpointUnreachable(RefreshFailed):
    """No answer, or "not now" (network down, DNS, timeout, HTTP 5xx, 408, 429): retry later."""


class AnswerUnusable(EndpointUnreachable):
    """Something answered in the token service's place (a Wi-Fi sign-in page, a TLS-inspecting
    proxy's block page: not JSON, no `id_token`, an `id_token` that is no JWT). No verdict on the
    credentials and no token service reached: an outage, tried again soon (shown offline, not
    as a request to sign in again)."""


class TokenServiceUnreachable(Exception):
    """The token ran out (or there is none yet) and the token service cannot be reached to
    refresh it. Not a token problem a person must fix: a network outage, which the link retries
    as any other (shown offline, not as a request to sign in again)."""


# Answers below 500 that say "not now" rather than "never": a refusal would make a login give up
# on a good record (and the first boot rename it `.refused`).
_TEMPORARY_HTTP = (408, 429)
_TEMPORARY_CODES = ("TOO_MANY_ATTEMPTS",)


# The stored credentials, beside the token file unless configured: `sesame-pi login` writes them
# there and `run` finds them there, so no config.toml edit is needed.
REFRESH_TOKEN_NAME = "refresh_token"
API_KEY_NAME = "firebase_api_key"

# Firebase's refusal codes, as a person should read them (the code is kept for the log).
_REFUSALS = {
    "INVALID_REFRESH_TOKEN": "the refresh token is not valid (signed out, or copied incompletely)",
    "TOKEN_EXPIRED": "the refresh token has expired (password changed or signed out everywhere)",
    "USER_DISABLED": "this account is disabled",
    "USER_NOT_FOUND": "this account no longer exists",
    "INVALID_API_KEY": "the Firebase API key is not valid",
    "API_KEY_INVALID": "the Firebase API key is not valid",
    "PROJECT_NUMBER_MISMATCH": "the refresh token belongs to another app than the API key",
    "MISSING_REFRESH_TOKEN": "the refresh token is empty",
}


@dataclass(frozen=True)
class TokenInfo:
    expires_at: datetime | None
    seconds_left: float | None
    anonymous: bool
    source: str


@dataclass(frozen=True)
class FileStamp:
    inode: int
    size: int
    mtime_ns: int


def file_stamp(path: Path) -> FileStamp | None:
    """Which file is at `path` now (None: none): every store writes a new file by a rename."""
    try:
        st = path.stat()
    except OSError:
        return None
    return FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)


def write_secret_file(path: Path, value: str) -> None:
    """Atomically replace `path` with `value`, mode 0600 from the first byte."""
    write_secret_files([(path, value)])


def write_secret_files(files: list[tuple[Path, str]]) -> None:
    """Replace each path with its value (mode 0600 from the first byte), all or none: every new
    file is written and synced beside its target before the first is renamed into place, so a
    full card or a read-only directory (OSError) leaves every old file as it was."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, value in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Per thread too: a login (setup page, in a thread) may race the app's own refresh.
            temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            temps.append((temp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if os.geteuid() == 0:  # `sudo sesame-pi login`: the app's user must still read it
                    owner = (path if path.exists() else path.parent).stat()
                    os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
                handle.write(value.strip() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        for temp, path in temps:  # in the caller's order: the ID token last
            os.replace(temp, path)
    finally:
        for temp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


@contextlib.contextmanager
def credentials_lock(cfg: Config) -> Iterator[None]:
    """One writer of the stored credentials at a time, across processes and threads: a login
    (`sesame-pi login`, or the setup page in a thread) and the app's own refresh. An advisory
    lock on the token file's directory, so there is no lock file to own or leave behind."""
    directory = cfg.token_file.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (closing releases the lock)


def refresh_token_path(cfg: Config) -> Path:
    """Where the refresh token lives: `refresh_token_file`, or `refresh_token` beside the token."""
    return cfg.refresh_token_file or cfg.token_file.with_name(REFRESH_TOKEN_NAME)


def api_key_path(cfg: Config) -> Path:
    """Where `sesame-pi login` keeps the API key: `firebase_api_key` beside the token file."""
    return cfg.token_file.with_name(API_KEY_NAME)


def stored_api_key(cfg: Config) -> str:
    """The key the last `sesame-pi login` exchanged with (stored beside the token), else the
    configured `firebase_api_key`; "" if neither. The stored one first: it is the key proven to
    work with the stored refresh token, where a stale configured one would make every refresh
    fail after a login that worked. A stored file that cannot be read gives way to a configured
    key; with none configured, CredentialsUnusable says what is wrong with it."""
    try:
        return read_credential(api_key_path(cfg)) or cfg.firebase_api_key
    except CredentialsUnusable:
        if cfg.firebase_api_key:
            return cfg.firebase_api_key
        raise


def _holds(path: Path, value: str) -> bool:
    """Whether a credential file already holds `value` (an unreadable one does not)."""
    try:
        return read_credential(path) == value.strip()
    except CredentialsUnusable:
        return False


def read_credential(path: Path) -> str:
    """A refresh token or API key file's text, stripped; "" if there is no such file.
    CredentialsUnusable, naming the file and what to do, if it cannot be read as text."""
    try:
        return textfile.read(path).strip()
    except FileNotFoundError:
        return ""
    except textfile.NotText as exc:
        raise CredentialsUnusable(f"{path} {exc}; {textfile.SAVE_AS}") from None
    except OSError as exc:
        raise CredentialsUnusable(
            f"cannot read {path} ({exc.strerror or exc}); make it readable by the app's user"
        ) from None


@dataclass(frozen=True)
class Exchanged:
    """What the secure-token endpoint handed back for a refresh token."""

    id_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: str


def exchange_refresh_token(cfg: Config, refresh_token: str, api_key: str) -> Exchanged:
    """One refresh-token grant at `token_endpoint` (blocking; call it off the event loop).

    Raises RefreshRefused (the endpoint said no), EndpointUnreachable (no answer, HTTP 5xx, or
    "too many attempts"; AnswerUnusable: an answer that is no token service's) or
    CredentialsUnusable (the ca_file). No message holds a token.
    """
    register_secret(refresh_token)
    register_secret(api_key)  # (public in the web app, but this account's: kept out of logs)
    query = urllib.parse.urlencode({"key": api_key})
    url = f"{cfg.token_endpoint}?{query}"
    body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token})
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        context = client_context(cfg.ca_file)
    except (OSError, ssl.SSLError) as exc:  # the CA file went, or holds no certificate now
        raise CredentialsUnusable(
            f"the ca_file {cfg.ca_file} cannot be used: {exc}", "fix or remove the ca_file setting"
        ) from None
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        code = _firebase_error(exc)
        temporary = exc.code in _TEMPORARY_HTTP or code.startswith(_TEMPORARY_CODES)
        if exc.code >= 500 or temporary:
            raise EndpointUnreachable(
                f"token endpoint answered HTTP {exc.code} {code}".strip()
            ) from None
        if not code:  # the service always says why it refuses: this is someone else's answer
            raise AnswerUnusable(
                f"token endpoint answered HTTP {exc.code} with no token service's error in it "
                "(a proxy or a network filter in its place?)"
            ) from None
        meaning = _REFUSALS.get(code.split(" ")[0].rstrip(":"), "")
        if not meaning and "API key not valid" in code:
            meaning = _REFUSALS["INVALID_API_KEY"]
        text = f"token endpoint refused it (HTTP {exc.code} {code})".replace(" )", ")")
        raise RefreshRefused(f"{meaning}: {text}" if meaning else text, code) from None
    # (http.client's own errors, a connection closed mid-answer or a status line that is not
    # HTTP, are neither OSError nor URLError: without them here a first boot's sign-in ended)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        raise EndpointUnreachable(
            f"token endpoint unreachable: {getattr(exc, 'reason', exc)}"
        ) from None
    except (ValueError, RecursionError):  # not JSON, not UTF-8, over 4300 digits, too nested
        raise AnswerUnusable("token endpoint answered something that is not JSON") from None
    id_token = answer.get("id_token") if isinstance(answer, dict) else None
    if not isinstance(id_token, str) or not id_token:
        raise AnswerUnusable("token endpoint answer has no id_token")
    register_secret(id_token)
    try:  # checked before anything is stored: a bad answer must not replace a working token
        decode_claims(id_token)
    except TokenInvalid:
        raise AnswerUnusable("token endpoint answered an id_token that is not a JWT") from None
    new_refresh = answer.get("refresh_token")
    if isinstance(new_refresh, str) and new_refresh:
        register_secret(new_refresh)
    else:
        new_refresh = None
    return Exchanged(id_token, new_refresh, str(answer.get("expires_in", "")))


def decode_claims(token: str) -> dict[str, Any]:
    """The JWT's claims, unverified; TokenInvalid if it is not a JWT at all."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        raise TokenInvalid(
            "the token file does not hold a JWT (an ID token has three dot-separated parts)"
        ) from None
    return claims


def anonymous_account(claims: dict[str, Any]) -> bool:
    """The token is an anonymous Firebase account's (the service refuses those)."""
    firebase = claims.get("firebase")
    return isinstance(firebase, dict) and firebase.get("sign_in_provider") == "anonymous"


class TokenProvider:
    """Hands out a valid ID token per connect; refreshes it when it can."""

    def __init__(
        self,
        cfg: Config,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.clock = clock  # for token times (`exp`, `iat`): the wall clock
        # for waits between refreshes: NTP steps the wall clock at boot, which would stretch a
        # minute's wait by the hour the clock was off
        self.ticks = ticks
        self._token: str | None = None
        self._exp: float | None = None
        self._issued_at: float | None = None  # the token's `iat`
        self._clock_offset = 0.0  # the token service's clock minus ours, when a refresh showed it
        self._offset_basis = 0.0  # `_clock_basis` when it did
        self._anonymous = False
        self._stamp: FileStamp | None = None
        self._refresh_failures = 0
        self._next_refresh_at = 0.0
        self._unreachable = False  # the last refresh attempt found no token service to ask
        self._refused = False  # the token service refused the last refresh (sign in again)
        self._refreshing: asyncio.Future[None] | None = None  # the refresh under way
        self._warned_expiry_for: float | None = None
        self._unreadable: object = _UNSEEN  # the stamp of a token file the watch could not use
        self._not_set_aside: FileStamp | None = None  # a file that could not be moved aside
        self._credentials_stamp: tuple[FileStamp | None, FileStamp | None] | None = None
        # A refresh token the endpoint rotated but the card would not store (full, read-only):
        # the next exchange uses it, as the file would have it.
        self._unsaved_refresh: str | None = None
        self._handed_out: str | None = None  # the token the last connect used
        self._renewed: str | None = None  # the token the last refresh after a refusal gave
        self._renewals_refused = 0  # such tokens the service refused in turn, since one worked

    def __repr__(self) -> str:
        return f"TokenProvider(file={self.cfg.token_file}, exp={self._exp})"

    @property
    def can_refresh(self) -> bool:
        """A refresh token and an API key are present (configured or stored by `login`)."""
        if not refresh_token_path(self.cfg).is_file():
            return False
        try:
            return bool(stored_api_key(self.cfg))
        except CredentialsUnusable:
            return True  # there, but unreadable: the refresh says what is wrong with it

    def _no_key_hint(self) -> str:
        """Why a refresh token beside a missing token does not help: no API key to use it with
        (the refresh token was ignored without a word)."""
        if self.can_refresh or not refresh_token_path(self.cfg).is_file():
            return ""
        return (
            f"; the refresh token in {refresh_token_path(self.cfg)} needs the web app's API key: "
            f"put it in {api_key_path(self.cfg)} or set firebase_api_key, or give the whole auth "
            "record to `sesame-pi login`"
        )

    def _credentials_changed(self) -> bool:
        """True once after the refresh token or stored key file changed (a new login)."""
        stamp = (file_stamp(refresh_token_path(self.cfg)), file_stamp(api_key_path(self.cfg)))
        changed = stamp != self._credentials_stamp
        self._credentials_stamp = stamp
        return changed

    def _refresh_allowed(self) -> bool:
        """Backing off after a failure, unless new credentials arrived since."""
        if self._credentials_changed():
            self._refresh_failures = 0
            self._next_refresh_at = 0.0
            self._refused = False
            self._unsaved_refresh = None  # a new login's refresh token is on the card
        return self.ticks() >= self._next_refresh_at

    def _needs_first_token(self) -> bool:
        """No token file (never one, or it was removed or set aside), and a refresh can make one.
        (A token kept in memory because the card would not store it is a token: no refresh at
        every look until the file exists.)"""
        if self.cfg.token_file.exists() or not self.can_refresh:
            return False
        return self._token is None or self._stamp is not None

    def _set_aside_if_unusable(self) -> None:
        """A token file that holds no ID token (an auth record or a refresh token pasted there)
        on a device that renews its own: moved to `<file>.set-aside` (0600; later ones to
        `.set-aside.2` and on) and renewed, so the device goes on and the paste is kept.
        Otherwise the next refresh would write over it, or, with no good token yet, the device
        would wait for a token it can make itself. (An empty file is left alone: someone is
        about to paste into it.)"""
        path = self.cfg.token_file
        stamp = file_stamp(path)  # (one look at the file; `can_refresh` reads two more, so last)
        if stamp in (None, self._stamp, self._not_set_aside) or not self.can_refresh:
            return
        with credentials_lock(self.cfg):  # (a login may be storing a token right now)
            try:
                text = _token_text(path)
                what = _what_it_holds(text) or "the token file held no ID token"
            except textfile.NotText as exc:
                text, what = "?", f"the token file {exc}"
            except OSError:
                return  # gone, or unreadable: `_read_file` says so
            if not text or _holds_a_jwt(text):
                return
            aside = _free_name(path.with_name(f"{path.name}.set-aside"))
            try:
                os.replace(path, aside)
            except OSError as exc:
                self._not_set_aside = stamp  # said once, until the file changes
                event(
                    "token_file_not_set_aside",
                    logging.ERROR,
                    file=str(path),
                    detail=f"{what}; it cannot be moved aside: {exc.strerror or exc}",
                    action=f"replace {path} with an ID token, or remove it: this device renews "
                    "its own token then",
                )
                return
            with contextlib.suppress(OSError):  # (someone else's file: it keeps its mode)
                aside.chmod(0o600)
        event(
            "token_file_set_aside",
            logging.WARNING,
            file=str(path),
            kept_as=str(aside),
            detail=what,
            action="this device renews its own token with its stored sign-in; to sign in with "
            "another account, give its auth record to `sesame-pi login` or the setup page",
        )

    # ------------------------------------------------------------ reading the file

    def _read_file(self) -> None:
        path = self.cfg.token_file
        try:
            text = _token_text(path)
        except textfile.NotText as exc:
            raise TokenInvalid(f"{path} {exc}; {textfile.SAVE_AS}") from None
        except FileNotFoundError:
            raise TokenMissing(
                f"no token file at {path}; put your ID token there (mode 0600){self._no_key_hint()}"
            ) from None
        except OSError as exc:
            raise TokenMissing(
                f"cannot read token file {path}: {exc.strerror}; it must belong to the user the "
                "app runs as (uid 10001 in the container), mode 0600"
            ) from None
        if not text:
            also = "; or remove it: this device renews its own token" if self.can_refresh else ""
            raise TokenMissing(f"token file {path} is empty; put your ID token there{also}")
        try:
            self._adopt(text)
        except TokenInvalid as exc:
            raise TokenInvalid(f"{path}: {_what_it_holds(text) or exc}") from None
        self._stamp = file_stamp(path)
        self._check_permissions(path)
        if self._exp is None:
            event("token_without_expiry", logging.WARNING, file=str(path))
        if self._anonymous:
            event(
                "token_anonymous",
                logging.WARNING,
                detail="the service refuses anonymous accounts; sign in with a real account",
            )

    def _adopt(self, token: str) -> None:
        """Use `token` from now on (read from the file, or fresh from a refresh)."""
        register_secret(token)
        claims = decode_claims(token)
        exp = claims.get("exp")
        try:
            expires = float(exp) if isinstance(exp, int | float) else None
            if expires is not None:
                datetime.fromtimestamp(expires, UTC)  # (a time a date can hold)
        except (OverflowError, ValueError, OSError):
            raise TokenInvalid("the token's exp claim is not a time; get a fresh token") from None
        iat = claims.get("iat")
        self._token = token
        self._exp = expires
        self._issued_at = float(iat) if isinstance(iat, int | float) and iat > 0 else None
        self._anonymous = anonymous_account(claims)

    @staticmethod
    def _check_permissions(path: Path) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            event(
                "token_file_permissions",
                logging.WARNING,
                file=str(path),
                mode=oct(mode),
                action=f"chmod 600 {path}",
            )

    def _file_changed(self) -> bool:
        return file_stamp(self.cfg.token_file) != self._stamp

    def _file_empty(self) -> bool:
        stamp = file_stamp(self.cfg.token_file)
        return stamp is not None and stamp.size == 0

    def _seconds_left(self) -> float | None:
        """By the token service's clock, as far as a refresh has shown it (`_learn_clock`)."""
        if self._exp is None:
            return None
        if self._clock_offset and abs(self._clock_basis() - self._offset_basis) > CLOCK_TOLERANCE_S:
            self._clock_offset = 0.0  # the clock was set since (NTP got through): trust it again
            event("clock_set", detail="this machine's clock was set; token times follow it again")
        return self._exp - (self.clock() + self._clock_offset)

    def _clock_basis(self) -> float:
        """Our clock less the monotonic one: constant until someone sets the clock."""
        return self.clock() - time.monotonic()

    def _learn_clock(self, issued_at: float | None) -> None:
        """A token fresh from the token service was issued (`iat`) at the service's now: how far
        this machine's clock is from it. A Pi has no clock of its own across power-off and
        keeps time by NTP: an hour ahead, every fresh token would look nearly expired and be
        refreshed every 10 s; behind, expired tokens would look good and be refused."""
        if issued_at is None:
            return
        offset = issued_at - self.clock()
        if abs(offset) <= CLOCK_TOLERANCE_S:
            self._clock_offset = 0.0
            return
        if abs(offset - self._clock_offset) > CLOCK_TOLERANCE_S:
            event(
                "clock_skew",
                logging.WARNING,
                offset_s=round(offset),
                detail="this machine's clock is off from the token service's",
                action="let the Pi reach a time server (NTP: systemd-timesyncd); token times "
                "are corrected by the offset meanwhile",
            )
        self._clock_offset = offset
        self._offset_basis = self._clock_basis()

    def info(self) -> TokenInfo:
        left = self._seconds_left()
        expires = datetime.fromtimestamp(self._exp, UTC) if self._exp is not None else None
        return TokenInfo(expires, left, self._anonymous, str(self.cfg.token_file))

    def _expired_error(self) -> TokenExpired:
        if not self.can_refresh:
            how = "run `sesame-pi login`"
        elif self._refused:  # the network is fine: the service will not renew this sign-in
            how = (
                "the token service refused to renew it: sign in again (`sesame-pi login` or "
                "the setup page)"
            )
        else:
            how = "check the network"
        return TokenExpired(
            f"the token in {self.cfg.token_file} expired; {how}, or put a fresh ID token there"
        )

    def load(self, *, set_aside: bool = True) -> TokenInfo:
        """Read and check the token now (at start, and for `sesame-pi check` and `token`;
        `set_aside=False`: only look, move nothing)."""
        if set_aside:
            self._set_aside_if_unusable()
        if self._needs_first_token():
            # Only a refresh token so far (a login's key, the boot partition): the first connect
            # refreshes, with the link's retries if the network is not up yet.
            event("token_from_refresh", refresh_token_file=str(refresh_token_path(self.cfg)))
            return TokenInfo(None, None, False, str(self.cfg.token_file))
        self._read_file()
        left = self._seconds_left()
        if left is not None and left <= 0 and not self.can_refresh:
            raise self._expired_error()
        return self.info()

    # ------------------------------------------------------------ handing it out

    async def valid_token(self) -> str:
        """A token good for at least a minute, or a TokenError that says what to do."""
        self._set_aside_if_unusable()
        if self._needs_first_token():
            try:
                await self.refresh()
            except RefreshFailed as exc:
                if self._token is not None:
                    pass  # the file went, not the token: it serves while it lasts
                elif self._unreachable:
                    raise self._out_of_reach("there is no token yet", exc) from None
                else:
                    raise
        elif self._token is None or (self._file_changed() and not self._file_empty()):
            self._read_file()  # (an empty file is a paste about to come: the held token serves)
        left = self._seconds_left()
        if self.can_refresh and (left is not None and left < self.cfg.refresh_before_s):
            try:
                await self.refresh()
            except RefreshFailed as exc:
                if left < MIN_VALID_S and self._unreachable:
                    raise self._out_of_reach("the token expired", exc) from None
                if left < MIN_VALID_S:
                    raise TokenExpired(f"{self._expired_error()}; refresh failed: {exc}") from None
            left = self._seconds_left()
        if left is not None and left < MIN_VALID_S:
            raise self._expired_error()
        assert self._token is not None
        self._handed_out = self._token
        return self._token

    @staticmethod
    def _out_of_reach(what: str, exc: RefreshFailed) -> TokenServiceUnreachable:
        return TokenServiceUnreachable(
            f"{what} and the token service cannot be reached to refresh it ({exc}); the app "
            "signs in again by itself when the network is back"
        )

    async def after_auth_refusal(self) -> bool:
        """The server refused us. True if a different token is now available."""
        self._set_aside_if_unusable()
        if self._file_changed() and not self._needs_first_token():
            try:
                self._read_file()
            except TokenError:
                return False
            return True
        left = self._seconds_left()
        fresh = self._token is not None and self._token != self._handed_out
        if fresh and (left is None or left >= MIN_VALID_S):
            return True  # a new file the watch read first: its stamp is already the known one
        if self.can_refresh and self._refresh_allowed():
            if self._handed_out is not None and self._handed_out == self._renewed:
                self._renewal_refused()
                return False
            try:
                await self.refresh()
            except RefreshFailed:
                return False
            self._renewed = self._token
            return True
        return False

    def _renewal_refused(self) -> None:
        """The service refused the token a refresh had just given: another one now would fare no
        better (an account it will not serve, an anonymous one). Renew again only after a wait
        that doubles each time, from 30 s to 10 minutes, until a token is taken (`accepted`)."""
        self._renewed = None  # the next look after the wait renews
        self._renewals_refused += 1
        wait = min(REFRESH_BACKOFF_MAX_S, 30.0 * 2 ** min(self._renewals_refused - 1, 5))
        self._next_refresh_at = self.ticks() + wait
        event(
            "token_renewal_refused",
            logging.ERROR,
            detail="the service refused a token the refresh had just given",
            action="check the account can use the service (sign in at the Sesame web app), then "
            "`sesame-pi login` again",
            retry_in_s=wait,
        )

    def accepted(self) -> None:
        """The service took the token handed out last: refused renewals are forgotten."""
        self._renewals_refused = 0
        self._renewed = None

    # ------------------------------------------------------------ refresh

    async def refresh(self) -> None:
        """Exchange the refresh token for a new ID token (in a thread); back off on failure.

        One at a time: a refresh asked for while one is under way (a connect and the watch at
        once) waits for that one and shares its outcome. Two spent the same refresh token
        twice: the second answer was thrown away as "a login stored new credentials", or
        refused as a used token ("sign in again") while the device was fine."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh_once())
            self._refreshing.add_done_callback(self._refresh_done)
        await asyncio.shield(self._refreshing)

    def _refresh_done(self, done: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not done.cancelled():
            done.exception()  # (retrieved: every waiter may have been cancelled meanwhile)

    async def _refresh_once(self) -> None:
        if not self._refresh_allowed():
            raise RefreshFailed("waiting before the next refresh attempt")
        try:
            stored_before, id_token, refresh_token, expires_in = await self._exchange_off_loop()
        except RefreshFailed as exc:
            self._refresh_failures += 1
            self._unreachable = isinstance(exc, EndpointUnreachable)
            self._refused = isinstance(exc, RefreshRefused)
            longest = UNREACHABLE_BACKOFF_MAX_S if self._unreachable else REFRESH_BACKOFF_MAX_S
            wait = min(longest, 5.0 * 2 ** min(self._refresh_failures, 7))
            self._next_refresh_at = self.ticks() + wait
            if isinstance(exc, RefreshRefused):
                action = "sign in again: `sesame-pi login`, or the setup page"
            elif isinstance(exc, CredentialsUnusable):
                action = "fix the file named in the detail; the app tries it again by itself"
            elif isinstance(exc, AnswerUnusable):
                action = (
                    "check the network (a Wi-Fi sign-in page, or a proxy that blocks the token "
                    "service?); the app retries by itself"
                )
            else:
                action = "check the network; the app retries by itself"
            event(
                "token_refresh_failed",
                logging.ERROR,
                detail=str(exc),
                action=action,
                retry_in_s=wait,
            )
            raise
        self._refresh_failures = 0
        self._next_refresh_at = 0.0
        self._unreachable = False
        self._refused = False
        register_secret(id_token)
        fresh = True  # the token in use is the one the service just issued (not a login's)
        try:
            stored = await asyncio.to_thread(self._store, stored_before, id_token, refresh_token)
        except OSError as exc:
            self._keep_unsaved(id_token, refresh_token, exc)
        else:
            fresh = stored
            if stored:
                self._unsaved_refresh = None
                self._credentials_changed()  # our own write is not a new login
            else:
                event(
                    "token_refresh_superseded",
                    detail="a login stored new credentials during the refresh; using them",
                )
            self._read_file()
        if fresh:
            self._learn_clock(self._issued_at)
        event("token_refreshed", seconds_left=self._seconds_left(), expires_in=expires_in)

    def _stored_stamps(self) -> tuple[FileStamp | None, ...]:
        paths = (refresh_token_path(self.cfg), api_key_path(self.cfg), self.cfg.token_file)
        return tuple(file_stamp(path) for path in paths)

    def _store(
        self, before: tuple[FileStamp | None, ...], id_token: str, refresh_token: str | None
    ) -> bool:
        """Write a refresh's result, unless a login stored other credentials since the refresh
        read them (then its files win and this result is dropped): False. Under the lock a
        login takes too, so neither writes between the other's look and its write."""
        with credentials_lock(self.cfg):
            now = self._stored_stamps()
            # (only the token file gone, set aside meanwhile: there is nothing to write over)
            set_aside = now[:2] == before[:2] and now[2] is None
            if now != before and not set_aside:
                return False
            files = [(self.cfg.token_file, id_token)]
            # Firebase returns the same refresh token on most grants: it is written only when it
            # changed (no wear on the card each hour, and a refresh_token_file on a read-only
            # mount no longer takes the ID token's write down with it).
            path = refresh_token_path(self.cfg)
            if refresh_token and not _holds(path, refresh_token):
                files.insert(0, (path, refresh_token))
            write_secret_files(files)
            return True

    def _keep_unsaved(self, id_token: str, refresh_token: str | None, exc: OSError) -> None:
        """The card would not take the new token (full, read-only, permissions): calls go on
        with it from memory, and the next refresh tries to store again. The file still holds the
        old token, so its stamp is unchanged and nothing re-reads it over this one."""
        self._adopt(id_token)
        if not self.cfg.token_file.exists():
            self._stamp = None  # no file to renew: the token in memory is the one
        if refresh_token:
            self._unsaved_refresh = refresh_token
        failed = Path(exc.filename) if isinstance(exc.filename, str) else self.cfg.token_file
        directory = failed.parent  # (the refresh token's may be another than the token's)
        event(
            "token_write_failed",
            logging.ERROR,
            detail=f"cannot store the new token in {directory}: {exc.strerror or exc}",
            action=f"free space on the card, or make {directory} writable for the app; until "
            "then the app uses the new token from memory (a restart loses it)",
        )

    async def _exchange_off_loop(self) -> tuple[tuple[FileStamp | None, ...], str, str | None, str]:
        """`_exchange` in a thread; a file it cannot use (the lock's directory, say) is a failed
        refresh like any other: backed off and said, never a bare OSError every look. Anything
        else it raises (an answer that broke a parser, a fault of ours) is an outage: backed off
        and retried within a minute, where it escaped every handler, was retried at each look
        of the watch and ended a first connect's caller. Only its kind is said: the text of an
        error we did not expect may hold what the request carried."""
        try:
            return await asyncio.to_thread(self._exchange)
        except RefreshFailed:
            raise
        except OSError as exc:
            directory = self.cfg.token_file.parent
            raise CredentialsUnusable(
                f"cannot use {directory}: {exc.strerror or exc}",
                f"make {directory} readable and writable for the app",
            ) from None
        except Exception as exc:  # (where it was raised, for the report: never its text)
            raise EndpointUnreachable(
                f"token endpoint exchange failed ({type(exc).__name__} at {raised_at(exc)})"
            ) from None

    def _exchange(self) -> tuple[tuple[FileStamp | None, ...], str, str | None, str]:
        """The stored files' stamps as read, and the service's answer. The stamps and the
        refresh token are read together under the login's lock: a login landing between the
        two (the stamps taken on the loop, the token later in this thread) had its own new
        refresh token spent here, and this answer then thrown away as the login's change."""
        path = refresh_token_path(self.cfg)
        with credentials_lock(self.cfg):
            stored_before = self._stored_stamps()
            refresh = self._unsaved_refresh or read_credential(path)
            key = stored_api_key(self.cfg)
        if not refresh:
            raise CredentialsUnusable(f"{path} is missing or empty", "run `sesame-pi login`")
        if not key:
            raise CredentialsUnusable(
                "no Firebase API key", "run `sesame-pi login` with the auth record"
            )
        answer = exchange_refresh_token(self.cfg, refresh, key)
        return stored_before, answer.id_token, answer.refresh_token, answer.expires_in

    # ------------------------------------------------------------ background watch

    async def watch(self, interval_s: float = 10.0) -> None:
        """Warn ahead of expiry, refresh ahead of it, notice a replaced file. Never raises."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self._set_aside_if_unusable()
                if self._needs_first_token():
                    if self._refresh_allowed():
                        with contextlib.suppress(RefreshFailed):  # (refresh logged it)
                            await self.refresh()
                    continue
                stamp = file_stamp(self.cfg.token_file)
                pasting = self._token is not None and self._file_empty()  # (the held one serves)
                if self._file_changed() and stamp != self._unreadable and not pasting:
                    self._unreadable = stamp  # a file it cannot use is said once, until it changes
                    self._read_file()
                    self._unreadable = _UNSEEN
                    event("token_reloaded", seconds_left=self._seconds_left())
                left = self._seconds_left()
                if left is None:
                    continue
                # Backing off after a failure: nothing to log until the next attempt, and a
                # failure is logged once, with what to do, by refresh itself.
                due = self.can_refresh and left < self.cfg.refresh_before_s
                if due and self._refresh_allowed():
                    with contextlib.suppress(RefreshFailed):
                        await self.refresh()
                    continue
                # A device that renews its token warns only once renewing has failed: it would
                # otherwise warn ten minutes before each hour's renewal, 24 false alarms a day.
                renewing = self.can_refresh and self._refresh_failures == 0
                expiring = left < self.cfg.expiry_warn_s and not renewing
                if expiring and self._warned_expiry_for != self._exp:
                    self._warned_expiry_for = self._exp
                    event("token_expiring", logging.WARNING, seconds_left=round(left))
            except TokenError as exc:
                event("token_problem", logging.ERROR, detail=str(exc))
            except Exception as exc:
                event("token_watch_error", logging.ERROR, detail=f"{type(exc).__name__}: {exc}")


def _free_name(path: Path) -> Path:
    """`path`, or `path.2`, `path.3`, ... whichever does not exist yet: no paste kept aside
    is written over by the next one."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _token_text(path: Path) -> str:
    """The token file's text, without the quotes a token copied from a JSON value or a shell
    line keeps: `"eyJ..."` was refused as "not three dot-separated parts", which it has."""
    text = textfile.read(path).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _holds_a_jwt(text: str) -> bool:
    try:
        decode_claims(text)
    except TokenInvalid:
        return False
    return True


def _what_it_holds(text: str) -> str:
    """What a token file holds instead of an ID token, when it is something we know: the
    sentence says where it belongs. (Never quotes it.)"""
    if text[:1] in "{[":
        return (
            "this holds JSON (the browser's auth record?), not an ID token: give the record to "
            "`sesame-pi login`, or save it as auth.json on the SD card's sesame-pi folder"
        )
    if "." not in text and len(text) > 40 and text.replace("-", "").replace("_", "").isalnum():
        return (
            "this looks like a refresh token, not an ID token: give it to `sesame-pi login` "
            "(with --api-key) instead"
        )
    return ""


def _firebase_error(exc: urllib.error.HTTPError) -> str:
    """Firebase's error code in an HTTP error's body; "" if it holds none or cannot be read. It
    never raises: this runs inside the HTTPError handler, so a body cut short (IncompleteRead)
    or nested too deep (RecursionError) escaped the handler for a lost connection beside it,
    and a 503 was no outage but a crash."""
    try:
        body = json.loads(exc.read().decode("utf-8"))
        return str(body.get("error", {}).get("message", ""))
    except Exception:  # any body at all: it only adds detail to the status
        return ""
