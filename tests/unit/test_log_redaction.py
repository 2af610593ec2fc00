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
