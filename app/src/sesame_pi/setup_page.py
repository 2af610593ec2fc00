"""The LAN setup page's state and window, on the app's own event loop; served by `setup_web`.

It shows the session's state, the link, the token's time left (never the token), the last calls
and device health; it takes what a signed-in browser holds and hands it to the same `login` code
as `sesame-pi login` (in a thread); it plays a test sound. Who may use it and when it listens are
decided in `pairing` (pure); this module keeps the page's state (pairings, rate limits, the last
hand-over), answers the button's presses and holds, and opens and closes the listener as the
setup window says (see pairing.SetupWindow). A port that cannot be bound is logged and tried
again, and never stops the appliance. The web side (requests, its Host, Origin and CSRF checks,
cookies) is `setup_web`, and aiohttp (about 12 MB of a Pi's memory) is imported only when the
window first opens: most appliances never show the page after their first day.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .auth import TokenProvider
from .config import Config
from .login import LoginResult, login
from .logs import event
from .pairing import Pairings, Press, RateLimiter, SetupWindow
from .session import Session
from .states import Earcon, State

if TYPE_CHECKING:
    from .setup_web import SetupServer

CHECK_EVERY_S = 1.0
BIND_RETRY_S = 30.0


class FeedbackPort(Protocol):
    def earcon(self, which: Earcon) -> None: ...
    def announce_setup(self) -> None: ...


def read_snippet() -> str | None:
    """The console snippet that copies the browser's auth record, if the package ships it."""
    try:
        ref = importlib.resources.files("sesame_pi") / "assets" / "copy-auth-record.js"
        return ref.read_text(encoding="utf-8").strip() or None
    except (OSError, ModuleNotFoundError):
        return None


