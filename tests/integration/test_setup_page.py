"""The setup page over real HTTP (aiohttp on 127.0.0.1), with the app's real session, stdin button
and login code: pairing by the 5 s hold and a press, cookies, CSRF and Origin checks, rate
limits, the setup window, and that no response ever carries a token.
"""

from __future__ import annotations

import asyncio
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sesame_pi.pairing import PAIRED_UNUSED_S
from sesame_pi.states import Earcon, State
from support.credentials import make_token
from support.setup_rig import EMAIL, SetupRig, auth_record


class Browser:
    """An HTTP client that keeps cookies and remembers every response, headers and body."""

    def __init__(self, rig: SetupRig) -> None:
        self.rig = rig
        self.client = aiohttp.ClientSession(
            rig.url, cookie_jar=aiohttp.CookieJar(unsafe=True), auto_decompress=True
        )
        self.seen: list[str] = []

    async def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **kw: object
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        if method == "POST":
            headers.setdefault("Origin", self.rig.url)
        async with self.client.request(
            method, path, data=form, headers=headers, allow_redirects=False, **kw
        ) as response:
            body = await response.text()
            self.seen.append(
                "\n".join(f"{k}: {v}" for k, v in response.headers.items()) + "\n" + body
            )
            return response.status, body, response

    async def pair(self) -> None:
        """Start pairing, press the button, finish: a paired browser."""
        code, csrf = await self.start_pairing()
        arm_pairing(self.rig)
        await press(self.rig)
        status, _, _ = await self.request("POST", "/pair/finish", {"code": code, "csrf": csrf})
        assert status == 303

    async def start_pairing(self) -> tuple[str, str]:
        status, _, response = await self.request("POST", "/pair/start")
        assert status == 303 and response.headers["Location"] == "/pair"
        status, body, _ = await self.request("GET", "/pair")
        assert status == 200
        return field(body, "pairing-code"), hidden(body, "csrf")

    async def csrf(self) -> str:
        status, body, _ = await self.request("GET", "/")
        assert status == 200
        return hidden(body, "csrf")


def field(body: str, element_id: str) -> str:
    found = re.search(rf"id={element_id}[^>]*>([^<]*)<", body)
    assert found, f"no #{element_id} in the page"
    return found.group(1)


def hidden(body: str, name: str) -> str:
    found = re.search(rf'name={name} value="([^"]*)"', body)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


def arm_pairing(rig: SetupRig) -> None:
    """What the 5 s hold does for pairing, in every state: the next presses may pair. (The hold
    itself is driven where it matters: with a token in auto mode, and while one is needed.)"""
    rig.page.window.open_for_a_while(for_pairing=True)


async def press(rig: SetupRig) -> None:
    await asyncio.to_thread(rig.press)
    await asyncio.sleep(0.2)  # the press reaches the loop after the debounce


async def started(built: SetupRig, state: State) -> AsyncIterator[SetupRig]:
    """The rig's device running and in `state`; stopped after the test."""
    await asyncio.to_thread(built.__enter__)
    try:
        await asyncio.to_thread(built.wait_state, state)
        yield built
    finally:
        await asyncio.to_thread(built.__exit__)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[SetupRig]:
    async for built in started(SetupRig(tmp_path, token=make_token()), State.IDLE):
        yield built


def assert_no_secret(rig: SetupRig, *browsers: Browser) -> None:
    secrets = [*rig.secrets(), rig.token_file.read_text().strip()]
    texts = [text for browser in browsers for text in browser.seen]
    assert texts
    for secret in secrets:
        for part in (secret, *secret.split(".")):
            if len(part) >= 16:
                assert not any(part in text for text in texts), "a response holds a token"


