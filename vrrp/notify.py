"""Notify commands: run without a shell, one at a time, with a timeout, off the loop's back.

keepalived's calling convention: `notify_master` (our `notify.master`) and its
siblings get no arguments but their own; the generic `notify` (our `notify.any`)
runs after it with four more: `INSTANCE <name> MASTER|BACKUP|FAULT|STOP <priority>`,
the priority being the effective one. Every command also finds
`SEKISHO_VRRP_INSTANCE` and `SEKISHO_VRRP_STATE` in its environment. What a command
prints is logged; one still running after `timeout` seconds is killed with its
process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from conf.model import VrrpNotify

from . import scripts

log = logging.getLogger("sekisho.vrrp")


class Notifier:
    """Runs the commands for each transition, in order, in a background task."""

    def __init__(self, instance: str, config: VrrpNotify) -> None:
        self.instance = instance
        self.config = config
        self.started = 0
        self.failed = 0
        self._queue: asyncio.Queue[tuple[str, str, tuple[str, ...]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def command(self, kind: str) -> tuple[str, ...]:
        return tuple(getattr(self.config, kind, ()))

    def commands(self, kind: str, priority: int) -> list[tuple[str, tuple[str, ...]]]:
        """(label, argv) to run on entering `kind` (master, backup, fault, stop)."""
        out = []
        if specific := self.command(kind):
            out.append((kind, specific))
        if self.config.any:
            out.append(("any", (*self.config.any, "INSTANCE", self.instance, kind.upper(), str(priority))))
        return out

    def submit(self, kind: str, priority: int) -> None:
        todo = self.commands(kind, priority)
        if not todo:
            return
        for label, argv in todo:
            self._queue.put_nowait((kind, label, argv))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="vrrp-notify")

    async def _drain(self) -> None:
        while not self._queue.empty():
            kind, label, argv = self._queue.get_nowait()
            await self._run(kind, label, argv)

    async def _run(self, kind: str, label: str, argv: tuple[str, ...]) -> None:
        env = dict(os.environ, SEKISHO_VRRP_INSTANCE=self.instance, SEKISHO_VRRP_STATE=kind.upper())
        self.started += 1
        outcome = await scripts.run(argv, self.config.timeout, env)
        what = outcome.describe(self.config.timeout)
        if outcome.ok:
            level = logging.INFO if outcome.output.strip() else logging.DEBUG
            log.log(
                level, "vrrp %s: notify.%s %r: %s%s", self.instance, label, argv, what, outcome.shown_output()
            )
        else:
            self.failed += 1
            log.warning(
                "vrrp %s: notify.%s %r: %s%s", self.instance, label, argv, what, outcome.shown_output()
            )

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
