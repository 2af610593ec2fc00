"""The log's redaction of registered secrets stays bounded over a device's life."""

from __future__ import annotations

import secrets

import pytest

from sesame_pi import logs


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """(Other tests' tokens stay registered: this one's churn must not push them out.)"""
    monkeypatch.setattr(logs, "_secrets", {})
    monkeypatch.setattr(logs, "_secrets_longest_first", ())


def opaque() -> str:
    """A refresh-token-like value: not JWT-shaped, so only its registration redacts it."""
    return secrets.token_hex(24)


def test_a_year_of_hourly_tokens_keeps_the_redaction_list_bounded() -> None:
    """A token is registered at every hourly refresh; every log line scanned them all, sorted
    anew: 8,760 a year, on a Pi Zero's every line."""
    kept = opaque()
    logs.register_secret(kept)
    for hour in range(24 * 10):
        logs.register_secret(opaque())
        if hour % 20 == 0:
            logs.register_secret(kept)  # still in use: registered again, so kept
    assert len(logs._secrets) <= logs.SECRETS_KEPT
    newest = opaque()
    logs.register_secret(newest)
    line = f"refresh answered {newest} and {kept}"
    assert logs.redact(line) == f"refresh answered {logs.REDACTED} and {logs.REDACTED}"


def test_a_secret_inside_a_longer_one_leaves_no_part_of_the_longer_one() -> None:
    """Longest first: the short one replaced inside the long one left the long one's rest."""
    short = opaque()
    long = "x" + short + "y" * 8
    logs.register_secret(short)
    logs.register_secret(long)
    assert logs.redact(f"got {long}") == f"got {logs.REDACTED}"


def test_a_library_warning_is_a_json_line_in_the_log_not_bare_text_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a library says through `warnings.warn` reaches the log an owner collects, as one
    JSON line like every other, and is redacted like them."""
    import io
    import json
    import logging
    import warnings

    from sesame_pi.config import Config

    token = opaque()
    logs.register_secret(token)
    out = io.StringIO()
    # (an earlier test's set-up left logging believing it captures, while pytest put its own
    # `showwarning` back after that test: start from what a fresh process has)
    logging.captureWarnings(False)
    try:
        logs.setup_logging(Config().replace(log_file=None), stdout=out)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"pin library fell back (key {token})", RuntimeWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        logs._without_our_handlers()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    found = [line for line in lines if line["event"] == logs.PYTHON_WARNING]
    assert len(found) == 1, lines
    assert "RuntimeWarning: pin library fell back" in found[0]["msg"]
    assert token not in out.getvalue() and logs.REDACTED in found[0]["msg"]
    assert "pin library" not in capsys.readouterr().err
