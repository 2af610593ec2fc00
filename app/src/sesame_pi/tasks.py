"""One owner for a part's background tasks: each is kept until it ends, all end with the owner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from .logs import event, raised_at

T = TypeVar("T")


class TaskSet:
    """Spawned tasks are held (asyncio keeps only weak references) and dropped when done;
    `close()` cancels what is left and waits for it, so nothing outlives its owner."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(say_if_failed)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def say_if_failed(task: asyncio.Task[Any]) -> None:
    """A task that died of an exception was kept silently until its owner closed: a fault in
    ending a call, say, left the device stuck with nothing in the log. Said once, where raised."""
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        return
    event(
        "task_failed",
        logging.ERROR,
        task=task.get_name(),
        detail=f"{type(error).__name__}: {str(error)[:200]}",
        at=raised_at(error),
        action="please report this line",
    )
