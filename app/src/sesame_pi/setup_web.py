"""The setup page's web side: aiohttp's application, its guard and handlers (see `setup_page`).

Imported only when the page first opens. Every request: the Host must be this device (an IP
literal, *.local, a single-label name or localhost), so a rebound DNS name cannot reach it; a
token bucket per client address (429). Every POST: the Origin must be this page's own; a paired
browser's forms carry its CSRF token. The pairing and paired cookies are random, HttpOnly and
SameSite=Strict. Nothing here decides who may pair or when the page listens: `pairing` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import setup_views as views
from .login import LoginError
from .logs import event, redact
from .pairing import PAIRED_UNUSED_S, PairingRefused, Refusal
from .setup_page import SetupPage
from .states import Earcon

PAIR_COOKIE = "sesame_pairing"
SESSION_COOKIE = "sesame_session"
# The browser keeps it; the device forgets it at a restart, or unused for PAIRED_UNUSED_S.
PAIRED_COOKIE_S = 365 * 24 * 3600
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REFUSALS = {
    Refusal.UNKNOWN: "That pairing request is unknown or has expired. Hold the device's button "
    "for 5 seconds again, then start again.",
    Refusal.REPLAYED: "That pairing code was used already. Start again to get a new code.",
    Refusal.WRONG_CODE: "That is not the code shown for this request.",
    Refusal.CSRF: "The form was not this page's own. Start again.",
    Refusal.EXPIRED: "The minute to press the button is over. Hold the device's button for 5 "
    "seconds again, then start again.",
    Refusal.NOT_PRESSED: "The button has not been pressed yet after the 5-second hold: do as "
    "the step below says, then Continue.",
    Refusal.BUSY: "Several browsers are waiting to pair already (someone else on this network "
    "may be trying too). Wait a minute, then start again.",
    Refusal.CONTESTED: "Another browser asked to pair while this one was finishing (someone else "
    "on this network may be trying too), so neither is paired. Start again.",
}

FORGOTTEN = (
    f"This browser's pairing was forgotten (unused for {PAIRED_UNUSED_S / 60:.0f} minutes, or "
    "the device restarted): pair it again."
)


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
    return name in ("localhost", own) or name.endswith(LAN_SUFFIXES) or "." not in name


# Names a home router hands out, which public DNS cannot serve (so no attacker's domain can be
# rebound to them): mDNS, RFC 8375's home.arpa, and the common router domains.
LAN_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".localdomain", ".home", ".fritz.box")


def where_to_open(request: web.Request) -> str:
    """The addresses that reach this page, for a person who typed one that does not. From the
    socket, never the Host header: a port there such as `:abc` or `:99999` raised from inside
    the guard (a 500 and a traceback in the log for each request, before the rate limit)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    address = sockname[0] if isinstance(sockname, tuple) and sockname else None
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) > 1 else 80
    urls = [f"http://{socket.gethostname().lower()}.local:{port}/"]
    if isinstance(address, str) and address not in ("0.0.0.0", "::"):
        urls.insert(
            0, f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"
        )
    return " or ".join(urls)


async def read_form(request: web.Request) -> Any:
    """The POSTed form, or 400: a body that is not text in its stated charset (or names one
    that does not exist) made aiohttp raise from inside the handler, which answered 500 without
    this page's headers and wrote a traceback to the log."""
    try:
        return await request.post()
    except (UnicodeDecodeError, LookupError, ValueError):
        raise web.HTTPBadRequest(
            reason="The form could not be read: send it from the page"
        ) from None


