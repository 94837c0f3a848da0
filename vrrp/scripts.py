"""The commands VRRP runs: tracked scripts (`[vrrp_script.NAME]`) and notify commands.

`run()` starts one command without a shell, in its own session (so its process
group is the command and whatever it forked), collects what it prints (stdout and
stderr, bounded), and kills the whole group when the timeout passes. It never
raises for the command's sake: a command that cannot start, fails or times out is
an `Outcome`.

`ScriptRunner` runs one vrrp_script every `interval` seconds in a task of its own
and feeds the exit statuses to its `vrrp.track.ScriptCheck`; when the check's
verdict changes it tells every instance that tracks the script (`subscribe`).
As in keepalived, one script is run once per interval however many instances track
it: `acquire(config)` returns the runner this event loop already has for that
exact script, `release()` stops it with its last user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from conf.model import VrrpScript

from .track import ScriptCheck

log = logging.getLogger("sekisho.vrrp")

OUTPUT_LIMIT = 4096  # bytes of a command's output kept for the log; the rest is read and dropped
OUTPUT_GRACE = 0.5  # after the command exits, how long a child it left may hold the pipe open


@dataclass(frozen=True)
class Outcome:
    rc: int | None  # exit status; negative: killed by that signal; None: never ran
    timed_out: bool = False
    error: str | None = None  # why it could not start
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def describe(self, timeout: float) -> str:
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"timed out after {timeout:g}s (process group killed)"
        assert self.rc is not None
        return f"killed by signal {-self.rc}" if self.rc < 0 else f"exit {self.rc}"

    def shown_output(self) -> str:
        text = self.output.strip()
        return f": {text}" if text else ""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # start_new_session: the pid is the group's id


class _Command(asyncio.SubprocessProtocol):
    """Keeps the first OUTPUT_LIMIT bytes of output; tells when the process exits and when
    its output ends (the two differ when it leaves a child holding the pipe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.output = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        room = OUTPUT_LIMIT - len(self.output)
        if room > 0:
            self.output += data[:room]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run(argv: tuple[str, ...], timeout: float, env: Mapping[str, str] | None = None) -> Outcome:
    """Run `argv` to completion or until `timeout`; cancelling kills its process group."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.subprocess_exec(
            lambda: _Command(loop),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        return Outcome(None, error=exc.strerror or str(exc))
    pid = transport.get_pid()
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(proto.exited), timeout)
        except TimeoutError:
            timed_out = True
            _kill_group(pid)
            await proto.exited
        # A child left behind may keep the pipe open: take what came, not wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.eof), OUTPUT_GRACE)
    except asyncio.CancelledError:
        _kill_group(pid)
        with contextlib.suppress(TimeoutError):  # reap it (SIGKILL is not refused)
            await asyncio.wait_for(asyncio.shield(proto.exited), 1.0)
        raise
    finally:
        transport.close()
    return Outcome(
        transport.get_returncode(), timed_out=timed_out, output=proto.output.decode(errors="replace")
    )


# ------------------------------------------------------------------ vrrp_script


Listener = Callable[[str, bool], None]


class ScriptRunner:
    def __init__(self, config: VrrpScript) -> None:
        self.config = config
        self.check = ScriptCheck(config)
        self.users = 0
        self.last: Outcome | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"vrrp-script {self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        env = dict(os.environ, SEKISHO_VRRP_SCRIPT=self.name)
        while True:
            try:
                outcome = await run(self.config.command, self.config.timeout, env)
            except Exception as exc:  # a bug here must not freeze the verdict: count a failure
                log.exception("vrrp_script %s: running it failed", self.name)
                outcome = Outcome(None, error=f"internal error: {exc!r}")
            self.result(outcome, loop.time())
            delay = self.check.next_run(started, loop.time()) - loop.time()
            await asyncio.sleep(max(0.0, delay))

    def result(self, outcome: Outcome, now: float) -> None:
        """Count one run, log it, and tell the instances when the verdict changes."""
        before = self.last
        self.last = outcome
        what = outcome.describe(self.config.timeout)
        if before is None or before.describe(self.config.timeout) != what:
            log.info(
                "vrrp_script %s: %s%s", self.name, what, outcome.shown_output()
            )  # keepalived: "now returning"
        else:
            log.debug("vrrp_script %s: %s%s", self.name, what, outcome.shown_output())
        changed = self.check.record(outcome.ok, now, timed_out=outcome.timed_out)
        if changed is None:
            return
        if changed:
            log.info("vrrp_script %s: up", self.name)
        else:
            log.warning("vrrp_script %s: down (%s)", self.name, what)
        for listener in list(self._listeners):
            listener(self.name, changed)

    def stats(self) -> dict[str, object]:
        s = self.check.stats()
        s["last_outcome"] = self.last.describe(self.config.timeout) if self.last else None
        return s


_RUNNERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[VrrpScript, ScriptRunner]] = (
    weakref.WeakKeyDictionary()
)


def acquire(config: VrrpScript) -> ScriptRunner:
    """The running loop's runner for this script (started, shared); `release` it when done."""
    runners = _RUNNERS.setdefault(asyncio.get_running_loop(), {})
    runner = runners.get(config)
    if runner is None:
        runner = runners[config] = ScriptRunner(config)
    runner.users += 1
    runner.start()
    return runner


async def release(runner: ScriptRunner) -> None:
    runner.users -= 1
    if runner.users > 0:
        return
    runners = _RUNNERS.get(asyncio.get_running_loop(), {})
    if runners.get(runner.config) is runner:
        del runners[runner.config]
    await runner.stop()
