"""Notify scripts: run without a shell, one at a time, with a timeout, off the loop's back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess

from conf.model import VrrpNotify

log = logging.getLogger("sekisho.vrrp")


class Notifier:
    """Runs the configured command for each transition, in order, in a background task.

    Each command gets `SEKISHO_VRRP_INSTANCE` and `SEKISHO_VRRP_STATE` in its
    environment. A command still running after `timeout` seconds is killed.
    """

    def __init__(self, instance: str, config: VrrpNotify) -> None:
        self.instance = instance
        self.config = config
        self.started = 0
        self.failed = 0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def command(self, kind: str) -> tuple[str, ...]:
        return tuple(getattr(self.config, kind, ()))

    def submit(self, kind: str) -> None:
        if not self.command(kind):
            return
        self._queue.put_nowait(kind)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="vrrp-notify")

    async def _drain(self) -> None:
        while not self._queue.empty():
            kind = self._queue.get_nowait()
            await self._run(kind)

    async def _run(self, kind: str) -> None:
        argv = self.command(kind)
        env = dict(os.environ, SEKISHO_VRRP_INSTANCE=self.instance, SEKISHO_VRRP_STATE=kind.upper())
        self.started += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.failed += 1
            log.warning("vrrp %s: notify %s %r failed to start: %s", self.instance, kind, argv, exc)
            return
        try:
            rc = await asyncio.wait_for(proc.wait(), self.config.timeout)
        except TimeoutError:
            self.failed += 1
            log.warning(
                "vrrp %s: notify %s %r timed out after %.1fs", self.instance, kind, argv, self.config.timeout
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if rc != 0:
            self.failed += 1
            log.warning("vrrp %s: notify %s %r exited %d", self.instance, kind, argv, rc)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for queued commands, e.g. the "stop" notify at shutdown."""
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
