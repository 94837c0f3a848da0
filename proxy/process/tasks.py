"""The owner of a process's background tasks: each one tracked, a failure logged at once.

    tasks = Background()
    tasks.spawn(coro, name="reload")    # held until it ends; an exception is logged with its traceback
    await tasks.close()                 # shutdown: cancel what still runs and wait for it

Nothing awaits these tasks' results (a reload started by SIGHUP, a retired front
end's drain, a VRRP instance, the systemd watchdog), so without an owner an
exception would surface only as asyncio's "Task exception was never retrieved"
whenever the task happened to be collected, and a task nobody references can be
collected while it still runs. Unlike `asyncio.TaskGroup`, one failing task does
not cancel the others: a drain that fails must not take the proxy down. A task
that must stop the daemon when it fails says so itself (`Daemon._run_vrrp`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("sekisho")

T = TypeVar("T")


class Background:
    def __init__(self, logger: logging.Logger = log) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = logger

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: asyncio will not complain about it again
        if exc is not None:
            self._log.error("background task %r failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait until they have all ended."""
        while self._tasks:  # a task may spawn another while it is cancelled
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
