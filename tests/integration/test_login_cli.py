"""`sesame-pi login` as a person runs it, against a local Firebase-like token endpoint.

The CLI runs as a real process; the endpoint checks the API key and the refresh token and rotates
the refresh token on every grant, as Firebase does. Afterwards the app's own TokenProvider, with
nothing but the stored files (no key, no refresh_token_file in the configuration), refreshes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sesame_pi.auth import RefreshFailed, TokenProvider, write_secret_files
from sesame_pi.config import Config
from sesame_pi.login import (
    RECHECK_S,
    LoginError,
    LoginResult,
    LoginSuperseded,
    LoginUnreachable,
    NoApiKey,
    consume_pending,
    login,
    pending_auth_path,
    settle_pending,
)
from sesame_pi.logs import setup_logging
from support.credentials import make_token, write_token
from support.token_endpoint import CUT_SHORT, Answer, Issuer, TokenEndpoint, refusal

KEY = "AIzaSyTestKey-0123456789abcdefghijklmno"
REFRESH = "AMf-vBzFirstRefreshToken-0123456789abcdefghijklmnopqrstuv"


def auth_record(refresh: str = REFRESH, key: str = KEY) -> dict[str, object]:
    return {
        "uid": "u123",
        "email": "maker@example.org",
        "isAnonymous": False,
        "stsTokenManager": {
            "refreshToken": refresh,
            "accessToken": make_token(exp_in_s=-60),
            "expirationTime": 1_700_000_000_000,
        },
        "apiKey": key,
        "appName": "[DEFAULT]",
    }


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(KEY, REFRESH)


@pytest.fixture
def endpoint(issuer: Issuer) -> Iterator[TokenEndpoint]:
    with TokenEndpoint(issuer) as made:
        yield made


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o750)
    return directory


def cli(
    *args: str,
    etc: Path,
    endpoint_url: str,
    stdin: str = "",
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    environ = cli_env(etc, endpoint_url, **env)
    return subprocess.run(
        [sys.executable, "-m", "sesame_pi.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        preexec_fn=preexec_fn,
    )


def cli_env(etc: Path, endpoint_url: str, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "SESAME_PI_CONFIG": "/dev/null",
        "SESAME_PI_TOKEN_ENDPOINT": endpoint_url,
        "SESAME_PI_TOKEN_FILE": str(etc / "token"),
        "SESAME_PI_LOG_FILE": str(etc.parent / "events.jsonl"),
        **env,
    }


def secrets_of(issuer: Issuer) -> list[str]:
    """Every token that exists in this test: none may be printed anywhere."""
    return [REFRESH, *issuer.live, *issuer.issued, *(t.split(".")[1] for t in issuer.issued)]


def assert_no_secret(issuer: Issuer, *texts: str) -> None:
    for text in texts:
        for secret in secrets_of(issuer):
            assert secret not in text


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/token"


def test_login_stores_both_files_0600_and_the_rotated_refresh_token(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    result = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()))
    assert result.returncode == 0, result.stderr
    assert "maker@example.org" in result.stdout
    assert "time left:  59." in result.stdout or "time left:  60.0" in result.stdout
    for name in ("token", "refresh_token", "firebase_api_key"):
        assert (etc / name).stat().st_mode & 0o777 == 0o600, name
    assert (etc / "token").read_text().strip() == issuer.issued[-1]
    rotated = (etc / "refresh_token").read_text().strip()
    assert rotated in issuer.live and rotated != REFRESH
    assert (etc / "firebase_api_key").read_text().strip() == KEY
    request = endpoint.seen[0]
    assert request["refresh_token"] == REFRESH and request["path"].endswith(f"?key={KEY}")

    shown = cli("token", etc=etc, endpoint_url=endpoint.url)
    assert shown.returncode == 0, shown.stderr
    assert "time left:  59." in shown.stdout or "time left:  60.0" in shown.stdout
    log = etc.parent / "events.jsonl"
    outputs = [result.stdout, result.stderr, shown.stdout, shown.stderr]
    assert_no_secret(issuer, *outputs, log.read_text() if log.exists() else "")


@pytest.mark.parametrize(
    "form",
    ["row", "rows", "json-string"],
)
def test_the_indexeddb_wrapper_forms_from_a_windows_file(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, form: str
) -> None:
    row = {"fbase_key": f"firebase:authUser:{KEY}:[DEFAULT]", "value": auth_record()}
    data: object = {
        "row": row,
        "rows": [{"fbase_key": "__sak", "value": "__sak"}, row],
        "json-string": json.dumps(auth_record()),
    }[form]
    source = etc.parent / "auth.json"
    source.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, indent=2).replace("\n", "\r\n").encode())
    result = cli("login", "--from", str(source), etc=etc, endpoint_url=endpoint.url)
    assert result.returncode == 0, result.stderr
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    assert_no_secret(issuer, result.stdout, result.stderr)


def test_a_makers_own_auth_json_beside_the_token_file_is_read_not_deleted(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    """The README's laptop steps in one folder: `login --from auth.json --token-file ./token`.
    The first boot's pending record was `auth.json` beside the token file, so the maker's own
    file was taken for it: deleted, with "replaced: the first boot's auth.json" printed."""
    source = etc / "auth.json"
    source.write_text(json.dumps(auth_record()))
    result = cli("login", "--from", str(source), etc=etc, endpoint_url=endpoint.url)
    assert result.returncode == 0, result.stderr
    assert source.exists(), "the maker's file is theirs"
    assert "replaced" not in result.stdout
    assert (etc / "refresh_token").read_text().strip() in issuer.live


def test_a_bare_refresh_token_with_the_key_from_a_flag_or_the_environment(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    flag = cli("login", "--api-key", KEY, etc=etc, endpoint_url=endpoint.url, stdin=REFRESH)
    assert flag.returncode == 0, flag.stderr
    assert "no email" in flag.stdout
    rotated = (etc / "refresh_token").read_text().strip()
    env = cli(
        "login",
        etc=etc,
        endpoint_url=endpoint.url,
        stdin=rotated + "\r\n",
        SESAME_PI_FIREBASE_API_KEY=KEY,
    )
    assert env.returncode == 0, env.stderr
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    stored = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=next(iter(issuer.live)))
    assert stored.returncode == 0, stored.stderr  # the key login stored the first time
    assert_no_secret(issuer, flag.stdout, flag.stderr, env.stdout, env.stderr, stored.stdout)


def test_the_refresh_token_file_setting_is_honoured(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    elsewhere = etc / "secrets" / "refresh"
    result = cli(
        "login",
        etc=etc,
        endpoint_url=endpoint.url,
        stdin=json.dumps(auth_record()),
        SESAME_PI_REFRESH_TOKEN_FILE=str(elsewhere),
    )
    assert result.returncode == 0, result.stderr
    assert elsewhere.read_text().strip() in issuer.live
    assert not (etc / "refresh_token").exists()


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("revoked", "INVALID_REFRESH_TOKEN"),
        ("expired", "TOKEN_EXPIRED"),
        ("disabled", "account is disabled"),
        ("bad-key", "API key is not valid"),
        ("malformed", "cut off or damaged"),
        ("id-token", "not a refresh token"),
        (
            "no-key",
            "no Firebase API key on this device for a bare refresh token: paste the "
            "whole auth record (it carries apiKey), or give the key with --api-key",
        ),
        ("unreachable", "could not reach the token service"),
        ("cut-short-503", "could not reach the token service (token endpoint answered HTTP 503)"),
        ("anonymous-record", "anonymous visitor"),
        ("anonymous-token", "anonymous visitor"),
    ],
)
def test_refused_malformed_or_unreachable_leaves_every_file_as_it_was(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, case: str, says: str
) -> None:
    write_token(etc / "token", make_token(exp_in_s=-5))
    write_token(etc / "refresh_token", "AMf-the-old-refresh-token-0123456789abcdef")
    (etc / "config-notes").write_text("left alone\n")
    before = snapshot(etc)
    stdin = json.dumps(auth_record())
    url = endpoint.url
    if case == "revoked":
        stdin = json.dumps(auth_record(refresh="AMf-signed-out-elsewhere-0123456789abcdefgh"))
    elif case == "expired":
        endpoint.answers.append(refusal("TOKEN_EXPIRED"))
    elif case == "disabled":
        endpoint.answers.append(refusal("USER_DISABLED"))
    elif case == "bad-key":
        stdin = json.dumps(auth_record(key="AIzaSyWrongKey-0123456789abcdefghijklm"))
    elif case == "malformed":
        stdin = json.dumps(auth_record())[:-30]
    elif case == "id-token":
        stdin = make_token()
    elif case == "no-key":
        stdin = REFRESH
    elif case == "unreachable":
        url = closed_port_url()
    elif case == "cut-short-503":  # (a raw IncompleteRead traceback, exit 1)
        endpoint.answers.append((503, CUT_SHORT[1]))
    elif case == "anonymous-record":  # the web app's visitor, before signing in
        stdin = json.dumps({**auth_record(), "isAnonymous": True, "email": None})
    elif case == "anonymous-token":  # a bare refresh token: only its new ID token tells
        stdin = f"{REFRESH}\n"
        anonymous = make_token(anonymous=True)
        endpoint.answers.append((200, {"id_token": anonymous, "expires_in": "3600"}))
    key = ("--api-key", KEY) if case == "anonymous-token" else ()
    result = cli("login", *key, etc=etc, endpoint_url=url, stdin=stdin)
    assert result.returncode == 3
    assert says in result.stderr
    assert result.stderr.count("\n") == 1, "one sentence"
    assert result.stdout == ""
    assert snapshot(etc) == before
    assert_no_secret(issuer, result.stderr, stdin if case == "id-token" else "")
    if case == "id-token":
        assert stdin not in result.stderr


async def test_the_app_refreshes_by_itself_from_the_stored_files(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    issuer.lifetime_s = 2400
    done = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()))
    assert done.returncode == 0, done.stderr
    log = tmp_path / "app.jsonl"
    # Nothing about refresh in the configuration: no key, no refresh_token_file.
    cfg = Config(
        token_file=etc / "token",
        token_endpoint=endpoint.url,
        refresh_before_s=3000.0,  # the most it may be: the fresh 40-minute token is "due"
        log_file=log,
    )
    setup_logging(cfg)
    provider = TokenProvider(cfg)
    assert provider.can_refresh
    provider.load()
    token = await provider.valid_token()
    assert token == issuer.issued[-1] and len(issuer.issued) == 2
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    assert (etc / "token").stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "token_refreshed" in text
    assert_no_secret(issuer, text, done.stdout, done.stderr)


async def test_a_login_while_the_app_waits_for_a_token_is_picked_up(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    write_token(etc / "token", make_token(exp_in_s=-30))
    write_token(etc / "refresh_token", "AMf-revoked-long-ago-0123456789abcdefghijk")
    write_token(etc / "firebase_api_key", KEY)
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    provider = TokenProvider(cfg)
    with pytest.raises(Exception, match="expired"):
        await provider.valid_token()  # refused refresh: the session would be in needs_token
    assert not await provider.after_auth_refusal()  # backing off, nothing new
    done = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()))
    assert done.returncode == 0, done.stderr
    assert await provider.after_auth_refusal()  # the link's retry sees the new token
    assert await provider.valid_token() == issuer.issued[-1]


async def test_a_pending_record_is_consumed_at_start_after_the_network_comes_up(
    etc: Path, issuer: Issuer, tmp_path: Path
) -> None:
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()).replace("\n", "\r\n"))
    with TokenEndpoint(issuer) as endpoint:
        endpoint.answers = [(503, {}), (503, {})]  # the network is not there yet
        cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
        setup_logging(cfg)
        assert pending_auth_path(cfg) == pending
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        result = await settle_pending(cfg, sleep=sleep)
        assert len(endpoint.seen) == 3
    assert result is not None and result.email == "maker@example.org"
    # 2 s, then 4 s between the tries, looked at each second (is the record still wanted?)
    assert sum(waits) == 2.0 + 4.0 and set(waits) == {RECHECK_S}
    assert not pending.exists()
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    log = (tmp_path / "l").read_text()
    assert "login_pending_retry" in log and "login_pending_done" in log
    assert_no_secret(issuer, log)


def test_a_refused_pending_record_is_set_aside_with_a_clear_line(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record(refresh="AMf-not-live-0123456789abcdefghijklmno")))
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    with pytest.raises(Exception, match="INVALID_REFRESH_TOKEN"):
        consume_pending(cfg)
    assert not pending.exists() and (etc / "auth.pending.json.refused").exists()
    assert not (etc / "token").exists()
    line = [json.loads(x) for x in (tmp_path / "l").read_text().splitlines()][-1]
    assert line["event"] == "login_pending_refused" and "sign in" in line["detail"]
    assert consume_pending(cfg) is None  # nothing pending any more


RECORD_FROM_WINDOWS = json.dumps(auth_record(), indent=2).replace("\n", "\r\n")


@pytest.mark.parametrize(
    "saved",
    [
        codecs.BOM_UTF16_LE + RECORD_FROM_WINDOWS.encode("utf-16-le"),  # Notepad's "Unicode"
        codecs.BOM_UTF16_BE + RECORD_FROM_WINDOWS.encode("utf-16-be"),  # "Unicode big endian"
        RECORD_FROM_WINDOWS.encode("utf-8-sig"),  # Notepad's "UTF-8 with BOM"
    ],
    ids=["utf-16-le", "utf-16-be", "utf-8-bom"],
)
def test_a_record_saved_as_unicode_is_used_not_refused(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path, saved: bytes
) -> None:
    """Read as UTF-8 with replacement, a UTF-16 record was garbage: refused as neither a
    record nor a refresh token and renamed `.refused`, though nothing was wrong with it. It
    is read as the token file is (a BOM says which), and used."""
    pending = etc / "auth.pending.json"
    pending.write_bytes(saved)
    pending.chmod(0o600)
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    result = consume_pending(cfg)
    assert result is not None and result.email == "maker@example.org"
    assert not pending.exists() and not (etc / "auth.pending.json.refused").exists()
    assert (etc / "token").read_text().strip() == issuer.issued[-1]


def test_login_from_a_file_saved_as_utf16_reads_it_as_the_sd_card_s_record_is_read(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    """`sesame-pi login --from FILE` read only UTF-8: the record a Windows editor saved as
    "Unicode", which works dropped on the SD card, failed here with a decoding error."""
    source = etc.parent / "auth.json"
    source.write_bytes(codecs.BOM_UTF16_LE + RECORD_FROM_WINDOWS.encode("utf-16-le"))
    result = cli("login", "--from", str(source), etc=etc, endpoint_url=endpoint.url)
    assert result.returncode == 0, result.stderr
    assert (etc / "token").read_text().strip() == issuer.issued[-1]
    assert_no_secret(issuer, result.stdout, result.stderr)


def test_login_from_a_pipe_reads_a_utf16_record_as_a_file_is_read(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    """`sesame-pi login < auth.json`, the README's first way: a pipe was read in the locale's
    encoding, so the UTF-16 record `--from` and the SD card read was refused as neither JSON
    nor a refresh token."""
    record = codecs.BOM_UTF16_LE + RECORD_FROM_WINDOWS.encode("utf-16-le")
    result = subprocess.run(
        [sys.executable, "-m", "sesame_pi.cli", "login"],
        input=record,
        capture_output=True,
        timeout=60,
        env=cli_env(etc, endpoint.url),
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert (etc / "token").read_text().strip() == issuer.issued[-1]
    assert_no_secret(issuer, result.stdout.decode(), stderr)


def test_a_record_that_is_no_text_says_to_save_it_as_utf8(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """UTF-16 without its byte order mark cannot be told from other bytes: the owner is told
    to save it as UTF-8 (it said "neither an auth record nor a refresh token"), and the token
    service is not asked."""
    pending = etc / "auth.pending.json"
    pending.write_bytes(RECORD_FROM_WINDOWS.encode("utf-16-le"))
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    with pytest.raises(LoginError, match="is not UTF-8 text") as refused:
        consume_pending(cfg)
    assert "save it as UTF-8" in str(refused.value)
    assert endpoint.seen == [] and (etc / "auth.pending.json.refused").exists()
    line = json.loads((tmp_path / "l").read_text().splitlines()[-1])
    assert line["event"] == "login_pending_refused" and "save it as UTF-8" in line["detail"]
    assert_no_secret(issuer, str(refused.value), (tmp_path / "l").read_text())


def test_a_used_record_that_cannot_be_deleted_is_named_and_the_login_kept(
    etc: Path,
    endpoint: TokenEndpoint,
    issuer: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sign-in is stored although the used record stays (a file the app's user may not
    delete): the owner is told to delete it, and nothing raises. (A second delete after the
    login's own raised an OSError out of consume_pending here.)"""
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    unlink = Path.unlink

    def held(path: Path, missing_ok: bool = False) -> None:
        if path == pending:
            raise PermissionError(13, "Permission denied", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", held)
    result = consume_pending(cfg)
    assert result is not None and result.pending_left == "Permission denied"
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    lines = [json.loads(x) for x in (tmp_path / "l").read_text().splitlines()]
    left = next(line for line in lines if line["event"] == "login_pending_not_removed")
    assert left["file"] == str(pending) and "delete it" in left["action"]
    assert any(line["event"] == "login_pending_done" for line in lines)
    assert_no_secret(issuer, (tmp_path / "l").read_text())


def test_with_only_a_refresh_token_token_says_the_app_will_get_one(
    etc: Path, endpoint: TokenEndpoint
) -> None:
    write_token(etc / "refresh_token", REFRESH)
    write_token(etc / "firebase_api_key", KEY)
    shown = cli("token", etc=etc, endpoint_url=endpoint.url)
    assert shown.returncode == 0, shown.stderr
    assert "no ID token yet" in shown.stdout
    assert not endpoint.seen, "`token` only reports; it never spends a refresh"
    (etc / "refresh_token").unlink()  # without a refresh token it is the plain error
    missing = cli("token", etc=etc, endpoint_url=endpoint.url)
    assert missing.returncode == 3 and "no token file" in missing.stderr


def no_file_may_grow() -> None:
    """In the child: the kernel refuses every write to a file (EFBIG), as a full card would."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_a_login_that_cannot_write_changes_nothing_and_says_what_to_do(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    write_token(etc / "token", make_token(exp_in_s=-5))
    write_token(etc / "refresh_token", "AMf-the-old-refresh-token-0123456789abcdef")
    before = snapshot(etc)
    result = cli(
        "login",
        etc=etc,
        endpoint_url=endpoint.url,
        stdin=json.dumps(auth_record()),
        preexec_fn=no_file_may_grow,
    )
    assert result.returncode == 3, result.stderr
    assert (
        "signed in, but cannot write to" in result.stderr and "nothing was changed" in result.stderr
    )
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(etc) == before, "no file changed, no temporary file left"
    assert_no_secret(issuer, result.stderr, result.stdout)


def test_ctrl_c_at_the_paste_cancels_with_130_and_changes_nothing(
    etc: Path, endpoint: TokenEndpoint
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "sesame_pi.cli", "login"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(etc, endpoint.url),
    )
    time.sleep(3)  # (the interpreter and the CLI are up, reading the paste)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert "login cancelled; nothing was changed" in stderr and "Traceback" not in stderr
    assert list(etc.iterdir()) == [] and not endpoint.seen


def test_a_busy_token_service_is_no_refusal_the_pending_record_is_kept(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    endpoint.answers = [(429, {"error": {"code": 429, "message": "TOO_MANY_ATTEMPTS_TRY_LATER"}})]
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    with pytest.raises(LoginUnreachable, match="429"):
        consume_pending(cfg)
    assert pending.exists() and not (etc / "auth.pending.json.refused").exists()
    assert consume_pending(cfg) is not None, "the same record works once the service lets it"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (403, b"<html><body>Blocked by your network's filter</body></html>"),
        (404, {"detail": "Not Found"}),
        (407, b"Proxy Authentication Required"),
    ],
)
def test_a_refusal_without_the_token_services_own_error_is_no_verdict_on_the_record(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path, status: int, body: object
) -> None:
    """A proxy's block page, a wrong path, a proxy asking for its login: 4xx answers that are no
    token service's. Each used to count as the service refusing the record: the first boot's
    record was renamed `.refused` for good and the owner told to sign in again."""
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    endpoint.answers = [(status, body)]
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    with pytest.raises(LoginUnreachable, match=f"HTTP {status}"):
        consume_pending(cfg)
    assert pending.exists() and not (etc / "auth.pending.json.refused").exists()
    assert consume_pending(cfg) is not None, "the same record works once the network lets it"


def provider_for(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path, **settings: str
) -> TokenProvider:
    """The app's token provider on the files in `etc`, its log in tmp_path/l, loaded."""
    cfg = Config(
        token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l", **settings
    )
    setup_logging(cfg)
    provider = TokenProvider(cfg)
    provider.load()
    return provider


def test_an_answer_that_is_no_token_services_keeps_the_pending_record(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """A public Wi-Fi's sign-in page (or a proxy) answers 200 with something that is no token:
    that says nothing about the record, so it is kept for the next try, not refused for good."""
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    endpoint.answers = [(200, {"portal": "accept the terms to use this Wi-Fi"})]
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    with pytest.raises(LoginUnreachable, match="unusable answer"):
        consume_pending(cfg)
    assert pending.exists() and not (etc / "auth.pending.json.refused").exists()
    assert consume_pending(cfg) is not None and not pending.exists()


def test_an_answer_cut_short_is_the_network_and_the_pending_record_is_kept(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """The connection closed mid-answer (http.client's IncompleteRead, no OSError): it got past
    every handler, and a first boot's sign-in task ended with it, leaving the device on "needs
    a token" until a restart. It is the network's fault: the record is kept and tried again."""
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    endpoint.answers = [CUT_SHORT]
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    with pytest.raises(LoginUnreachable, match="unreachable"):
        consume_pending(cfg)
    assert pending.exists() and not (etc / "auth.pending.json.refused").exists()
    assert consume_pending(cfg) is not None and not pending.exists()


async def test_a_first_boot_sign_in_facing_an_unavailable_answer_cut_short_waits_and_retries(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """A 503 cut short mid-body: reading its error code raised IncompleteRead past every
    handler, and the first boot's sign-in task ended with it, leaving the device on "needs a
    token" until a restart with auth.json still there. It is the network: kept and retried."""
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    endpoint.answers = [(503, CUT_SHORT[1])]
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    kept_while_waiting: list[bool] = []

    async def sleep(seconds: float) -> None:
        refused = etc / "auth.pending.json.refused"
        kept_while_waiting.append(pending.exists() and not refused.exists())

    result = await settle_pending(cfg, sleep=sleep)
    assert kept_while_waiting and all(kept_while_waiting)
    assert result is not None and result.email == "maker@example.org"
    assert len(endpoint.seen) == 2 and not pending.exists()
    assert (etc / "token").read_text().strip() == issuer.issued[-1]
    lines = [json.loads(line) for line in (tmp_path / "l").read_text().splitlines()]
    retry = next(line for line in lines if line["event"] == "login_pending_retry")
    assert "HTTP 503" in retry["detail"]
    assert_no_secret(issuer, (tmp_path / "l").read_text())


async def test_a_refresh_answer_that_is_no_jwt_leaves_the_working_token_alone(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """The login checks its token before storing it; the refresh stored whatever came as
    `id_token`, replacing a working token with one nothing could use."""
    run = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()))
    assert run.returncode == 0, run.stderr
    working = (etc / "token").read_text()
    provider = provider_for(etc, endpoint, tmp_path)
    endpoint.answers = [(200, {"id_token": "not.a-jwt", "refresh_token": "r2"})]
    with pytest.raises(RefreshFailed, match="not a JWT"):
        await provider.refresh()
    assert (etc / "token").read_text() == working
    assert not [name for name in os.listdir(etc) if "set-aside" in name]


async def test_two_refreshes_at_once_spend_the_refresh_token_once(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """A connect and the watch both found the token near its end and refreshed at once: the
    same refresh token went to the endpoint twice. Firebase threw one answer away (logged as a
    login that stored new credentials); an endpoint that takes a refresh token once refused
    the second, and the log said to sign in again while the device was fine."""
    run = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()))
    assert run.returncode == 0, run.stderr
    provider = provider_for(etc, endpoint, tmp_path)
    asked = len(endpoint.seen)
    await asyncio.gather(provider.refresh(), provider.refresh())
    assert len(endpoint.seen) == asked + 1
    events = [json.loads(line)["event"] for line in (tmp_path / "l").read_text().splitlines()]
    assert events.count("token_refreshed") == 1
    assert "token_refresh_failed" not in events and "token_refresh_superseded" not in events
    await provider.refresh()  # and the next one is a refresh of its own
    assert len(endpoint.seen) == asked + 2 and len(issuer.issued) == 3


async def test_refreshes_use_the_key_the_login_worked_with(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """A stale `firebase_api_key` in the configuration: the login exchanges with the record's
    own key and works; the refreshes after it use that same key (they used the configured one,
    were refused, and sent the owner to log in again every hour)."""
    stale = "AIzaSyStaleKey-9876543210zyxwvutsrqpo"
    run = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()),
              SESAME_PI_FIREBASE_API_KEY=stale)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (etc / "firebase_api_key").read_text().strip() == KEY
    await provider_for(etc, endpoint, tmp_path, firebase_api_key=stale).refresh()
    assert endpoint.seen[-1]["path"].endswith(f"key={KEY}")
    assert len(issuer.issued) == 2


async def test_credential_files_that_are_not_text_are_named_not_a_crash(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """The API key saved as UTF-16 without its byte order mark (no text this app can tell):
    `sesame-pi token` and the app's refresh name the file and what to do, where both ended in a
    UnicodeDecodeError traceback; the token service is not asked, and the refresh does not blame
    the network."""
    write_token(etc / "token", make_token(exp_in_s=100))
    write_token(etc / "refresh_token", REFRESH)
    (etc / "firebase_api_key").write_bytes(KEY.encode("utf-16-le"))
    os.chmod(etc / "firebase_api_key", 0o600)
    shown = cli("token", etc=etc, endpoint_url=endpoint.url)
    assert "Traceback" not in shown.stderr and shown.returncode == 0, shown.stderr
    with pytest.raises(RefreshFailed, match="not UTF-8 text"):
        await provider_for(etc, endpoint, tmp_path).refresh()
    lines = [json.loads(line) for line in (tmp_path / "l").read_text().splitlines()]
    failed = next(line for line in lines if line["event"] == "token_refresh_failed")
    assert "firebase_api_key" in failed["detail"] and "network" not in failed["action"]
    assert endpoint.seen == []


async def test_credential_files_saved_as_unicode_are_read_as_the_auth_record_is(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """The refresh token and the API key saved by Notepad as "Unicode" (UTF-16 with its byte
    order mark): refused as "not UTF-8 text" while the auth record beside them, saved the same
    way, was read. One decoder reads all three now, and the refresh goes through."""
    write_token(etc / "token", make_token(exp_in_s=100))
    for name, value in (("refresh_token", REFRESH), ("firebase_api_key", KEY)):
        (etc / name).write_bytes(value.encode("utf-16"))
        os.chmod(etc / name, 0o600)
    await provider_for(etc, endpoint, tmp_path).refresh()
    assert endpoint.seen[-1]["path"].endswith(f"key={KEY}")
    assert len(issuer.issued) == 1
    assert (etc / "token").read_text().strip() == issuer.issued[-1]
    # the key is the account's: once used, no log line shows it, wherever it turns up
    logging.getLogger("sesame_pi").error("an error naming %s", KEY)
    assert KEY not in (tmp_path / "l").read_text()


def test_the_setup_page_is_not_told_to_use_a_flag(etc: Path, tmp_path: Path) -> None:
    """The page hands a bare refresh token to `login` as the CLI does, but has no --api-key:
    the sentence it shows asks for the whole record and names no flag (the CLI adds it)."""
    cfg = Config(token_file=etc / "token", log_file=tmp_path / "l")
    with pytest.raises(NoApiKey) as refused:
        login(REFRESH, cfg)
    assert "paste the whole auth record" in str(refused.value)
    assert "--api-key" not in str(refused.value)


async def test_a_stored_key_that_cannot_be_read_gives_way_to_a_configured_one(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """A stored key that is no text beside a configured one that works: the refresh uses the
    configured key. With none configured, a login with a bare refresh token says what is wrong
    with the file and what to do, without sending the person to `sesame-pi login`, which they
    ran."""
    write_token(etc / "token", make_token(exp_in_s=100))
    write_token(etc / "refresh_token", REFRESH)
    (etc / "firebase_api_key").write_bytes(KEY.encode("utf-16-le"))
    os.chmod(etc / "firebase_api_key", 0o600)
    await provider_for(etc, endpoint, tmp_path, firebase_api_key=KEY).refresh()
    assert len(issuer.issued) == 1
    bare = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    with pytest.raises(LoginError) as refused:
        login(REFRESH, bare)
    said = str(refused.value)
    assert "not UTF-8 text" in said and "delete it and paste the whole auth record" in said
    assert "sesame-pi login" not in said


class LoginDuring:
    """The issuer, but the first grant it answers waits for `during` (a login) to finish."""

    def __init__(self, issuer: Issuer, during: Callable[[], None]) -> None:
        self.issuer = issuer
        self.during: Callable[[], None] | None = during

    def __call__(self, query: dict[str, str], form: dict[str, str]) -> Answer:
        during, self.during = self.during, None
        if during is not None:
            during()
        return self.issuer(query, form)


async def test_a_login_that_lands_during_the_apps_refresh_is_kept(
    etc: Path, issuer: Issuer, tmp_path: Path
) -> None:
    """The app's refresh is in flight (old account) when the owner signs in with another
    account: the login's files win, and the app uses the new account's token."""
    done = {}
    second = "AMf-the-second-account-0123456789abcdefghijklm"
    issuer.live.add(second)

    def login_now() -> None:
        done["login"] = cli(
            "login", etc=etc, endpoint_url=url, stdin=json.dumps(auth_record(refresh=second))
        )

    with TokenEndpoint(LoginDuring(issuer, login_now)) as endpoint:
        url = endpoint.url
        write_token(etc / "token", make_token(exp_in_s=200))
        write_token(etc / "refresh_token", REFRESH)
        write_token(etc / "firebase_api_key", KEY)
        cfg = Config(token_file=etc / "token", token_endpoint=url, log_file=tmp_path / "l")
        setup_logging(cfg)
        provider = TokenProvider(cfg)
        provider.load()
        token = await provider.valid_token()  # due (200 s left): refreshes
    assert done["login"].returncode == 0, done["login"].stderr
    login_token, app_token = issuer.issued  # the login's grant finished first
    assert (etc / "token").read_text().strip() == login_token
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    assert token == login_token != app_token
    events = [json.loads(line)["event"] for line in (tmp_path / "l").read_text().splitlines()]
    assert "token_refresh_superseded" in events


def on_a_full_card(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> TokenProvider:
    """The app's provider with a refresh token and key stored, on a card that takes no more
    writes (every fsync fails with ENOSPC from now on)."""
    write_token(etc / "refresh_token", REFRESH)
    write_token(etc / "firebase_api_key", KEY)
    provider = provider_for(etc, endpoint, tmp_path)

    def full_card(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_card)
    return provider


async def test_a_refresh_the_card_cannot_store_goes_on_from_memory(
    etc: Path,
    endpoint: TokenEndpoint,
    issuer: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = make_token(exp_in_s=200)
    write_token(etc / "token", old)
    provider = on_a_full_card(etc, endpoint, tmp_path, monkeypatch)
    token = await provider.valid_token()
    assert token == issuer.issued[-1] != old, "the new token, from memory"
    assert (etc / "token").read_text().strip() == old, "the old file as it was"
    assert sorted(os.listdir(etc)) == ["firebase_api_key", "refresh_token", "token"]
    assert await provider.valid_token() == token and len(issuer.issued) == 1, "no second grant"
    lines = [json.loads(line) for line in (tmp_path / "l").read_text().splitlines()]
    failed = [line for line in lines if line["event"] == "token_write_failed"]
    assert len(failed) == 1 and "free space on the card" in failed[0]["action"]
    assert_no_secret(issuer, (tmp_path / "l").read_text())


async def test_a_refused_refresh_is_logged_once_per_attempt_with_what_to_do(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    write_token(etc / "token", make_token(exp_in_s=100))
    write_token(etc / "refresh_token", "AMf-signed-out-everywhere-0123456789abcdef")
    write_token(etc / "firebase_api_key", KEY)
    provider = provider_for(etc, endpoint, tmp_path)
    watching = asyncio.create_task(provider.watch(interval_s=0.02))
    await asyncio.sleep(1.0)  # some fifty looks; the first backoff is 10 s
    watching.cancel()
    lines = [json.loads(line) for line in (tmp_path / "l").read_text().splitlines()]
    names = [line["event"] for line in lines]
    assert names.count("token_refresh_failed") == 1 and "token_problem" not in names
    failed = next(line for line in lines if line["event"] == "token_refresh_failed")
    assert "sesame-pi login" in failed["action"]
    assert len(endpoint.seen) == 1


async def test_a_pending_login_waiting_for_the_network_leaves_the_appliance_awake(
    etc: Path, issuer: Issuer, tmp_path: Path
) -> None:
    """First boot, no network yet: the app signs in with the card's auth.json in the background,
    with its button, state and heartbeat up meanwhile (not dark until the network comes), and
    shows that it is signing in, not that a person must give it a token."""
    from support.app_process import AppProcess

    write_token(etc / "auth.pending.json", json.dumps(auth_record()))
    with TokenEndpoint(issuer) as endpoint:
        endpoint.answers = [(503, {}), (503, {})]  # the network is not there yet: 2 s, 4 s
        app = AppProcess(
            tmp_path,
            "ws://127.0.0.1:9/agent-service-0/v1/connect",
            etc / "token",
            env={"SESAME_PI_TOKEN_ENDPOINT": endpoint.url, "SESAME_PI_SETUP_PAGE": "off"},
        )
        with app:
            await asyncio.to_thread(app.wait_event, "button_ready")
            retry = await asyncio.to_thread(app.wait_event, "login_pending_retry")
            async with asyncio.timeout(5):  # the heartbeat beats while the login waits
                while not app.heartbeat_file.exists():  # noqa: ASYNC110 - polls a file
                    await asyncio.sleep(0.05)
            assert not [e for e in app.events() if e["event"] == "login_pending_done"]
            done = await asyncio.to_thread(app.wait_event, "login_pending_done", 30)
            assert done["ts"] > retry["ts"]
            assert (etc / "token").read_text().strip() == issuer.issued[-1]
            await asyncio.to_thread(app.wait_event, "auth_retry", 30)  # the link took it up
            states = [e["state"] for e in app.events() if e["event"] == "state_changed"]
            assert "signing_in" in states and "needs_token" not in states, states
            assert app.terminate() == 0
    assert "signing in with" in app.stderr_file.read_text()
    assert_no_secret(issuer, app.log_file.read_text(), app.stderr_file.read_text())


async def test_a_first_token_the_card_cannot_store_is_not_fetched_again_and_again(
    etc: Path,
    endpoint: TokenEndpoint,
    issuer: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a refresh token so far (the SD card's option) and a card that will not take the ID
    token: the one from memory serves every connect; no grant at every look."""
    provider = on_a_full_card(etc, endpoint, tmp_path, monkeypatch)
    token = await provider.valid_token()
    watching = asyncio.create_task(provider.watch(interval_s=0.01))
    await asyncio.sleep(0.3)
    watching.cancel()
    assert await provider.valid_token() == token == issuer.issued[-1]
    assert len(issuer.issued) == 1 and not (etc / "token").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo sesame-pi login` has")
def test_a_login_as_root_leaves_the_files_to_the_apps_user(
    etc: Path, endpoint: TokenEndpoint
) -> None:
    os.chown(etc, 10001, 10001)  # /etc/sesame-pi, as the Ansible role and the image make it
    write_token(etc / "token", make_token(exp_in_s=-5))
    os.chown(etc / "token", 10001, 10001)
    result = cli("login", etc=etc, endpoint_url=endpoint.url, stdin=json.dumps(auth_record()))
    assert result.returncode == 0, result.stderr
    for name in ("token", "refresh_token", "firebase_api_key"):
        info = (etc / name).stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (10001, 10001, 0o600), name


HAND_REFRESH = "AMf-signedInByHandMeanwhile-0123456789abcdefghijklmnopqr"


async def test_a_login_by_hand_removes_the_first_boots_waiting_record(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    """The SD card's record waits for the network; the owner signs in by hand meanwhile. That
    login is the newer: the record is removed, so its retry cannot store older credentials
    over it (it did, whenever the network came back)."""
    issuer.live.add(HAND_REFRESH)
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    endpoint.answers = [(503, {})]  # the record's first try: no network yet
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    by_hand: list[subprocess.CompletedProcess[str]] = []
    slept: list[float] = []

    async def owner_signs_in_by_hand(seconds: float) -> None:
        slept.append(seconds)
        if not by_hand:
            record = json.dumps(auth_record(HAND_REFRESH))
            by_hand.append(cli("login", etc=etc, endpoint_url=endpoint.url, stdin=record))

    # Signed in (by hand): the app shows it as such, not as a device that needs a token.
    with pytest.raises(LoginSuperseded, match="replaced by a login made while it waited"):
        await settle_pending(cfg, sleep=owner_signs_in_by_hand)
    assert slept == [RECHECK_S]  # noticed within a second, not at the next try
    [done] = by_hand
    assert done.returncode == 0, done.stderr
    assert "replaced:   the first boot's auth record" in done.stdout
    assert not pending.exists() and not (etc / "auth.pending.json.refused").exists()
    assert [seen["refresh_token"] for seen in endpoint.seen] == [REFRESH, HAND_REFRESH]
    assert (etc / "token").read_text().strip() == issuer.issued[-1]  # the login by hand's
    lines = [json.loads(line) for line in (tmp_path / "l").read_text().splitlines()]
    assert [line["event"] for line in lines[-2:]] == ["login_pending_retry", "login_pending_gone"]
    assert lines[-1]["detail"] == "replaced by a login by hand"
    assert_no_secret(issuer, done.stdout, done.stderr, (tmp_path / "l").read_text())


async def test_a_waiting_record_deleted_by_hand_leaves_a_device_that_needs_a_token(
    etc: Path, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """The owner deletes the waiting record (no login): the wait ends within a second, and the
    sign-in is over with nothing stored (the LED then asks for a token), not signed in. The
    app's own refresh rewriting the token meanwhile is no login by hand."""
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    write_token(etc / "token", make_token(exp_in_s=-5))  # signed in once, long ago
    write_token(etc / "firebase_api_key", KEY)
    endpoint.answers = [(503, {})]
    cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
    setup_logging(cfg)
    slept: list[float] = []

    async def owner_deletes_it(seconds: float) -> None:
        slept.append(seconds)
        write_secret_files([(etc / "token", make_token())])  # as the app's refresh stores it
        pending.unlink(missing_ok=True)

    assert await settle_pending(cfg, sleep=owner_deletes_it) is None
    assert slept == [RECHECK_S]
    assert len(endpoint.seen) == 1  # the record was not tried again
    last = json.loads((tmp_path / "l").read_text().splitlines()[-1])
    assert (last["event"], last["detail"]) == ("login_pending_gone", "deleted while it waited")


async def test_a_record_whose_exchange_a_login_by_hand_overtook_stores_nothing(
    etc: Path, issuer: Issuer, tmp_path: Path
) -> None:
    """The race the lock settles: the record's exchange is under way when the login by hand
    stores its credentials; the record's result arrives second and is not stored over them."""
    issuer.live.add(HAND_REFRESH)
    pending = etc / "auth.pending.json"
    write_token(pending, json.dumps(auth_record()))
    hand_results: list[LoginResult] = []

    def overtaken(query: dict[str, str], form: dict[str, str]) -> Answer:
        if form.get("refresh_token") == REFRESH:  # the record's exchange: the owner is faster
            hand_results.append(login(json.dumps(auth_record(HAND_REFRESH)), cfg))
        return issuer(query, form)

    with TokenEndpoint(overtaken) as endpoint:
        cfg = Config(token_file=etc / "token", token_endpoint=endpoint.url, log_file=tmp_path / "l")
        setup_logging(cfg)

        async def sleep(seconds: float) -> None:
            raise AssertionError("nothing to wait for")

        with pytest.raises(LoginSuperseded, match="replaced by a login made meanwhile"):
            await settle_pending(cfg, sleep=sleep)
    assert [result.superseded_pending for result in hand_results] == [True]
    # The login by hand was exchanged first (inside the record's request): its tokens stay.
    assert (etc / "token").read_text().strip() == issuer.issued[0]
    assert (etc / "refresh_token").read_text().strip().startswith("AMf-rotated-1-")
    assert not pending.exists() and not (etc / "auth.pending.json.refused").exists()
    events = [json.loads(line)["event"] for line in (tmp_path / "l").read_text().splitlines()]
    assert events.count("login_pending_superseded") == 2  # removed by one, noticed by the other
    assert "login_pending_refused" not in events


def test_a_paste_at_a_terminal_is_not_shown_not_cut_and_ends_with_enter(
    etc: Path, endpoint: TokenEndpoint, issuer: Issuer
) -> None:
    """`sesame-pi login` at a terminal, as the README says: paste, then Enter. In the terminal's
    line mode the paste was echoed (the refresh token on the screen), a record longer than 4095
    characters was cut (a real record carries a long ID token and provider data), and a record
    copied without a line end needed Ctrl-D twice. Here the record is 6 kB, with no line end."""
    record = {**auth_record(), "providerData": [{"note": "x" * 5000}]}
    paste = json.dumps(record).encode()
    assert len(paste) > 5000
    master, slave = os.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "sesame_pi.cli", "login"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(etc, endpoint.url),
    )
    os.close(slave)
    try:
        assert child.stderr is not None
        prompt = child.stderr.readline().decode()
        assert "press Enter" in prompt  # line mode and echo are off once this is printed
        for start in range(0, len(paste), 1000):  # a terminal hands a paste over in pieces
            os.write(master, paste[start : start + 1000])
            time.sleep(0.01)
        os.write(master, b"\r")  # Enter (the terminal turns it into a line end)
        stdout, stderr = child.communicate(timeout=30)
        shown = b""
        with contextlib.suppress(OSError):  # what the terminal would show: nothing of the paste
            while chunk := os.read(master, 65536):
                shown += chunk
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr.decode()
    assert "maker@example.org" in stdout.decode()
    assert REFRESH.encode() not in shown and b"x" * 100 not in shown
    assert (etc / "refresh_token").read_text().strip() in issuer.live
