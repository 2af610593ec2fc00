"""Token handling as a person meets it: an expired token at start, redaction of every line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from sesame_pi.auth import (
    EndpointUnreachable,
    RefreshFailed,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenProvider,
    TokenServiceUnreachable,
)
from sesame_pi.cli import EXIT_CHECK
from sesame_pi.config import Config
from sesame_pi.logs import event, setup_logging
from support.credentials import make_token, write_token
from support.token_endpoint import CUT_SHORT, TokenEndpoint


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sesame_pi.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SESAME_PI_CONFIG": "/dev/null", **(env or {})} if env else None,
    )


def test_run_with_an_expired_token_exits_nonzero_and_never_prints_it(tmp_path: Path) -> None:
    token = make_token(exp_in_s=-120)
    token_file = write_token(tmp_path / "token", token)
    log_file = tmp_path / "events.jsonl"
    result = run_cli(
        "run",
        "--config", "/dev/null",
        "--server", "ws://127.0.0.1:9/agent-service-0/v1/connect",
        "--token-file", str(token_file),
        "--button", "stdin",
        "--log-file", str(log_file),
        "--setup-page", "off",  # with the setup page on, the app waits for a token instead
    )  # fmt: skip
    assert result.returncode == 3
    assert "expired" in result.stderr
    assert str(token_file) in result.stderr, "the message says which file to fix"
    lines = log_file.read_text().splitlines()
    assert lines and all(json.loads(line)["event"] for line in lines)
    assert any(json.loads(line)["event"] == "token_error" for line in lines)
    for text in (result.stdout, result.stderr, log_file.read_text()):
        assert token not in text
        assert token.split(".")[1] not in text


def test_token_command_shows_expiry_not_the_token(tmp_path: Path) -> None:
    token = make_token(exp_in_s=1800)
    token_file = write_token(tmp_path / "token", token)
    result = run_cli("token", "--config", "/dev/null", "--token-file", str(token_file))
    assert result.returncode == 0, result.stderr
    assert "time left:" in result.stdout and "min" in result.stdout
    assert token not in result.stdout + result.stderr


def test_world_readable_token_file_is_warned_about(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", make_token())
    token_file.chmod(0o644)
    log_file = tmp_path / "events.jsonl"
    cfg = Config(token_file=token_file, log_file=log_file)
    setup_logging(cfg)
    TokenProvider(cfg).load()
    warning = [json.loads(x) for x in log_file.read_text().splitlines() if "permissions" in x]
    assert warning and warning[0]["action"] == f"chmod 600 {token_file}"


def test_a_command_warning_comes_with_its_fields_not_a_bare_name(tmp_path: Path) -> None:
    token = make_token()
    token_file = write_token(tmp_path / "token", token)
    token_file.chmod(0o644)
    result = run_cli("token", "--config", "/dev/null", "--token-file", str(token_file))
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if "permissions" in x]
    assert line["event"] == "token_file_permissions"
    assert line["action"] == f"chmod 600 {token_file}"
    assert token not in result.stdout + result.stderr


def test_redaction_covers_messages_fields_exceptions_and_other_loggers(tmp_path: Path) -> None:
    token = make_token()
    token_file = write_token(tmp_path / "token", token)
    log_file = tmp_path / "events.jsonl"
    cfg = Config(token_file=token_file, log_file=log_file)
    setup_logging(cfg)
    TokenProvider(cfg).load()  # registers the token
    stranger = make_token(uid="someone-else")  # never registered: caught by its JWT shape
    event("link_retry", reason=f"connect failed for wss://x/?id_token={token}&character=Maya")
    event("nested", detail={"inner": [token, {"deeper": stranger}]})
    try:
        raise ValueError(f"bad URL wss://x/?id_token={token}")
    except ValueError:
        logging.getLogger("sesame_pi").exception("boom")
    logging.getLogger("some.library").warning("leaked %s", stranger)
    text = log_file.read_text()
    lines = text.splitlines()
    assert len(lines) >= 4 and all(json.loads(line) for line in lines)
    assert token not in text and stranger not in text
    assert text.count("[REDACTED]") >= 5
    assert "Traceback" in text and "ValueError" in text


def test_text_that_is_not_unicode_still_makes_one_valid_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lone surrogate (a server frame's "\\udcff") or a name decoded from stray bytes: the
    line is still written, as valid JSON in plain ASCII, to the file and to stdout."""
    log_file = tmp_path / "events.jsonl"
    setup_logging(Config(token_file=tmp_path / "token", log_file=log_file))
    event("server_error", detail="bad \udcff", device="Mikrofon \u00e4 \ud800")
    line = log_file.read_text(encoding="ascii").strip()
    assert json.loads(line)["detail"] == "bad \udcff"
    out = capsys.readouterr()
    assert '"server_error"' in out.out and "Logging error" not in out.err
    out.out.encode("ascii")


