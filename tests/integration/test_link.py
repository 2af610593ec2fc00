"""The link against the real websockets stand-in over TLS with certificate verification on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config
from sesame_pi.link import CallFailed, Link, LinkDown, LinkLost, supervisor
from sesame_pi.logs import setup_logging
from sesame_pi.standin import Standin, StandinOptions, server_tls
from support.credentials import TestPKI, make_pki, make_token, write_token
from support.token_endpoint import Issuer, TokenEndpoint

FRAME = b"\x11\x00" * 320  # 20 ms at 16 kHz


class Recorder:
    """A LinkListener that remembers what it was told."""

    def __init__(self) -> None:
        self.ups = 0
        self.downs: list[str] = []
        self.routine: list[bool] = []  # for each down: a planned or idle close, not an outage
        self.audio_bytes = 0
        self.hangups: list[str] = []
        self.token_problems: list[str] = []
        self.up_event = asyncio.Event()
        self.up_times: list[float] = []

    def link_up(self) -> None:
        self.ups += 1
        self.up_times.append(time.monotonic())
        self.up_event.set()

    def link_down(self, down: LinkDown) -> None:
        self.downs.append(down.detail)
        self.routine.append(down.routine)
        self.up_event.clear()

    def server_audio(self, pcm: bytes) -> None:
        self.audio_bytes += len(pcm)

    def server_hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def token_needed(self, detail: str) -> None:
        self.token_problems.append(detail)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path)


@pytest.fixture
def token(tmp_path: Path) -> str:
    return make_token()


def make_config(
    tmp_path: Path, port: int, pki: TestPKI | None, token: str, **changes: object
) -> Config:
    token_file = write_token(tmp_path / "token", token)
    scheme = "wss" if pki else "ws"
    cfg = Config(
        server=f"{scheme}://127.0.0.1:{port}/agent-service-0/v1/connect",
        ca_file=pki.ca_file if pki else None,
        token_file=token_file,
        log_file=tmp_path / "events.jsonl",
        backoff_initial_s=0.1,
        backoff_max_s=2.0,
        healthy_after_s=1.0,
    )
    cfg = cfg.replace(**changes) if changes else cfg
    setup_logging(cfg)
    return cfg


async def start_standin(pki: TestPKI | None, port: int = 0, **options: object) -> Standin:
    standin = Standin(StandinOptions(**options))  # type: ignore[arg-type]
    tls = server_tls(str(pki.cert_file), str(pki.key_file)) if pki else None
    await standin.start("127.0.0.1", port, tls)
    return standin


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def refreshing_config(
    tmp_path: Path,
    port: int,
    pki: TestPKI,
    token: str,
    endpoint: TokenEndpoint,
    **changes: object,
) -> Config:
    """make_config with a refresh token ("refresh-one") and the key an `Issuer` takes."""
    return make_config(
        tmp_path,
        port,
        pki,
        token,
        refresh_token_file=write_token(tmp_path / "refresh", "refresh-one"),
        firebase_api_key="test-api-key",
        token_endpoint=endpoint.url,
        **changes,
    )


def skewed_tokens(cfg: Config, skew: list[float]) -> TokenProvider:
    """A TokenProvider whose clocks (wall and monotonic) run `skew[0]` seconds ahead."""
    return TokenProvider(
        cfg, clock=lambda: time.time() + skew[0], ticks=lambda: time.monotonic() + skew[0]
    )


async def eventually(holds: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait until `holds()` (a slow, loaded machine only makes this wait longer)."""
    deadline = time.monotonic() + within_s
    while not holds():
        assert time.monotonic() < deadline, "did not happen in time"
        await asyncio.sleep(0.05)


async def up(
    link: Link,
    recorder: Recorder,
    running: list[asyncio.Task[None]],
    within_s: float = 5,
) -> None:
    running.append(asyncio.create_task(link.run()))
    await asyncio.wait_for(recorder.up_event.wait(), within_s)


async def test_full_call_over_tls_with_pings_both_ways(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki, server_pings=True, greeting_ms=0)
    cfg = make_config(tmp_path, standin.port, pki, token, ping_interval_s=0.1)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    await up(link, recorder, running)
    info = await link.start_call()
    assert isinstance(info.call_id, int)
    assert info.sample_rate == 24000
    for _ in range(50):
        await link.send_audio(FRAME)
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.2)
    assert await link.end_call() is True
    await standin.stop()
    record = standin.record
    assert record.violations == []
    assert record.location_states == 1
    assert record.call_connects[0]["settings"] == {"character": "Maya"}
    assert record.audio_frame_sizes == {640: 50}
    assert record.disconnects == ["user_request"]
    assert record.server_pings_answered >= 1
    assert link.stats.pongs >= 5 and record.pings >= 5
    assert recorder.audio_bytes == 50 * 960  # echoed, resampled 16 kHz -> 24 kHz


