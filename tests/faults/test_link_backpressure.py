"""The dead-link check must not depend on the socket accepting data.

In-process reproduction of what test_network's partition and half-open tests see through real
namespaces: a peer that stops reading (its window closes, as when packets stop being acknowledged).
Without uplink audio the missed-ping check fires on time; with audio streaming, the send buffer
fills, every send waits in websockets' drain(), and the ping loop waits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from faults.ledger import LEDGER
from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config
from sesame_pi.link import Link, LinkDown
from support.credentials import make_token, write_token

SMALL_BUFFER = 4096  # bytes: fills within a second of 16 kHz audio
DEFAULTS = Config()
PING_DEADLINE_S = DEFAULTS.ping_interval_s * (DEFAULTS.ping_misses_allowed + 1)


class Downs:
    """The link's listener; keeps when the link went down and why."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self.down = asyncio.Event()

    def link_up(self) -> None: ...
    def link_down(self, down: LinkDown) -> None:
        self.seen.append((time.monotonic(), down.detail))
        self.down.set()

    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...
    def token_needed(self, detail: str) -> None: ...


async def peer_goes_silent(ws: ServerConnection) -> None:
    """Answer like the service until the call is up, then stop reading for good."""
    await ws.send(json.dumps({"type": "initialize", "session_id": "s1", "content": {}}))
    async for raw in ws:
        message = json.loads(raw)
        if message["type"] == "call_connect":
            answer = {"call_id": 7, "sample_rate": 24000}
            reply = {"type": "call_connect_response", "request_id": message["request_id"]}
            await ws.send(json.dumps({**reply, "content": answer}))
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
            ws.transport.pause_reading()
            await ws.wait_closed()  # never reads again; ends when the client gives up


async def time_to_link_down(tmp_path: Path, stream_audio: bool, wait_s: float) -> float | None:
    async with serve(peer_goes_silent, "127.0.0.1", 0, close_timeout=1) as server:
        port = server.sockets[0].getsockname()[1]
        token_file = write_token(tmp_path / "token", LEDGER.add(make_token()))
        cfg = Config(server=f"ws://127.0.0.1:{port}/x", token_file=token_file, log_file=None)
        tokens = TokenProvider(cfg)
        tokens.load()
        downs = Downs()
        link = Link(cfg, tokens, downs)
        supervisor = asyncio.create_task(link.run())
        uplink = None
        try:
            assert await link.wait_up(5)
            await link.start_call()
            channel: Any = link._channel  # the one socket option the test needs: a small buffer
            sock = channel.transport.ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
            started = time.monotonic()

            async def stream() -> None:
                while True:  # what Session._uplink does: 20 ms of 16 kHz PCM at a time
                    await link.send_audio(bytes(640))
                    await asyncio.sleep(0.02)

            if stream_audio:
                uplink = asyncio.create_task(stream())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(downs.down.wait(), wait_s)
            return downs.seen[0][0] - started if downs.seen else None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.stop(), 3)
            for task in (uplink, supervisor):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task


async def test_silent_peer_is_found_by_pings_when_nothing_else_is_sent(tmp_path: Path) -> None:
    took = await time_to_link_down(tmp_path, stream_audio=False, wait_s=PING_DEADLINE_S + 3)
    assert took is not None and took <= PING_DEADLINE_S + 1.0, took


async def test_silent_peer_is_found_by_pings_while_audio_streams(
    tmp_path: Path, figures: Any
) -> None:
    took = await time_to_link_down(tmp_path, stream_audio=True, wait_s=PING_DEADLINE_S + 3)
    figures("silent peer, audio streaming -> link_down", took if took else "never", "s")
    assert took is not None and took <= PING_DEADLINE_S + 1.0, took