def refreshing(tmp_path: Path, token_file: Path, endpoint_url: str, key: str = "k") -> Config:
    """A configuration that refreshes at `endpoint_url` (the refresh token beside the token
    file, or in tmp_path/refresh), logging to tmp_path/events.jsonl (set up)."""
    refresh = tmp_path / "refresh"
    cfg = Config(
        token_file=token_file,
        refresh_token_file=refresh if refresh.exists() else None,
        firebase_api_key=key,
        token_endpoint=endpoint_url,
        log_file=tmp_path / "events.jsonl",
    )
    setup_logging(cfg)
    return cfg


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as endpoint:
        yield endpoint


async def test_refresh_replaces_the_token_atomically_with_mode_0600(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    old = make_token(exp_in_s=100)  # inside refresh_before_s
    new = make_token(exp_in_s=3600, uid="fresh")
    token_file = write_token(tmp_path / "token", old)
    refresh_file = write_token(tmp_path / "refresh", "refresh-token-one")
    token_endpoint.answers = [
        (200, {"id_token": new, "refresh_token": "refresh-token-two", "expires_in": "3600"})
    ]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url, key="test-api-key")
    provider = TokenProvider(cfg)
    provider.load()
    assert await provider.valid_token() == new
    assert token_file.read_text().strip() == new
    assert refresh_file.read_text().strip() == "refresh-token-two"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert refresh_file.stat().st_mode & 0o777 == 0o600
    request = token_endpoint.seen[0]
    assert request["path"].endswith("?key=test-api-key")
    assert request["grant_type"] == "refresh_token"
    assert request["refresh_token"] == "refresh-token-one"
    log = (tmp_path / "events.jsonl").read_text()
    assert "token_refreshed" in log
    assert new not in log and "refresh-token-one" not in log and "refresh-token-two" not in log


