"""The loop-stall guard on a real asyncio loop: a stall is logged with where the loop is stuck and
its end, and a hang ends the process (in a child process, so the test's own survives)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from sesame_pi.stall import EXIT_HUNG, LoopStallGuard


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a C call that does not return for a while, as a stuck device close


async def test_a_stall_is_logged_with_where_the_loop_is_stuck_then_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    exits: list[int] = []
    guard = LoopStallGuard(
        asyncio.get_running_loop(), warn_after_s=0.3, exit_after_s=0, tick_s=0.05,
        exit_process=exits.append,
    )  # fmt: skip
    guard.start()
    try:
        await asyncio.sleep(0.3)
        assert not [r for r in caplog.records if getattr(r, "event", "") == "loop_stalled"]
        hold_the_loop(0.8)
        await asyncio.sleep(0.3)
    finally:
        guard.stop()
    named = {getattr(r, "event", ""): r for r in caplog.records}
    stalled = named["loop_stalled"]
    assert stalled.levelno == logging.WARNING
    assert any("hold_the_loop" in frame for frame in stalled.where), stalled.where
    assert 0.3 <= stalled.stalled_s < 0.8
    recovered = named["loop_recovered"]
    assert 0.3 <= recovered.stalled_s <= 1.5, recovered.stalled_s
    assert exits == [], "exit_after_s 0 only warns"


HUNG_APP = textwrap.dedent(
    """
    import asyncio, time
    from sesame_pi.config import Config
    from sesame_pi.logs import setup_logging
    from sesame_pi.stall import LoopStallGuard

    def close_a_device_that_never_answers():
        time.sleep(60)

    async def main():
        setup_logging(Config().replace(log_file=None))
        LoopStallGuard(asyncio.get_running_loop(), warn_after_s=0.3, exit_after_s=1.0,
                       tick_s=0.1).start()
        await asyncio.sleep(0.3)
        close_a_device_that_never_answers()

    asyncio.run(main())
    """
)


def test_a_hung_loop_ends_the_process_with_its_stack_so_it_is_restarted() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", HUNG_APP], capture_output=True, text=True, timeout=30
    )
    took = time.monotonic() - started
    assert done.returncode == EXIT_HUNG, (done.returncode, done.stderr[-2000:])
    assert took < 20, "the hang ended long before the 60 s call would have"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    events = {line["event"]: line for line in lines}
    assert "loop_stalled" in events
    hung = events["loop_hung"]
    assert hung["level"] == "CRITICAL"
    assert any("close_a_device_that_never_answers" in f for f in hung["where"]), hung
    assert "restart" in hung["action"]
    # every thread's stack, for the bug report
    assert "close_a_device_that_never_answers" in done.stderr
    assert "loop-stall-guard" in done.stderr or "Thread 0x" in done.stderr


GIL_HOLDING_APP = textwrap.dedent(
    """
    import asyncio, sys
    from sesame_pi import stall
    from sesame_pi.config import Config
    from sesame_pi.logs import setup_logging

    stall.BACKSTOP_REARM_S = 0.2

    def spin_holding_the_gil():
        sys.setswitchinterval(1000)  # no other Python thread runs: ours cannot watch
        while True:
            pass

    async def main():
        setup_logging(Config().replace(log_file=None))
        stall.LoopStallGuard(asyncio.get_running_loop(), warn_after_s=0.3, exit_after_s=0.5,
                             tick_s=0.1).start()
        await asyncio.sleep(0.3)
        spin_holding_the_gil()

    asyncio.run(main())
    """
)


def test_a_stall_that_holds_the_gil_is_ended_by_faulthandler() -> None:
    done = subprocess.run(
        [sys.executable, "-c", GIL_HOLDING_APP], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Timeout" in done.stderr
    assert "spin_holding_the_gil" in done.stderr
    assert "loop_hung" not in done.stdout, "our own thread could not run: the backstop acted"


async def test_a_part_beyond_repair_restarts_the_app_unless_exits_are_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sound driver that never returned asks the guard for a restart: the same exit code as a
    hung loop, so Docker or systemd starts a fresh process; `loop_stall_exit_s = 0` never exits."""
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    exits: list[int] = []
    LoopStallGuard(loop, exit_after_s=60, exit_process=exits.append).restart("driver stuck")
    assert exits == [EXIT_HUNG]
    said = [r for r in caplog.records if getattr(r, "event", "") == "app_restarting"]
    assert len(said) == 1 and said[0].reason == "driver stuck"
    LoopStallGuard(loop, exit_after_s=0, exit_process=exits.append).restart("driver stuck")
    assert exits == [EXIT_HUNG], "exits are off: the app stays up"