async def test_an_unpaired_browser_sees_nothing_and_may_change_nothing(rig: SetupRig) -> None:
    browser = Browser(rig)
    async with browser.client:
        status, body, _ = await browser.request("GET", "/")
        assert status == 403 and "not paired" in body and "id=state" not in body
        status, body, _ = await browser.request("GET", "/api/status")
        assert status == 403 and "idle" not in body
        for path in ("/login", "/test-sound", "/unpair"):
            status, body, _ = await browser.request("POST", path, {"record": auth_record()})
            assert status == 403, path
        assert rig.issuer.issued == [], "no login happened"
        assert Earcon.LIVE not in rig.feedback.earcons
    assert_no_secret(rig, browser)


async def test_a_press_pairs_the_waiting_browser_and_starts_no_call(rig: SetupRig) -> None:
    browser = Browser(rig)
    async with browser.client:
        code, csrf = await browser.start_pairing()
        assert re.fullmatch(r"[A-Z2-9]{6}", code)
        status, body, _ = await browser.request(
            "POST", "/pair/finish", {"code": code, "csrf": csrf}
        )
        assert status == 409 and "not been pressed" in body
        assert "Hold the device's button for 5 seconds" in body, "it can place calls: hold first"

        arm_pairing(rig)
        status, body, _ = await browser.request("GET", "/pair")
        assert "Press the device's button once" in body and "Hold the" not in body
        await press(rig)
        assert rig.state is State.IDLE and rig.standin.record.calls == 0, "no call was placed"
        status, _, response = await browser.request(
            "POST", "/pair/finish", {"code": code, "csrf": csrf}
        )
        assert status == 303
        cookie = next(
            v for k, v in response.headers.items() if k == "Set-Cookie" and "session" in v
        )
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie

        status, body, _ = await browser.request("GET", "/")
        assert status == 200 and "id=state>idle<" in body and "id=link>up<" in body
        assert re.search(r"id=token-left>\d+ min left<", body)
        status, body, response = await browser.request("GET", "/api/status")
        data = await response.json()
        assert data["state"] == "idle" and data["link"]["up"] is True
        assert 3500 <= data["token"]["seconds_left"] <= 3600

        # The same code again, from this browser or a fresh one: refused as replayed.
        status, body, _ = await browser.request(
            "POST", "/pair/finish", {"code": code, "csrf": csrf}
        )
        assert status == 403 and "used already" in body
        other = Browser(rig)
        async with other.client:
            status, body, _ = await other.request(
                "POST", "/pair/finish", {"code": code, "csrf": csrf}
            )
            assert status == 403 and "used already" in body
            status, _, _ = await other.request("GET", "/")
            assert status == 403, "a replayed code pairs nobody"

        # A short press now is the session's again: it places a call.
        await press(rig)
        await asyncio.to_thread(rig.wait_state, State.LIVE)
    assert_no_secret(rig, browser)
    assert [e["result"] for e in rig.events("pairing_press")] == ["confirmed"]


async def test_a_wrong_code_is_refused_and_three_drop_the_request(rig: SetupRig) -> None:
    browser = Browser(rig)
    async with browser.client:
        code, csrf = await browser.start_pairing()
        arm_pairing(rig)
        await press(rig)
        wrong = "ABCDEF" if code != "ABCDEF" else "GHJKMN"
        for _ in range(2):
            status, body, _ = await browser.request(
                "POST", "/pair/finish", {"code": wrong, "csrf": csrf}
            )
            assert status == 403 and "not the code" in body
        await browser.request("POST", "/pair/finish", {"code": wrong, "csrf": csrf})
        status, body, _ = await browser.request(
            "POST", "/pair/finish", {"code": code, "csrf": csrf}
        )
        assert status == 403 and "unknown or has expired" in body
        assert (await browser.request("GET", "/"))[0] == 403


async def a_press_places_a_call_and_pairs_nobody(rig: SetupRig, intruder: Browser) -> None:
    """Someone opens a pairing request; the owner's press places a call and confirms nothing."""
    code, csrf = await intruder.start_pairing()
    await press(rig)
    await asyncio.to_thread(rig.wait_state, State.LIVE)
    status, body, _ = await intruder.request("POST", "/pair/finish", {"code": code, "csrf": csrf})
    assert status == 409 and "not been pressed" in body
    assert (await intruder.request("GET", "/"))[0] == 403, "the request paired nobody"


