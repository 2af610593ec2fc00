"""The supervisor: keeps one warm connection to the service, and brings it back by itself.

`Link.run` connects with a fresh token, serves the socket until it closes, and decides what next
from the error alone (`retry.classify`): reconnect at once, after tenacity's backoff, or wait for a
new token at a bounded rate. Calls go to the current channel; the session sees only `Link`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import tenacity

from .. import protocol as p
from ..auth import TokenError, TokenProvider, TokenServiceUnreachable
from ..config import Config
from ..logs import event
from .channel import CallInfo, Channel, handshake
from .errors import CallFailed, End, Ended, LinkDown, LinkLost, report_fault
from .retry import Verdict, backoff_s, classify, is_retry
from .stats import LinkStats
from .transport import CLOSE_WAIT_S, make_ssl_context

_Told = TypeVar("_Told")  # what the listener is told: a LinkDown, a detail

TOKEN_WAIT_POLL_S = 5.0
# The service closes a call-less socket after about 15 s (four a minute); more idle closes than
# this in a minute is not that habit (a server that greets and closes at once, say after refusing
# us): from then on they count as lost links, reconnected after the backoff, not at once.
IDLE_CLOSES_PER_MINUTE = 8


class LinkListener(Protocol):
    """What the link tells the session. Called on the event loop."""

    def link_up(self) -> None: ...
    def link_down(self, down: LinkDown) -> None: ...
    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...
    def token_needed(self, detail: str) -> None: ...


class _Unattached:
    """The listener until one is attached: a link built first hears nothing before it runs."""

    def link_up(self) -> None: ...
    def link_down(self, down: LinkDown) -> None: ...
    def server_audio(self, pcm: bytes) -> None: ...
    def server_hangup(self, reason: str) -> None: ...
    def token_needed(self, detail: str) -> None: ...


class Link:
    """The supervised connection. Only the session calls it (see session.LinkPort)."""

    def __init__(
        self,
        cfg: Config,
        tokens: TokenProvider,
        listener: LinkListener | None = None,
        sample_rate: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.tokens = tokens
        self.listener: LinkListener = listener or _Unattached()
        self.stats = LinkStats()
        self.sample_rate = sample_rate or cfg.capture_rate
        self._ssl = make_ssl_context(cfg)
        self._channel: Channel | None = None
        self._up = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._call_held = False  # a call was placed and not yet ended: resuming it is likely
        self._waiting = 0  # someone awaits a call or the link right now (a person is waiting)
        self._auth_attempts: collections.deque[float] = collections.deque()
        self._down_reported = False  # the listener already heard this outage
        self._idle_closes: collections.deque[float] = collections.deque()

    def attach(self, listener: LinkListener) -> None:
        """The parts are built first; the session attaches itself before the link runs."""
        self.listener = listener

    @property
    def up(self) -> bool:
        """A socket is open and not on its way out (a closing one takes no new call)."""
        return self._channel is not None and not self._channel.closing

    @property
    def urgent(self) -> bool:
        """Retry fast: a call waits to be placed or resumed, so a person is waiting."""
        return self._call_held or self._waiting > 0

    def wake(self) -> None:
        """Skip the current backoff sleep (a person pressed the button)."""
        self._wake.set()

    @contextlib.contextmanager
    def _someone_waits(self) -> Iterator[None]:
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def wait_up(self, within_s: float) -> bool:
        """Wait for an open socket that takes calls; False if none within `within_s`."""
        self.wake()
        with self._someone_waits():
            try:
                async with asyncio.timeout(within_s):
                    while not self.up:
                        channel = self._channel
                        if channel is not None:  # closing: its end, then the fresh one
                            await channel.ended.wait()
                            await asyncio.sleep(0)  # let the supervisor clear it
                        else:
                            await self._up.wait()
            except TimeoutError:
                return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._channel is not None:
            await self._channel.stop()

    # ------------------------------------------------------------ keeping it up

    async def run(self) -> None:
        """Keep a link up until `stop()`. Never returns early on network faults."""
        while not self._stopping:
            retrying = tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception(is_retry),
                wait=lambda state: backoff_s(self.cfg, self.urgent, state),
                sleep=self._sleep,
                before_sleep=self._before_sleep,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._connect_and_serve()
            except Exception as error:
                verdict = classify(error)
                if verdict is Verdict.STOP:
                    await self._after_fault(error)
                    continue
                if verdict is Verdict.NEED_TOKEN:
                    await self._wait_for_new_token(str(error))
                # AGAIN: a fresh backoff for the next outage (RETRY: stopped while one was due)

    async def _after_fault(self, error: Exception) -> None:
        """Not the network, not the token: a fault of ours or of the setting it met (say, a
        token endpoint that is not a URL). Say so with where it was raised, and try again
        after the longest backoff: a dead link under a healthy heartbeat helps nobody."""
        action = "the link tries again; please report this line"
        reason = report_fault(error, action, retry_in_s=self.cfg.backoff_max_s)
        self._report_down(LinkDown(End.LOST, reason))
        await self._sleep(self.cfg.backoff_max_s)

    async def _sleep(self, seconds: float) -> None:
        """A backoff sleep that a wake cuts short, also one that came during the connect
        attempt before it (cleared on entry, that wake was lost)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        event(
            "link_retry",
            attempt=state.attempt_number,
            wait_s=round(wait, 3),
            reason=str(error) if error else "",
        )

    async def _wait_for_new_token(self, detail: str) -> None:
        """No hammering: at most `auth_retry_per_minute` attempts, and only with hope. A refused
        token the refresh can replace is replaced first, without a word to the person (a clock
        behind at boot let an expired one through, the service let one go early): only a
        refusal that stands is theirs to hear."""
        if await self._new_token_available():
            return
        self._tell("token_needed", self.listener.token_needed, detail)
        self._down_reported = False  # the listener has moved on: a dead network is news again
        while not self._stopping:
            if await self._new_token_available():
                return
            await self._sleep(TOKEN_WAIT_POLL_S)

    async def _new_token_available(self) -> bool:
        now = time.monotonic()
        while self._auth_attempts and now - self._auth_attempts[0] > 60:
            self._auth_attempts.popleft()
        if len(self._auth_attempts) >= self.cfg.auth_retry_per_minute:
            return False
        try:
            changed = await self.tokens.after_auth_refusal()
        except TokenError:
            changed = False
        except Exception as error:  # a fault of ours, or of an answer we met
            # The link waits here (out of `run`'s own handler) for the token that brings it
            # back: anything raised here ended the link task for good, under a heartbeat that
            # still said healthy, and the device never connected again.
            # Then the longest backoff, as after any fault: one that persists writes a line a
            # backoff, not one every look.
            action = "the link keeps waiting for a working token; please report this"
            report_fault(error, action, retry_in_s=self.cfg.backoff_max_s)
            await self._sleep(self.cfg.backoff_max_s)
            changed = False
        if changed:
            self._auth_attempts.append(time.monotonic())
            event("auth_retry", attempts_last_minute=len(self._auth_attempts))
        return changed

    async def _connect_and_serve(self) -> None:
        if self._stopping:
            return
        try:
            token = await self.tokens.valid_token()
        except TokenServiceUnreachable as exc:  # offline until the refresh gets through
            self._report_down(LinkDown(End.LOST, str(exc)))
            raise
        try:
            transport, session_id = await handshake(self.cfg, self._ssl, token, self.stats)
        except LinkLost as exc:
            self._report_down(LinkDown(End.LOST, str(exc)))  # e.g. no service at boot: offline
            raise
        finally:
            del token
        channel = Channel(self.cfg, transport, session_id, self.stats, self.listener)
        self._channel = channel
        self._up.set()
        self._wake.clear()  # a wake from before this link is owed nothing (the next outage sleeps)
        self.stats.connects += 1
        event("link_up", session_id=session_id, connects=self.stats.connects)
        self._down_reported = False
        try:
            try:
                self.listener.link_up()
            except Exception:  # a fault of ours (reported by `run`): the socket is not left
                # open and unread, nor the link "up" through the fault's whole sleep
                await channel.close(End.LOST, "a fault of ours as the link came up", "client fault")
                raise
            kind, reason = await channel.serve()
        finally:
            self._channel = None
            self._up.clear()
        healthy = time.monotonic() - channel.opened >= self.cfg.healthy_after_s
        if kind is not End.AUTH and (healthy or kind in (End.PLANNED, End.IDLE)):
            # The service took the token: a socket it kept a while, or one that ended routinely
            # (its idle close comes after about 15 s, before `healthy_after_s`; an idle device
            # then never forgot refused renewals). One closed with an auth code proves nothing.
            self.tokens.accepted()
        if kind is End.IDLE and self._too_many_idle_closes():
            kind, reason = End.LOST, f"{reason}, over {IDLE_CLOSES_PER_MINUTE} times a minute"
        routine = kind in (End.PLANNED, End.IDLE)
        event("link_down", reason=reason, healthy=healthy, routine=routine, **self.stats.as_dict())
        self._report_down(LinkDown(kind, reason))
        if not self._stopping:
            raise Ended(reason, kind, healthy)

    def _too_many_idle_closes(self) -> bool:
        now = time.monotonic()
        self._idle_closes.append(now)
        while now - self._idle_closes[0] > 60:
            self._idle_closes.popleft()
        return len(self._idle_closes) > IDLE_CLOSES_PER_MINUTE

    def _report_down(self, down: LinkDown) -> None:
        """Tell the listener once per outage, whether a socket closed or never opened."""
        if self._down_reported:
            return
        self._down_reported = not down.routine  # a routine close reconnects at once
        self._tell("link_down", self.listener.link_down, down)

    @staticmethod
    def _tell(what: str, call: Callable[[_Told], None], news: _Told) -> None:
        """Tell the listener; a fault of its is ours to report, not the link's end. Raised here,
        often inside `run`'s own handler, it ended the link task for good under a heartbeat
        that still said healthy, and the device never connected again."""
        try:
            call(news)
        except Exception as error:
            report_fault(error, "the link goes on; please report this line", told=what)

    # ------------------------------------------------------------ calls

    def _current(self) -> Channel:
        if self._channel is None or self._channel.closing:
            raise LinkLost("link is down")
        return self._channel

    async def start_call(self, reconnect: bool = False) -> CallInfo:
        """Place a call on the open socket; return what the server announced."""
        settings = p.CallSettings(
            sample_rate=self.sample_rate,
            character=self.cfg.character,
            client_name=self.cfg.client_name,
            user_agent=self.cfg.user_agent,
            language=self.cfg.language,
            reconnect=reconnect and self.cfg.reconnect_flag,
        )
        with self._someone_waits():
            try:
                info = await self._place(settings)
            except CallFailed:
                self._call_held = False
                raise
            except LinkLost:
                self._call_held = reconnect and self._call_held  # a resume tries again
                raise
            except asyncio.CancelledError:
                self._call_held = False  # the channel closed the socket: nothing to resume
                raise
        self._call_held = True
        return info

    async def _place(self, settings: p.CallSettings) -> CallInfo:
        channel = self._current()
        try:
            return await channel.start_call(settings)
        except LinkLost:
            if not await self._closed_idle(channel):
                raise
        # The server closed the idle socket as the call went out: once more, on the fresh one.
        event("call_retry_after_idle_close")
        if not await self.wait_up(self.cfg.handshake_timeout_s):
            raise LinkLost("the service cannot be reached")
        return await self._current().start_call(settings)

    @staticmethod
    async def _closed_idle(channel: Channel) -> bool:
        """Did this channel end by the server's routine idle close (waiting briefly to learn)?"""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.ended.wait(), CLOSE_WAIT_S)
        return channel.end_kind is End.IDLE

    async def send_audio(self, pcm: bytes) -> None:
        await self._current().send_audio(pcm)

    async def end_call(self, reason: str = "user_request") -> bool:
        """End the call (bounded) and start a fresh socket; False if there was no call.

        Also the session's word that the call is over (a resume it gave up): no more haste."""
        self._call_held = False
        channel = self._channel
        if channel is None or not channel.in_call:
            return False
        return await channel.end_call(reason)