async def test_reconnects_within_two_seconds_of_server_return(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki)
    port = standin.port
    cfg = make_config(tmp_path, port, pki, token)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    await up(link, recorder, running)
    await standin.stop()
    await asyncio.sleep(4.0)  # several failed attempts: backoff grows toward its cap
    assert not link.up
    restarted = await start_standin(pki, port=port)
    back_at = time.monotonic()
    await asyncio.wait_for(recorder.up_event.wait(), 5)
    assert recorder.up_times[-1] - back_at < 2.0
    assert recorder.ups == 2
    await restarted.stop()


async def test_a_failed_first_connect_is_reported_down_once(
    tmp_path: Path, token: str, running: list
) -> None:
    standin = await start_standin(None)
    port = standin.port
    await standin.stop()  # nothing listens there now
    cfg = make_config(tmp_path, port, None, token)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    running.append(asyncio.create_task(link.run()))
    await asyncio.sleep(1.5)  # several attempts at a 0.1 s initial backoff
    assert recorder.ups == 0
    assert len(recorder.downs) == 1 and "connect failed" in recorder.downs[0], recorder.downs


async def test_auth_refusal_reports_and_does_not_hammer(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki, refuse_auth=True)
    cfg = make_config(tmp_path, standin.port, pki, token, auth_retry_per_minute=3)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    running.append(asyncio.create_task(link.run()))
    await asyncio.sleep(8.0)
    assert recorder.token_problems, "the session must hear that a new token is needed"
    assert "403" in recorder.token_problems[0]
    assert standin.record.auth_refusals <= 2, "same token must not be retried in a loop"
    assert recorder.ups == 0
    await standin.stop()


async def test_a_token_that_ran_out_while_the_network_was_down_is_an_outage_not_a_sign_in(
    tmp_path: Path, pki: TestPKI, running: list
) -> None:
    """A Pi off overnight boots before its network is up: the token ran out, and its refresh
    cannot reach the token service. The session hears an outage (offline), never that a token
    is needed (the error tone, "sesame-pi login"); the link is up once the refresh gets
    through, without anyone doing anything."""
    standin = await start_standin(pki)
    issuer = Issuer("test-api-key", "refresh-one")
    with TokenEndpoint(issuer) as endpoint:
        endpoint.answers = [(503, {})]  # the token service is out of reach once
        cfg = refreshing_config(tmp_path, standin.port, pki, make_token(exp_in_s=-3600), endpoint)
        skew = [0.0]
        recorder = Recorder()
        tokens = skewed_tokens(cfg, skew)
        running.append(asyncio.create_task(Link(cfg, tokens, recorder).run()))
        await eventually(lambda: bool(recorder.downs))
        await asyncio.sleep(1.0)  # link retries at up to 2 s; the refresh backs off 10 s
        assert recorder.ups == 0 and recorder.token_problems == []
        assert len(recorder.downs) == 1 and "cannot be reached" in recorder.downs[0]
        assert len(endpoint.seen) == 1, "the refresh backs off, it does not follow each retry"
        skew[0] = 11.0  # past the refresh's backoff
        await asyncio.wait_for(recorder.up_event.wait(), 10)
        assert recorder.token_problems == [] and len(issuer.issued) == 1
    assert standin.record.connections == 1
    await standin.stop()


