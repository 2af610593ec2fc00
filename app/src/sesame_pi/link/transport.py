"""The transport: one WebSocket to the service, behind the four calls the channel makes.

The channel speaks the Sesame protocol over any `Transport` (send a text frame, receive a frame,
close politely, abort). Everything websockets-specific stays here: the connect with its headers,
TLS and limits, and turning websockets' close exceptions into a `Closed` the channel can read.
The service's web app now negotiates WebRTC media on this same socket; such a path would add a
media transport beside this one and leave the channel's calls and the supervisor as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from ..config import Config
from ..logs import event
from ..tls import client_context
from .errors import AuthRefused, LinkLost

AUTH_STATUS = frozenset({401, 403})
AUTH_CLOSE_CODES = frozenset({1008, 4001, 4003, 4401, 4403})
OVERSIZE_CLOSE_CODE = 1009  # "message too big": we refused a frame over max_frame_bytes
CLOSE_WAIT_S = 2.0


class CloseKind(StrEnum):
    CLEAN = "clean"  # a normal close handshake (1000/1001) that we did not start
    AUTH = "auth"
    OVERSIZE = "oversize"
    LOST = "lost"


@dataclass(frozen=True)
class Closed:
    """How the transport ended, in words the channel and the person can use."""

    kind: CloseKind
    text: str
    code: int | None = None


class TransportClosed(Exception):
    def __init__(self, closed: Closed) -> None:
        super().__init__(closed.text)
        self.closed = closed


class Transport(Protocol):
    """What the channel needs from a socket."""

    async def send(self, frame: str) -> None: ...
    async def receive(self) -> str | bytes: ...
    async def close(self, reason: str) -> None: ...
    def abort(self) -> None: ...


def closed_by(exc: ConnectionClosed) -> Closed:
    """Name a websockets close: auth codes, our own oversize refusal, clean, or lost."""
    code = exc.rcvd.code if exc.rcvd is not None else None
    if code in AUTH_CLOSE_CODES:
        return Closed(CloseKind.AUTH, f"auth close {code}", code)
    # 1009 either way: websockets sends it itself when it refuses a frame over max_size.
    if any(f is not None and f.code == OVERSIZE_CLOSE_CODE for f in (exc.sent, exc.rcvd)):
        return Closed(CloseKind.OVERSIZE, "oversize frame refused", OVERSIZE_CLOSE_CODE)
    if isinstance(exc, ConnectionClosedOK):
        return Closed(CloseKind.CLEAN, "closed by server", code)
    return Closed(CloseKind.LOST, f"closed: {exc}", code)


class WebSocketTransport:
    """A websockets client connection as a Transport."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: str) -> None:
        """May wait in drain() while the socket is full; the caller bounds it."""
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            raise TransportClosed(closed_by(exc)) from None

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed as exc:
            raise TransportClosed(closed_by(exc)) from None

    async def close(self, reason: str) -> None:
        """Close politely if the socket lets us, within a bound; otherwise abort it."""
        try:
            await asyncio.wait_for(self.ws.close(1000, reason), CLOSE_WAIT_S)
        except Exception:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once: a close handshake cannot get through a dead link."""
        self.ws.transport.abort()


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
    return client_context(cfg.ca_file)


async def open_websocket(
    cfg: Config, ssl_context: ssl.SSLContext | None, token: str
) -> WebSocketTransport:
    """Connect with the headers and limits the service expects; AuthRefused or LinkLost if not."""
    url = build_url(cfg, token)
    try:
        ws = await connect(
            url,
            origin=websockets.Origin(cfg.origin),
            user_agent_header=cfg.user_agent,
            ssl=ssl_context,
            open_timeout=cfg.handshake_timeout_s,
            ping_interval=cfg.idle_ping_interval_s,
            ping_timeout=cfg.idle_ping_interval_s * 2,
            close_timeout=2.0,
            max_size=cfg.max_frame_bytes,
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
    return WebSocketTransport(ws)