class SetupServer:
    """The aiohttp application over a SetupPage, and its listening site."""

    def __init__(self, page: SetupPage) -> None:
        self.page = page
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def listen(self, bind: str, port: int) -> int:
        """Start listening; the port really bound (OSError if it cannot be)."""
        if self._runner is None:
            self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
            await self._runner.setup()
        site = web.TCPSite(self._runner, bind, port)
        await site.start()
        self._site = site
        server = site._server  # aiohttp keeps the listening sockets there
        sockets = getattr(server, "sockets", None) or []
        bound: int = sockets[0].getsockname()[1] if sockets else port
        return bound

    async def stop(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()

    async def cleanup(self) -> None:
        self._site = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
        if not self.listening or not self.page.window.should_serve():
            # The window closed: stopping the site ends only new connections, and a browser
            # that kept its connection alive was still answered (a paired one could sign the
            # device into another account long after the window).
            response: web.StreamResponse = web.Response(
                status=404, text="The setup page is closed.\n"
            )
            response.force_close()
        elif not host_allowed(request.host):
            response = web.Response(
                status=421,
                text="This page answers only to the device's own name or address: open "
                f"{where_to_open(request)}\n",
            )
        elif not self.page.limiter.allow(client) or (
            request.method == "POST"
            and request.path in ("/pair/start", "/pair/finish", "/login")
            and not self.page.strict.allow(client)
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
        return self.page.pairings.paired(request.cookies.get(SESSION_COOKIE))

    async def _paired_form(self, request: web.Request) -> tuple[Any, Any] | web.Response:
        """(pairing, form) for a POST from a paired browser with its CSRF token, else a refusal."""
        paired = self._paired(request)
        if paired is None:
            forgotten = request.cookies.get(SESSION_COOKIE)  # (say why, as the index does)
            message = FORGOTTEN if forgotten else "Pair this browser first."
            return self._html(views.unpaired(message, bad=True), 403)
        form = await read_form(request)
        token = form.get("csrf")
        if not self.page.pairings.csrf_ok(paired, token if isinstance(token, str) else None):
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
            # A cookie the device no longer knows: say why, or the owner wonders what broke.
            forgotten = FORGOTTEN if request.cookies.get(SESSION_COOKIE) else None
            return self._html(views.unpaired(forgotten), 403)
        # A paired owner who held the button to open this page is not pairing a browser: their
        # next press is for a call, not for a request someone else opened meanwhile (waiting
        # now or later). To pair another browser, hold again.
        self.page.window.disarm_pairing()
        return self._status_page(paired)

    def _status_page(
        self, paired: Any, message: str | None = None, bad: bool = False, status: int = 200
    ) -> web.Response:
        page = self.page
        text = views.status(page.status(), paired.csrf, time.time(), message, bad, page.snippet)
        return self._html(text, status)

    async def pair_start(self, request: web.Request) -> web.Response:
        try:
            pending = self.page.pairings.begin()
        except PairingRefused as exc:
            event(
                "pairing_refused", logging.WARNING, client=request.remote, reason=exc.reason.value
            )
            wait_s = max(1, round(self.page.pairings.seconds_until_room()))
            response = self._html(views.unpaired(REFUSALS[exc.reason], bad=True), 429)
            response.headers["Retry-After"] = str(wait_s)
            return response
        event("pairing_started", client=request.remote, waiting=self.page.pairings.waiting)
        response = self._redirect("/pair")
        self._cookie(
            response, PAIR_COOKIE, pending.handle, int(self.page.pairings.seconds_left(pending))
        )
        return response

    async def pair_page(self, request: web.Request) -> web.Response:
        pending = self.page.pairings.pending(request.cookies.get(PAIR_COOKIE))
        if pending is None:
            return self._redirect("/")
        left = self.page.pairings.seconds_left(pending)
        hold_first = not self.page.window.pairing_armed
        return self._html(views.pairing(pending.code, pending.csrf, left, hold_first=hold_first))

    async def pair_finish(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        handle = request.cookies.get(PAIR_COOKIE)
        code, csrf = str(form.get("code", "")), str(form.get("csrf", ""))
        try:
            paired = self.page.pairings.finish(handle, code, csrf)
        except PairingRefused as exc:
            event(
                "pairing_refused", logging.WARNING, client=request.remote, reason=exc.reason.value
            )
            text = REFUSALS[exc.reason]
            pending = self.page.pairings.pending(handle)
            if pending is not None and exc.reason in (Refusal.NOT_PRESSED, Refusal.WRONG_CODE):
                left = self.page.pairings.seconds_left(pending)
                status = 409 if exc.reason is Refusal.NOT_PRESSED else 403
                hold_first = not self.page.window.pairing_armed
                text_page = views.pairing(pending.code, pending.csrf, left, text, hold_first)
                return self._html(text_page, status)
            return self._html(views.unpaired(text, bad=True), 403)
        self.page.window.disarm_pairing()
        event("browser_paired", client=request.remote, paired_browsers=self.page.pairings.count)
        response = self._redirect("/")
        self._cookie(response, SESSION_COOKIE, paired.cookie, PAIRED_COOKIE_S)
        response.del_cookie(PAIR_COOKIE, path="/")
        return response

    async def api_status(self, request: web.Request) -> web.Response:
        if self._paired(request) is None:
            return web.json_response({"error": "pair this browser first"}, status=403)
        return web.json_response(self.page.status())

    async def login_post(self, request: web.Request) -> web.Response:
        checked = await self._paired_form(request)
        if isinstance(checked, web.Response):
            return checked
        paired, form = checked
        record = form.get("record")
        text = record if isinstance(record, str) else ""
        async with self.page.login_lock:
            try:
                result = await asyncio.to_thread(self.page.login_fn, text, self.page.cfg)
            except LoginError as exc:
                sentence = redact(str(exc))
                event("setup_login_failed", logging.WARNING, detail=sentence)
                return self._status_page(paired, sentence, bad=True, status=400)
            except Exception as exc:  # never echo what was pasted, nor a traceback
                event("setup_login_failed", logging.ERROR, detail=type(exc).__name__)
                return self._status_page(
                    paired, "The hand-over failed unexpectedly; see the event log.", True, 500
                )
        self.page.logged_in(result)
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
        self.page.feedback.earcon(Earcon.LIVE)
        event("setup_test_sound")
        when = datetime.now(UTC).strftime("%H:%M:%S UTC")
        return self._status_page(checked[0], f"Played a test sound at {when}.")

    async def unpair(self, request: web.Request) -> web.Response:
        checked = await self._paired_form(request)
        if isinstance(checked, web.Response):
            return checked
        self.page.pairings.forget(checked[0].cookie)
        event("browser_unpaired", paired_browsers=self.page.pairings.count)
        response = self._redirect("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
