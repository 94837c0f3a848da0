"""Health checks: keepalived's checker/ipwrapper split.

`HealthState` is the sans-IO rise/fall machine (fed results, no clock of its
own). `probe()` runs one check of one kind against one server. A `Checker`
loops one server's probes (never overlapping, with jitter) and reports each
result to the pool, which owns the state and calls its own set_up/set_down:
checks never touch a scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import conf

if TYPE_CHECKING:
    from lb.pool import Backend, BackendPool

log = logging.getLogger("sekisho.health")


@dataclass
class HealthState:
    """Consecutive-result counter: `up` flips only after `rise` successes in a
    row (when down) or `fall` failures in a row (when up)."""

    rise: int = 2
    fall: int = 3
    up: bool = True
    streak: int = 0  # consecutive results that disagree with `up`
    changed_at: float = 0.0

    def record(self, ok: bool, now: float) -> bool | None:
        """Feed one result; returns the new state when it flips, else None."""
        if ok == self.up:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak >= (self.rise if ok else self.fall):
            self.up = ok
            self.streak = 0
            self.changed_at = now
            return ok
        return None


@dataclass
class CheckResult:
    ok: bool
    reason: str
    duration: float


async def _tcp(host: str, port: int) -> str:
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ""


async def _http(host: str, port: int, check: conf.HealthCheck, server_key: str) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        hosthdr = check.host or server_key
        writer.write(
            f"GET {check.path} HTTP/1.1\r\nHost: {hosthdr}\r\nUser-Agent: sekisho-check\r\n"
            "Connection: close\r\nAccept: */*\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return f"bad status line {status_line[:60]!r}"
        status = int(parts[1])
        if status not in check.expect_status:
            return f"status {status}"
        if check.expect_body is not None:
            body = await reader.read(1 << 20)  # headers + the first MiB
            while len(body) < (1 << 20):
                more = await reader.read(65536)
                if not more:
                    break
                body += more
            if check.expect_body.encode() not in body.partition(b"\r\n\r\n")[2]:
                return "expected body text not found"
        return ""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _smtp(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        code = b""
        while True:  # multi-line banners: "220-..." continued, "220 ..." last
            line = await reader.readline()
            if not line:
                return "closed before banner"
            code = line[:3]
            if line[3:4] != b"-":
                break
        if code != b"220":
            return f"banner {line[:60]!r}"
        writer.write(b"QUIT\r\n")
        await writer.drain()
        with contextlib.suppress(OSError):
            await reader.readline()
        return ""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass(frozen=True)
class ScriptCommand:
    """A `script` check as one server runs it: argv with the placeholders filled in, and
    the environment that names the server (keepalived's MISC_CHECK has one command line per
    real server; HAProxy's external-check passes the server in arguments and HAPROXY_*)."""

    argv: tuple[str, ...]
    env: dict[str, str]


PLACEHOLDERS = ("{host}", "{port}", "{server}", "{pool}")


def script_command(
    check: conf.HealthCheck, server: conf.Server | None, pool: str, host: str, port: int
) -> ScriptCommand:
    """The command for one server: its own `health_command`, else the pool's `command`;
    {host} is the address sekisho connects to, {port} the port checked (health.port or the
    server's), {server} the server as configured, {pool} the pool's name."""
    argv = server.health_command if server is not None and server.health_command else check.command
    configured = str(server.address) if server is not None else f"{host}:{port}"
    port = check.port or port
    values = {"{host}": host, "{port}": str(port), "{server}": configured, "{pool}": pool}
    filled = []
    for arg in argv:
        text = arg
        for name, value in values.items():
            text = text.replace(name, value)
        filled.append(text)
    env = {
        "SEKISHO_POOL": pool,
        "SEKISHO_SERVER": configured,
        "SEKISHO_SERVER_HOST": host,
        "SEKISHO_SERVER_PORT": str(port),
    }
    return ScriptCommand(tuple(filled), env)


async def _script(command: ScriptCommand, timeout: float) -> str:
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *command.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **command.env},
        )
    )
    try:
        proc = await asyncio.shield(spawn)
    except BaseException:
        # Cancelled (timeout, pool stopped) while the process was being started: it still
        # starts; kill and reap it rather than leave its exit to a loop that may be gone.
        with contextlib.suppress(Exception):
            started = await spawn
            with contextlib.suppress(ProcessLookupError):
                started.kill()
            await started.wait()
        raise
    try:
        async with asyncio.timeout(timeout):
            rc = await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return "" if rc == 0 else f"exit status {rc}"


async def probe(
    check: conf.HealthCheck, host: str, port: int, server_key: str, script: ScriptCommand | None = None
) -> CheckResult:
    """Run one check; never raises for a failing server. `script`: this server's command
    for kind "script" (script_command; default: the pool's, placeholders filled for it)."""
    start = time.monotonic()
    port = check.port or port
    try:
        async with asyncio.timeout(check.timeout):
            if check.kind == "tcp":
                reason = await _tcp(host, port)
            elif check.kind == "http":
                reason = await _http(host, port, check, server_key)
            elif check.kind == "smtp":
                reason = await _smtp(host, port)
            elif check.kind == "script":
                command = script or script_command(check, None, "", host, port)
                reason = await _script(command, check.timeout)
            else:
                reason = ""
    except TimeoutError:
        reason = "timed out"
    except (OSError, EOFError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return CheckResult(not reason, reason, time.monotonic() - start)


class Checker:
    """One server's check loop. Kind "none" runs no probe: every interval it
    reports success, so a server marked down by passive health (failed
    connects) is tried again after rise x interval."""

    def __init__(
        self,
        pool: BackendPool,
        backend: Backend,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.backend = backend
        self.check = pool.config.health
        self.rng = rng or random.Random()
        self.clock = clock
        self.script: ScriptCommand | None = None
        if self.check.kind == "script":
            server = next((s for s in pool.config.servers if str(s.address) == backend.configured), None)
            self.script = script_command(self.check, server, pool.name, backend.host, backend.port)

    def first_delay(self) -> float:
        """Spread the first checks of a pool's servers over one interval."""
        return self.rng.uniform(0.0, self.check.interval)

    def next_delay(self, took: float) -> float:
        """Interval from one start to the next, +-10% jitter; never overlapping."""
        return max(0.0, self.check.interval * self.rng.uniform(0.9, 1.1) - took)

    async def run(self) -> None:
        await asyncio.sleep(self.first_delay())
        b = self.backend
        while True:
            if self.check.kind == "none":
                result = CheckResult(True, "", 0.0)
            else:
                result = await probe(self.check, b.host, b.port, b.configured, self.script)
            self.pool.check_result(b, result.ok, result.reason, result.duration)
            await asyncio.sleep(self.next_delay(result.duration))