async def test_a_press_for_a_call_never_pairs_a_browser_someone_keeps_waiting(
    rig: SetupRig,
) -> None:
    """The page is up and the token works: someone on the network keeps a pairing request open.
    The owner's press is for a call, and places one; the request stays unconfirmed."""
    intruder = Browser(rig)
    async with intruder.client:
        await a_press_places_a_call_and_pairs_nobody(rig, intruder)
    assert rig.events("pairing_press") == []
    assert rig.standin.record.calls == 1


async def test_a_finished_pairing_uses_up_the_hold(rig: SetupRig) -> None:
    """The owner holds, pairs their browser, and then presses for a call; meanwhile someone else
    on the network opened a pairing request. The press places the call: the hold was for one
    pairing, and the other request stays unconfirmed (it used to be confirmed by that press)."""
    owner, intruder = Browser(rig), Browser(rig)
    async with owner.client, intruder.client:
        await owner.pair()
        assert not rig.page.window.pairing_armed
        await a_press_places_a_call_and_pairs_nobody(rig, intruder)
    assert [e["result"] for e in rig.events("pairing_press")] == ["confirmed"]
    assert rig.standin.record.calls == 1


async def test_a_paired_owner_who_holds_to_see_the_page_keeps_the_next_press_for_a_call(
    rig: SetupRig,
) -> None:
    """The 5 s hold is an owner's way to open the page at all. One already paired, who held only
    to look at it, armed pairing for a quarter of an hour: a request someone opened meanwhile
    took the owner's next press (meant for a call) as its confirmation. Looking at the page from
    a paired browser gives presses back to calls, whether the stranger asked before the owner
    looked (it used to stay armed then) or after."""
    owner, intruder, early = Browser(rig), Browser(rig), Browser(rig)
    async with owner.client, intruder.client, early.client:
        await owner.pair()
        arm_pairing(rig)  # the hold, to open the page
        early_code, early_csrf = await early.start_pairing()  # a stranger, quick off the mark
        assert (await owner.request("GET", "/"))[0] == 200
        assert not rig.page.window.pairing_armed
        await a_press_places_a_call_and_pairs_nobody(rig, intruder)
        status, body, _ = await early.request(
            "POST", "/pair/finish", {"code": early_code, "csrf": early_csrf}
        )
        assert status == 409 and "not been pressed" in body
    assert [e["result"] for e in rig.events("pairing_press")] == ["confirmed"]
    assert rig.standin.record.calls == 1


async def test_a_full_table_of_waiting_browsers_refuses_the_next(rig: SetupRig) -> None:
    """Requests beyond the few that may wait are refused with a wait, not by pushing the oldest
    (perhaps the owner's) out."""
    browsers = [Browser(rig) for _ in range(5)]
    try:
        for browser in browsers[:4]:
            await browser.start_pairing()
        status, body, response = await browsers[4].request("POST", "/pair/start")
        assert status == 429 and "waiting to pair already" in body
        assert 50 <= int(response.headers["Retry-After"]) <= 60
        assert "Content-Security-Policy" in response.headers
        assert (await browsers[0].request("GET", "/pair"))[0] == 200, "the first still waits"
    finally:
        for browser in browsers:
            await browser.client.close()
    assert [e["reason"] for e in rig.events("pairing_refused")] == ["busy"]


async def test_two_waiting_browsers_spoil_the_press(rig: SetupRig) -> None:
    owner, intruder = Browser(rig), Browser(rig)
    async with owner.client, intruder.client:
        mine = await owner.start_pairing()
        theirs = await intruder.start_pairing()
        arm_pairing(rig)
        await press(rig)
        assert rig.state is State.IDLE and rig.feedback.earcons[-1] is Earcon.ERROR
        for browser, (code, csrf) in ((owner, mine), (intruder, theirs)):
            status, _, _ = await browser.request(
                "POST", "/pair/finish", {"code": code, "csrf": csrf}
            )
            assert status == 403
        assert [e["result"] for e in rig.events("pairing_press")] == ["ambiguous"]


