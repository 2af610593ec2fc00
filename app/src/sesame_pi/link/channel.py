"""One connection's protocol: the handshake, calls, pings and bounded sends over a Transport.

`handshake` opens a transport and waits for `initialize`. A `Channel` then serves that socket until
it closes: frames go through the pure `dispatch`, and the channel carries out its effects. Calls
ride on it: `start_call` sends client_location_state and call_connect and waits for
call_connect_response (or `error`); while a call is up we ping every `ping_interval_s` and treat
several missing ping_responses as a dead link. That count runs on its own beat: a peer that stops
acknowledging fills the TCP send buffer, and a send then waits in drain() until TCP gives up. So no
send is awaited without a bound; one that stalls past the dead-link deadline is itself a dead
link, and we abort the transport so the supervisor reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from .. import protocol as p
from ..config import Config
from ..logs import event
from ..tasks import say_if_failed
from .dispatch import (
    ChannelState,
    CloseAsked,
    Effect,
    Heard,
    HungUp,
    Reply,
    decode,
    dispatch,
    log_server_error,
)
from .errors import (
    IDLE_CLOSE,
    PLANNED_CLOSE,
    AuthRefused,
    CallFailed,
    End,
    LinkLost,
    report_fault,
)
from .stats import LinkStats
from .transport import CloseKind, Transport, TransportClosed, make_ssl_context, open_websocket

# A clean close of a call-less socket that lived at least this long is the service's routine
# inactive_close (about 15 s in its web configuration); sooner, it may be a refusal: back off.
IDLE_CLOSE_MIN_S = 1.0


class CallListener(Protocol):
    """What a channel tells about the call on it (the session, through the Link)."""

    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...


@dataclass(frozen=True)
class CallInfo:
    call_id: p.CallId
    sample_rate: int
    audio_codec: str


async def _await_initialize(transport: Transport, stats: LinkStats, max_bytes: int) -> str:
    while True:
        message = decode(await transport.receive(), stats, max_bytes)
        if isinstance(message, p.Initialize):
            return message.session_id
        if isinstance(message, p.Error):
            log_server_error(message, stats, time.monotonic())


async def handshake(
    cfg: Config, ssl_context: ssl.SSLContext | None, token: str, stats: LinkStats
) -> tuple[Transport, str]:
    """Connect and wait for `initialize`: the open transport and the session id."""
    transport = await open_websocket(cfg, ssl_context, token)
    try:
        session_id = await asyncio.wait_for(
            _await_initialize(transport, stats, cfg.max_frame_bytes), cfg.handshake_timeout_s
        )
    except (TimeoutError, TransportClosed) as exc:
        await transport.close("no initialize")
        if isinstance(exc, TransportClosed) and exc.closed.kind is CloseKind.AUTH:
            raise AuthRefused(f"auth refused: close {exc.closed.code}") from None
        reason = "no initialize from server" if isinstance(exc, TimeoutError) else "closed"
        raise LinkLost(reason) from None
    return transport, session_id


async def check_handshake(cfg: Config, token: str) -> str:
    """Connect, wait for `initialize` and close again (`sesame-pi check`); the session id."""
    transport, session_id = await handshake(cfg, make_ssl_context(cfg), token, LinkStats())
    await transport.close("check done")
    return session_id


class Channel:
    """One open socket after `initialize`: serves it, and carries calls and pings on it."""

    def __init__(
        self,
        cfg: Config,
        transport: Transport,
        session_id: str,
        stats: LinkStats,
        listener: CallListener,
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.state = ChannelState(session_id)
        self.stats = stats
        self.listener = listener
        self.opened = time.monotonic()
        self._end: tuple[End, str] | None = None
        self._retiring = False  # its call is being ended: it takes no new one
        self._placing = False  # a start_call waits for its answer (or has it, not yet resumed)
        self.ended = asyncio.Event()  # serve() has returned
        self._ping_task: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return self.state.session_id

    @property
    def end_kind(self) -> End | None:
        return self._end[0] if self._end is not None else None

    @property
    def in_call(self) -> bool:
        return self.state.call_id is not None

    @property
    def closing(self) -> bool:
        """This socket is on its way out (we or the server began to close it): no new calls."""
        return self._retiring or self._end is not None or self.ended.is_set()

    def _ending(self, kind: End, reason: str) -> None:
        """The first reason for the end wins (a close we start, then its echo, is one end)."""
        if self._end is None:
            self._end = (kind, reason)

    # ------------------------------------------------------------ receive path

    async def serve(self) -> tuple[End, str]:
        """Receive until the socket closes; how it ended and the reason link_down reports."""
        try:
            while True:
                message = decode(
                    await self.transport.receive(), self.stats, self.cfg.max_frame_bytes
                )
                if message is not None:
                    effects = dispatch(self.state, message, self.stats, time.monotonic())
                    for effect in effects:
                        await self._carry_out(effect)
        except LinkLost as exc:  # a reply (ping_response) could not be sent
            self._ending(End.LOST, str(exc))
        except TransportClosed as exc:
            self._ending(*self._read_close(exc.closed.kind, exc.closed.text))
        except Exception as exc:  # a fault of ours, not the network's: never a silent dead link
            reason = report_fault(exc, "the link reconnects; please report this line")
            self._ending(End.LOST, reason)
            with contextlib.suppress(Exception):
                await self.transport.close("client error")
        finally:
            await self._stop_pinging()
            ending = self._end or (End.LOST, "link closed")
            self.state.fail_pending(ending[1])
            self.ended.set()
        return ending

    def _read_close(self, kind: CloseKind, text: str) -> tuple[End, str]:
        if kind is CloseKind.AUTH:
            return End.AUTH, text
        lived = time.monotonic() - self.opened
        if kind is CloseKind.CLEAN and not self.in_call and lived >= IDLE_CLOSE_MIN_S:
            return End.IDLE, IDLE_CLOSE
        return End.LOST, text

    async def _carry_out(self, effect: Effect) -> None:
        match effect:
            case Heard(pcm=pcm):
                self.listener.server_audio(pcm)
            case Reply(frame=frame):
                await self._send(frame)
            case HungUp(reason=reason):
                event("server_hangup", reason=reason)
                await self._stop_pinging()
                if self._placing:  # ended as it began: start_call fails, the socket stays
                    self.listener.server_hangup(reason)  # (as for a refusal) and no offline
                    return
                self._retiring = True  # the next call goes on a fresh socket, as after ours
                self.listener.server_hangup(reason)
                await self.close(End.PLANNED, PLANNED_CLOSE, "call ended by the server")
            case CloseAsked(reason=reason):
                self._ending(End.LOST, reason)
                await self.transport.close("server asked to close")

    # ------------------------------------------------------------ send path

    @property
    def _dead_after_s(self) -> float:
        """How long a call's link may go unanswered before we call it dead."""
        return self.cfg.ping_interval_s * (self.cfg.ping_misses_allowed + 1)

    async def _write(self, frame: str, within_s: float) -> bool:
        """Send one frame; False if the socket did not drain in time (the frame stays queued).

        Cancelling a websockets send() in drain() is safe: the frame is already in the transport.
        """
        drained = True
        try:
            async with asyncio.timeout(within_s):
                await self.transport.send(frame)
        except TimeoutError:
            drained = False
        except TransportClosed:
            raise LinkLost("connection closed while sending") from None
        self.stats.frames_out += 1
        return drained

    async def _send(self, frame: str) -> None:
        """Send, bounded: a socket that stays full past the dead-link deadline is a dead link."""
        limit = self._dead_after_s
        if not await self._write(frame, limit):
            self._declare_dead(f"send stalled for {limit:g} s", stalled_s=limit)
            raise LinkLost("connection stalled while sending")

    def _declare_dead(self, detail: str, **fields: object) -> None:
        """Abort the transport: a close handshake cannot get through, and TCP takes ~15 min."""
        event("link_dead", logging.WARNING, detail=detail, **fields)
        self._ending(End.LOST, f"dead link: {detail}")
        self.transport.abort()

    async def close(self, kind: End, reason: str, text: str) -> None:
        """Close the socket ourselves; `kind` and `reason` are what link_down will say."""
        self._ending(kind, reason)
        await self.transport.close(text)

    async def stop(self) -> None:
        """The app is stopping: close whatever the socket was doing."""
        self._end = (End.LOST, "stopping")
        await self.transport.close("client stopping")

    # ------------------------------------------------------------ calls

    async def start_call(self, settings: p.CallSettings) -> CallInfo:
        """Place a call on this socket; return what the server announced."""
        state = self.state
        await self._send(p.client_location_state(state.envelope, self.cfg.timezone))
        request_id = p.new_request_id()
        answer = state.expect(request_id)
        self._placing = True
        try:
            await self._send(p.call_connect(state.envelope, settings, request_id))
            message = await asyncio.wait_for(answer, self.cfg.handshake_timeout_s)
        except TimeoutError:
            await self._abandon_call(request_id, "no call_connect_response in time")
            raise CallFailed("no call_connect_response in time") from None
        except asyncio.CancelledError:
            await self._abandon_call(request_id, "call abandoned while connecting")
            raise
        finally:
            self._placing = False
            state.pending.pop(request_id, None)
        if isinstance(message, p.Error):
            if message.request_id is None:
                # Taken for this call's answer, but it may be about something else: the server
                # may still place the call, and a call_connect_response now would leave a call
                # up on this socket that nobody hears. A fresh socket for the next one.
                await self._abandon_call(request_id, "an error without a request_id")
            raise CallFailed(message.message or "call refused", message.code)
        if isinstance(message, p.BadAnswer):
            # The server may count the call as up: it ends with this socket, not on it.
            await self._abandon_call(request_id, "an unusable call_connect_response")
            raise CallFailed(f"the server's answer to the call was unusable ({message.detail})")
        if isinstance(message, p.CallDisconnect):
            reason = message.reason or "no reason given"
            raise CallFailed(f"the server ended the call as it began ({reason})")
        if not isinstance(message, p.CallConnectResponse):
            raise CallFailed(f"unexpected answer {type(message).__name__}")
        if state.call_id != message.call_id:
            # The answer set it (dispatch) and a call_disconnect read before we resumed ended
            # the call again: the person hears why at once, not after a call that is not there.
            raise CallFailed(f"the server ended the call as it began ({state.hung_up})")
        self._ping_task = asyncio.create_task(self._ping_loop(), name="call-pings")
        self._ping_task.add_done_callback(say_if_failed)  # at once, not when the call ends
        return CallInfo(message.call_id, message.sample_rate, message.audio_codec)

    async def _abandon_call(self, request_id: str, why: str) -> None:
        """The call_connect went out but its owner gave up waiting: the server may yet place the
        call, so this socket is closed (as after any call) and the next call starts on a fresh
        one. Runs inside a cancelled task too: the close is bounded by the transport."""
        self.state.pending.pop(request_id, None)
        event("call_abandoned", detail=why)
        await self.close(End.PLANNED, PLANNED_CLOSE, "call abandoned")

    async def send_audio(self, pcm: bytes) -> None:
        if self.state.call_id is None:
            raise LinkLost("no call on this link")
        await self._send(p.audio(self.state.envelope, pcm))
        self.stats.audio_bytes_out += len(pcm)

    async def end_call(self, reason: str) -> bool:
        """Send call_disconnect, wait a bounded time for the answer, then close the socket.

        The web client closes its socket after each call; so do we, and the supervisor opens a new
        warm one at once, so the next call starts on a clean session.
        """
        await self._stop_pinging()
        # Closing from now on: the answer may take seconds, and a call placed meanwhile (the
        # person pressing again after a device came back) would land on this socket and go
        # silent when it closes. (Not its end's reason yet: a link that dies in the wait is an
        # outage, not a planned close.)
        self._retiring = True
        state = self.state
        request_id = p.new_request_id()
        answer = state.expect(request_id)
        answered = False
        try:
            await self._send(p.call_disconnect(state.envelope, reason, request_id))
            await asyncio.wait_for(answer, self.cfg.disconnect_timeout_s)
            answered = True
        except (TimeoutError, LinkLost):
            state.pending.pop(request_id, None)
        state.call_id = None
        await self.close(End.PLANNED, PLANNED_CLOSE, "call ended")
        return answered

    async def _stop_pinging(self) -> None:
        task, self._ping_task = self._ping_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            # (waited for, not awaited: a fault that ended it was said as it happened, and
            # raised again here, inside the socket's clean-up, it skipped the waiters' release
            # and the call's end hung; a cancellation of our own still reaches us)
            await asyncio.wait([task])

    async def _ping_loop(self) -> None:
        """JSON pings during a call, as the web app sends them; silence means a dead link.

        The beat never waits on the socket: a ping that cannot drain stays queued and counts as
        unanswered, so a full send buffer (a peer that stopped acknowledging) is found in time.
        """
        interval = self.cfg.ping_interval_s
        state = self.state
        while state.call_id is not None:
            missed = len(state.pings_out)
            if missed > self.cfg.ping_misses_allowed:
                self._declare_dead(f"{missed} pings unanswered", missed_pings=missed)
                return
            beat = time.monotonic()
            request_id = p.new_request_id()
            state.pings_out[request_id] = beat
            try:
                await self._write(p.ping(state.envelope, request_id), interval)
            except LinkLost:
                return
            self.stats.pings_sent += 1
            await asyncio.sleep(max(0.0, beat + interval - time.monotonic()))
