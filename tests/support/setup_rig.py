"""The app's real session, stdin button and setup page on their own event loop thread, against the
stand-in over verified TLS and a Firebase-like token endpoint, for the setup page tests (async
ones with an HTTP client, and the synchronous browser test alike).

Only the audio engine and the LED/speaker are doubles (the setup page does not touch audio).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sesame_pi.auth import TokenProvider
from sesame_pi.button import StdinButton, make_button
from sesame_pi.config import Config
from sesame_pi.link import Link
from sesame_pi.logs import setup_logging
from sesame_pi.session import Session
from sesame_pi.setup_page import SetupPage
from sesame_pi.standin import Standin, StandinOptions, server_tls
from sesame_pi.states import Earcon, State

from .credentials import make_pki, write_token
from .token_endpoint import Issuer, TokenEndpoint

API_KEY = "AIzaSyTest-setup-page-key-0123456789abc"
REFRESH = "AMf-setup-page-refresh-token-0123456789abcdefghij"
EMAIL = "maker@example.org"


def auth_record(refresh: str = REFRESH, api_key: str = API_KEY) -> str:
    """The auth-user record as the web app's browser keeps it (only the fields that matter)."""
    return json.dumps({
        "uid": "user-1", "email": EMAIL, "apiKey": api_key, "appName": "[DEFAULT]",
        "stsTokenManager": {"refreshToken": refresh, "accessToken": "", "expirationTime": 0},
    })  # fmt: skip


class Silence:
    """An AudioPort double: 20 ms frames of silence while a call runs."""

    reopening = False

    def start_call(self, playback_rate: int) -> None:
        pass

    def stop_call(self) -> None:
        pass

    def call_ending(self) -> None:
        pass

    def play_out(self) -> float:
        return 0.0

    async def next_frame(self) -> bytes:
        await asyncio.sleep(0.02)
        return b"\x00\x00" * 320

    def play(self, pcm: bytes) -> None:
        pass

    def probe(self) -> None:
        pass

    def stats(self) -> dict[str, int | float]:
        return {"frames_sent": 1}


@dataclass
class FeedbackLog:
    states: list[State] = field(default_factory=list)
    earcons: list[Earcon] = field(default_factory=list)
    announced: int = 0

    def show(self, state: State) -> None:
        self.states.append(state)

    def earcon(self, which: Earcon) -> None:
        self.earcons.append(which)

    def announce_setup(self) -> None:
        self.announced += 1


class SetupRig:
    """`with SetupRig(tmp, token=...) as rig:` then `rig.url`, `rig.press()`, `rig.state`."""

    def __init__(
        self,
        tmp: Path,
        token: str | None,
        mode: str = "always",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` is the page's (pairings, window, rate limits): a test moves it to see what
        a quarter of an hour does without waiting for one."""
        self.tmp = tmp
        self.token = token
        self.mode = mode
        self.clock = clock
        self.issuer = Issuer(API_KEY, REFRESH, EMAIL)
        self.endpoint = TokenEndpoint(self.issuer)
        self.feedback = FeedbackLog()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="app", daemon=True)
        self.log_file = tmp / "events.jsonl"
        self.token_file = tmp / "etc" / "token"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def __enter__(self) -> SetupRig:
        self.endpoint.__enter__()
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        pki = make_pki(self.tmp)
        self.token_file.parent.mkdir(mode=0o700, exist_ok=True)
        if self.token is not None:
            write_token(self.token_file, self.token)
        self.standin = Standin(StandinOptions(mode="silence", greeting_ms=0))
        port = await self.standin.start(tls=server_tls(str(pki.cert_file), str(pki.key_file)))
        self.cfg = Config(
            server=f"wss://127.0.0.1:{port}/agent-service-0/v1/connect",
            ca_file=pki.ca_file,
            token_file=self.token_file,
            token_endpoint=self.endpoint.url,
            log_file=self.log_file,
            button="stdin",
            setup_page=self.mode,
            setup_port=0,
            setup_bind="127.0.0.1",
        )
        setup_logging(self.cfg)
        self.tokens = TokenProvider(self.cfg)
        if self.token is not None:
            self.tokens.load()
        self.session = Session(
            self.cfg, link=Link(self.cfg, self.tokens), audio=Silence(), feedback=self.feedback
        )
        self.page = SetupPage(self.cfg, self.session, self.tokens, self.feedback, self.clock)
        button = make_button(self.cfg, self.session, asyncio.get_running_loop())
        assert isinstance(button, StdinButton)
        self.button = button
        button.start()
        self._tasks = [
            asyncio.create_task(self.session.run()),
            asyncio.create_task(self.page.run()),
            asyncio.create_task(self.tokens.watch(1.0)),
        ]
        if self.mode == "always" or self.token is None:
            async with asyncio.timeout(10):
                while self.page.port is None:  # noqa: ASYNC110 - polls the product's state
                    await asyncio.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.page.port}"

    @property
    def state(self) -> State:
        return self.session.state

    def press(self) -> None:
        """A short press on the stdin button (blocks for the tap, like the reader thread)."""
        self.button.handle_line("")

    def setup_hold(self) -> None:
        """The 5 s setup hold (blocks for it)."""
        self.button.handle_line("setup")

    def wait_state(self, state: State, timeout: float = 15) -> None:
        async def wait() -> None:
            async with asyncio.timeout(timeout):
                while self.session.state is not state:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)

        self.call(wait(), timeout + 5)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log_file.read_text().splitlines() if self.log_file.exists() else []
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if e.get("event") == name]

    def secrets(self) -> list[str]:
        """Every credential this rig knows of: none may appear in any response."""
        values = [REFRESH, *self.issuer.live, *self.issuer.issued]
        if self.token:
            values.append(self.token)
        return values

    async def _stop(self) -> None:
        await self.session.stop()
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        self.button.close()
        await self.standin.stop()

    def __exit__(self, *_exc: object) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.endpoint.__exit__()