async def test_a_stranger_who_asks_before_the_owner_finishes_spoils_both(rig: SetupRig) -> None:
    """The owner's request is confirmed by the press; before the owner sends the code, someone
    else asks. Pairing the owner would leave the stranger's request waiting for the owner's next
    press (the device has no working token or was just held: presses pair), so neither pairs."""
    owner, stranger = Browser(rig), Browser(rig)
    async with owner.client, stranger.client:
        code, csrf = await owner.start_pairing()
        arm_pairing(rig)
        await press(rig)
        theirs = await stranger.start_pairing()
        status, body, _ = await owner.request("POST", "/pair/finish", {"code": code, "csrf": csrf})
        assert status == 403 and "Another browser asked to pair" in body
        await press(rig)  # the owner presses again: nothing waits to be confirmed
        status, _, _ = await stranger.request(
            "POST", "/pair/finish", {"code": theirs[0], "csrf": theirs[1]}
        )
        assert status == 403
        assert rig.page.pairings.count == 0
        assert [e["reason"] for e in rig.events("pairing_refused")][:1] == ["contested"]


async def test_a_kept_alive_connection_is_not_answered_after_the_window_closes(
    tmp_path: Path,
) -> None:
    """Stopping the site ends only new connections: a paired browser that kept its connection
    alive was still answered after the window closed, and could sign the device into another
    account long after the owner's 15 minutes."""
    rig = SetupRig(tmp_path, token=make_token(), mode="auto")
    await asyncio.to_thread(rig.__enter__)
    try:
        await asyncio.to_thread(rig.wait_state, State.IDLE)
        await asyncio.to_thread(rig.setup_hold)
        await asyncio.sleep(1.5)  # the hold's release (as in the test of the hold above)
        assert rig.page.serving and rig.state is State.IDLE
        browser = Browser(rig)
        async with browser.client:
            await browser.pair()
            csrf = await browser.csrf()
            rig.page.window.mode = "off"  # as the window's end would
            async with asyncio.timeout(10):
                while rig.page.serving:  # noqa: ASYNC110 - polls the product's state
                    await asyncio.sleep(0.05)
            status, body, _ = await browser.request("POST", "/test-sound", {"csrf": csrf})
            assert status == 404 and "closed" in body
            assert not rig.events("setup_test_sound")
            with pytest.raises(aiohttp.ClientConnectionError):  # and the connection is closed
                await browser.request("GET", "/")
    finally:
        await asyncio.to_thread(rig.__exit__)


async def test_a_host_header_with_a_bad_port_is_refused_in_words(rig: SetupRig) -> None:
    """The 421's hint took the port from the Host header: `:abc` or `:99999` raised inside the
    guard (a 500 and a traceback in the log, for every such request, before the rate limit)."""
    browser = Browser(rig)
    async with browser.client:
        for host in ("evil.example:abc", "evil.example:99999", "evil.example:80:80"):
            status, body, _ = await browser.request("GET", "/", headers={"Host": host})
            assert status == 421, host
            assert f"http://127.0.0.1:{rig.page.port}/" in body
    assert not [line for line in rig.log_file.read_text().splitlines() if "Traceback" in line]


async def test_a_form_that_is_not_text_is_a_clear_400_not_a_crash(rig: SetupRig) -> None:
    """A body that is not text in its charset, or names a charset that does not exist, raised
    from inside aiohttp's form reader: a 500 without the page's headers and a traceback in the
    log. /pair/finish needs no pairing, so anyone on the network could do it."""
    browser = Browser(rig)
    async with browser.client:
        for content_type in (
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=no-such-charset",
        ):
            headers = {"Content-Type": content_type, "Origin": rig.url}
            async with browser.client.post(
                "/pair/finish", data=b"code=\xff\xfe", headers=headers, allow_redirects=False
            ) as response:
                status, body = response.status, await response.text()
                assert status == 400 and "could not be read" in body, (status, body)
                assert "Content-Security-Policy" in response.headers
    assert "Traceback" not in rig.log_file.read_text()