async def test_a_service_that_refuses_each_renewed_token_is_not_asked_three_times_a_minute(
    tmp_path: Path, pki: TestPKI, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account the service will not serve: every token the refresh gives is refused too.
    One renewal after the first refusal (the token may just have been stale), then renewals
    wait 30 s, 60 s, ... (not the auth retry cap's three a minute, each with the error tone);
    a token the service takes would forget the count."""
    monkeypatch.setattr(supervisor, "TOKEN_WAIT_POLL_S", 0.2)
    standin = await start_standin(pki, refuse_auth=True)
    issuer = Issuer("test-api-key", "refresh-one")
    with TokenEndpoint(issuer) as endpoint:
        cfg = refreshing_config(tmp_path, standin.port, pki, make_token(), endpoint)
        skew = [0.0]
        recorder = Recorder()
        tokens = skewed_tokens(cfg, skew)
        running.append(asyncio.create_task(Link(cfg, tokens, recorder).run()))
        await eventually(lambda: standin.record.auth_refusals == 2)
        await asyncio.sleep(1.0)  # (polls every 0.2 s: any renewal now would be a third try)
        assert len(issuer.issued) == 1, "one renewal, then a wait"
        assert standin.record.auth_refusals == 2
        skew[0] = 31.0  # the first wait is over
        await eventually(lambda: standin.record.auth_refusals == 3)
        assert len(issuer.issued) == 2
        skew[0] = 31.0 + 45.0  # the second wait is twice as long (60 s): not over yet
        await asyncio.sleep(1.0)
        assert len(issuer.issued) == 2
        assert recorder.ups == 0
    log = (tmp_path / "events.jsonl").read_text()
    assert log.count('"token_renewal_refused"') == 2
    await standin.stop()


async def test_a_token_the_service_idles_out_is_taken_and_refused_renewals_are_forgotten(
    tmp_path: Path, pki: TestPKI, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service closes a socket with no call after about 15 s, before the link counts it
    healthy (30 s). That close still says the token was taken: renewals refused before it are
    forgotten, so a later refusal renews at once (as after a first refusal), where a device
    that remembered them waited 60 s and more before it tried."""
    monkeypatch.setattr(supervisor, "TOKEN_WAIT_POLL_S", 0.2)
    standin = await start_standin(pki, refuse_auth=True)
    issuer = Issuer("test-api-key", "refresh-one")
    with TokenEndpoint(issuer) as endpoint:
        cfg = refreshing_config(
            tmp_path, standin.port, pki, make_token(), endpoint, healthy_after_s=30.0
        )
        skew = [0.0]
        recorder = Recorder()
        tokens = skewed_tokens(cfg, skew)
        running.append(asyncio.create_task(Link(cfg, tokens, recorder).run()))
        await eventually(lambda: standin.record.auth_refusals == 2)  # one renewal refused
        standin.options.refuse_auth = False
        standin.options.idle_close_s = 1.2  # (a close before 1 s is no idle close)
        skew[0] = 31.0  # the wait is over: the next renewal is taken
        await eventually(lambda: standin.record.idle_closes >= 1)
        assert len(issuer.issued) == 2
        standin.options.refuse_auth = True  # the account loses the service again
        await eventually(lambda: len(issuer.issued) == 3)  # renewed at once: nothing remembered
        log = (tmp_path / "events.jsonl").read_text()
        assert log.count('"token_renewal_refused"') == 1, "the taken token reset the count"
    await standin.stop()


async def test_a_clock_behind_at_boot_costs_a_quiet_renewal_not_a_sign_in(
    tmp_path: Path, pki: TestPKI, running: list
) -> None:
    """A Pi without a clock boots two hours behind (NTP has not answered yet): the token file's
    token, expired half an hour ago, looks good, and the service refuses it. The refresh
    replaces it without a word to the person (no token_needed: no error tone, no "needs a
    token"), and the fresh token's `iat` shows the clock is off, so its time left is right."""
    standin = await start_standin(pki)  # refuses expired tokens, by its own clock
    issuer = Issuer("test-api-key", "refresh-one")
    with TokenEndpoint(issuer) as endpoint:
        cfg = refreshing_config(tmp_path, standin.port, pki, make_token(exp_in_s=-1800), endpoint)
        recorder = Recorder()
        tokens = TokenProvider(cfg, clock=lambda: time.time() - 7200)
        running.append(asyncio.create_task(Link(cfg, tokens, recorder).run()))
        await asyncio.wait_for(recorder.up_event.wait(), 10)
    assert recorder.token_problems == [] and len(issuer.issued) == 1
    assert standin.record.auth_refusals == 1 and standin.record.connections == 1
    left = tokens.info().seconds_left
    assert left is not None and 3500 < left <= 3600, left
    lines = [json.loads(line) for line in cfg.log_file.read_text().splitlines()]
    offsets = [line["offset_s"] for line in lines if line["event"] == "clock_skew"]
    assert len(offsets) == 1 and abs(offsets[0] - 7200) <= 2, offsets  # (`iat` is whole seconds)
    await standin.stop()


async def test_a_new_token_that_meets_a_dead_network_is_reported_down_again(
    tmp_path: Path, pki: TestPKI, running: list
) -> None:
    """Down (reported), then up but the token refused (needs a token), then the person's new
    token meets a dead network: that is a new outage for the session (offline), not the first
    one again, which it had already heard of and moved on from."""
    standin = await start_standin(pki)
    port = standin.port
    await standin.stop()  # the network is down at start
    cfg = make_config(tmp_path, port, pki, make_token())
    recorder = Recorder()
    running.append(asyncio.create_task(Link(cfg, TokenProvider(cfg), recorder).run()))
    await asyncio.sleep(0.5)
    assert len(recorder.downs) == 1
    standin = await start_standin(pki, port=port, refuse_auth=True)  # back, and refusing
    for _ in range(50):
        if recorder.token_problems:
            break
        await asyncio.sleep(0.1)
    assert recorder.token_problems and len(recorder.downs) == 1
    await standin.stop()  # down again; then a new token arrives
    write_token(cfg.token_file, make_token(uid="someone-else"))
    for _ in range(100):
        if len(recorder.downs) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(recorder.downs) == 2 and "connect failed" in recorder.downs[1], recorder.downs


async def test_new_token_file_ends_the_auth_wait(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki, expect_token="the-right-one" + token[-5:])
    cfg = make_config(tmp_path, standin.port, pki, token)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    running.append(asyncio.create_task(link.run()))
    await asyncio.sleep(1.5)
    assert recorder.token_problems and recorder.ups == 0
    await standin.stop()
    good = make_token(uid="another-user")
    standin = await start_standin(pki, port=standin.port, expect_token=good)
    await asyncio.sleep(0.05)
    write_token(cfg.token_file, good)
    await asyncio.wait_for(recorder.up_event.wait(), 15)
    assert standin.record.connections == 1
    await standin.stop()


async def back_with_a_new_token(
    standin: Standin, pki: TestPKI, cfg: Config, recorder: Recorder
) -> Standin:
    """The service back, taking only a new token the owner writes: the link must come up with
    it (a link task that died would not). The new stand-in, to stop."""
    await standin.stop()
    good = make_token(uid="another-user")
    standin = await start_standin(pki, port=standin.port, expect_token=good)
    write_token(cfg.token_file, good)
    await asyncio.wait_for(recorder.up_event.wait(), 15)
    return standin


def logged(tmp_path: Path, name: str = "link_error") -> list[dict[str, Any]]:
    """The log's lines of one event (a fault of ours, by default)."""
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    return [line for line in lines if line["event"] == name]


class FaultyRefusalTokens(TokenProvider):
    """A provider whose look for a new token after a refusal fails once with something that is
    not a TokenError (a token endpoint's answer cut short raised http.client's own error)."""

    faults = 1

    async def after_auth_refusal(self) -> bool:
        if self.faults:
            self.faults -= 1
            raise http.client.IncompleteRead(b"{", 99)
        return await super().after_auth_refusal()


async def test_a_fault_while_waiting_for_a_token_leaves_the_link_waiting(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The wait for a new token runs outside the link's own handler: a fault there ended the
    link task for good (the device never connected again, under a heartbeat that said healthy).
    It is logged, and the person's new token still brings the link up."""
    standin = await start_standin(pki, expect_token="the-right-one" + token[-5:])
    cfg = make_config(tmp_path, standin.port, pki, token)
    recorder = Recorder()
    task = asyncio.create_task(Link(cfg, FaultyRefusalTokens(cfg), recorder).run())
    running.append(task)
    await asyncio.sleep(1.5)
    assert not task.done(), task.exception() if task.done() else None
    standin = await back_with_a_new_token(standin, pki, cfg, recorder)
    (error,) = logged(tmp_path)
    assert error["detail"].startswith("IncompleteRead")
    await standin.stop()


async def test_junk_frames_are_counted_and_the_call_goes_on(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki, junk=True, greeting_ms=0)
    cfg = make_config(tmp_path, standin.port, pki, token, ping_interval_s=0.1)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    await up(link, recorder, running)
    await link.start_call()
    for _ in range(125):  # 2.5 s of audio
        await link.send_audio(FRAME)
        await asyncio.sleep(0.02)
    assert link.up
    assert {
        "not_json",
        "not_object",
        "missing_type",
        "bad_base64",
        "odd_pcm",
        "missing_field",
    } <= set(link.stats.bad_frames)
    assert link.stats.ignored["mystery_event"] >= 1
    assert await link.end_call() is True
    assert recorder.downs in ([], ["planned"])
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    bad = [json.loads(line) for line in lines if '"bad_frame"' in line]
    assert len(bad) == len({entry["kind"] for entry in bad}), (
        "each kind is logged once, then counted"
    )
    await standin.stop()


async def test_unknown_ca_is_refused(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki)
    cfg = make_config(tmp_path, standin.port, None, token)
    cfg = cfg.replace(server=cfg.server.replace("ws://", "wss://"))
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    running.append(asyncio.create_task(link.run()))
    await asyncio.sleep(2.0)
    assert recorder.ups == 0
    assert standin.record.connections == 0
    log = (tmp_path / "events.jsonl").read_text()
    assert "certificate" in log.lower()
    await standin.stop()


async def test_plain_ws_for_local_servers(tmp_path: Path, token: str, running: list) -> None:
    standin = await start_standin(None, greeting_ms=0)
    cfg = make_config(tmp_path, standin.port, None, token)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    await up(link, recorder, running)
    info = await link.start_call()
    assert info.sample_rate == 24000
    assert await link.end_call()
    await standin.stop()


def test_client_refuses_unverified_tls_by_construction(tmp_path: Path, pki: TestPKI) -> None:
    from sesame_pi.link import make_ssl_context

    cfg = Config(server="wss://127.0.0.1:1/agent-service-0/v1/connect", ca_file=pki.ca_file)
    context = make_ssl_context(cfg)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


Script = Callable[[ServerConnection, str], Awaitable[None]]


async def serve_script(pki: TestPKI, script: Script) -> tuple[Server, int]:
    """A TLS server that greets as the service does (`initialize`), then runs `script`."""

    async def handler(ws: ServerConnection) -> None:
        session_id = str(uuid.uuid4())
        greeting = {"type": "initialize", "session_id": session_id, "content": {}}
        await ws.send(json.dumps(greeting))
        await script(ws, session_id)

    tls = server_tls(str(pki.cert_file), str(pki.key_file))
    server = await serve(handler, "127.0.0.1", 0, ssl=tls, ping_interval=None)
    return server, next(iter(server.sockets)).getsockname()[1]


@contextlib.asynccontextmanager
async def scripted_link(
    tmp_path: Path, pki: TestPKI, token: str, running: list, script: Script, **changes: object
) -> AsyncIterator[tuple[Link, Recorder]]:
    """A link up against a server running `script` (see serve_script), for the block."""
    server, port = await serve_script(pki, script)
    async with server:
        cfg = make_config(tmp_path, port, pki, token, **changes)
        recorder = Recorder()
        link = Link(cfg, TokenProvider(cfg), recorder)
        await up(link, recorder, running)
        yield link, recorder


def call_answer(
    session_id: str, message: dict[str, object], call_id: int = 7, sample_rate: int = 24000
) -> str:
    """The call_connect_response to `message`: call `call_id`, at `sample_rate`."""
    return json.dumps(
        {
            "session_id": session_id,
            "call_id": call_id,
            "request_id": message.get("request_id"),
            "type": "call_connect_response",
            "content": {"sample_rate": sample_rate},
        }
    )


async def answer_calls(
    ws: ServerConnection, session_id: str, skip_pong: Callable[[int], bool] = lambda n: False
) -> None:
    """Place calls and answer pings (except where `skip_pong(n)` says so), until the close."""
    pings = 0
    async for raw in ws:
        message = json.loads(raw)
        reply = {"session_id": session_id, "call_id": 7, "request_id": message.get("request_id")}
        if message["type"] == "call_connect":
            await ws.send(call_answer(session_id, message))
        elif message["type"] == "ping":
            pings += 1
            if not skip_pong(pings):
                await ws.send(json.dumps({**reply, "type": "ping_response", "content": "pong"}))


async def test_a_number_too_long_for_json_is_a_bad_frame_not_a_dead_link(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    async def script(ws: ServerConnection, session_id: str) -> None:
        await ws.send('{"type": "chat", "content": {"n": ' + "9" * 5000 + "}}")
        await answer_calls(ws, session_id)

    async with scripted_link(tmp_path, pki, token, running, script) as (link, recorder):
        info = await link.start_call()
        assert info.call_id == 7 and link.up and recorder.downs == []
        assert link.stats.bad_frames["not_json"] == 1


async def test_a_call_the_server_ends_as_it_connects_fails_at_once(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The server answers call_connect with call_disconnect (no request_id), or with an error
    that names no request. The first was ignored: the person waited the whole handshake
    timeout and heard "no call_connect_response in time". The second failed the call but kept
    the socket, where a call_connect_response arriving after it left a call up nobody heard."""
    connections = calls = 0

    async def script(ws: ServerConnection, session_id: str) -> None:
        nonlocal connections, calls
        connections += 1
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] != "call_connect":
                continue
            calls += 1
            if calls <= 2:  # numbered as the service numbers its own messages, then not at all
                ending = {"type": "call_disconnect", "content": {"reason": "preset_not_found"}}
                numbered = {"request_id": str(uuid.uuid4())} if calls == 1 else {}
                await ws.send(json.dumps({"session_id": session_id, **numbered, **ending}))
            else:
                error = {"type": "error", "content": {"code": 5000, "message": "busy"}}
                await ws.send(json.dumps({"session_id": session_id, **error}))
                content = {"sample_rate": 24000}
                late = {"type": "call_connect_response", "call_id": 8, "content": content}
                await ws.send(json.dumps({"session_id": session_id, **late}))

    async with scripted_link(tmp_path, pki, token, running, script, handshake_timeout_s=10.0) as (
        link,
        _recorder,
    ):
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(CallFailed, match="ended the call as it began") as failed:
                await link.start_call()
            assert "preset_not_found" in str(failed.value)
            assert time.monotonic() - started < 2.0, "not the handshake timeout"
        with pytest.raises(CallFailed, match="busy"):
            await link.start_call()
        assert connections == 1, "a refusal leaves the socket to the next call"
        # the socket the stray answer came on is closed; a fresh one opens
        await eventually(lambda: connections == 2, within_s=5.0)
        assert connections == 2


async def test_an_unusable_call_answer_fails_the_call_at_once(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """A call_connect_response with a sample rate we cannot play was refused as a bad frame:
    the person waited the whole handshake timeout, then heard there was no answer. The call
    fails at once, saying why, and the socket (where the server may count the call as up) is
    left for a fresh one."""
    connections = 0

    async def script(ws: ServerConnection, session_id: str) -> None:
        nonlocal connections
        connections += 1
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "call_connect":
                await ws.send(call_answer(session_id, message, sample_rate=1))

    async with scripted_link(tmp_path, pki, token, running, script, handshake_timeout_s=10.0) as (
        link,
        _recorder,
    ):
        started = time.monotonic()
        with pytest.raises(CallFailed, match=r"answer to the call was unusable .*sample_rate 1"):
            await link.start_call()
        assert time.monotonic() - started < 2.0, "not the handshake timeout"
        assert link.stats.bad_frames["bad_answer"] == 1
        await eventually(lambda: connections == 2, within_s=5.0)
        assert connections == 2, "the call's socket is closed and a fresh one opened"


async def test_what_comes_with_the_answer_belongs_to_the_call(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The service answers call_connect and speaks at once: the answer and the agent's first
    words, or its hang-up, arrive in one read. They were dispatched before the waiting
    start_call resumed, with no call on the socket yet: the words were dropped (the stand-in's
    greeting never played) and the hang-up was lost (the device went live on an ended call)."""
    calls = 0
    words = bytes(range(256)) * 15  # 80 ms at 24 kHz

    async def script(ws: ServerConnection, session_id: str) -> None:
        nonlocal calls
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] != "call_connect":
                continue
            calls += 1
            reply = {"session_id": session_id, "call_id": calls}
            content = {"sample_rate": 24000}
            frames = [
                {**reply, "request_id": message["request_id"], "type": "call_connect_response",
                 "content": content},
            ]  # fmt: skip
            if calls == 1:
                audio = {"audio_data": base64.b64encode(words).decode()}
                frames += [{**reply, "type": "audio", "content": audio}] * 3
            else:
                ending = {"reason": "preset_not_found"}
                frames.append({**reply, "request_id": str(uuid.uuid4()), "type": "call_disconnect",
                               "content": ending})  # fmt: skip
            for frame in frames:
                await ws.send(json.dumps(frame))

    async with scripted_link(tmp_path, pki, token, running, script) as (link, recorder):
        info = await link.start_call()
        assert info.call_id == 1
        for _ in range(50):
            if recorder.audio_bytes == 3 * len(words):
                break
            await asyncio.sleep(0.02)
        assert recorder.audio_bytes == 3 * len(words), "the first words were dropped"
        await link.end_call("user_request")
        assert await link.wait_up(5)
        downs = len(recorder.downs)
        with pytest.raises(CallFailed, match=r"ended the call as it began \(preset_not_found\)"):
            await link.start_call()
        await asyncio.sleep(0.3)
        assert link.up and len(recorder.downs) == downs, "a refusal leaves the socket up"


async def test_a_socket_ending_its_call_takes_no_new_one(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The server takes its time to answer call_disconnect. Meanwhile the link is not up for a
    new call: one placed then (a press after the device came back mid-hang-up) landed on the
    socket about to close, and the call went silent when it did."""
    connections = 0

    async def script(ws: ServerConnection, session_id: str) -> None:
        nonlocal connections
        connections += 1
        async for raw in ws:
            message = json.loads(raw)
            reply = {"session_id": session_id, "request_id": message.get("request_id")}
            if message["type"] == "call_connect":
                await ws.send(call_answer(session_id, message))
            elif message["type"] == "call_disconnect":
                await asyncio.sleep(1.0)
                await ws.send(json.dumps({**reply, "type": "call_disconnect_response"}))

    async with scripted_link(tmp_path, pki, token, running, script) as (link, _recorder):
        await link.start_call()
        ending = asyncio.create_task(link.end_call())
        await asyncio.sleep(0.3)
        assert not ending.done() and not link.up, "a socket ending its call is on its way out"
        assert await ending, "the answer came"
        assert await link.wait_up(10) and connections == 2
        info = await link.start_call()
        assert info.call_id == 7


async def test_a_link_that_dies_while_its_call_ends_is_an_outage(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The socket ending its call takes no new one, but it is not a planned close yet: the
    connection dropping in the wait for call_disconnect_response is an outage the session hears
    of (a hang-up in an outage rests offline), not a routine close."""

    async def script(ws: ServerConnection, session_id: str) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "call_connect":
                await ws.send(call_answer(session_id, message))
            elif message["type"] == "call_disconnect":
                ws.transport.abort()  # the network goes, no close frame
                return

    async with scripted_link(tmp_path, pki, token, running, script) as (link, recorder):
        await link.start_call()
        assert not await link.end_call(), "no answer came"
        for _ in range(50):
            if recorder.downs:
                break
            await asyncio.sleep(0.1)
        assert recorder.routine == [False], recorder.downs


async def test_a_call_the_server_ends_leaves_its_socket_to_no_other_call(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """After the server hung up, the socket stayed open and the next call (a press, or the redial
    after the length limit) went out on the session the server had just ended, with the last
    call's unanswered pings still counted. Each call gets a fresh socket, as after our own end."""
    connections = 0

    async def script(ws: ServerConnection, session_id: str) -> None:
        nonlocal connections
        connections += 1
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] != "call_connect":
                continue
            await ws.send(call_answer(session_id, message))
            await asyncio.sleep(0.2)
            ending = {"reason": "agent_hangup"}
            await ws.send(json.dumps({"session_id": session_id, "call_id": 7,
                                      "type": "call_disconnect", "content": ending}))  # fmt: skip

    async with scripted_link(tmp_path, pki, token, running, script) as (link, recorder):
        await link.start_call()
        for _ in range(50):
            if recorder.downs:
                break
            await asyncio.sleep(0.1)
        assert recorder.hangups == ["agent_hangup"]
        assert recorder.routine == [True], recorder.downs
        assert await link.wait_up(5)
        await link.start_call()
        assert connections == 2


async def test_a_service_that_greets_and_closes_with_an_auth_code_gets_renewals_backed_off(
    tmp_path: Path, pki: TestPKI, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshake is taken, `initialize` comes, then an auth close: the token is not good
    after all. The renewals that follow back off as after a refusal; the brief link up does not
    count as the service taking the token (only a link that stayed healthy does)."""
    monkeypatch.setattr(supervisor, "TOKEN_WAIT_POLL_S", 0.2)

    async def script(ws: ServerConnection, session_id: str) -> None:
        await ws.close(4401, "token revoked")

    server, port = await serve_script(pki, script)
    issuer = Issuer("test-api-key", "refresh-one")
    async with server:
        with TokenEndpoint(issuer) as endpoint:
            cfg = refreshing_config(tmp_path, port, pki, make_token(), endpoint)
            recorder = Recorder()
            running.append(asyncio.create_task(Link(cfg, TokenProvider(cfg), recorder).run()))
            await eventually(lambda: recorder.ups >= 2)
            await asyncio.sleep(1.0)  # (polls every 0.2 s: a renewal now would be a third)
    assert recorder.ups >= 2
    assert len(issuer.issued) == 1, "one renewal, then a wait (not three a minute)"


class Clumsy(Recorder):
    """A listener with a bug: the first audio it is handed raises."""

    def server_audio(self, pcm: bytes) -> None:
        if not self.audio_bytes:
            self.audio_bytes = len(pcm)
            raise RuntimeError("a bug in the audio path")
        super().server_audio(pcm)


async def test_a_fault_of_ours_is_logged_and_the_link_comes_back(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki, greeting_ms=200)
    cfg = make_config(tmp_path, standin.port, pki, token)
    recorder = Clumsy()
    link = Link(cfg, TokenProvider(cfg), recorder)
    await up(link, recorder, running)
    await link.start_call()
    async with asyncio.timeout(10):
        while recorder.ups < 2:  # the stand-in echoes what it hears: audio comes back
            with contextlib.suppress(LinkLost):  # (down for the moment of the reconnect)
                await link.send_audio(FRAME)
            await asyncio.sleep(0.02)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    (error,) = [line for line in lines if line["event"] == "link_error"]
    assert error["detail"] == "RuntimeError: a bug in the audio path"
    assert error["at"].startswith("test_link.py:") and error["level"] == "ERROR"
    assert recorder.downs == ["internal error (RuntimeError)"]
    await standin.stop()


async def test_a_new_token_the_watch_read_first_still_ends_the_auth_wait(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    good = make_token(uid="another-user")
    standin = await start_standin(pki, expect_token=good)
    cfg = make_config(tmp_path, standin.port, pki, token)
    recorder = Recorder()
    tokens = TokenProvider(cfg)
    link = Link(cfg, tokens, recorder)
    running.append(asyncio.create_task(link.run()))
    await asyncio.sleep(1.0)
    assert recorder.token_problems and recorder.ups == 0
    write_token(cfg.token_file, good)
    running.append(asyncio.create_task(tokens.watch(interval_s=0.05)))  # (the app's: 10 s)
    await asyncio.wait_for(recorder.up_event.wait(), 15)
    await standin.stop()


async def test_pongs_the_server_skips_now_and_then_do_not_add_up_to_a_dead_link(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    async def script(ws: ServerConnection, session_id: str) -> None:
        await answer_calls(ws, session_id, skip_pong=lambda n: n % 4 == 0)  # never two in a row

    async with scripted_link(
        tmp_path, pki, token, running, script, ping_interval_s=0.05, ping_misses_allowed=2
    ) as (link, recorder):
        await link.start_call()
        await asyncio.sleep(2.0)
        assert recorder.downs == [] and link.up
        assert link.stats.pongs >= 20 and link.stats.pings_sent - link.stats.pongs >= 5


async def test_a_server_that_greets_and_closes_at_once_gets_the_backoff(
    tmp_path: Path, pki: TestPKI, token: str, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closes like the service's idle close, but every second: routine only up to a limit."""
    monkeypatch.setattr(supervisor, "IDLE_CLOSES_PER_MINUTE", 2)

    async def script(ws: ServerConnection, session_id: str) -> None:
        await asyncio.sleep(1.05)
        await ws.close(1000, "bye")

    async with scripted_link(tmp_path, pki, token, running, script) as (_link, _recorder):
        await asyncio.sleep(4.0)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    downs = [line for line in lines if line["event"] == "link_down"]
    assert [d["routine"] for d in downs[:3]] == [True, True, False], downs
    assert "over 2 times a minute" in downs[2]["reason"]
    assert any(line["event"] == "link_retry" for line in lines), "the backoff, not at once"


class FaultyTokens(TokenProvider):
    """A token provider with a bug that shows once, before the first connect."""

    faults = 1

    async def valid_token(self) -> str:
        if self.faults:
            self.faults -= 1
            raise RuntimeError("a bug before the connect")
        return await super().valid_token()


async def test_a_fault_before_the_connect_is_logged_and_tried_again(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    standin = await start_standin(pki)
    cfg = make_config(tmp_path, standin.port, pki, token, backoff_max_s=1.0)
    recorder = Recorder()
    link = Link(cfg, FaultyTokens(cfg), recorder)
    await up(link, recorder, running, within_s=10)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    (error,) = [line for line in lines if line["event"] == "link_error"]
    assert error["detail"] == "RuntimeError: a bug before the connect"
    assert error["at"].startswith("test_link.py:") and error["retry_in_s"] == 1.0
    assert recorder.downs == ["internal error (RuntimeError)"]
    await standin.stop()


class FaultyAsItComesUp(Recorder):
    """A listener with a fault of ours in its first `link_up`."""

    def __init__(self) -> None:
        super().__init__()
        self.faults = 1

    def link_up(self) -> None:
        if self.faults:
            self.faults -= 1
            raise RuntimeError("a bug as the link came up")
        super().link_up()


async def test_a_fault_as_the_link_comes_up_closes_its_socket_and_the_link_comes_back(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The listener was told before the socket was served: a fault there left the socket open
    and unread, and the link "up", through the fault's whole sleep (`backoff_max_s`)."""
    standin = await start_standin(pki)
    cfg = make_config(tmp_path, standin.port, pki, token)
    recorder = FaultyAsItComesUp()
    link = Link(cfg, TokenProvider(cfg), recorder)
    running.append(asyncio.create_task(link.run()))
    await eventually(lambda: standin.record.connections == 1 and recorder.faults == 0)
    server = standin._server
    assert server is not None
    await eventually(lambda: not link.up and not server.connections, within_s=1.0)
    await asyncio.wait_for(recorder.up_event.wait(), 10)  # after the fault's sleep: back
    assert link.up and recorder.ups == 1 and standin.record.connections == 2
    faults = logged(tmp_path)
    assert [f["detail"] for f in faults] == ["RuntimeError: a bug as the link came up"]
    await standin.stop()


async def test_a_press_while_a_connect_attempt_fails_skips_the_backoff_after_it(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The backoff sleep cleared the wake flag as it began: a press (or the network coming
    back) during the connect attempt before it was lost, and the person waited the sleep."""
    standin = await start_standin(pki)
    port = standin.port
    await standin.stop()  # nothing listens: each attempt fails at once
    cfg = make_config(tmp_path, port, pki, token, backoff_initial_s=30.0, backoff_max_s=30.0)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    slept: list[float] = []
    plain_sleep = link._sleep

    async def sleep_after_a_press(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:
            link.wake()  # as if pressed while the attempt before this sleep was under way
        await plain_sleep(seconds)

    link._sleep = sleep_after_a_press  # type: ignore[method-assign]
    running.append(asyncio.create_task(link.run()))
    await eventually(lambda: len(slept) >= 2, within_s=5.0)
    assert slept[0] >= 15.0, "a long backoff was due"


async def test_a_fault_in_the_calls_pings_is_said_at_once_and_the_call_still_ends(
    tmp_path: Path, pki: TestPKI, token: str, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ping task's fault was kept until the call ended, then raised inside the socket's
    clean-up: the waiters were never released and the link sat out the longest backoff."""
    from sesame_pi import protocol

    def broken_ping(*_args: object) -> str:
        raise RuntimeError("a bug in the ping")

    monkeypatch.setattr(protocol, "ping", broken_ping)
    standin = await start_standin(pki)
    cfg = make_config(tmp_path, standin.port, pki, token, backoff_max_s=30.0)
    recorder = Recorder()
    link = Link(cfg, TokenProvider(cfg), recorder)
    await up(link, recorder, running)
    await link.start_call()

    await eventually(lambda: len(logged(tmp_path, "task_failed")) == 1, within_s=2.0)
    [fault] = logged(tmp_path, "task_failed")
    assert fault["detail"] == "RuntimeError: a bug in the ping" and fault["task"] == "call-pings"
    assert await asyncio.wait_for(link.end_call(), 5), "the call's end was answered"
    await eventually(lambda: recorder.ups == 2, within_s=5.0)  # a fresh socket, not a backoff
    assert len(logged(tmp_path, "task_failed")) == 1 and not logged(tmp_path)
    await standin.stop()


class FaultyAtTokenNews(Recorder):
    """A listener with a fault of ours where it hears a new token is needed."""

    def token_needed(self, detail: str) -> None:
        super().token_needed(detail)
        raise RuntimeError("a bug where the token news lands")


async def test_a_listener_fault_at_the_token_news_leaves_the_link_waiting_for_a_token(
    tmp_path: Path, pki: TestPKI, token: str, running: list
) -> None:
    """The news is told from inside the link's own fault handler: a fault there ended the link
    task for good, and a new token never brought the device back."""
    standin = await start_standin(pki, expect_token="the-right-one" + token[-5:])
    cfg = make_config(tmp_path, standin.port, pki, token)
    recorder = FaultyAtTokenNews()
    link = Link(cfg, TokenProvider(cfg), recorder)
    task = asyncio.create_task(link.run())
    running.append(task)
    await eventually(lambda: bool(recorder.token_problems))
    await asyncio.sleep(0.2)
    assert not task.done(), "the link task lives on"
    standin = await back_with_a_new_token(standin, pki, cfg, recorder)
    faults = logged(tmp_path)
    assert faults and faults[0]["told"] == "token_needed", faults
    await standin.stop()
