"""A local Sesame-compatible server: the demo's peer, the self-test's and the tests'.

It is strict where the real service is known to be strict (the handshake headers,
`settings.character` rather than `preset`, base64 16-bit PCM, the `call_id` type we issued) and
records every violation, so tests can assert the client is a well-behaved peer. Fault switches make
it misbehave on purpose: drop the socket after N seconds, refuse auth, delay every frame, or mix
junk frames into the call. It can also play two of the service's own habits: closing a socket that
places no call (`idle_close_s`, the web configuration's inactive_close) and ending a call at a
duration limit (`call_limit_s`, a server call_disconnect with call_duration_limit_exceeded).
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import http
import json
import math
import random
import ssl
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

PATH = "/agent-service-0/v1/connect"
SERVER_RATE = 24000
CHUNK_MS = 40
MODES = ("echo", "tone", "silence", "speech")
ANONYMOUS_REFUSAL = "Access denied. Anonymous users not allowed."
CALL_LIMIT_REASON = "call_duration_limit_exceeded"

JUNK_FRAMES: tuple[str | bytes, ...] = (
    "this is not json",
    "[1, 2, 3]",
    '{"type": "mystery_event", "content": {}}',
    '{"content": "no type at all"}',
    '{"type": "audio", "content": {"audio_data": "%%% not base64 %%%"}}',
    '{"type": "audio", "content": {"audio_data": "AAEC"}}',  # 3 bytes: odd-length PCM
    '{"type": "audio", "content": {}}',
    '{"type": "call_connect_response", "content": {}}',
    b"\xff\xfe binary garbage",
    '{"type": "home_state", "content": {"anything": true}}',
)


def _expired(token: str) -> bool:
    """A JWT whose `exp` is past (the signature is not checked: the stand-in trusts any issuer).
    Anything that is not a JWT with an `exp` is let through, as the stand-in always has."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return False
    exp = claims.get("exp")
    return isinstance(exp, int | float) and exp < time.time()


@dataclass
class StandinOptions:
    mode: str = "echo"
    expect_token: str | None = None
    refuse_auth: bool = False
    drop_after_s: float | None = None
    delay_ms: float = 0.0
    junk: bool = False
    greeting_ms: int = 400
    server_pings: bool = False
    idle_close_s: float | None = None  # close a socket that has had no call for this long
    call_limit_s: float | None = None  # end each call after this long, as a duration limit
    speech: bytes = b""  # mode "speech": this 24 kHz s16le mono PCM, in real time, over and over


