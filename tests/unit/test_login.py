"""parse_credentials: every form a browser hands the auth record over in, and what it refuses."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from sesame_pi.login import LoginError, parse_credentials
from support.credentials import make_token

REFRESH = "AMf-vBzTestRefreshToken_0123456789-abcdefghijklmnopqrstuvwxyz"
KEY = "AIzaSyTestKey-0123456789abcdefghijklmno"


def record(**extra: object) -> dict[str, object]:
    """The auth-user object as Firebase's JS SDK keeps it (fields trimmed to the usual ones)."""
    return {
        "uid": "u123",
        "email": "maker@example.org",
        "emailVerified": True,
        "isAnonymous": False,
        "providerData": [{"providerId": "google.com", "email": "maker@example.org"}],
        "stsTokenManager": {
            "refreshToken": REFRESH,
            "accessToken": make_token(),
            "expirationTime": 1_764_000_000_000,
        },
        "createdAt": "1700000000000",
        "lastLoginAt": "1764000000000",
        "apiKey": KEY,
        "appName": "[DEFAULT]",
        **extra,
    }


def wrapped(value: object) -> dict[str, object]:
    return {"fbase_key": f"firebase:authUser:{KEY}:[DEFAULT]", "value": value}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(record()),
        json.dumps(record(), indent=2).replace("\n", "\r\n"),  # as Windows saves it
        "\ufeff" + json.dumps(record()) + "\r\n",  # Notepad's byte order mark
        json.dumps(wrapped(record())),  # the IndexedDB row
        json.dumps([{"fbase_key": "__sak", "value": "__sak"}, wrapped(record())]),  # all rows
        json.dumps(json.dumps(record())),  # a JSON string of the object
        json.dumps(wrapped(json.dumps(record()))),  # a row whose value is a JSON string
    ],
    ids=["object", "crlf", "bom", "row", "rows", "string", "row-of-string"],
)
def test_the_record_in_every_form_gives_refresh_token_key_and_email(text: str) -> None:
    creds = parse_credentials(text)
    assert creds.refresh_token == REFRESH
    assert creds.api_key == KEY
    assert creds.email == "maker@example.org"


def test_a_bare_refresh_token_takes_the_key_given() -> None:
    creds = parse_credentials(f"  {REFRESH}\r\n", api_key=KEY)
    assert (creds.refresh_token, creds.api_key, creds.email) == (REFRESH, KEY, None)
    assert parse_credentials(REFRESH).api_key is None  # login() then looks in the config


def test_a_bare_refresh_token_copied_with_its_quotes_is_taken() -> None:
    """DevTools shows a string value quoted; a token copied so is the same token, not a damaged
    record (it used to be refused as "not a signed-in Firebase user record")."""
    creds = parse_credentials(f'"{REFRESH}"\n', api_key=KEY)
    assert (creds.refresh_token, creds.api_key) == (REFRESH, KEY)


def test_an_api_key_given_wins_over_the_records() -> None:
    other = "AIzaSyOtherKey-9876543210zyxwvutsrqponml"
    assert parse_credentials(json.dumps(record()), api_key=other).api_key == other


def test_the_credentials_repr_never_shows_the_refresh_token() -> None:
    assert REFRESH not in repr(parse_credentials(json.dumps(record())))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "nothing was given"),
        ("  \r\n ", "nothing was given"),
        (json.dumps(record())[:-40], "cut off or damaged"),
        ("[" * 100_000, "cut off or damaged"),  # deeper than the parser goes: RecursionError
        (json.dumps({"uid": "u1", "email": "a@b.c"}), "no stsTokenManager.refreshToken"),
        (json.dumps(wrapped("__sak")), "no stsTokenManager.refreshToken"),
        (json.dumps(record(stsTokenManager={"refreshToken": "a b"})), "damaged"),
        ("two words here, not a token", "neither an auth record"),
        ("short", "neither an auth record"),
    ],
)
def test_malformed_input_is_refused_in_one_sentence_without_the_input(text: str, says: str) -> None:
    with pytest.raises(LoginError) as info:
        parse_credentials(text)
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert REFRESH not in message


def test_an_id_token_is_recognised_and_refused() -> None:
    token = make_token()
    with pytest.raises(LoginError, match="ID token") as info:
        parse_credentials(token)
    assert token not in str(info.value)


def test_a_bad_api_key_is_refused() -> None:
    with pytest.raises(LoginError, match="not a Firebase API key"):
        parse_credentials(REFRESH, api_key="not a key")


def test_the_readme_shows_the_snippet_the_package_ships() -> None:
    """README.md, "Get your token", and the setup page show the same copy-auth-record.js."""
    repo = Path(__file__).resolve().parents[2]
    snippet = (files("sesame_pi") / "assets" / "copy-auth-record.js").read_text()
    readme = (repo / "README.md").read_text()
    section = readme[readme.index("## Get your token") : readme.index("## The token")]
    block = section.split("```js\n")[1].split("```")[0]
    shown = "\n".join(line.removeprefix("   ") for line in block.splitlines())
    assert shown.strip() == snippet.strip()
    assert 'indexedDB.open("firebaseLocalStorageDb")' in snippet and "copy" in snippet


def test_a_guest_row_before_the_signed_in_one_does_not_hide_the_account() -> None:
    """All of IndexedDB's rows pasted, a guest session's first: the first row with a refresh
    token was taken, and the paste refused as anonymous (a first boot's record renamed
    `.refused`). The signed-in account is taken; a list of guests alone is still refused."""
    guest = record(isAnonymous=True, email=None, stsTokenManager={"refreshToken": "AMf-guest1"})
    rows = [wrapped(guest), wrapped(record())]
    creds = parse_credentials(json.dumps(rows))
    assert creds.refresh_token == REFRESH and creds.email == "maker@example.org"
    with pytest.raises(LoginError, match="anonymous visitor"):
        parse_credentials(json.dumps([wrapped(guest)]))
