"""The arena cap: threads that allocate share glibc's one arena instead of each getting its own."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from sesame_pi import app, arenas, cli

# A fresh interpreter: optionally cap the arenas, let six threads allocate, then have glibc's
# malloc_stats() list its arenas on stderr ("Arena 0:", "Arena 1:", ...).
CHILD = """
import ctypes, sys, threading
from sesame_pi.arenas import limit_malloc_arenas
if sys.argv[1] == "capped":
    assert limit_malloc_arenas()
def work():
    blocks = [bytes(4000 + i) for i in range(50)]  # above pymalloc's 512 bytes: glibc malloc
    del blocks
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the cap is a glibc setting"
)


def arenas_after_threads(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    )
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


@glibc_only
def test_threads_get_arenas_of_their_own_without_the_cap() -> None:
    assert arenas_after_threads("default") > 1


@glibc_only
def test_with_the_cap_every_thread_shares_the_main_arena() -> None:
    assert arenas_after_threads("capped") == 1


def test_run_caps_the_arenas_before_the_appliance_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []

    async def appliance(_cfg: object) -> int:
        calls.append("appliance")
        return 0

    monkeypatch.setattr(arenas, "limit_malloc_arenas", lambda: calls.append("cap") or True)
    monkeypatch.setattr(app, "run_appliance", appliance)
    assert cli.main(["run", "--config", "/dev/null", "--token-file", str(tmp_path / "t")]) == 0
    assert calls == ["cap", "appliance"]
