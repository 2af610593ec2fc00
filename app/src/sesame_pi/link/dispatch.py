"""One connection's receive path with no I/O: a frame in, effects out.

`decode` turns a frame into a message (counting what it refuses); `dispatch` updates the
connection's protocol state (the call, the requests waiting for answers, the pings in flight) and
returns what the channel must then do: send a reply, hand audio to the speaker, report a hangup,
close the socket. Nothing here awaits or touches a socket, so the fuzz tests feed it directly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .. import protocol as p
from ..logs import event
from .errors import LinkLost
from .stats import LinkStats


@dataclass
class ChannelState:
    """One open socket's protocol state after `initialize`."""

    session_id: str
    call_id: p.CallId | None = None
    pending: dict[str, asyncio.Future[p.ServerMessage]] = field(default_factory=dict)
    pings_out: dict[str, float] = field(default_factory=dict)
    hung_up: str | None = None  # the reason the server gave when it last ended a call

    @property
    def envelope(self) -> p.Envelope:
        return p.Envelope(self.session_id, self.call_id)

    def expect(self, request_id: str) -> asyncio.Future[p.ServerMessage]:
        """A future for the answer to `request_id` (call_connect, call_disconnect)."""
        future: asyncio.Future[p.ServerMessage] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        return future

    def resolve(self, request_id: str | None, message: p.ServerMessage) -> bool:
        # An error without request_id answers the oldest request we are waiting on; so does the
        # server ending a call that has not begun (a refusal while it connects: ignored, it
        # cost the person the whole handshake timeout and a misleading reason).
        # (The service numbers a call_disconnect of its own: its id is not one of ours.)
        # A call answer without one, usable or not, answers the call being placed, if one is;
        # a disconnect answer without one, the hang-up in a call (the protocol's answers carry
        # the request's id, but a good answer without it left the call abandoned after the
        # whole handshake timeout, and each hang-up waited its whole timeout).
        placing = self.call_id is None
        answers_placing = isinstance(message, p.BadAnswer | p.CallConnectResponse) and placing
        answers_hang_up = isinstance(message, p.CallDisconnectResponse) and not placing
        unaddressed = (
            request_id is None
            and (isinstance(message, p.Error) or answers_placing or answers_hang_up)
        ) or (isinstance(message, p.CallDisconnect) and placing)
        if request_id is not None and request_id in self.pending:
            future = self.pending.pop(request_id)
        elif unaddressed and self.pending:
            future = self.pending.pop(next(iter(self.pending)))
        else:
            return False
        if not future.done():
            future.set_result(message)
            if isinstance(message, p.CallConnectResponse):
                # The call is up now, not when its waiter resumes a few loop turns later: the
                # frames read meanwhile (the agent's first words, a hang-up) belong to it.
                self.call_id = message.call_id
        return True

    def fail_pending(self, reason: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(LinkLost(reason))
        self.pending.clear()


@dataclass(frozen=True)
class Reply:
    """A frame to send back (a ping_response)."""

    frame: str


@dataclass(frozen=True)
class Heard:
    """Agent audio for the speaker."""

    pcm: bytes


@dataclass(frozen=True)
class HungUp:
    """The server ended the call."""

    reason: str


@dataclass(frozen=True)
class CloseAsked:
    """The server asked us to close the socket (an error with close_connection)."""

    reason: str


Effect = Reply | Heard | HungUp | CloseAsked


def decode(frame: str | bytes, stats: LinkStats, max_bytes: int) -> p.ServerMessage | None:
    """The frame as a message, or None if it was refused (and counted)."""
    stats.frames_in += 1
    try:
        return p.decode(frame, max_bytes)
    except p.FrameError as exc:
        stats.bad(exc.kind, exc.detail)
        return None


def log_server_error(message: p.Error, stats: LinkStats, now: float) -> None:
    """A server `error` as a `server_error` line, within the stats' limit and cut short."""
    unsaid = stats.server_error(now)
    if unsaid is not None:
        event(
            "server_error",
            logging.WARNING,
            code=message.code,
            message=message.message[:200],
            detail=message.detail[:200],
            close_connection=message.close_connection,
            unlogged_before=unsaid,
        )


def dispatch(
    state: ChannelState, message: p.ServerMessage, stats: LinkStats, now: float
) -> list[Effect]:
    """Apply one server message to the connection's state; what the channel must do next."""
    match message:
        case p.Audio(pcm=pcm):
            stats.audio_bytes_in += len(pcm)
            if state.call_id is not None:
                return [Heard(pcm)]
        case p.PingResponse(request_id=rid):
            sent = state.pings_out.pop(rid, None) if rid else None
            if sent is not None:
                stats.pongs += 1
                stats.last_rtt_ms = round((now - sent) * 1000, 1)
                # An answer says the link lives: the older pings still unanswered were skipped,
                # not a dead link, which is several missed in a row.
                for older in [r for r, at in state.pings_out.items() if at <= sent]:
                    del state.pings_out[older]
        case p.ServerPing(request_id=rid):
            stats.server_pings += 1
            return [Reply(p.ping_response(state.envelope, rid))]
        case p.CallConnectResponse(request_id=rid) | p.CallDisconnectResponse(request_id=rid):
            if not state.resolve(rid, message):
                stats.bad("unexpected_response", type(message).__name__)
        case p.BadAnswer(detail=detail, request_id=rid):
            stats.bad("bad_answer", detail)
            state.resolve(rid, message)  # the placement fails with it now, not by timeout
        case p.Error(request_id=rid):
            log_server_error(message, stats, now)
            state.resolve(rid, message)  # unresolved during a call: a warning; the call goes on
            if message.close_connection:
                return [CloseAsked(f"server error {message.code}: {message.message}")]
        case p.CallDisconnect(reason=reason, request_id=rid):
            if not state.resolve(rid, message) and state.call_id is not None:
                state.call_id = None
                state.hung_up = reason or "no reason given"
                return [HungUp(reason)]
        case p.Initialize():
            stats.bad("unexpected_initialize", "initialize on an open session")
        case p.Chat(message_count=count):
            stats.ignore("chat")
            if count:
                event("chat", messages=count)
        case p.Ignored(type=kind):
            stats.ignore(kind)
        case p.Unknown(type=kind):
            stats.ignore(kind)
            stats.bad("unknown_type", kind)
    return []
