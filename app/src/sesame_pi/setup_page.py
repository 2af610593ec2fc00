"""The LAN setup page, served by the app itself (aiohttp on the app's own event loop).

It shows the session's state, the link, the token's time left (never the token), the last calls
and device health; it takes what a signed-in browser holds and hands it to the same `login` code
as `sesame-pi login` (in a thread); it plays a test sound. Who may use it and when it listens are
decided in `pairing` (pure); this module only moves requests and answers:

- every request: the Host must be this device (an IP literal, *.local, a single-label name or
  localhost), so a rebound DNS name cannot reach it; a token bucket per client address (429);
- every POST: the Origin must be this page's own; a paired browser's forms carry its CSRF token;
- the pairing cookie and the paired cookie are random, HttpOnly and SameSite=Strict.

The page listens only while the setup window says so (see pairing.SetupWindow); a port that
cannot be bound is logged and tried again, and never stops the appliance.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from . import setup_views as views
from .auth import TokenProvider
from .config import Config
from .login import LoginError, LoginResult, login
from .logs import event, redact
from .pairing import PairingRefused, Pairings, Press, RateLimiter, Refusal, SetupWindow
from .session import Session
from .states import Earcon, State

PAIR_COOKIE = "sesame_pairing"
SESSION_COOKIE = "sesame_session"
PAIRED_COOKIE_S = 365 * 24 * 3600  # the browser keeps it; the device forgets at restart anyway
MAX_BODY = 64 * 1024
CHECK_EVERY_S = 1.0
BIND_RETRY_S = 30.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REFUSALS = {
    Refusal.UNKNOWN: "That pairing request is unknown or has expired. Start again.",
    Refusal.REPLAYED: "That pairing code was used already. Start again to get a new code.",
    Refusal.WRONG_CODE: "That is not the code shown for this request.",
    Refusal.CSRF: "The form was not this page's own. Start again.",
    Refusal.EXPIRED: "The minute to press the button is over. Start again.",
    Refusal.NOT_PRESSED: "The button has not been pressed yet: press it once, then Continue.",
}


class FeedbackPort(Protocol):
    def earcon(self, which: Earcon) -> None: ...
    def announce_setup(self) -> None: ...


def host_allowed(host: str) -> bool:
    """Is this Host header this device (not a name an attacker's DNS points here)?"""
    name = host.strip().lower()
    if name.startswith("["):  # [v6]:port
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if not name:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    name = name.rstrip(".")
    own = socket.gethostname().lower()
    return name in ("localhost", own) or name.endswith(".local") or "." not in name


def read_snippet() -> str | None:
    """The console snippet that copies the browser's auth record, if the package ships it."""
    try:
        ref = importlib.resources.files("sesame_pi") / "assets" / "copy-auth-record.js"
        return ref.read_text(encoding="utf-8").strip() or None
    except (OSError, ModuleNotFoundError):
        return None


class SetupPage:
    """The page's state (pairings, window, limits) and its aiohttp application."""

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
        self.pairings = Pairings(clock)
        self.window = SetupWindow(cfg.setup_page, clock)
        self.limiter = RateLimiter(clock, per_s=2.0, burst=30)
        self.strict = RateLimiter(clock, per_s=0.2, burst=6)  # pairing and login attempts
        self._login = login_fn
        self._login_lock = asyncio.Lock()
        self._last_login: tuple[float, LoginResult] | None = None
        self.last_press_at: float | None = None
        self._snippet = read_snippet()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._wake = asyncio.Event()
        self._next_bind_at = 0.0
        self.port: int | None = None
        session.press_hook = self.on_press
        session.long_hold_hook = self.on_long_hold

    # ------------------------------------------------------------ the button's side

    def on_press(self) -> bool:
        """A press out of a call: True if it confirmed (or spoiled) a pending pairing."""
        self.last_press_at = time.time()
        if self._site is None:
            return False
        result = self.pairings.press()
        if result is Press.NOT_MINE:
            return False
        event(
            "pairing_press",
            logging.WARNING if result is Press.AMBIGUOUS else logging.INFO,
            result=result.value,
        )
        self.feedback.earcon(Earcon.ERROR if result is Press.AMBIGUOUS else Earcon.SETUP)
        return True

    def on_long_hold(self) -> None:
        if self.cfg.setup_page == "off":
            event("setup_hold_ignored", reason="setup_page is off")
            return
        self.window.open_for_a_while()
        event("setup_window_opened", open_s=round(self.window.open_s_left()))
        self.feedback.announce_setup()
        self._wake.set()

    # ------------------------------------------------------------ lifetime

    @property
    def serving(self) -> bool:
        return self._site is not None

    def _token_needed(self) -> bool:
        return self.session.state is State.NEEDS_TOKEN

    async def run(self) -> None:
        """Open and close the listener as the window says, until cancelled."""
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            while True:
                self.window.token_needed(self._token_needed())
                want = self.window.should_serve()
                if want and self._site is None and time.monotonic() >= self._next_bind_at:
                    await self._open()
                elif not want and self._site is not None:
                    await self._close("window closed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), CHECK_EVERY_S)
        finally:
            await self._runner.cleanup()
            self._site = None

    async def _open(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.cfg.setup_bind, self.cfg.setup_port)
        try:
            await site.start()
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
        self._site = site
        server = site._server  # aiohttp keeps the listening sockets there
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.cfg.setup_port
        event(
            "setup_page_open",
            bind=self.cfg.setup_bind,
            port=self.port,
            url=f"http://{socket.gethostname()}.local:{self.port}/",
            mode=self.cfg.setup_page,
        )

    async def _close(self, reason: str) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
            event("setup_page_closed", reason=reason)

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

    # ------------------------------------------------------------ the web application

    def build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY,
            middlewares=[self._guard],
            handler_args={"max_field_size": 8190},
        )
        app.router.add_get("/", self.index)
        app.router.add_post("/pair/start", self.pair_start)
        app.router.add_get("/pair", self.pair_page)
        app.router.add_post("/pair/finish", self.pair_finish)
        app.router.add_get("/api/status", self.api_status)
        app.router.add_post("/login", self.login_post)
        app.router.add_post("/test-sound", self.test_sound)
        app.router.add_post("/unpair", self.unpair)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        client = request.remote or "?"
        if not host_allowed(request.host):
            response: web.StreamResponse = web.Response(
                status=421, text="This page answers only to the device's own name or address.\n"
            )
        elif not self.limiter.allow(client) or (
            request.method == "POST"
            and request.path in ("/pair/start", "/pair/finish", "/login")
            and not self.strict.allow(client)
        ):
            event("setup_rate_limited", logging.WARNING, client=client, path=request.path)
            response = web.Response(
                status=429,
                text="Too many requests; wait a little and try again.\n",
                headers={"Retry-After": "10"},
            )
        elif request.method not in ("GET", "HEAD", "POST"):
            response = web.Response(status=405, text="Method not allowed.\n")
        elif request.method == "POST" and request.headers.get("Origin") != (
            f"{request.scheme}://{request.host}"
        ):
            event(
                "setup_refused", logging.WARNING, client=client, path=request.path, reason="origin"
            )
            response = self._html(views.refused("Refused", "The form came from another site."), 403)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = web.Response(status=exc.status, text=exc.reason + "\n")
        self._secure(response)
        return response

    @staticmethod
    def _secure(response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Cache-Control"] = "no-store"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"  # no-referrer would turn POST Origins to null
        headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )

    @staticmethod
    def _html(text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    @staticmethod
    def _redirect(location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location})

    @staticmethod
    def _cookie(response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", httponly=True, samesite="Strict"
        )

    def _paired(self, request: web.Request) -> Any:
        return self.pairings.paired(request.cookies.get(SESSION_COOKIE))

    async def _paired_form(self, request: web.Request) -> tuple[Any, Any] | web.Response:
        """(pairing, form) for a POST from a paired browser with its CSRF token, else a refusal."""
        paired = self._paired(request)
        if paired is None:
            return self._html(views.unpaired("Pair this browser first.", bad=True), 403)
        form = await request.post()
        token = form.get("csrf")
        if not self.pairings.csrf_ok(paired, token if isinstance(token, str) else None):
            event(
                "setup_refused",
                logging.WARNING,
                client=request.remote,
                path=request.path,
                reason="csrf",
            )
            return self._html(
                views.refused(
                    "Refused",
                    "The form's check token is missing or wrong. Reload the page and try again.",
                ),
                403,
            )
        return paired, form

    # ------------------------------------------------------------ handlers

    async def index(self, request: web.Request) -> web.Response:
        paired = self._paired(request)
        if paired is None:
            return self._html(views.unpaired(), 403)
        return self._status_page(paired)

    def _status_page(
        self, paired: Any, message: str | None = None, bad: bool = False, status: int = 200
    ) -> web.Response:
        page = views.status(self.status(), paired.csrf, time.time(), message, bad, self._snippet)
        return self._html(page, status)

    async def pair_start(self, request: web.Request) -> web.Response:
        pending = self.pairings.begin()
        event("pairing_started", client=request.remote, waiting=self.pairings.waiting)
        response = self._redirect("/pair")
        self._cookie(
            response, PAIR_COOKIE, pending.handle, int(self.pairings.seconds_left(pending))
        )
        return response

    async def pair_page(self, request: web.Request) -> web.Response:
        pending = self.pairings.pending(request.cookies.get(PAIR_COOKIE))
        if pending is None:
            return self._redirect("/")
        left = self.pairings.seconds_left(pending)
        return self._html(views.pairing(pending.code, pending.csrf, left))

    async def pair_finish(self, request: web.Request) -> web.Response:
        form = await request.post()
        handle = request.cookies.get(PAIR_COOKIE)
        code, csrf = str(form.get("code", "")), str(form.get("csrf", ""))
        try:
            paired = self.pairings.finish(handle, code, csrf)
        except PairingRefused as exc:
            event(
                "pairing_refused", logging.WARNING, client=request.remote, reason=exc.reason.value
            )
            text = REFUSALS[exc.reason]
            pending = self.pairings.pending(handle)
            if pending is not None and exc.reason in (Refusal.NOT_PRESSED, Refusal.WRONG_CODE):
                left = self.pairings.seconds_left(pending)
                status = 409 if exc.reason is Refusal.NOT_PRESSED else 403
                return self._html(views.pairing(pending.code, pending.csrf, left, text), status)
            return self._html(views.unpaired(text, bad=True), 403)
        event("browser_paired", client=request.remote, paired_browsers=self.pairings.count)
        response = self._redirect("/")
        self._cookie(response, SESSION_COOKIE, paired.cookie, PAIRED_COOKIE_S)
        response.del_cookie(PAIR_COOKIE, path="/")
        return response

    async def api_status(self, request: web.Request) -> web.Response:
        if self._paired(request) is None:
            return web.json_response({"error": "pair this browser first"}, status=403)
        return web.json_response(self.status())

    async def login_post(self, request: web.Request) -> web.Response:
        checked = await self._paired_form(request)
        if isinstance(checked, web.Response):
            return checked
        paired, form = checked
        record = form.get("record")
        text = record if isinstance(record, str) else ""
        async with self._login_lock:
            try:
                result = await asyncio.to_thread(self._login, text, self.cfg)
            except LoginError as exc:
                sentence = redact(str(exc))
                event("setup_login_failed", logging.WARNING, detail=sentence)
                return self._status_page(paired, sentence, bad=True, status=400)
            except Exception as exc:  # never echo what was pasted, nor a traceback
                event("setup_login_failed", logging.ERROR, detail=type(exc).__name__)
                return self._status_page(
                    paired, "The hand-over failed unexpectedly; see the event log.", True, 500
                )
        self._last_login = (time.time(), result)
        self.window.open_for_a_while()  # the owner is here: keep the page up to see it work
        self.session.link.wake()  # a link waiting for a token tries the new one now
        who = f" for {result.email}" if result.email else ""
        event("setup_login", email=result.email, seconds_left=round(result.seconds_left))
        return self._status_page(
            paired,
            f"Signed in{who}: the ID token has {views.time_left_text(result.seconds_left)} left, "
            "and the device renews it by itself from now on.",
        )

    async def test_sound(self, request: web.Request) -> web.Response:
        checked = await self._paired_form(request)
        if isinstance(checked, web.Response):
            return checked
        self.feedback.earcon(Earcon.LIVE)
        event("setup_test_sound")
        when = datetime.now(UTC).strftime("%H:%M:%S UTC")
        return self._status_page(checked[0], f"Played a test sound at {when}.")

    async def unpair(self, request: web.Request) -> web.Response:
        checked = await self._paired_form(request)
        if isinstance(checked, web.Response):
            return checked
        self.pairings.forget(checked[0].cookie)
        event("browser_unpaired", paired_browsers=self.pairings.count)
        response = self._redirect("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
