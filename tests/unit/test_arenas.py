"""glibc's malloc, tuned: threads share one arena instead of each getting its own, and asyncio's
256 KB read buffers come from the heap instead of fresh pages at every read."""

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

    monkeypatch.setattr(arenas, "tune_malloc", lambda: calls.append("cap") or True)
    monkeypatch.setattr(app, "run_appliance", appliance)
    assert cli.main(["run", "--config", "/dev/null", "--token-file", str(tmp_path / "t")]) == 0
    assert calls == ["cap", "appliance"]


# A fresh interpreter reads 1000 small frames from a socket with asyncio's 256 KB buffer and
# prints the minor page faults the reads took.
READS = """
import resource, socket, sys
from sesame_pi.arenas import keep_read_buffers_in_the_heap
if sys.argv[1] == "kept":
    assert keep_read_buffers_in_the_heap()
a, b = socket.socketpair()
frame = b"x" * 1500  # an audio frame's JSON
for _ in range(10):
    a.send(frame)
    b.recv(256 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(1000):
    a.send(frame)
    b.recv(256 * 1024)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_per_1000_reads(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", READS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@glibc_only
def test_a_256_kb_read_buffer_maps_fresh_pages_at_every_read_by_default() -> None:
    assert page_faults_per_1000_reads("default") >= 1000


@glibc_only
def test_kept_in_the_heap_the_read_buffers_take_no_page_faults() -> None:
    assert page_faults_per_1000_reads("kept") < 50