class SetupPage:
    """The page's state (pairings, window, limits) and the loop that opens and closes it."""

    def __init__(
        self,
        cfg: Config,
        session: Session,
        tokens: TokenProvider,
        feedback: FeedbackPort,
        clock: Callable[[], float] = time.monotonic,
        login_fn: Callable[[str, Config], LoginResult] = login,
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.tokens = tokens
        self.feedback = feedback
        self.window = SetupWindow(cfg.setup_page, clock)
        self.pairings = Pairings(clock, on_lapse=self.window.disarm_pairing)
        self.limiter = RateLimiter(clock, per_s=2.0, burst=30)
        self.strict = RateLimiter(clock, per_s=0.2, burst=6)  # pairing and login attempts
        self.login_fn = login_fn
        self.login_lock = asyncio.Lock()  # one hand-over at a time
        self._last_login: tuple[float, LoginResult] | None = None
        self.last_press_at: float | None = None
        self.snippet = read_snippet()
        self._server: SetupServer | None = None  # made when the window first opens
        self._wake = asyncio.Event()
        self._next_bind_at = 0.0
        self.port: int | None = None
        session.press_hook = self.on_press
        session.long_hold_hook = self.on_long_hold

    # ------------------------------------------------------------ the button's side

    def on_press(self) -> bool:
        """A press out of a call: True if it confirmed (or spoiled) a pending pairing. Only after
        the 5 s hold, also while a token is needed: a press is otherwise the session's (a call,
        or its refusal), whoever waits on the network (see SetupWindow.pairing_armed)."""
        self.last_press_at = time.time()
        if not self.serving or not self.window.pairing_armed:
            return False
        result = self.pairings.press()
        if result is Press.NOT_MINE:
            self.window.disarm_pairing()
            return False
        spoilt = result in (Press.AMBIGUOUS, Press.LAPSED)
        event("pairing_press", logging.WARNING if spoilt else logging.INFO, result=result.value)
        self.feedback.earcon(Earcon.ERROR if spoilt else Earcon.SETUP)
        return True

    def on_long_hold(self) -> None:
        if self.cfg.setup_page == "off":
            event("setup_hold_ignored", reason="setup_page is off")
            return
        self.window.open_for_a_while(for_pairing=True)
        event("setup_window_opened", open_s=round(self.window.open_s_left()))
        self.feedback.announce_setup()
        self._wake.set()

    # ------------------------------------------------------------ lifetime

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.listening

    def _token_needed(self) -> bool:
        return self.session.state in (State.NEEDS_TOKEN, State.SIGNING_IN)

    async def run(self) -> None:
        """Open and close the listener as the window says, until cancelled."""
        try:
            while True:
                self.window.token_needed(self._token_needed())
                want = self.window.should_serve()
                if want and not self.serving and time.monotonic() >= self._next_bind_at:
                    await self._open()
                elif not want and self.serving:
                    await self._close("window closed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), CHECK_EVERY_S)
        finally:
            if self._server is not None:
                await self._server.cleanup()
            self.port = None

    async def _open(self) -> None:
        if self._server is None:
            from .setup_web import SetupServer  # aiohttp: only on a device that shows the page

            self._server = SetupServer(self)
        try:
            self.port = await self._server.listen(self.cfg.setup_bind, self.cfg.setup_port)
        except OSError as exc:
            self._next_bind_at = time.monotonic() + BIND_RETRY_S
            event(
                "setup_page_unavailable",
                logging.ERROR,
                detail=str(exc),
                port=self.cfg.setup_port,
                retry_in_s=BIND_RETRY_S,
            )
            return
        event(
            "setup_page_open",
            bind=self.cfg.setup_bind,
            port=self.port,
            url=f"http://{socket.gethostname()}.local:{self.port}/",
            mode=self.cfg.setup_page,
        )

    async def _close(self, reason: str) -> None:
        if self._server is not None and self._server.listening:
            await self._server.stop()
            event("setup_page_closed", reason=reason)

    def logged_in(self, result: LoginResult) -> None:
        """The page handed a browser's sign-in over: keep the page up to see it work, and let a
        link that waits for a token try the new one now."""
        self._last_login = (time.time(), result)
        self.window.open_for_a_while()
        self.session.link.wake()

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """What the page shows, as data (also /api/status). No token, no secret."""
        info = self.tokens.info()
        token: dict[str, Any] = {
            "present": info.expires_at is not None or info.seconds_left is not None,
            "seconds_left": None if info.seconds_left is None else round(info.seconds_left),
            "expires_at": info.expires_at.isoformat() if info.expires_at else None,
            "refresh": self.tokens.can_refresh,
            "account": self._last_login[1].email if self._last_login else None,
        }
        stats = self.session.link.stats.as_dict()
        connects = int(stats.get("connects", 0))
        calls = []
        for call in self.session.recent_calls:
            audio = call.get("audio")
            counters = {k: v for k, v in (audio.items() if isinstance(audio, dict) else ()) if v}
            calls.append(
                {
                    "ended_at": call.get("ended_at"),
                    "duration_s": call.get("duration_s"),
                    "reason": call.get("reason"),
                    "counters": dict(list(counters.items())[:8]),
                }
            )
        cfg = self.cfg
        button = f"{cfg.button}" + (
            f", GPIO {cfg.button_pin}, pull {cfg.button_pull}" if cfg.button == "gpio" else ""
        )
        return {
            "host": socket.gethostname(),
            "state": self.session.state.value,
            "link": {
                "up": self.session.link.up,
                "connects": connects,
                "reconnects": max(0, connects - 1),
            },
            "token": token,
            "calls": calls,
            "devices": {
                "input": cfg.input_device,
                "output": cfg.output_device,
                "problem": self.session.device_problem,
                "button": button,
                "last_press": self.last_press_at,
                "led_pin": cfg.led_pin,
            },
            "setup": {
                "mode": cfg.setup_page,
                "open_s_left": round(self.window.open_s_left()),
                "paired_browsers": self.pairings.count,
            },
        }