async def test_forms_need_the_csrf_token_and_the_page_own_origin(rig: SetupRig) -> None:
    browser = Browser(rig)
    async with browser.client:
        await browser.pair()
        csrf = await browser.csrf()
        status, body, _ = await browser.request("POST", "/test-sound", {})
        assert status == 403 and "check token" in body
        status, _, _ = await browser.request("POST", "/test-sound", {"csrf": csrf[:-2] + "xx"})
        assert status == 403
        evil = {"Origin": "http://evil.example"}
        status, _, _ = await browser.request("POST", "/test-sound", {"csrf": csrf}, headers=evil)
        assert status == 403
        assert Earcon.LIVE not in rig.feedback.earcons
        status, body, _ = await browser.request("POST", "/test-sound", {"csrf": csrf})
        assert status == 200 and "Played a test sound" in body
        assert rig.feedback.earcons[-1] is Earcon.LIVE
        # Another paired browser's token does not work here either.
        other = Browser(rig)
        async with other.client:
            await other.pair()
            status, _, _ = await other.request("POST", "/test-sound", {"csrf": csrf})
            assert status == 403


async def test_foreign_host_names_are_refused_and_requests_are_rate_limited(
    rig: SetupRig,
) -> None:
    browser = Browser(rig)
    async with browser.client:
        status, body, _ = await browser.request("GET", "/", headers={"Host": "evil.example"})
        assert status == 421, "a rebound DNS name does not reach the page"
        assert "http://127.0.0.1:" in body, "the 421 says which address works"
        for host in ("sesame-pi.local:8080", "sesame-pi.lan", "sesame-pi.fritz.box"):
            status, _, _ = await browser.request("GET", "/", headers={"Host": host})
            assert status == 403, host  # a name a router hands out, not paired
        for host in ("sesame-pi.evil.example", "local.evil.example", "lan"):
            status, _, _ = await browser.request("GET", "/", headers={"Host": host + ".com"})
            assert status == 421, host
        statuses = [(await browser.request("GET", "/"))[0] for _ in range(40)]
        assert 429 in statuses and statuses[0] == 403
        starts = [(await browser.request("POST", "/pair/start"))[0] for _ in range(3)]
        assert set(starts) == {429}


async def test_pasting_the_record_logs_in_and_the_app_uses_the_new_token(tmp_path: Path) -> None:
    """No token at all: the page opens by itself (auto), a paired browser hands over the record,
    the files are written 0600, the link comes up with the new token, and the status shows it."""
    rig = SetupRig(tmp_path, token=None, mode="auto")
    await asyncio.to_thread(rig.__enter__)
    browser = Browser(rig)
    try:
        await asyncio.to_thread(rig.wait_state, State.NEEDS_TOKEN)
        assert rig.page.serving
        async with browser.client:
            await browser.pair()
            status, body, _ = await browser.request("GET", "/")
            assert "no token yet" in body and "id=state>needs_token<" in body
            csrf = hidden(body, "csrf")
            status, body, _ = await browser.request(
                "POST", "/login", {"csrf": csrf, "record": '{"broken": '}
            )
            assert status == 400 and "cut off or damaged" in body and "broken" not in body
            status, body, _ = await browser.request(
                "POST", "/login", {"csrf": csrf, "record": auth_record()}
            )
            assert status == 200, body
            assert f"Signed in for {EMAIL}" in field(body, "notice")
            assert re.search(r"has (59|60) min left", body)
            assert len(rig.issuer.issued) == 1
            for path in (rig.token_file, rig.token_file.with_name("refresh_token")):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
            await asyncio.to_thread(rig.wait_state, State.IDLE)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status, body, _ = await browser.request("GET", "/")
                if re.search(r"id=token-left>(59|60) min left<", body):
                    break
                await asyncio.sleep(0.5)
            assert re.search(r"id=token-left>(59|60) min left<", body)
            assert "id=state>idle<" in body and f"id=token-account>{EMAIL}<" in body
            assert "on (the device renews it by itself)" in body
            assert rig.page.serving, "the page stays up a while after the token works"
            assert rig.page.window.open_s_left() > 14 * 60
        assert_no_secret(rig, browser)
    finally:
        await asyncio.to_thread(rig.__exit__)


