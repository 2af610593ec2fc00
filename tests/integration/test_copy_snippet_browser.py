"""The README's console snippet, run in Debian's headless chromium against a page whose IndexedDB
holds what the Firebase JS SDK keeps there (`firebaseLocalStorageDb` / `firebaseLocalStorage`,
rows keyed by `fbase_key`). What it copies must be what `sesame-pi login` parses.

The real Sesame web app is out of reach here (no internet): this shows the snippet against the
documented storage shape, not against the live site.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from importlib.resources import files
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from sesame_pi.login import parse_credentials
from support.credentials import make_token

SNIPPET = (files("sesame_pi") / "assets" / "copy-auth-record.js").read_text()
# The snippet ends in an async IIFE; the test learns when it finished.
TRACKED = SNIPPET.replace("})();", "})().finally(() => { window.__done = true; });")
KEY = "AIzaSyBrowserTestKey-0123456789abcdefghij"
REFRESH = "AMf-vBzBrowserRefresh-0123456789abcdefghijklmnopqrstuvwxyz"

# The page plays the web app: it fills the store the way the SDK does, then says it is ready.
PAGE = """<!doctype html><meta charset="utf-8"><title>stand-in web app</title>
<script>
const rows = JSON.parse(decodeURIComponent(location.hash.slice(1)) || "[]");
const open = indexedDB.open("firebaseLocalStorageDb", 1);
open.onupgradeneeded = () => open.result.createObjectStore("firebaseLocalStorage",
  {keyPath: "fbase_key"});
open.onsuccess = () => {
  const tx = open.result.transaction("firebaseLocalStorage", "readwrite");
  const store = tx.objectStore("firebaseLocalStorage");
  store.clear();
  rows.forEach((row) => store.put(row));
  tx.oncomplete = () => { open.result.close(); window.__ready = true; };
};
</script>"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def run_snippet(browser: webdriver.Chrome, site: str, rows: list[dict[str, object]]) -> object:
    """Load the page with these rows, give it DevTools' copy(), run the snippet; what it copied."""
    browser.get(f"{site}#{quote(json.dumps(rows))}")
    browser.refresh()  # a hash change alone does not reload the page
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.__ready === true"))
    browser.execute_script(
        "window.__done = false; window.__copied = null;"
        "window.copy = (text) => { window.__copied = text; };"
    )
    browser.execute_script(TRACKED)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.__done === true"))
    return browser.execute_script("return window.__copied")


def user_row() -> dict[str, object]:
    return {
        "fbase_key": f"firebase:authUser:{KEY}:[DEFAULT]",
        "value": {
            "uid": "u1",
            "email": "maker@example.org",
            "emailVerified": True,
            "isAnonymous": False,
            "providerData": [{"providerId": "google.com", "email": "maker@example.org"}],
            "stsTokenManager": {
                "refreshToken": REFRESH,
                "accessToken": make_token(),
                "expirationTime": 1_764_000_000_000,
            },
            "apiKey": KEY,
            "appName": "[DEFAULT]",
        },
    }


def test_the_snippet_copies_the_record_that_login_parses(
    browser: webdriver.Chrome, site: str
) -> None:
    copied = run_snippet(browser, site, [{"fbase_key": "__sak", "value": "__sak"}, user_row()])
    assert isinstance(copied, str)
    creds = parse_credentials(copied)
    assert (creds.refresh_token, creds.api_key, creds.email) == (REFRESH, KEY, "maker@example.org")
    assert json.loads(copied)["stsTokenManager"]["refreshToken"] == REFRESH


def test_without_a_signed_in_user_the_snippet_copies_nothing(
    browser: webdriver.Chrome, site: str
) -> None:
    assert run_snippet(browser, site, [{"fbase_key": "__sak", "value": "__sak"}]) is None


def test_an_anonymous_visitor_is_skipped_for_the_signed_in_user(
    browser: webdriver.Chrome, site: str
) -> None:
    """The web app signs a visitor in anonymously until they sign in; the service refuses those
    accounts, so the snippet copies the real user's record, or nothing."""
    visitor = user_row()
    visitor["fbase_key"] = "firebase:authUser:visitor"
    visitor["value"] = {**visitor["value"], "isAnonymous": True, "email": None}  # type: ignore[dict-item]
    assert run_snippet(browser, site, [visitor]) is None
    copied = run_snippet(browser, site, [visitor, user_row()])
    assert isinstance(copied, str) and json.loads(copied)["isAnonymous"] is False
