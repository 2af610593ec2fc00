"""Token faults while the appliance runs: a refresh during a call, a replaced file, loose modes.

The stand-in accepts exactly one token at a time (`expect_token`), so "the service now refuses the
old token" is real: a reconnect with the old token would be answered 401.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faults.ledger import LEDGER
from faults.processes import event_time
from sesame_pi.standin import StandinOptions
from support.app_process import AppProcess
from support.credentials import make_token, write_token
from support.standin_thread import StandinThread
from support.token_endpoint import TokenEndpoint
from support.virtual_audio import VirtualAudio

TokenFile = Callable[..., tuple[str, Path]]


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as made:
        yield made


def events_named(app: AppProcess, name: str, after: int = 0) -> list[dict[str, Any]]:
    return [e for e in app.events()[after:] if e.get("event") == name]


def service_now_wants(server: StandinThread, token: str) -> float:
    """The service starts refusing every other token and drops its clients; when it is back."""
    server.standin.options.expect_token = token
    server.restart_server()
    server.start()  # the same port
    return time.time()


def test_refresh_during_a_live_call_keeps_it_and_the_new_token_restores_it(
    tmp_path: Path, sound: VirtualAudio, endpoint: TokenEndpoint, figures: Any
) -> None:
    # 75 s left: valid at start (over a minute), and inside refresh_before_s=66 by the token
    # watcher's first look, 10 s in, when the call is already live.
    old = LEDGER.add(make_token(exp_in_s=75))
    new = LEDGER.add(make_token(exp_in_s=3600, uid="refreshed"))
    refresh_one = LEDGER.add("refresh-" + secrets.token_urlsafe(24))
    refresh_two = LEDGER.add("refresh-" + secrets.token_urlsafe(24))
    token_file = write_token(tmp_path / "token", old)
    refresh_file = write_token(tmp_path / "refresh", refresh_one)
    endpoint.answers.append(
        (200, {"id_token": new, "refresh_token": refresh_two, "expires_in": "3600"})
    )
    env = {
        **sound.env,
        "SESAME_PI_REFRESH_TOKEN_FILE": str(refresh_file),
        "SESAME_PI_FIREBASE_API_KEY": "fault-test-key",
        "SESAME_PI_TOKEN_ENDPOINT": endpoint.url,
        "SESAME_PI_REFRESH_BEFORE_S": "66",
    }
    options = StandinOptions(mode="echo", expect_token=old, greeting_ms=0)
    with StandinThread(options) as server, AppProcess(tmp_path, server.url, token_file, env) as app:
        app.wait_state("idle", timeout=30)
        mark = app.mark()
        app.press()
        app.wait_event("call_live", after=mark, resumed=False)
        refreshed = app.wait_event("token_refreshed", after=mark, timeout=25)
        between = [e["event"] for e in app.events()[mark:]]
        assert "link_down" not in between and "call_ended" not in between, between
        assert events_named(app, "state_changed")[-1]["state"] == "live", "the call went on"
        assert refreshed["seconds_left"] > 3000
        assert token_file.read_text().strip() == new
        assert refresh_file.read_text().strip() == refresh_two
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert endpoint.seen[0]["grant_type"] == "refresh_token"
        assert endpoint.seen[0]["refresh_token"] == refresh_one
        assert endpoint.seen[0]["path"].endswith("key=fault-test-key")

        mark = app.mark()
        back_at = service_now_wants(server, new)
        live = app.wait_event("call_live", after=mark, timeout=15, resumed=True)
        figures("token: service back -> call live on new token", event_time(live) - back_at, "s")
        assert server.record.auth_refusals == 0, "the old token was never offered again"
        assert not events_named(app, "token_needed", mark)
        app.hold(2.5)
        ended = app.wait_event("call_ended", after=mark)
        assert ended["reason"] == "user_request"
        assert app.terminate() == 0


def test_token_file_replaced_while_running_is_reloaded_and_used(
    tmp_path: Path, sound: VirtualAudio, token_file: TokenFile, figures: Any
) -> None:
    first, path = token_file()
    options = StandinOptions(mode="echo", expect_token=first, greeting_ms=0)
    with StandinThread(options) as server, AppProcess(tmp_path, server.url, path, sound.env) as app:
        app.wait_state("idle", timeout=30)
        second = LEDGER.add(make_token(uid="replacement"))
        mark = app.mark()
        replaced_at = time.time()
        temp = write_token(tmp_path / ".token.new", second)
        os.replace(temp, path)  # how an operator or a provisioning job swaps it
        reloaded = app.wait_event("token_reloaded", after=mark, timeout=15)
        figures("token: file replaced -> token_reloaded", event_time(reloaded) - replaced_at, "s")
        assert reloaded["seconds_left"] > 3000

        mark = app.mark()
        service_now_wants(server, second)
        app.wait_event("link_up", after=mark, timeout=15)
        assert server.record.auth_refusals == 0, "the replaced token was never offered again"
        mark = app.mark()
        app.press()
        app.wait_event("call_live", after=mark)
        assert app.terminate() == 0


def test_world_readable_token_file_is_warned_about_and_still_used(
    tmp_path: Path, token_file: TokenFile
) -> None:
    token, path = token_file()
    path.chmod(0o644)
    options = StandinOptions(expect_token=token, greeting_ms=0)
    with StandinThread(options) as server, AppProcess(tmp_path, server.url, path) as app:
        warning = app.wait_event("token_file_permissions", timeout=20)
        assert warning["level"] == "WARNING"
        assert warning["mode"] == "0o644" and warning["action"] == f"chmod 600 {path}"
        app.wait_event("link_up", timeout=20)
        assert app.terminate() == 0