async def finish(browser: Browser, request: tuple[str, str]) -> tuple[int, str]:
    """Send a pairing request's code back: (HTTP status, page)."""
    code, csrf = request
    status, body, _ = await browser.request("POST", "/pair/finish", {"code": code, "csrf": csrf})
    return status, body


@pytest.fixture
async def needs_token(tmp_path: Path) -> AsyncIterator[SetupRig]:
    """A device without a token: its page open by itself (auto), its presses refused."""
    async for built in started(SetupRig(tmp_path, token=None, mode="auto"), State.NEEDS_TOKEN):
        yield built


async def test_a_press_while_a_token_is_needed_pairs_nobody_without_the_hold(
    needs_token: SetupRig,
) -> None:
    """The device needs a token and beeps; someone on the network keeps a pairing request open.
    A press from the household (to try a call, or at the beeps) confirmed it: the stranger was
    paired and could hand the device their own account, and the household's calls went to it."""
    rig, stranger = needs_token, Browser(needs_token)
    async with stranger.client:
        theirs = await stranger.start_pairing()
        await press(rig)  # someone tries a call
        status, body = await finish(stranger, theirs)
        assert status == 409 and "not been pressed" in body, "the press confirmed nothing"
        assert "Hold the device's button for 5 seconds" in body, "the page says: hold first"
        assert (await stranger.request("GET", "/"))[0] == 403
    assert rig.events("pairing_press") == [] and rig.page.pairings.count == 0
    assert rig.events("press_ignored"), "the press was the session's: refused, no token"


async def test_while_a_token_is_needed_the_hold_then_a_press_pairs_once(
    needs_token: SetupRig,
) -> None:
    """Without a token the owner pairs as at any other time: the real 5 s hold, then a press.
    The hold is for that one pairing: the next press, at the device's beeps, confirms nobody."""
    rig, owner, stranger = needs_token, Browser(needs_token), Browser(needs_token)
    async with owner.client, stranger.client:
        await asyncio.to_thread(rig.setup_hold)
        await asyncio.sleep(1.5)  # the hold's release reaches the loop (as in the tests below)
        assert rig.feedback.announced == 1 and rig.page.window.pairing_armed
        mine = await owner.start_pairing()
        status, body, _ = await owner.request("GET", "/pair")
        assert "Press the device's button once" in body and "Hold the" not in body
        await press(rig)
        assert (await finish(owner, mine))[0] == 303
        assert (await owner.request("GET", "/"))[0] == 200

        theirs = await stranger.start_pairing()
        await press(rig)  # the hold is used up: this press is the session's
        status, body = await finish(stranger, theirs)
        assert status == 409 and "Hold the device's button for 5 seconds" in body
        assert (await stranger.request("GET", "/"))[0] == 403
    assert [e["result"] for e in rig.events("pairing_press")] == ["confirmed"]
    assert rig.page.pairings.count == 1 and rig.state is State.NEEDS_TOKEN


