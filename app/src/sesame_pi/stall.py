"""Notices an event loop that stopped turning, says where it is stuck, and ends a hung app.

Everything the appliance does runs on one asyncio loop, so a call that never returns there (a
C library waiting on a device, a runaway callback) leaves the LED, the button and the link all
frozen while the process looks alive. A thread of our own watches a beat the loop sets every
`TICK_S`: a beat late by `warn_after_s` is logged with the loop thread's stack (`loop_stalled`),
and one late by `exit_after_s` ends the process with EXIT_HUNG, so the supervisor (Docker's
restart policy, systemd) starts a working one. `faulthandler`'s own timer is the backstop for a
stall that holds the GIL, which would stop our thread too: it prints every thread's stack and
exits (code 1) a moment later.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

from .logs import event

EXIT_HUNG = 70  # EX_SOFTWARE
TICK_S = 1.0
# faulthandler starts a thread each time it is armed: re-armed this often, it fires this much
# (at most twice this) after our own thread would have acted.
BACKSTOP_REARM_S = 10.0
STACK_FRAMES = 12  # the innermost frames of the loop thread's stack a stall line carries


def stack_of(thread_id: int | None) -> list[str]:
    """The innermost frames of a thread's Python stack, "file:line function", outermost first."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is None:
        return []
    frames = traceback.extract_stack(frame)[-STACK_FRAMES:]
    return [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames]


class LoopStallGuard:
    """Watches `loop` from a daemon thread; `exit_after_s` 0 only warns, never exits."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        warn_after_s: float = 5.0,
        exit_after_s: float = 60.0,
        tick_s: float = TICK_S,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.loop = loop
        self.warn_after_s = warn_after_s
        self.exit_after_s = exit_after_s
        self.tick_s = tick_s
        self._exit_process = exit_process
        self._beat = time.monotonic()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._backstop = exit_after_s > 0
        self._armed_at = -BACKSTOP_REARM_S

    def start(self) -> None:
        """Call on the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._tick()
        threading.Thread(target=self._watch, name="loop-stall-guard", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self._backstop:
            faulthandler.cancel_dump_traceback_later()

    def _tick(self) -> None:
        self._beat = now = time.monotonic()
        if self._backstop and now - self._armed_at >= BACKSTOP_REARM_S:
            # re-armed while the beats go on: it fires only once they stop
            self._armed_at = now
            faulthandler.dump_traceback_later(self.exit_after_s + 2 * BACKSTOP_REARM_S, exit=True)
        self._tick_handle = self.loop.call_later(self.tick_s, self._tick)

    def _watch(self) -> None:
        worst = 0.0
        while not self._stop.wait(self.tick_s / 2):
            late = time.monotonic() - self._beat - self.tick_s
            if late < self.warn_after_s:
                if worst:
                    event("loop_recovered", stalled_s=round(worst, 1))
                    worst = 0.0
                continue
            if not worst:
                event(
                    "loop_stalled",
                    logging.WARNING,
                    stalled_s=round(late, 1),
                    where=stack_of(self._loop_thread),
                )
            worst = max(worst, late)
            if self.exit_after_s and late >= self.exit_after_s:
                self._give_up(late)
                return

    def _give_up(self, late: float) -> None:
        event(
            "loop_hung",
            logging.CRITICAL,
            stalled_s=round(late, 1),
            where=stack_of(self._loop_thread),
            action=f"exiting with {EXIT_HUNG} so Docker or systemd restarts the app",
        )
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        self._exit_process(EXIT_HUNG)

    def restart(self, reason: str) -> None:
        """End the process for its supervisor to start a fresh one, when a part of the app knows
        itself beyond repair in this one (a sound driver that never returned). With
        `exit_after_s` 0 the app never exits by itself: the part's own line has said what to do."""
        if not self.exit_after_s:
            return
        event(
            "app_restarting",
            logging.CRITICAL,
            reason=reason,
            action=f"exiting with {EXIT_HUNG} so Docker or systemd starts the app again",
        )
        self._exit_process(EXIT_HUNG)
