"""One WebSocket to the Sesame service, kept warm and brought back by itself.

The supervisor (`Link.run`) connects with a fresh token, waits for `initialize`, serves the socket
until it closes, and reconnects with tenacity's exponential backoff with jitter. A connection that
stayed healthy resets the backoff; a planned close after a call reconnects at once. Auth refusals
are never retried in a loop: the token provider gets a chance to refresh, and otherwise we wait
for a new token at a bounded rate.

Calls ride on the current connection: `start_call` sends client_location_state and call_connect and
waits for call_connect_response (or `error`); while a call is up we ping every `ping_interval_s`
and treat several missing ping_responses as a dead link. That count runs on its own beat: a peer
that stops acknowledging fills the TCP send buffer, and a send then waits in websockets' drain()
until TCP gives up. So no send is awaited without a bound; one that stalls past the dead-link
deadline is itself a dead link, and we abort the transport so the supervisor reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

import tenacity
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from . import protocol as p
from .auth import TokenError, TokenProvider
from .config import Config
from .logs import event

AUTH_STATUS = frozenset({401, 403})
AUTH_CLOSE_CODES = frozenset({1008, 4001, 4003, 4401, 4403})
PLANNED_CLOSE = "planned"
OVERSIZE_CLOSE_CODE = 1009  # "message too big": we refused a frame over max_frame_bytes
IGNORED_NAMES_MAX = 16  # distinct ignored type names counted by name; the rest count as "other"
IGNORED_NAME_CHARS = 64
CLOSE_WAIT_S = 2.0


class LinkLost(Exception):
    """The socket is gone or never came up; the supervisor retries."""


class AuthRefused(Exception):
    """The service refused our credentials; retrying the same token would only hammer it."""


class CallFailed(Exception):
    """The service answered call_connect with an error, or not at all."""

    def __init__(self, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LinkListener(Protocol):
    """What the link tells the session. Called on the event loop."""

    def link_up(self) -> None: ...
    def link_down(self, reason: str) -> None: ...
    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...
    def token_needed(self, detail: str) -> None: ...


@dataclass(frozen=True)
class CallInfo:
    call_id: p.CallId
    sample_rate: int
    audio_codec: str


def build_url(cfg: Config, token: str) -> str:
    """The connect URL with the query parameters public clients send."""
    parts = urllib.parse.urlsplit(cfg.server)
    query = urllib.parse.parse_qsl(parts.query)
    usercontext = json.dumps({"timezone": cfg.timezone}, separators=(",", ":"))
    query += [
        ("id_token", token),
        ("client_name", cfg.client_name),
        ("usercontext", usercontext),
        ("character", cfg.character),
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def make_ssl_context(cfg: Config) -> ssl.SSLContext | None:
    """Certificate verification always on; a custom CA file may be added, never a bypass."""
    if urllib.parse.urlsplit(cfg.server).scheme != "wss":
        return None
    context = ssl.create_default_context()
    if cfg.ca_file is not None:
        context.load_verify_locations(cafile=str(cfg.ca_file))
    return context


class LinkStats:
    """Counters, logged as events rather than per-frame lines."""

    def __init__(self) -> None:
        self.connects = 0
        self.frames_in = 0
        self.frames_out = 0
        self.audio_bytes_in = 0
        self.audio_bytes_out = 0
        self.pings_sent = 0
        self.pongs = 0
        self.server_pings = 0
        self.bad_frames: collections.Counter[str] = collections.Counter()
        self.ignored: collections.Counter[str] = collections.Counter()
        self.last_rtt_ms: float | None = None

    def ignore(self, kind: str) -> None:
        """Count an ignored message by type, bounded: the server chooses the names, not us."""
        name = kind[:IGNORED_NAME_CHARS]
        if name not in self.ignored and len(self.ignored) >= IGNORED_NAMES_MAX:
            name = "other"
        self.ignored[name] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "audio_bytes_in": self.audio_bytes_in,
            "audio_bytes_out": self.audio_bytes_out,
            "pings_sent": self.pings_sent,
            "ping_responses": self.pongs,
            "server_pings": self.server_pings,
            "bad_frames": dict(self.bad_frames),
            "ignored": dict(self.ignored),
            "ping_rtt_ms": self.last_rtt_ms,
        }


class _Connection:
    """One open socket after `initialize`: its session, pending requests and call."""

    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.call_id: p.CallId | None = None
        self.pending: dict[str, asyncio.Future[p.ServerMessage]] = {}
        self.pings_out: dict[str, float] = {}
        self.close_reason = ""
        self.opened = time.monotonic()

    @property
    def envelope(self) -> p.Envelope:
        return p.Envelope(self.session_id, self.call_id)

    def expect(self, request_id: str) -> asyncio.Future[p.ServerMessage]:
        future: asyncio.Future[p.ServerMessage] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        return future

    def resolve(self, request_id: str | None, message: p.ServerMessage) -> bool:
        if request_id is not None and request_id in self.pending:
            future = self.pending.pop(request_id)
        elif request_id is None and isinstance(message, p.Error) and self.pending:
            # An error without request_id answers the oldest request we are waiting on.
            future = self.pending.pop(next(iter(self.pending)))
        else:
            return False
        if not future.done():
            future.set_result(message)
        return True

    def fail_pending(self, reason: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(LinkLost(reason))
        self.pending.clear()


class Link:
    """The supervised connection. Only the session calls it."""

    def __init__(
        self,
        cfg: Config,
        tokens: TokenProvider,
        listener: LinkListener,
        sample_rate: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.tokens = tokens
        self.listener = listener
        self.stats = LinkStats()
        self.sample_rate = sample_rate or cfg.capture_rate
        self._ssl = make_ssl_context(cfg)
        self._conn: _Connection | None = None
        self._up = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._call_pending = False  # a call is live or being resumed: retry faster
        self._auth_attempts: collections.deque[float] = collections.deque()
        self._warned_kinds: set[str] = set()
        self._ping_task: asyncio.Task[None] | None = None
        self._down_reported = False  # the listener already heard this outage

    # ------------------------------------------------------------ supervisor

    @property
    def up(self) -> bool:
        return self._conn is not None

    def wake(self) -> None:
        """Skip the current backoff sleep (a person pressed the button)."""
        self._wake.set()

    def set_call_pending(self, pending: bool) -> None:
        """While a call waits to resume, cap the backoff low: a person is waiting."""
        self._call_pending = pending

    async def wait_up(self, within_s: float) -> bool:
        self.wake()
        try:
            await asyncio.wait_for(self._up.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        conn = self._conn
        if conn is not None:
            conn.close_reason = "stopping"
            await self._close(conn.ws, "client stopping")

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        cap = min(self.cfg.backoff_max_s, 1.5) if self._call_pending else self.cfg.backoff_max_s
        initial = self.cfg.backoff_initial_s
        strategy = tenacity.wait_exponential(multiplier=initial, max=cap) + tenacity.wait_random(
            0, initial
        )
        return min(float(strategy(state)), cap)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        event(
            "link_retry",
            attempt=state.attempt_number,
            wait_s=round(wait, 3),
            reason=str(error) if error else "",
        )

    async def run(self) -> None:
        """Keep a link up until `stop()`. Never returns early on network faults."""
        while not self._stopping:
            retrying = tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception_type(LinkLost),
                wait=self._backoff,
                sleep=self._sleep,
                before_sleep=self._before_sleep,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._connect_and_serve()
            except LinkLost:
                continue  # stopping while a retry was pending
            except _HealthyEnd:
                continue  # fresh backoff for the next outage
            except AuthRefused as exc:
                await self._wait_for_new_token(str(exc))
            except TokenError as exc:
                await self._wait_for_new_token(str(exc))

    async def _wait_for_new_token(self, detail: str) -> None:
        """No hammering: at most `auth_retry_per_minute` attempts, and only with hope."""
        self.listener.token_needed(detail)
        while not self._stopping:
            now = time.monotonic()
            while self._auth_attempts and now - self._auth_attempts[0] > 60:
                self._auth_attempts.popleft()
            if len(self._auth_attempts) < self.cfg.auth_retry_per_minute:
                try:
                    changed = await self.tokens.after_auth_refusal()
                except TokenError:
                    changed = False
                if changed:
                    self._auth_attempts.append(time.monotonic())
                    event("auth_retry", attempts_last_minute=len(self._auth_attempts))
                    return
            await self._sleep(5.0)

    async def _connect_and_serve(self) -> None:
        if self._stopping:
            return
        token = await self.tokens.valid_token()
        try:
            conn = await self.open_connection(token)
        except LinkLost as exc:
            self._report_down(str(exc))  # e.g. no service at boot: the session goes offline
            raise
        finally:
            del token
        self._conn = conn
        self._up.set()
        self.stats.connects += 1
        event("link_up", session_id=conn.session_id, connects=self.stats.connects)
        self._down_reported = False
        self.listener.link_up()
        try:
            await self._receive(conn)
        finally:
            self._conn = None
            self._up.clear()
            await self._stop_pinging()
            conn.fail_pending(conn.close_reason or "link closed")
        healthy = time.monotonic() - conn.opened >= self.cfg.healthy_after_s
        reason = conn.close_reason or "connection closed"
        event("link_down", reason=reason, healthy=healthy, **self.stats.as_dict())
        self._report_down(reason)
        if self._stopping:
            return
        if reason == PLANNED_CLOSE or healthy:
            raise _HealthyEnd
        if reason.startswith("auth"):
            raise AuthRefused(reason)
        raise LinkLost(reason)

    def _report_down(self, reason: str) -> None:
        """Tell the listener once per outage, whether a socket closed or never opened."""
        if self._down_reported:
            return
        self._down_reported = reason != PLANNED_CLOSE  # a planned close reconnects at once
        self.listener.link_down(reason)

    async def open_connection(self, token: str) -> _Connection:
        """Connect and wait for `initialize`; the caller owns the returned connection."""
        url = build_url(self.cfg, token)
        try:
            ws = await connect(
                url,
                origin=websockets.Origin(self.cfg.origin),
                user_agent_header=self.cfg.user_agent,
                ssl=self._ssl,
                open_timeout=self.cfg.handshake_timeout_s,
                ping_interval=self.cfg.idle_ping_interval_s,
                ping_timeout=self.cfg.idle_ping_interval_s * 2,
                close_timeout=2.0,
                max_size=self.cfg.max_frame_bytes,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode("utf-8", "replace")[:200] if exc.response.body else ""
            if status in AUTH_STATUS:
                event("auth_refused", logging.ERROR, status=status, body=body)
                raise AuthRefused(f"auth refused: HTTP {status} {body}".strip()) from None
            raise LinkLost(f"HTTP {status} {body}".strip()) from None
        except InvalidURI:
            raise LinkLost("server URL is not valid") from None
        except ssl.SSLCertVerificationError as exc:
            raise LinkLost(f"TLS certificate not trusted: {exc.verify_message}") from None
        except (OSError, InvalidHandshake, TimeoutError, EOFError) as exc:
            raise LinkLost(f"connect failed: {type(exc).__name__}: {exc}") from None
        finally:
            del url
        try:
            session_id = await asyncio.wait_for(
                self._await_initialize(ws), self.cfg.handshake_timeout_s
            )
        except (TimeoutError, ConnectionClosed) as exc:
            await self._close(ws, "no initialize")
            reason = "no initialize from server" if isinstance(exc, TimeoutError) else "closed"
            if isinstance(exc, ConnectionClosed) and self._is_auth_close(exc):
                raise AuthRefused(
                    f"auth refused: close {exc.rcvd.code if exc.rcvd else ''}"
                ) from None
            raise LinkLost(reason) from None
        return _Connection(ws, session_id)

    async def _await_initialize(self, ws: ClientConnection) -> str:
        while True:
            frame = await ws.recv()
            message = self._decode(frame)
            if isinstance(message, p.Initialize):
                return message.session_id
            if isinstance(message, p.Error):
                event("server_error", code=message.code, message=message.message)

    @staticmethod
    def _is_auth_close(exc: ConnectionClosed) -> bool:
        return exc.rcvd is not None and exc.rcvd.code in AUTH_CLOSE_CODES

    @staticmethod
    def _is_oversize_close(exc: ConnectionClosed) -> bool:
        """1009 either way: websockets sends it itself when it refuses a frame over max_size."""
        frames = (exc.sent, exc.rcvd)
        return any(frame is not None and frame.code == OVERSIZE_CLOSE_CODE for frame in frames)

    # ------------------------------------------------------------ receive path

    def _decode(self, frame: str | bytes) -> p.ServerMessage | None:
        self.stats.frames_in += 1
        try:
            return p.decode(frame, self.cfg.max_frame_bytes)
        except p.FrameError as exc:
            self._count_bad(exc.kind, exc.detail)
            return None

    def _count_bad(self, kind: str, detail: str) -> None:
        self.stats.bad_frames[kind] += 1
        if kind not in self._warned_kinds:
            self._warned_kinds.add(kind)
            event("bad_frame", logging.WARNING, kind=kind, detail=detail[:200])

    async def _receive(self, conn: _Connection) -> None:
        try:
            async for frame in conn.ws:
                message = self._decode(frame)
                if message is not None:
                    await self._dispatch(conn, message)
        except LinkLost as exc:  # a reply (ping_response) could not be sent
            if not conn.close_reason:
                conn.close_reason = str(exc)
        except ConnectionClosed as exc:
            if not conn.close_reason:
                if self._is_auth_close(exc):
                    conn.close_reason = f"auth close {exc.rcvd.code if exc.rcvd else ''}"
                elif self._is_oversize_close(exc):
                    conn.close_reason = "oversize frame refused"
                else:
                    conn.close_reason = f"closed: {exc}"
        if not conn.close_reason:
            conn.close_reason = "closed by server"

    async def _dispatch(self, conn: _Connection, message: p.ServerMessage) -> None:
        match message:
            case p.Audio(pcm=pcm):
                self.stats.audio_bytes_in += len(pcm)
                if conn.call_id is not None:
                    self.listener.server_audio(pcm)
            case p.PingResponse(request_id=rid):
                sent = conn.pings_out.pop(rid, None) if rid else None
                if sent is not None:
                    self.stats.pongs += 1
                    self.stats.last_rtt_ms = round((time.monotonic() - sent) * 1000, 1)
            case p.ServerPing(request_id=rid):
                self.stats.server_pings += 1
                await self._send(conn, p.ping_response(conn.envelope, rid))
            case p.CallConnectResponse(request_id=rid) | p.CallDisconnectResponse(request_id=rid):
                if not conn.resolve(rid, message):
                    self._count_bad("unexpected_response", type(message).__name__)
            case p.Error(request_id=rid):
                event(
                    "server_error",
                    logging.WARNING,
                    code=message.code,
                    message=message.message,
                    detail=message.detail[:200],
                    close_connection=message.close_connection,
                )
                resolved = conn.resolve(rid, message)
                if message.close_connection:
                    conn.close_reason = f"server error {message.code}: {message.message}"
                    await self._close(conn.ws, "server asked to close")
                elif not resolved and conn.call_id is not None:
                    pass  # a warning during a call; the call goes on
            case p.CallDisconnect(reason=reason, request_id=rid):
                if conn.resolve(rid, message):
                    return
                if conn.call_id is not None:
                    event("server_hangup", reason=reason)
                    conn.call_id = None
                    await self._stop_pinging()
                    self.listener.server_hangup(reason)
            case p.Initialize():
                self._count_bad("unexpected_initialize", "initialize on an open session")
            case p.Chat(message_count=count):
                self.stats.ignore("chat")
                if count:
                    event("chat", messages=count)
            case p.Ignored(type=kind):
                self.stats.ignore(kind)
            case p.Unknown(type=kind):
                self.stats.ignore(kind)
                self._count_bad("unknown_type", kind)

    # ------------------------------------------------------------ send path

    @property
    def _dead_after_s(self) -> float:
        """How long a call's link may go unanswered before we call it dead."""
        return self.cfg.ping_interval_s * (self.cfg.ping_misses_allowed + 1)

    async def _write(self, conn: _Connection, frame: str, within_s: float) -> bool:
        """Send one frame; False if the socket did not drain in time (the frame stays queued).

        Cancelling websockets' send() in drain() is safe: the frame is already in the transport.
        """
        drained = True
        try:
            async with asyncio.timeout(within_s):
                await conn.ws.send(frame)
        except TimeoutError:
            drained = False
        except ConnectionClosed:
            raise LinkLost("connection closed while sending") from None
        self.stats.frames_out += 1
        return drained

    async def _send(self, conn: _Connection, frame: str) -> None:
        """Send, bounded: a socket that stays full past the dead-link deadline is a dead link."""
        limit = self._dead_after_s
        if not await self._write(conn, frame, limit):
            self._declare_dead(conn, f"send stalled for {limit:g} s", stalled_s=limit)
            raise LinkLost("connection stalled while sending")

    def _declare_dead(self, conn: _Connection, detail: str, **fields: object) -> None:
        """Abort the transport: a close handshake cannot get through, and TCP takes ~15 min."""
        event("link_dead", logging.WARNING, detail=detail, **fields)
        if not conn.close_reason:
            conn.close_reason = f"dead link: {detail}"
        conn.ws.transport.abort()

    @staticmethod
    async def _close(ws: ClientConnection, reason: str) -> None:
        """Close politely if the socket lets us, within a bound; otherwise abort it."""
        try:
            await asyncio.wait_for(ws.close(1000, reason), CLOSE_WAIT_S)
        except Exception:
            ws.transport.abort()

    # ------------------------------------------------------------ calls

    def _current(self) -> _Connection:
        if self._conn is None:
            raise LinkLost("link is down")
        return self._conn

    async def start_call(self, reconnect: bool = False) -> CallInfo:
        """Place a call on the open socket; return what the server announced."""
        conn = self._current()
        await self._send(conn, p.client_location_state(conn.envelope, self.cfg.timezone))
        request_id = p.new_request_id()
        answer = conn.expect(request_id)
        settings = p.CallSettings(
            sample_rate=self.sample_rate,
            character=self.cfg.character,
            client_name=self.cfg.client_name,
            user_agent=self.cfg.user_agent,
            language=self.cfg.language,
            reconnect=reconnect and self.cfg.reconnect_flag,
        )
        await self._send(conn, p.call_connect(conn.envelope, settings, request_id))
        try:
            message = await asyncio.wait_for(answer, self.cfg.handshake_timeout_s)
        except TimeoutError:
            conn.pending.pop(request_id, None)
            raise CallFailed("no call_connect_response in time") from None
        if isinstance(message, p.Error):
            raise CallFailed(message.message or "call refused", message.code)
        if not isinstance(message, p.CallConnectResponse):
            raise CallFailed(f"unexpected answer {type(message).__name__}")
        conn.call_id = message.call_id
        self._ping_task = asyncio.create_task(self._ping_loop(conn), name="call-pings")
        return CallInfo(message.call_id, message.sample_rate, message.audio_codec)

    async def send_audio(self, pcm: bytes) -> None:
        conn = self._current()
        if conn.call_id is None:
            raise LinkLost("no call on this link")
        await self._send(conn, p.audio(conn.envelope, pcm))
        self.stats.audio_bytes_out += len(pcm)

    async def end_call(self, reason: str = "user_request") -> bool:
        """Send call_disconnect, wait a bounded time for the answer, then start a fresh socket.

        The web client closes its socket after each call; so do we, and the supervisor opens a new
        warm one at once, so the next call starts on a clean session.
        """
        conn = self._conn
        if conn is None or conn.call_id is None:
            return False
        await self._stop_pinging()
        request_id = p.new_request_id()
        answer = conn.expect(request_id)
        answered = False
        try:
            await self._send(conn, p.call_disconnect(conn.envelope, reason, request_id))
            await asyncio.wait_for(answer, self.cfg.disconnect_timeout_s)
            answered = True
        except (TimeoutError, LinkLost):
            conn.pending.pop(request_id, None)
        conn.call_id = None
        if not conn.close_reason:
            conn.close_reason = PLANNED_CLOSE
        await self._close(conn.ws, "call ended")
        return answered

    async def _stop_pinging(self) -> None:
        task, self._ping_task = self._ping_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ping_loop(self, conn: _Connection) -> None:
        """JSON pings during a call, as the web app sends them; silence means a dead link.

        The beat never waits on the socket: a ping that cannot drain stays queued and counts as
        unanswered, so a full send buffer (a peer that stopped acknowledging) is found in time.
        """
        interval = self.cfg.ping_interval_s
        while conn.call_id is not None:
            missed = len(conn.pings_out)
            if missed > self.cfg.ping_misses_allowed:
                self._declare_dead(conn, f"{missed} pings unanswered", missed_pings=missed)
                return
            beat = time.monotonic()
            request_id = p.new_request_id()
            conn.pings_out[request_id] = beat
            try:
                await self._write(conn, p.ping(conn.envelope, request_id), interval)
            except LinkLost:
                return
            self.stats.pings_sent += 1
            await asyncio.sleep(max(0.0, beat + interval - time.monotonic()))


class _HealthyEnd(Exception):
    """The connection ended after a healthy period or by plan: reconnect with a fresh backoff."""