async def test_a_pairing_left_unused_is_forgotten_and_the_page_says_so(tmp_path: Path) -> None:
    """A browser paired once kept the device (its account, its sign-in) until a restart. Unused
    for an hour, it is refused like any unpaired browser, and told why, also when it posts."""
    now = [time.monotonic()]
    rig = SetupRig(tmp_path, token=make_token(), clock=lambda: now[0])
    await asyncio.to_thread(rig.__enter__)
    try:
        await asyncio.to_thread(rig.wait_state, State.IDLE)
        browser = Browser(rig)
        async with browser.client:
            await browser.pair()
            now[0] += PAIRED_UNUSED_S - 60
            assert (await browser.request("GET", "/"))[0] == 200, "used in time: kept"
            now[0] += PAIRED_UNUSED_S - 60
            csrf = await browser.csrf()
            now[0] += PAIRED_UNUSED_S + 1
            status, body, _ = await browser.request("POST", "/test-sound", {"csrf": csrf})
            assert status == 403 and Earcon.LIVE not in rig.feedback.earcons
            assert "pairing was forgotten" in body, "a post is told why too"
            status, body, _ = await browser.request("GET", "/")
            assert status == 403 and "pairing was forgotten" in body and "id=state" not in body
            assert rig.page.pairings.count == 0
    finally:
        await asyncio.to_thread(rig.__exit__)


async def test_auto_mode_listens_only_after_the_setup_hold(tmp_path: Path) -> None:
    rig = SetupRig(tmp_path, token=make_token(), mode="auto")
    await asyncio.to_thread(rig.__enter__)
    try:
        await asyncio.to_thread(rig.wait_state, State.IDLE)
        await asyncio.sleep(1.5)
        assert not rig.page.serving and rig.page.port is None
        await asyncio.to_thread(rig.setup_hold)
        await asyncio.sleep(1.5)
        assert rig.page.serving and rig.page.port
        assert rig.feedback.announced == 1 and rig.events("setup_window_opened")
        assert rig.state is State.IDLE, "the call the press began ended at the 2 s hold"
        browser = Browser(rig)
        async with browser.client:
            status, body, _ = await browser.request("GET", "/")
            assert status == 403 and "not paired" in body
            # The hold was the owner's sign: the next press pairs instead of placing a call.
            code, csrf = await browser.start_pairing()
            status, body, _ = await browser.request("GET", "/pair")
            assert "Press the device's button once" in body and "Hold the" not in body
            await press(rig)
            status, _, _ = await browser.request(
                "POST", "/pair/finish", {"code": code, "csrf": csrf}
            )
            assert status == 303 and rig.standin.record.calls == 1, "only the hold's own call"
    finally:
        await asyncio.to_thread(rig.__exit__)


async def test_run_without_a_token_waits_with_the_page_open(tmp_path: Path) -> None:
    """`sesame-pi run` with no token file and the default setup_page (auto) keeps running,
    says why, and serves the page instead of exiting 3."""
    from support.app_process import AppProcess

    app = AppProcess(
        tmp_path,
        "ws://127.0.0.1:9/agent-service-0/v1/connect",
        tmp_path / "missing-token",
        extra_args=("--setup-port", "0", "--setup-bind", "127.0.0.1"),
    )
    with app:
        opened = await asyncio.to_thread(app.wait_event, "setup_page_open")
        await asyncio.to_thread(app.wait_state, "needs_token")
        assert opened["port"] > 0 and app.events()[0]["event"] == "app_started"
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{opened['port']}/") as response,
        ):
            assert response.status == 403 and "not paired" in await response.text()
        assert app.terminate() == 0
    assert "waiting for a token" in app.stderr_file.read_text()


def test_aiohttp_is_loaded_only_when_the_page_opens() -> None:
    """Most appliances never show the page after their first day: its web server (about 12 MB of
    a Pi's memory) must not be imported by the app until the window first opens."""
    import subprocess
    import sys

    probe = (
        "import sys, sesame_pi.app, sesame_pi.cli, sesame_pi.setup_page\n"
        "print('aiohttp' in sys.modules)\n"
        "import sesame_pi.setup_web\n"
        "print('aiohttp' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["False", "True"], out
