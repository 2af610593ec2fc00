"""Security under faults: an untrusted certificate is refused, and no log ever holds a token."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faults.ledger import LEDGER
from sesame_pi.standin import StandinOptions, server_tls
from support.app_process import AppProcess
from support.credentials import make_pki
from support.standin_thread import StandinThread

LOG_NAMES = re.compile(r"(\.jsonl(\.\d+)?|stdout\.txt|stderr\.txt|\.log)$")


def test_certificate_from_an_unknown_ca_is_refused(
    tmp_path: Path, token_file: Callable[..., tuple[str, Path]], figures: Any
) -> None:
    pki = make_pki(tmp_path)
    token, path = token_file()
    tls = server_tls(str(pki.cert_file), str(pki.key_file))
    options = StandinOptions(expect_token=token, greeting_ms=0)
    with StandinThread(options, tls=tls) as server:
        assert server.url.startswith("wss://")
        untrusting = tmp_path / "without-ca"
        untrusting.mkdir()
        with AppProcess(untrusting, server.url, path) as app:
            retry = app.wait_event("link_retry", timeout=20)
            time.sleep(2.0)
            assert "certificate" in retry["reason"].lower(), retry
            assert "verify failed" in retry["reason"] or "not trusted" in retry["reason"]
            assert not [e for e in app.events() if e.get("event") == "link_up"]
            assert server.record.connections == 0, "no WebSocket session was ever opened"
            figures("tls: unknown CA -> link_up", "never (refused)", "")
        # The control: the same server, trusted through --ca-file, is reached.
        trusting = tmp_path / "with-ca"
        trusting.mkdir()
        with AppProcess(
            trusting, server.url, path, extra_args=("--ca-file", str(pki.ca_file))
        ) as ok:
            ok.wait_event("link_up", timeout=20)
            assert server.record.connections >= 1


@pytest.mark.audit_last
def test_no_log_written_by_the_fault_tests_holds_a_token(
    tmp_path_factory: pytest.TempPathFactory, figures: Any
) -> None:
    secrets = {s for s in LEDGER.secrets if len(s) >= 16}
    if not secrets:
        pytest.skip("no fault test ran before this one: nothing to audit")
    # A whole token, or its payload or signature alone, would each be a leak (the JWT header is
    # the same for every token and secret to no one).
    needles = set(secrets)
    for secret in secrets:
        needles.update(part for part in secret.split(".")[1:] if len(part) >= 16)
    base = tmp_path_factory.getbasetemp()
    files = [p for p in base.rglob("*") if p.is_file() and LOG_NAMES.search(p.name)]
    lines = 0
    leaking: list[str] = []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            lines += 1
            if any(needle in line for needle in needles):
                leaking.append(f"{path}: {line[:120]}")
    # The control: the same search finds the tokens where they belong, in the token files.
    token_files = [p for p in base.rglob("token") if p.is_file()]
    found = sum(any(n in p.read_text() for n in needles) for p in token_files)
    figures("audit: log files / lines scanned", f"{len(files)} / {lines}", "")
    figures("audit: lines holding a token", len(leaking), "", "0")
    assert files and lines > 0, "the audit read real logs"
    assert token_files and found == len(token_files), "the search does find a token"
    assert leaking == [], leaking[:5]
