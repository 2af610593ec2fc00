"""Fixtures for the fault tests: namespaces, virtual audio, tokens the log audit looks for, figures.

The session ends with a table of what was measured (recovery times, RSS growth, fds, log bytes,
frames fuzzed), also written to bench-out/faults.json for the benchmark report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.figures import FIGURES
from faults.ledger import LEDGER
from faults.netlab import NetLab, NetLabUnavailable
from support.credentials import make_token, write_token
from support.virtual_audio import VirtualAudio, VirtualAudioUnavailable

Record = Callable[..., None]


@pytest.fixture
def token_file(tmp_path: Path) -> Callable[..., tuple[str, Path]]:
    """Make a token, write it (mode 0600) and remember it for the audit."""

    def make(exp_in_s: float = 3600, name: str = "token", **claims: object) -> tuple[str, Path]:
        token = LEDGER.add(make_token(exp_in_s=exp_in_s, **claims))  # type: ignore[arg-type]
        return token, write_token(tmp_path / name, token)

    return make


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Record:
    """record(name, value, unit="", limit="") under this test's name."""

    def record(name: str, value: float | int | str, unit: str = "", limit: str = "") -> None:
        FIGURES.record(request.node.name, name, value, unit, limit)

    return record


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, iptables)")


@pytest.fixture
def lab() -> Iterator[NetLab]:
    """A fresh pair of namespaces per test: faults never leak from one test into the next."""
    _need_root()
    try:
        with NetLab() as net:
            yield net
    except NetLabUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")


@pytest.fixture
def sound(tmp_path: Path) -> Iterator[VirtualAudio]:
    try:
        with VirtualAudio(tmp_path / "audio") as audio:
            yield audio
    except VirtualAudioUnavailable as exc:
        pytest.skip(str(exc))


# ---------------------------------------------------------------- session hooks


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The log audit runs last, so it reads every log the other fault tests wrote."""
    last = [item for item in items if item.get_closest_marker("audit_last")]
    items[:] = [item for item in items if item not in last] + last


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "audit_last: run after every other fault test")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES.items:
        return
    terminalreporter.section("fault test figures")
    for line in FIGURES.table():
        terminalreporter.write_line(line)
    path = FIGURES.write()
    terminalreporter.write_line(f"written to {path}")