@dataclass
class StandinRecord:
    """What the stand-in saw; tests read it, the CLI prints it."""

    connections: int = 0
    auth_refusals: int = 0
    calls: int = 0
    call_connects: list[dict[str, Any]] = field(default_factory=list)
    audio_frames_in: int = 0
    audio_bytes_in: int = 0
    audio_frame_sizes: Counter[int] = field(default_factory=Counter)
    audio_bytes_out: int = 0
    pings: int = 0
    server_pings_answered: int = 0
    location_states: int = 0
    disconnects: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    live_calls: int = 0
    idle_closes: int = 0
    limit_ends: int = 0
    last_call_connect_at: float | None = None
    first_audio_at: float | None = None
    mic_pcm: bytearray = field(default_factory=bytearray, repr=False)
    keep_mic_bytes: int = 0


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Nearest-sample rate change of s16le mono; crude but cheap and loop-free in Python code."""
    if src_rate == dst_rate or not pcm:
        return pcm
    src = array.array("h")
    src.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    count = len(src) * dst_rate // src_rate
    step = src_rate / dst_rate
    indexes = [min(int(i * step), len(src) - 1) for i in range(count)]
    return array.array("h", map(src.__getitem__, indexes)).tobytes()


def tone(freq: float, ms: int, rate: int = SERVER_RATE, level: float = 0.3) -> bytes:
    """A sine tone, s16le mono (generated once per call; not in any real-time path)."""
    count = rate * ms // 1000
    amp = int(32767 * level)
    samples = array.array(
        "h", (int(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(count))
    )
    return samples.tobytes()


class _Peer:
    """One client connection: the protocol state the stand-in enforces."""

    def __init__(self, standin: Standin, ws: ServerConnection) -> None:
        self.standin = standin
        self.ws = ws
        self.session_id = str(uuid.uuid4())
        self.call_id: int | None = None
        self.mic_rate = 16000
        self.outbox: asyncio.Queue[tuple[float, str | bytes]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Task[None] | None = None
        self.limited_call: int | None = None  # the call we ended at its limit

    @property
    def record(self) -> StandinRecord:
        return self.standin.record

    def violation(self, text: str) -> None:
        self.record.violations.append(text)
        self.standin.log("standin_violation", detail=text)

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        frame = json.dumps(message) if isinstance(message, dict) else message
        due = time.monotonic() + self.standin.options.delay_ms / 1000
        self.outbox.put_nowait((due, frame))

    def envelope(self, kind: str, content: Any, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": kind,
            "session_id": self.session_id,
            "call_id": self.call_id,
            "content": content,
        }
        if request_id is not None:
            body["request_id"] = request_id
        return body

    async def sender(self) -> None:
        while True:
            due, frame = await self.outbox.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.ws.send(frame)

    async def serve(self) -> None:
        self.tasks.append(asyncio.create_task(self.sender()))
        self.send(
            self.envelope("initialize", {"session_id": self.session_id, "webrtc_ice_servers": []})
        )
        self.send(self.envelope("webrtc_config", {"ice_servers": []}))
        self.send(self.envelope("chat", {"messages": []}))
        self.arm_idle_close()
        try:
            async for frame in self.ws:
                self.handle(frame)
        except ConnectionClosed:
            pass
        finally:
            self.disarm_idle_close()
            if self.call_id is not None:
                self.record.live_calls -= 1
            for task in self.tasks:
                task.cancel()

    def handle(self, frame: str | bytes) -> None:
        try:
            message = json.loads(frame)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.violation("client sent a frame that is not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.violation("client sent a frame without a type")
            return
        kind = message["type"]
        if message.get("session_id") != self.session_id:
            self.violation(f"{kind}: session_id is not the one from initialize")
        handler = getattr(self, f"on_{kind}", None)
        if handler is None:
            self.violation(f"unexpected message type {kind!r}")
            return
        handler(message)

    def check_call_id(self, message: dict[str, Any]) -> bool:
        value = message.get("call_id")
        if self.call_id is None:
            if value is not None and value == self.limited_call:
                return False  # was on its way when we ended that call: not the client's fault
            self.violation(f"{message['type']} before a call exists")
            return False
        if type(value) is not type(self.call_id) or value != self.call_id:
            self.violation(f"{message['type']}: call_id {value!r} is not the number we issued")
            return False
        return True

    def on_client_location_state(self, message: dict[str, Any]) -> None:
        self.record.location_states += 1
        content = message.get("content")
        if not isinstance(content, dict) or "timezone" not in content:
            self.violation("client_location_state without timezone")
        if "request_id" in message:
            self.violation("client_location_state carries a request_id")

    def on_call_connect(self, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        content = message.get("content")
        if not isinstance(request_id, str) or not isinstance(content, dict):
            self.violation("call_connect without request_id or content")
            return
        self.record.call_connects.append(content)
        settings = content.get("settings")
        if isinstance(settings, dict) and "preset" in settings and "character" not in settings:
            error = {
                "code": 5000,
                "message": "Preset name was not found.",
                "detail": "",
                "close_connection": False,
            }
            self.send(self.envelope("error", error, request_id))
            return
        if not isinstance(settings, dict) or settings.get("character") not in ("Maya", "Miles"):
            self.violation("call_connect without settings.character Maya or Miles")
        rate = content.get("sample_rate")
        if (
            not isinstance(rate, int)
            or isinstance(rate, bool)
            or rate not in (8000, 16000, 24000, 48000)
        ):
            self.violation(f"call_connect sample_rate {rate!r} is not an integer PCM rate")
            rate = 16000
        if content.get("audio_codec") != "none":
            self.violation("call_connect audio_codec is not 'none'")
        if self.call_id is not None:
            self.violation("call_connect while a call is live on this socket")
        self.mic_rate = rate
        self.call_id = random.randint(10_000, 9_999_999)
        self.record.calls += 1
        self.record.live_calls += 1
        self.disarm_idle_close()
        self.record.last_call_connect_at = time.monotonic()
        self.standin.log("standin_call_connect", call_id=self.call_id, sample_rate=rate)
        answer = {"call_id": self.call_id, "sample_rate": SERVER_RATE, "audio_codec": "none"}
        body = self.envelope("call_connect_response", answer, request_id)
        self.send(body)
        self.start_call_tasks()

    def arm_idle_close(self) -> None:
        """Start counting the socket's time without a call (at connect and after each call)."""
        seconds = self.standin.options.idle_close_s
        if seconds is not None:
            self.disarm_idle_close()
            self.idle_timer = asyncio.get_running_loop().call_later(seconds, self.idle_close)

    def disarm_idle_close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def idle_close(self) -> None:
        self.idle_timer = None
        self.record.idle_closes += 1
        self.standin.log("standin_idle_close", after_s=self.standin.options.idle_close_s)
        self.closing = asyncio.create_task(self.ws.close(1000, "inactive_close"))

    async def limit_call(self, seconds: float) -> None:
        """End this call from the server's side, as the service does at its duration limit."""
        call_id = self.call_id
        await asyncio.sleep(seconds)
        if self.call_id is None or self.call_id != call_id:
            return  # that call already ended
        self.record.limit_ends += 1
        self.standin.log("standin_call_limit", call_id=call_id, after_s=seconds)
        content = {"reason": CALL_LIMIT_REASON}
        self.send(self.envelope("call_disconnect", content, str(uuid.uuid4())))
        self.limited_call = call_id
        self.record.live_calls -= 1
        self.call_id = None
        self.arm_idle_close()

    def start_call_tasks(self) -> None:
        options = self.standin.options
        if options.call_limit_s is not None:
            self.tasks.append(asyncio.create_task(self.limit_call(options.call_limit_s)))
        if options.greeting_ms:
            self.send(self.audio_message(tone(523.25, options.greeting_ms)))
        if options.mode in ("tone", "silence", "speech"):
            self.tasks.append(asyncio.create_task(self.speak(options.mode)))
        if options.drop_after_s is not None:
            self.tasks.append(asyncio.create_task(self.drop_after(options.drop_after_s)))
        if options.junk:
            self.tasks.append(asyncio.create_task(self.send_junk()))
        if options.server_pings:
            self.tasks.append(asyncio.create_task(self.ping_client()))

    def audio_message(self, pcm: bytes) -> dict[str, Any]:
        self.record.audio_bytes_out += len(pcm)
        return self.envelope("audio", {"audio_data": base64.b64encode(pcm).decode("ascii")})

    async def speak(self, mode: str) -> None:
        """Agent audio in real time: a tone one second on, one off, silence, or the speech PCM."""
        chunk = (
            tone(440.0, CHUNK_MS) if mode == "tone" else bytes(SERVER_RATE * CHUNK_MS // 1000 * 2)
        )
        quiet = bytes(len(chunk))
        speech = self.standin.options.speech if mode == "speech" else b""
        start = time.monotonic()
        sent = 0
        while self.call_id is not None:
            if speech:
                at = sent * len(chunk) % len(speech)
                piece = (speech[at : at + len(chunk)] + speech)[: len(chunk)]
            else:
                speaking = (sent * CHUNK_MS // 1000) % 2 == 0
                piece = chunk if speaking else quiet
            self.send(self.audio_message(piece))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * CHUNK_MS / 1000 - time.monotonic()))

    async def drop_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.standin.log("standin_drop", after_s=seconds)
        self.ws.transport.abort()

    async def send_junk(self) -> None:
        index = 0
        while self.call_id is not None:
            await asyncio.sleep(0.2)
            self.send(JUNK_FRAMES[index % len(JUNK_FRAMES)])
            index += 1

    async def ping_client(self) -> None:
        while self.call_id is not None:
            await asyncio.sleep(1.0)
            self.send(self.envelope("ping", "ping", str(uuid.uuid4())))

    def on_ping(self, message: dict[str, Any]) -> None:
        self.record.pings += 1
        if message.get("content") != "ping" or not isinstance(message.get("request_id"), str):
            self.violation("ping without content 'ping' or request_id")
        if self.check_call_id(message):
            self.send(self.envelope("ping_response", "pong", message["request_id"]))

    def on_ping_response(self, message: dict[str, Any]) -> None:
        self.record.server_pings_answered += 1

    def on_audio(self, message: dict[str, Any]) -> None:
        if not self.check_call_id(message):
            return
        if "request_id" in message:
            self.violation("audio carries a request_id")
        content = message.get("content")
        data = content.get("audio_data") if isinstance(content, dict) else None
        try:
            pcm = base64.b64decode(data if isinstance(data, str) else "!", validate=True)
        except ValueError:
            self.violation("audio_data is not base64")
            return
        if len(pcm) % 2:
            self.violation("audio_data is not whole 16-bit samples")
            return
        record = self.record
        record.audio_frames_in += 1
        record.audio_bytes_in += len(pcm)
        record.audio_frame_sizes[len(pcm)] += 1
        if record.first_audio_at is None:
            record.first_audio_at = time.monotonic()
        if len(record.mic_pcm) < record.keep_mic_bytes:
            record.mic_pcm += pcm
        if self.standin.options.mode == "echo":
            self.send(self.audio_message(resample(pcm, self.mic_rate, SERVER_RATE)))

    def on_call_disconnect(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        reason = content.get("reason") if isinstance(content, dict) else None
        if not isinstance(reason, str) or not isinstance(message.get("request_id"), str):
            self.violation("call_disconnect without reason or request_id")
        self.check_call_id(message)
        self.record.disconnects.append(str(reason))
        self.standin.log("standin_call_disconnect", reason=reason)
        self.send(self.envelope("call_disconnect_response", {}, message.get("request_id")))
        if self.call_id is not None:
            self.record.live_calls -= 1
        self.call_id = None
        self.arm_idle_close()


class Standin:
    """The server. `await start()` binds; `record` says what happened; `await stop()` ends it."""

    def __init__(self, options: StandinOptions | None = None, log_events: bool = False) -> None:
        self.options = options or StandinOptions()
        if self.options.mode not in MODES:
            raise ValueError(f"mode {self.options.mode!r} is not one of {', '.join(MODES)}")
        self.record = StandinRecord()
        self.log_events = log_events
        self._server: Server | None = None
        self.port = 0

    def log(self, name: str, **fields: Any) -> None:
        if self.log_events:
            line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": name, **fields}
            print(json.dumps(line), flush=True)

    def _refuse(self, status: http.HTTPStatus, text: str) -> Response:
        self.record.auth_refusals += 1
        self.log("standin_refused", status=int(status), reason=text)
        headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
        return Response(int(status), status.phrase, headers, text.encode())

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        if url.path != PATH:
            headers = Headers([("Content-Type", "text/plain")])
            return Response(404, "Not Found", headers, b"no such endpoint\n")
        query = dict(urllib.parse.parse_qsl(url.query))
        token = query.get("id_token", "")
        if not token:
            return self._refuse(http.HTTPStatus.UNAUTHORIZED, "Missing id_token.")
        if self.options.refuse_auth:
            return self._refuse(http.HTTPStatus.FORBIDDEN, ANONYMOUS_REFUSAL)
        if self.options.expect_token is not None and token != self.options.expect_token:
            return self._refuse(http.HTTPStatus.UNAUTHORIZED, "Invalid or expired token.")
        if _expired(token):  # by the server's clock, whatever the client's says
            return self._refuse(http.HTTPStatus.UNAUTHORIZED, "Invalid or expired token.")
        problems = []
        if query.get("character") not in ("Maya", "Miles"):
            problems.append("character query parameter is not Maya or Miles")
        if not query.get("client_name"):
            problems.append("client_name query parameter missing")
        try:
            context = json.loads(query.get("usercontext", ""))
            if not isinstance(context, dict) or "timezone" not in context:
                problems.append("usercontext has no timezone")
        except json.JSONDecodeError:
            problems.append("usercontext is not JSON")
        if not request.headers.get("Origin"):
            problems.append("no Origin header")
        if (
            len(request.headers.get_all("Upgrade")) != 1
            or len(request.headers.get_all("Sec-WebSocket-Key")) != 1
        ):
            headers = Headers([("Content-Type", "text/plain")])
            return Response(426, "Upgrade Required", headers, b"duplicate handshake headers\n")
        for problem in problems:
            self.record.violations.append(problem)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.record.connections += 1
        self.log("standin_connection", number=self.record.connections)
        await _Peer(self, ws).serve()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> int:
        self._server = await serve(
            self._handler,
            host,
            port,
            ssl=tls,
            process_request=self._check_request,
            max_size=1_048_576,
            compression=None,
            ping_interval=None,
        )
        sockets = list(self._server.sockets)
        self.port = int(sockets[0].getsockname()[1])
        self.log(
            "standin_listening",
            host=host,
            port=self.port,
            tls=tls is not None,
            mode=self.options.mode,
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None


def server_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
