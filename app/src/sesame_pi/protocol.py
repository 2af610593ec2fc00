"""The Sesame agent's WebSocket messages as data, with encode and decode; nothing else.

Pure functions only, so the decoder can be fuzzed. The service adds fields and message types freely:
unknown types decode to `Unknown`, extra fields are ignored, and a frame we cannot use raises
`FrameError` with a short `kind` the receiver counts. `call_id` keeps the JSON value the server
sent (a number today) so it goes back with the same JSON type.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

CallId = int | float | str
DEFAULT_SERVER_RATE = 24000

# Types we know and deliberately ignore: they never change the session state.
IGNORED_TYPES = frozenset(
    {
        "webrtc_config",
        "home_state",
        "agent",
        "TimespanSessionEvent",
        "client_location_state",
    }
)


class FrameError(ValueError):
    """A frame we could not use. `kind` is a short counter name; the text never holds audio."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def new_request_id() -> str:
    """A fresh request id, as the web client makes them."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------- server -> client messages


@dataclass(frozen=True)
class Initialize:
    session_id: str


@dataclass(frozen=True)
class CallConnectResponse:
    call_id: CallId
    sample_rate: int
    audio_codec: str
    request_id: str | None


@dataclass(frozen=True)
class BadAnswer:
    """An answer to our call_connect that cannot be used (no call id, an impossible rate): the
    placement fails with it at once, instead of waiting out the handshake for an answer that
    already came."""

    detail: str
    request_id: str | None


@dataclass(frozen=True)
class PingResponse:
    request_id: str | None


@dataclass(frozen=True)
class ServerPing:
    """A JSON ping from the server (none captured so far); we answer ping_response."""

    request_id: str | None


@dataclass(frozen=True)
class Audio:
    pcm: bytes = field(repr=False)


@dataclass(frozen=True)
class Chat:
    message_count: int


@dataclass(frozen=True)
class Error:
    code: int | str | None
    message: str
    detail: str
    close_connection: bool
    request_id: str | None


@dataclass(frozen=True)
class CallDisconnect:
    """The server ends the call (user_request, shutdown, call_duration_limit_exceeded, ...)."""

    reason: str
    request_id: str | None


@dataclass(frozen=True)
class CallDisconnectResponse:
    request_id: str | None


@dataclass(frozen=True)
class Ignored:
    type: str


@dataclass(frozen=True)
class Unknown:
    type: str


ServerMessage = (
    Initialize
    | CallConnectResponse
    | BadAnswer
    | PingResponse
    | ServerPing
    | Audio
    | Chat
    | Error
    | CallDisconnect
    | CallDisconnectResponse
    | Ignored
    | Unknown
)


def _content_dict(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    content = msg.get("content")
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise FrameError("bad_field", f"{kind} content is not an object")
    return content


def _request_id(msg: dict[str, Any]) -> str | None:
    value = msg.get("request_id")
    return value if isinstance(value, str) else None


def _call_id(value: Any) -> CallId | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        return value
    return None


def decode_pcm(data: Any, max_bytes: int | None = None) -> bytes:
    """Base64 (standard alphabet, padded) of 16-bit PCM; refuse anything else."""
    if not isinstance(data, str):
        raise FrameError("missing_field", "audio without audio_data string")
    if max_bytes is not None and len(data) > max_bytes * 4 // 3 + 4:
        raise FrameError("oversize", f"audio_data of {len(data)} characters")
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("bad_base64", "audio_data is not valid base64") from None
    if len(pcm) % 2:
        raise FrameError("odd_pcm", f"{len(pcm)} bytes is not whole 16-bit samples")
    return pcm


def _parse_json(frame: str | bytes) -> Any:
    if isinstance(frame, bytes | bytearray | memoryview):
        try:
            text = bytes(frame).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("not_json", "binary frame is not UTF-8 JSON") from None
    else:
        text = frame
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # (ValueError: also an integer over 4300 digits)
        raise FrameError("not_json", "frame is not JSON") from None


def _call_answer(msg: dict[str, Any], request_id: str | None) -> CallConnectResponse:
    content = _content_dict(msg, "call_connect_response")
    call_id = _call_id(msg.get("call_id"))
    if call_id is None:
        call_id = _call_id(content.get("call_id"))
    if call_id is None:
        raise FrameError("missing_field", "call_connect_response without call_id")
    rate = content.get("sample_rate", DEFAULT_SERVER_RATE)
    if rate is None:
        rate = DEFAULT_SERVER_RATE
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 8000 <= rate <= 96000:
        raise FrameError("bad_field", f"call_connect_response sample_rate {rate!r}")
    codec = content.get("audio_codec", "none")
    return CallConnectResponse(call_id, int(rate), str(codec), request_id)


def decode(frame: str | bytes, max_audio_bytes: int | None = None) -> ServerMessage:
    """One server frame (text, or JSON in a binary frame) into a message, or FrameError."""
    msg = _parse_json(frame)
    if not isinstance(msg, dict):
        raise FrameError("not_object", f"frame is a JSON {type(msg).__name__}, not an object")
    kind = msg.get("type")
    if not isinstance(kind, str) or not kind:
        raise FrameError("missing_type", "frame has no type")
    request_id = _request_id(msg)

    if kind == "audio":
        content = _content_dict(msg, kind)
        return Audio(decode_pcm(content.get("audio_data"), max_audio_bytes))
    if kind == "ping_response":
        return PingResponse(request_id)
    if kind == "ping":
        return ServerPing(request_id)
    if kind == "initialize":
        content = _content_dict(msg, kind)
        session_id = msg.get("session_id") or content.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise FrameError("missing_field", "initialize without session_id")
        return Initialize(session_id)
    if kind == "call_connect_response":
        try:
            return _call_answer(msg, request_id)
        except FrameError as exc:
            return BadAnswer(exc.detail, request_id)
    if kind == "error":
        content = _content_dict(msg, kind)
        code = content.get("code")
        return Error(
            code=code if isinstance(code, int | str) and not isinstance(code, bool) else None,
            message=str(content.get("message", "")),
            detail=str(content.get("detail", "")),
            close_connection=content.get("close_connection") is True,
            request_id=request_id,
        )
    if kind == "call_disconnect":
        content = _content_dict(msg, kind)
        return CallDisconnect(str(content.get("reason", "unknown")), request_id)
    if kind == "call_disconnect_response":
        return CallDisconnectResponse(request_id)
    if kind == "chat":
        chat = msg.get("content")
        messages = chat.get("messages") if isinstance(chat, dict) else None
        return Chat(len(messages) if isinstance(messages, list) else 0)
    if kind in IGNORED_TYPES or kind.startswith("webrtc_"):
        return Ignored(kind)
    return Unknown(kind)


# ---------------------------------------------------------------- client -> server messages


@dataclass(frozen=True)
class Envelope:
    """What every client message carries besides its type and content."""

    session_id: str | None
    call_id: CallId | None = None


def _frame(
    kind: str,
    envelope: Envelope,
    content: Any,
    request_id: str | None = None,
    call_id: CallId | None = None,
) -> str:
    body: dict[str, Any] = {
        "type": kind,
        "session_id": envelope.session_id,
        "call_id": call_id if call_id is not None else envelope.call_id,
    }
    if request_id is not None:
        body["request_id"] = request_id
    body["content"] = content
    return json.dumps(body, separators=(",", ":"))


def client_location_state(envelope: Envelope, timezone: str) -> str:
    content = {"latitude": 0, "longitude": 0, "address": "", "timezone": timezone}
    return _frame("client_location_state", Envelope(envelope.session_id, None), content)


@dataclass(frozen=True)
class CallSettings:
    """What call_connect declares about us."""

    sample_rate: int
    character: str
    client_name: str
    user_agent: str
    language: str
    reconnect: bool = False


# What a browser's enumerateDevices() reports for the chosen defaults; public clients send both.
MEDIA_DEVICES: tuple[dict[str, str], ...] = (
    {
        "deviceId": "default",
        "kind": "audioinput",
        "label": "Default - Microphone",
        "groupId": "default",
    },
    {
        "deviceId": "default",
        "kind": "audiooutput",
        "label": "Default - Speaker",
        "groupId": "default",
    },
)


def call_connect(envelope: Envelope, settings: CallSettings, request_id: str) -> str:
    content = {
        "sample_rate": settings.sample_rate,
        "audio_codec": "none",
        "reconnect": settings.reconnect,
        "is_private": False,
        "client_name": settings.client_name,
        "settings": {"character": settings.character},
        "client_metadata": {
            "language": settings.language,
            "user_agent": settings.user_agent,
            "mobile_browser": False,
            "media_devices": [dict(device) for device in MEDIA_DEVICES],
        },
    }
    return _frame("call_connect", Envelope(envelope.session_id, None), content, request_id)


def ping(envelope: Envelope, request_id: str) -> str:
    return _frame("ping", envelope, "ping", request_id)


def ping_response(envelope: Envelope, request_id: str | None) -> str:
    return _frame("ping_response", envelope, "pong", request_id)


def audio(envelope: Envelope, pcm: bytes) -> str:
    data = base64.b64encode(pcm).decode("ascii")
    return _frame("audio", envelope, {"audio_data": data})


def call_disconnect(envelope: Envelope, reason: str, request_id: str) -> str:
    return _frame("call_disconnect", envelope, {"reason": reason}, request_id)
