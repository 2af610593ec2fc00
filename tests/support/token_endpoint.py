"""A local stand-in for Firebase's secure-token endpoint (refresh token -> new ID token).

Two ways to answer: a scripted list of (status, body), or an `Issuer` that behaves like Firebase
(checks the API key and the refresh token, issues a fresh ID token and rotates the refresh token).
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from .credentials import make_token

Answer = tuple[int, dict[str, Any]]


# An answer whose connection closes a few bytes into the promised body (Wi-Fi lost mid-answer):
# urllib raises http.client's IncompleteRead, which is neither an OSError nor a URLError.
CUT_SHORT: Answer = (200, {"cut short": True})


def refusal(code: str) -> Answer:
    """Firebase's error shape, e.g. refusal("INVALID_REFRESH_TOKEN")."""
    return 400, {"error": {"code": 400, "message": code, "status": "INVALID_ARGUMENT"}}


class Issuer:
    """Firebase's refresh grant: a known key and a live refresh token give a new ID token and a
    new refresh token (the old one then stops working); anything else is refused."""

    def __init__(
        self,
        api_key: str,
        refresh_token: str,
        email: str = "maker@example.org",
        lifetime_s: int = 3600,
    ) -> None:
        self.api_key = api_key
        self.lifetime_s = lifetime_s  # of each ID token (Firebase's: an hour)
        self.live = {refresh_token}
        self.email = email
        self.issued: list[str] = []  # ID tokens handed out, newest last
        self._serial = itertools.count(1)

    def __call__(self, query: dict[str, str], form: dict[str, str]) -> Answer:
        if query.get("key") != self.api_key:
            return refusal("API key not valid. Please pass a valid API key.")
        if form.get("grant_type") != "refresh_token":
            return refusal("INVALID_GRANT_TYPE")
        if form.get("refresh_token") not in self.live:
            return refusal("INVALID_REFRESH_TOKEN")
        self.live.discard(form["refresh_token"])
        rotated = f"AMf-rotated-{next(self._serial)}-0123456789abcdefghijklmnop"
        self.live.add(rotated)
        id_token = make_token(exp_in_s=self.lifetime_s, uid=f"user-{len(self.issued)}")
        self.issued.append(id_token)
        return 200, {
            "id_token": id_token,
            "access_token": id_token,
            "refresh_token": rotated,
            "expires_in": str(self.lifetime_s),
            "token_type": "Bearer",
            "user_id": "user",
        }


class TokenEndpoint:
    """Answers POSTs from a list of (status, body), in order; records each request's form."""

    def __init__(self, issuer: Callable[[dict[str, str], dict[str, str]], Answer] | None = None):
        self.answers: list[Answer] = []
        self.issuer = issuer
        self.seen: list[dict[str, str]] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                endpoint.seen.append({"path": self.path, **form})
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                if endpoint.answers:
                    status, body = endpoint.answers.pop(0)
                elif endpoint.issuer is not None:
                    status, body = endpoint.issuer(query, form)
                else:
                    status, body = 500, {}
                raw = isinstance(body, bytes)  # (a page someone else answered with)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if raw else "application/json")
                if body is CUT_SHORT[1]:
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"id_token": "')
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/token"

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