async def test_a_refresh_token_the_service_returns_unchanged_is_not_written_again(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """Firebase returns the same refresh token on most grants. It was written again each hour
    (wear on the card), and a refresh_token_file on a read-only mount made every write fail:
    the new ID token was never stored either."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=100))
    refresh_file = write_token(tmp_path / "refresh", "refresh-token-one")
    before = refresh_file.stat()
    new = make_token(exp_in_s=3600, uid="fresh")
    token_endpoint.answers = [
        (200, {"id_token": new, "refresh_token": "refresh-token-one", "expires_in": "3600"})
    ]
    provider = TokenProvider(refreshing(tmp_path, token_file, token_endpoint.url, key="k"))
    provider.load()
    assert await provider.valid_token() == new
    assert token_file.read_text().strip() == new
    after = refresh_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


async def test_refresh_failure_on_an_expired_token_says_expired_and_backs_off(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=-10))
    write_token(tmp_path / "refresh", "refresh-token-revoked")
    token_endpoint.answers = [(400, {"error": {"message": "INVALID_REFRESH_TOKEN"}})]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg)
    with pytest.raises(TokenExpired, match="expired") as info:
        await provider.valid_token()
    assert "INVALID_REFRESH_TOKEN" in str(info.value)
    # A refusal is no network trouble: the advice was "check the network" (all `check` shows).
    assert "sign in again" in str(info.value) and "check the network" not in str(info.value)
    with pytest.raises(TokenExpired) as again:
        await provider.valid_token()  # backing off: no second request
    assert len(token_endpoint.seen) == 1
    assert "sign in again" in str(again.value)


async def test_a_ca_file_gone_since_start_is_a_failed_refresh_said_in_words(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """The CA file the settings name went away (a fleet moved it): building the TLS context
    raised FileNotFoundError past the refresh's handler, every look of the watch, with no
    backoff and no expiry warning."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=100))
    write_token(tmp_path / "refresh", "refresh-token-one")
    cfg = dataclasses.replace(
        refreshing(tmp_path, token_file, token_endpoint.url), ca_file=tmp_path / "gone.pem"
    )
    provider = TokenProvider(cfg)
    provider.load()
    with pytest.raises(RefreshFailed, match=r"gone\.pem cannot be used"):
        await provider.refresh()
    with pytest.raises(RefreshFailed, match="waiting before the next refresh attempt"):
        await provider.refresh()  # backed off, as after any failed refresh
    assert "token_refresh_failed" in (tmp_path / "events.jsonl").read_text()
    assert not token_endpoint.seen


async def test_a_device_that_renews_its_token_raises_no_false_expiry_alarm(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """With the defaults (warn 600 s before expiry, renew 300 s before), every renewing device
    logged a WARNING `token_expiring` ten minutes before each hour's renewal: 24 false alarms a
    day. It warns only when it cannot renew, or renewing failed."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=500))
    write_token(tmp_path / "refresh", "refresh-token-one")
    token_endpoint.answers = [(503, {"error": {"message": "UNAVAILABLE"}})]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    log = tmp_path / "events.jsonl"
    for refresh_before_s in (300.0, 590.0):  # not due yet; then due, and the service fails it
        provider = TokenProvider(
            dataclasses.replace(cfg, expiry_warn_s=600.0, refresh_before_s=refresh_before_s)
        )
        provider.load()
        watch = asyncio.create_task(provider.watch(0.05))
        await asyncio.sleep(0.4)
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        if refresh_before_s == 300.0:
            assert "token_expiring" not in log.read_text(), "renewal is not due yet: no alarm"
    text = log.read_text()
    assert "token_refresh_failed" in text and "token_expiring" in text


@pytest.mark.parametrize("answer", [503, "closed"])
async def test_an_expired_token_whose_refresh_finds_no_service_is_an_outage_retried_soon(
    tmp_path: Path, token_endpoint: TokenEndpoint, answer: int | str
) -> None:
    """A Pi off overnight boots before its network is up: the token ran out and its refresh
    cannot reach the token service. Not a token a person must replace (TokenExpired would
    show "needs a token" and ask for a login): an outage, tried again within a minute (a
    refusal backs off up to ten), and the refresh goes through once the service answers."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=-600))
    write_token(tmp_path / "refresh", "refresh-token-one")
    url = token_endpoint.url
    if answer == "closed":
        with TokenEndpoint() as gone:  # a port nothing listens on any more
            url = gone.url
    else:
        token_endpoint.answers = [(503, {})] * 7
    now, ticks = [time.time()], [0.0]
    cfg = refreshing(tmp_path, token_file, url)
    provider = TokenProvider(cfg, clock=lambda: now[0], ticks=lambda: ticks[0])
    waits = []
    for _ in range(7):  # each failure backs off longer, up to a minute
        with pytest.raises(TokenServiceUnreachable, match="cannot be reached") as info:
            await provider.valid_token()
        assert "signs in again by itself" in str(info.value)
        with pytest.raises(TokenServiceUnreachable):
            await provider.valid_token()  # backing off: asked again, no request
        start = ticks[0]
        while ticks[0] - start < 3600:
            now[0] += 1.0
            ticks[0] += 1.0
            if provider._refresh_allowed():
                break
        waits.append(ticks[0] - start)
    assert waits[:3] == [10.0, 20.0, 40.0] and max(waits) == 60.0, waits
    if answer == 503:
        assert len(token_endpoint.seen) == 7
        fresh = make_token(exp_in_s=3600, uid="back")
        token_endpoint.answers = [(200, {"id_token": fresh, "expires_in": "3600"})]
        assert await provider.valid_token() == fresh
    log = (tmp_path / "events.jsonl").read_text()
    assert "check the network" in log and "refresh-token-one" not in log


def refresh_failures(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line for line in lines if line["event"] == "token_refresh_failed"]


async def test_an_unavailable_answer_cut_short_is_an_outage_backed_off_not_a_crash(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """A 503 whose body the connection cut short (Wi-Fi lost mid-answer): reading Firebase's
    error code from it raised IncompleteRead inside the HTTP error's handler, past the one for
    a lost connection beside it. No backoff (the watch logged `token_watch_error` at every
    look), and a connect ended with that fault instead of an outage retried."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=-600))
    write_token(tmp_path / "refresh", "refresh-token-one")
    token_endpoint.answers = [(503, CUT_SHORT[1])]
    ticks = [0.0]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg, ticks=lambda: ticks[0])
    provider.load()
    with pytest.raises(EndpointUnreachable, match="HTTP 503"):
        await provider.refresh()  # (what the watch runs: a RefreshFailed, which it takes)
    with pytest.raises(TokenServiceUnreachable, match="cannot be reached"):
        await provider.valid_token()  # backing off: offline, and no second request
    assert len(token_endpoint.seen) == 1
    [failed] = refresh_failures(tmp_path / "events.jsonl")
    assert failed["retry_in_s"] == 10.0 and "check the network" in failed["action"]
    ticks[0] += 10.0
    fresh = make_token(exp_in_s=3600, uid="back")
    token_endpoint.answers = [(200, {"id_token": fresh, "expires_in": "3600"})]
    assert await provider.valid_token() == fresh
    assert "refresh-token-one" not in (tmp_path / "events.jsonl").read_text()


@contextlib.contextmanager
def a_sign_in_page() -> Iterator[str]:
    """A Wi-Fi's sign-in page (or a TLS-inspecting proxy's block page) where the token service
    should be: every POST is answered 200 with HTML. Yields its URL."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = b"<html><body>Accept the terms to use this Wi-Fi</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/token"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", ["sign-in page", "no id_token", "id_token no JWT"])
async def test_an_answer_that_is_no_token_services_is_an_outage_not_a_sign_in_to_redo(
    tmp_path: Path, token_endpoint: TokenEndpoint, answer: str
) -> None:
    """A token about to run out, and something else answers in the token service's place:
    that is no refusal of the sign-in. It raised TokenExpired (the device asked for a new
    token: error tone, setup page open) and backed off up to ten minutes, where `login` calls
    the same answer unreachable. It is an outage: offline, tried again within a minute."""
    old = make_token(exp_in_s=30)  # under a minute left: only a refresh keeps the device on
    token_file = write_token(tmp_path / "token", old)
    write_token(tmp_path / "refresh", "refresh-token-one")
    body = {"portal": "accept the terms"} if answer == "no id_token" else {"id_token": "not.a-jwt"}
    token_endpoint.answers = [(200, body)] * 5
    ticks = [0.0]
    with a_sign_in_page() as page:
        url = page if answer == "sign-in page" else token_endpoint.url
        provider = TokenProvider(refreshing(tmp_path, token_file, url), ticks=lambda: ticks[0])
        provider.load()
        for _ in range(5):
            with pytest.raises(TokenServiceUnreachable, match="cannot be reached"):
                await provider.valid_token()
            ticks[0] += 3600.0  # long past any backoff: each look tries again
    assert token_file.read_text().strip() == old
    failed = refresh_failures(tmp_path / "events.jsonl")
    assert [line["retry_in_s"] for line in failed] == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert all("check the network" in line["action"] for line in failed)
    assert "refresh-token-one" not in (tmp_path / "events.jsonl").read_text()


async def test_a_token_file_the_watch_cannot_use_is_said_once_per_change_with_what_it_holds(
    tmp_path: Path,
) -> None:
    """An auth record pasted into the token file (not into `sesame-pi login`): one ERROR line
    that says where it belongs, not one every ten seconds for as long as it stays; each new
    bad file is said again, and a good one is taken."""
    token_file = write_token(tmp_path / "token", make_token())
    cfg = Config(token_file=token_file, log_file=tmp_path / "events.jsonl")
    setup_logging(cfg)
    provider = TokenProvider(cfg)
    provider.load()
    watching = asyncio.create_task(provider.watch(interval_s=0.02))

    def problems() -> list[str]:
        lines = (tmp_path / "events.jsonl").read_text().splitlines()
        return [json.loads(line)["detail"] for line in lines if '"token_problem"' in line]

    write_token(token_file, json.dumps({"stsTokenManager": {"refreshToken": "AMf-x" * 12}}))
    await asyncio.sleep(0.3)
    assert len(problems()) == 1 and "sesame-pi login" in problems()[0], problems()
    assert "AMf-x" not in problems()[0]
    write_token(token_file, "AMf-vB" + "x" * 80)  # a bare refresh token
    await asyncio.sleep(0.3)
    assert len(problems()) == 2 and "refresh token" in problems()[1], problems()
    token_file.unlink()
    await asyncio.sleep(0.3)
    assert len(problems()) == 3 and "no token file" in problems()[2], problems()
    write_token(token_file, make_token(uid="fixed"))
    await asyncio.sleep(0.3)
    watching.cancel()
    assert len(problems()) == 3
    assert '"token_reloaded"' in (tmp_path / "events.jsonl").read_text()


AUTH_RECORD = json.dumps({"stsTokenManager": {"refreshToken": "AMf-paste" * 8}})


async def test_an_auth_record_in_the_token_file_of_a_renewing_device_is_kept_aside_not_lost(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """A person pastes the browser's auth record into the token file of a device that renews
    its own token. The device starts and connects anyway (it used to wait for a token), and the
    paste is kept beside the file (the refresh used to write over it)."""
    token_file = write_token(tmp_path / "token", AUTH_RECORD)
    write_token(tmp_path / "refresh", "refresh-token-one")
    fresh = make_token(exp_in_s=3600, uid="fresh")
    token_endpoint.answers = [(200, {"id_token": fresh, "expires_in": "3600"})]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg)
    assert provider.load().expires_at is None  # (the first connect refreshes)
    assert await provider.valid_token() == fresh
    assert token_file.read_text().strip() == fresh
    aside = tmp_path / "token.set-aside"
    assert aside.read_text().strip() == AUTH_RECORD
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    log = (tmp_path / "events.jsonl").read_text()
    said = [json.loads(line) for line in log.splitlines() if '"token_file_set_aside"' in line]
    assert len(said) == 1 and said[0]["kept_as"] == str(aside), said
    assert "sesame-pi login" in said[0]["detail"]
    assert "AMf-paste" not in log and "token_error" not in log


async def test_a_paste_over_a_good_token_is_kept_aside_and_the_calls_go_on(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """The same paste while the device runs on a good token: the watch sets it aside and renews
    the file; a connect meanwhile gets a token, not a wait for one. Without a way to renew
    (no refresh token), the paste stays where it is and is reported as before."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=3600, uid="first"))
    write_token(tmp_path / "refresh", "refresh-token-one")
    fresh, again = (make_token(exp_in_s=3600, uid=uid) for uid in ("renewed", "again"))
    token_endpoint.answers = [(200, {"id_token": t, "expires_in": "3600"}) for t in (fresh, again)]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg)
    provider.load()
    write_token(token_file, AUTH_RECORD)
    assert await provider.valid_token() == fresh
    assert (tmp_path / "token.set-aside").read_text().strip() == AUTH_RECORD
    write_token(token_file, "AMf-vB" + "x" * 80)  # now a bare refresh token, seen by the watch
    watching = asyncio.create_task(provider.watch(interval_s=0.02))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len(token_endpoint.seen) == 2 and token_file.exists():
            break
    watching.cancel()
    assert token_file.read_text().strip() == again
    assert (tmp_path / "token.set-aside").read_text().strip() == AUTH_RECORD, "the first kept"
    assert (tmp_path / "token.set-aside.2").read_text().strip() == "AMf-vB" + "x" * 80
    assert '"token_problem"' not in (tmp_path / "events.jsonl").read_text()

    (tmp_path / "refresh").unlink()
    write_token(token_file, AUTH_RECORD)
    with pytest.raises(TokenInvalid, match="sesame-pi login"):
        await provider.valid_token()
    assert token_file.read_text().strip() == AUTH_RECORD


async def test_a_paste_that_cannot_be_moved_aside_is_said_once_and_an_empty_file_is_left(
    tmp_path: Path, token_endpoint: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only card (or directory): the paste stays, one ERROR line says what to do, and the
    device says it needs a token as before, instead of crashing at start. An empty file is
    someone about to paste (`install -m 600 /dev/null token; cat > token`): left alone."""
    token_file = write_token(tmp_path / "token", AUTH_RECORD)
    write_token(tmp_path / "refresh", "refresh-token-one")
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg)

    def read_only(*_args: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("sesame_pi.auth.os.replace", read_only)
    for _ in range(3):
        with pytest.raises(TokenInvalid, match="sesame-pi login"):
            await provider.valid_token()
    monkeypatch.undo()
    log = (tmp_path / "events.jsonl").read_text()
    said = [json.loads(line) for line in log.splitlines() if "token_file_not_set_aside" in line]
    assert len(said) == 1 and "Read-only file system" in said[0]["detail"], said
    assert str(token_file) in said[0]["action"] and "AMf-paste" not in log
    assert token_file.read_text().strip() == AUTH_RECORD
    assert token_endpoint.seen == []

    token_file.write_text("")
    with pytest.raises(TokenMissing, match=r"is empty.*or remove it"):
        provider.load()
    assert token_file.exists() and not (tmp_path / "token.set-aside").exists()


async def test_an_emptied_token_file_leaves_the_held_token_in_use(tmp_path: Path) -> None:
    """The README's way to replace the token, `install -m 600 /dev/null token; cat > token`,
    empties the file first: a connect meanwhile uses the token it holds, and the watch says
    nothing, until the paste lands."""
    held = make_token(exp_in_s=3600, uid="held")
    token_file = write_token(tmp_path / "token", held)
    cfg = Config(token_file=token_file, log_file=tmp_path / "events.jsonl")
    setup_logging(cfg)
    provider = TokenProvider(cfg)
    provider.load()
    watching = asyncio.create_task(provider.watch(interval_s=0.02))
    token_file.write_text("")
    await asyncio.sleep(0.2)
    assert await provider.valid_token() == held
    pasted = make_token(exp_in_s=3600, uid="pasted")
    write_token(token_file, pasted)
    await asyncio.sleep(0.2)
    watching.cancel()
    assert await provider.valid_token() == pasted
    assert '"token_problem"' not in (tmp_path / "events.jsonl").read_text()


def test_a_refresh_token_without_its_key_is_named_not_ignored(tmp_path: Path) -> None:
    """A card with a refresh token and no API key: the device said only "no token file", and
    the refresh token beside it was ignored without a word."""
    write_token(tmp_path / "refresh_token", "refresh-token-one")
    cfg = Config(token_file=tmp_path / "token", log_file=tmp_path / "events.jsonl")
    with pytest.raises(TokenMissing) as missing:
        TokenProvider(cfg).load()
    said = str(missing.value)
    assert "no token file" in said and "needs the web app's API key" in said
    assert "firebase_api_key" in said and "refresh-token-one" not in said


@pytest.mark.parametrize("quote", ['"', "'"])
def test_a_token_pasted_with_its_quotes_is_read(tmp_path: Path, quote: str) -> None:
    """Copied from a JSON value or a shell line, the token keeps its quotes: it was refused as
    "does not hold a JWT (an ID token has three dot-separated parts)", which it has."""
    token = make_token(exp_in_s=3600)
    token_file = write_token(tmp_path / "token", f"{quote}{token}{quote}")
    cfg = Config(token_file=token_file, log_file=tmp_path / "events.jsonl")
    assert TokenProvider(cfg).load().expires_at


@pytest.mark.parametrize("renews", [True, False])
async def test_a_token_saved_as_utf16_is_read_and_one_without_its_mark_is_named(
    tmp_path: Path, token_endpoint: TokenEndpoint, renews: bool
) -> None:
    """Notepad's "Unicode" is UTF-16 with a byte order mark: that token is read as it is (it was
    set aside, or refused, while the auth record beside it was read). UTF-16 without its mark
    cannot be told from other bytes: a device that renews its own token sets it aside and
    renews; one that cannot says what the file is. A UTF-8 mark before a token is no problem."""
    token = make_token(exp_in_s=3600)
    token_file = tmp_path / "token"
    token_file.write_bytes(token.encode("utf-16"))
    token_file.chmod(0o600)
    if renews:
        write_token(tmp_path / "refresh", "refresh-token-one")
    fresh = make_token(exp_in_s=3600, uid="fresh")
    token_endpoint.answers = [(200, {"id_token": fresh, "expires_in": "3600"})]
    provider = TokenProvider(refreshing(tmp_path, token_file, token_endpoint.url))
    provider.load()
    assert await provider.valid_token() == token
    assert not (tmp_path / "token.set-aside").exists()

    token_file.write_bytes(token.encode("utf-16-le"))
    provider = TokenProvider(refreshing(tmp_path, token_file, token_endpoint.url))
    if renews:
        provider.load()
        assert await provider.valid_token() == fresh
        assert (tmp_path / "token.set-aside").read_bytes() == token.encode("utf-16-le")
        assert "UTF-16 without a byte order mark" in (tmp_path / "events.jsonl").read_text()
    else:
        with pytest.raises(TokenInvalid, match=r"not UTF-8 text .*without a byte order mark"):
            provider.load()
    token_file.write_bytes(b"\xef\xbb\xbf" + token.encode())
    assert TokenProvider(refreshing(tmp_path, token_file, token_endpoint.url)).load().expires_at


async def test_a_paste_set_aside_while_a_refresh_is_in_flight_does_not_lose_its_token(
    tmp_path: Path,
) -> None:
    """The watch sets a paste aside while a connect's refresh waits on the token service: the
    refresh stores its token (nothing is there to write over) instead of taking the missing
    file for a login's newer credentials and throwing its token away."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=30, uid="old"))
    write_token(tmp_path / "refresh", "refresh-token-one")
    fresh = make_token(exp_in_s=3600, uid="fresh")

    def meanwhile(_query: dict[str, str], _form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token_file.rename(tmp_path / "token.set-aside")  # (what the watch does to a paste)
        return 200, {"id_token": fresh, "expires_in": "3600"}

    with TokenEndpoint(issuer=meanwhile) as endpoint:
        provider = TokenProvider(refreshing(tmp_path, token_file, endpoint.url))
        provider.load()
        assert await provider.valid_token() == fresh
    assert token_file.read_text().strip() == fresh
    assert "token_refresh_superseded" not in (tmp_path / "events.jsonl").read_text()


async def test_a_clock_an_hour_ahead_does_not_refresh_every_fresh_token_again(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """An RTC set to local time with NTP blocked: 56 minutes ahead, every fresh token looks
    four minutes from expiry. One refresh shows the offset (its `iat`); after it the token has
    its hour, and no refresh follows at every look."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=3600))
    write_token(tmp_path / "refresh", "refresh-token-one")
    fresh = make_token(exp_in_s=3600, uid="fresh")
    token_endpoint.answers = [(200, {"id_token": fresh, "expires_in": "3600"})]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    ahead = [56 * 60.0]
    provider = TokenProvider(cfg, clock=lambda: time.time() + ahead[0])
    for _ in range(5):
        assert await provider.valid_token() == fresh
    assert len(token_endpoint.seen) == 1
    left = provider.info().seconds_left
    assert left is not None and 3500 < left <= 3600, left
    assert '"clock_skew"' in (tmp_path / "events.jsonl").read_text()
    ahead[0] = 0.0  # NTP gets through and sets the clock: the offset learnt is no more
    left = provider.info().seconds_left
    assert left is not None and 3500 < left <= 3600, left
    assert '"clock_set"' in (tmp_path / "events.jsonl").read_text()


async def test_a_token_a_login_stored_during_a_refresh_teaches_nothing_about_the_clock(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """A login lands while a refresh is in flight: its token (copied from a browser 40 minutes
    ago) wins, and its `iat` says nothing about this machine's clock (no clock_skew, and its
    time left is its own: 20 minutes)."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=100))
    write_token(tmp_path / "refresh_token", "refresh-token-one")
    token_endpoint.answers = [(200, {"id_token": make_token(uid="fresh"), "expires_in": "3600"})]
    now = int(time.time())
    claims = {"sub": "person", "iat": now - 2400, "exp": now + 1200}
    theirs = jwt.encode(claims, "test-only-key-of-at-least-32-bytes!!", algorithm="HS256")
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg)

    def a_login_won(_before: object, _id_token: str, _refresh: str | None) -> bool:
        write_token(token_file, theirs)  # under the lock a login takes
        return False

    provider._store = a_login_won  # type: ignore[method-assign]
    assert await provider.valid_token() == theirs
    left = provider.info().seconds_left
    assert left is not None and 1100 < left <= 1200, left
    assert '"clock_skew"' not in (tmp_path / "events.jsonl").read_text()


def test_check_with_a_token_out_of_reach_of_its_refresh_says_so_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`sesame-pi check` on a Pi whose token ran out while the token service cannot be reached:
    one FAIL line that says so, the checks' exit code, no traceback."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=-600))
    write_token(tmp_path / "refresh_token", "refresh-token-one")
    with TokenEndpoint() as gone:
        url = gone.url  # nothing listens there once it is closed
    result = run_cli(
        "check",
        "--token-file", str(token_file),
        "--log-file", "none",
        env={"SESAME_PI_FIREBASE_API_KEY": "k", "SESAME_PI_TOKEN_ENDPOINT": url},
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == EXIT_CHECK, out
    assert "[ok] token: expired 10 min ago; the refresh renews it" in out, out
    assert "[FAIL] server: the token expired and the token service cannot be reached" in out, out
    assert "Traceback" not in out and "refresh-token-one" not in out


async def test_a_refresh_wait_is_not_stretched_when_ntp_sets_the_clock_back(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """The clock 56 minutes ahead, the token service out of reach: the next try is due in 10 s.
    NTP then sets the clock back 56 minutes; the wait must still end 10 s after it began (on a
    wall-clock deadline it would end in 56 minutes)."""
    token_file = write_token(tmp_path / "token", make_token(exp_in_s=-600))
    write_token(tmp_path / "refresh_token", "refresh-token-one")
    token_endpoint.answers = [(503, {})]
    ahead, ticks = [56 * 60.0], [0.0]
    cfg = refreshing(tmp_path, token_file, token_endpoint.url)
    provider = TokenProvider(cfg, clock=lambda: time.time() + ahead[0], ticks=lambda: ticks[0])
    with pytest.raises(TokenServiceUnreachable):
        await provider.valid_token()
    ahead[0] = 0.0  # NTP steps the clock back
    ticks[0] += 11.0  # 11 s later
    fresh = make_token(exp_in_s=3600, uid="back")
    token_endpoint.answers = [(200, {"id_token": fresh, "expires_in": "3600"})]
    assert await provider.valid_token() == fresh
