"""The stand-in server on its own event loop thread, so synchronous tests can read its record."""

from __future__ import annotations

import asyncio
import ssl
import threading
from concurrent.futures import Future

from sesame_pi.standin import PATH, Standin, StandinOptions


class StandinThread:
    """`start()` returns the port; `record` is live; `stop()` closes it. Also a context manager."""

    def __init__(
        self,
        options: StandinOptions | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.standin = Standin(options)
        self.tls = tls
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="standin", daemon=True)

    @property
    def record(self):  # type: ignore[no-untyped-def]
        return self.standin.record

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://127.0.0.1:{self.port}{PATH}"

    def call(self, coro):  # type: ignore[no-untyped-def]
        """Run a coroutine on the stand-in's loop and wait for its result."""
        future: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(30)

    def start(self) -> int:
        if not self._thread.is_alive():
            self._thread.start()
        self.port = self.call(self.standin.start("127.0.0.1", self.port, self.tls))
        return self.port

    def restart_server(self) -> None:
        """Stop listening and drop every client (a server crash), keeping the record."""
        self.call(self.standin.stop())

    def stop(self) -> None:
        if self._thread.is_alive():
            self.call(self.standin.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self) -> StandinThread:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
