"""Runtime backend pools: the one object HTTP, SMTP and TCP ask for a server.

The contract every front end uses (keep it stable):

    backend = pool.pick(client_ip, exclude=tried)   # None: nothing up, no sorry server
    pool.take(backend)                              # a connection/request is assigned
    ...                                             # connect with lb.dial.open_connection
    pool.connect_failed(backend)                    # passive health: counts as a failed check
    pool.drop(backend)                              # the connection/request is over

A pool owns its servers' runtime state (`Backend`), one scheduler (lb.sched),
the rise/fall machine of each server (lb.health.HealthState, fed by active
checks and by failed connects) and its background work: one check loop per
server and one resolver loop for hostname servers.

`PoolSet` holds every pool of one config; on reload it keeps unchanged pools
as they are and carries health state, counters and in-flight connections of
servers that survive into a changed pool (the same `Backend` objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, NamedTuple

import conf
from lb import sched
from lb.backend import Backend, resolve
from lb.health import Checker, HealthState
from lb.shared import Columns, SharedCounts

__all__ = ["Backend", "BackendPool", "PoolSet", "ServerView", "resolve"]

log = logging.getLogger("sekisho.pool")

Clock = Callable[[], float]


class ServerView(NamedTuple):
    """One server as the supervisor's health checks see it: what a worker's pool copies."""

    key: str
    host: str
    configured: str
    slot: int
    up: bool
    weight: int
    up_since: float | None  # time.monotonic(): one clock for every process of the machine


class BackendPool:
    def __init__(
        self,
        config: conf.Pool,
        clock: Clock = time.monotonic,
        previous: BackendPool | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.scheduler = sched.make(config.scheduler)
        self.backends: list[Backend] = []
        self._ramping: set[Backend] = set()
        self._tasks: dict[Backend | str, asyncio.Task[None]] = {}
        self.started = False
        self.picks_none = 0
        # With worker processes: the connection counts of every worker (lb.shared; only
        # where picks need them, see share_counts), who
        # hears of a state change (the supervisor), and where a worker's failed connects go.
        self.counts: SharedCounts | None = None
        self.on_change: Callable[[], None] | None = None
        self.report_failure: Callable[[str, str], None] | None = None
        old = {b.key: b for b in previous.backends} if previous is not None else {}
        for server in config.servers:
            if server.address.is_ip:
                b = old.get(str(server.address))
                self._add(self._adopt(b, server) if b else self._new(server.address.host, server))
            else:
                # A hostname: keep what the previous config resolved until re-resolved.
                for b in previous.backends if previous is not None else []:
                    if b.configured == str(server.address) and b.port == server.address.port:
                        self._add(self._adopt(b, server))
        self.sorry: Backend | None = None
        if config.sorry_server is not None:
            a = config.sorry_server
            self.sorry = Backend(a.host, a.port, str(a), 1, is_sorry=True)

    # ------------------------------------------------------------ membership
    def _new(self, host: str, server: conf.Server) -> Backend:
        h = self.config.health
        return Backend(
            host,
            server.address.port,
            str(server.address),
            server.weight,
            max_connections=server.max_connections,
            config_weight=server.weight,
            health=HealthState(h.rise, h.fall, True, 0, self.clock()),
        )

    def _adopt(self, b: Backend, server: conf.Server) -> Backend:
        """A server that survives a reload: keep its state, take the new settings."""
        if b.config_weight != server.weight:
            b.weight = server.weight  # a changed config weight overrides a runtime one
        b.config_weight = server.weight
        b.max_connections = server.max_connections
        h = self.config.health
        b.health = HealthState(h.rise, h.fall, b.health.up, 0, b.health.changed_at)
        return b

    def _add(self, b: Backend) -> None:
        self.backends.append(b)
        b.in_table = b.up or self.config.on_failure == "inhibit"
        b.sched_weight = self._weight_of(b, self.clock())
        if b.in_table:
            self.scheduler.add(b, b.sched_weight, b.up)
        if b.up_since is not None and self.config.slow_start > 0:
            self._ramping.add(b)
        self._changed()

    def _remove(self, b: Backend) -> None:
        self.backends.remove(b)
        self.scheduler.remove(b)
        self._ramping.discard(b)
        task = self._tasks.pop(b, None)
        if task is not None:
            task.cancel()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def proxy_protocol(self) -> str | None:
        return self.config.proxy_protocol

    def find(self, address: str) -> list[Backend]:
        """Servers matching a resolved key ("10.0.0.1:80", "[::1]:80") or a
        configured address ("www.example.com:80": every address it resolved to)."""
        exact = [b for b in self.backends if b.key == address]
        return exact or [b for b in self.backends if b.configured == address]

    # --------------------------------------------------------------- weights
    def _weight_of(self, b: Backend, now: float) -> int:
        w = b.weight * sched.SCALE
        if w and b.up_since is not None and self.config.slow_start > 0:
            frac = (now - b.up_since) / self.config.slow_start
            if frac < 1.0:
                return max(1, math.floor(w * max(frac, 0.0)))
            b.up_since = None
        return w

    def _sync(self, b: Backend) -> None:
        b.sched_weight = self._weight_of(b, self.clock())
        if b.up_since is None:
            self._ramping.discard(b)
        if b.in_table:
            self.scheduler.set_weight(b, b.sched_weight)

    def _ramp(self) -> None:
        for b in list(self._ramping):
            self._sync(b)

    def set_weight(self, backend: Backend, weight: int) -> None:
        """Runtime weight (admin API): 0 drains, existing connections finish."""
        backend.weight = weight
        self._sync(backend)
        self._changed()

    # ------------------------------------------------------------ up / down
    def set_up(self, backend: Backend, announce: bool = True) -> None:
        if backend.up and backend.in_table:
            return
        backend.up = True
        backend.health.up = True
        if self.config.slow_start > 0 and self.started:
            backend.up_since = self.clock()
            self._ramping.add(backend)
        if not backend.in_table:
            backend.in_table = True
            self.scheduler.add(backend, self._weight_of(backend, self.clock()), True)
        self._sync(backend)
        self.scheduler.set_up(backend)
        if announce:  # a worker copying the supervisor's view does not log it again
            log.warning("pool %s: server %s is up", self.name, backend.key)
        self._changed()

    def set_down(self, backend: Backend, announce: bool = True) -> None:
        if not backend.up:
            return
        backend.up = False
        backend.health.up = False
        backend.up_since = None
        self._ramping.discard(backend)
        if self.config.on_failure == "remove":
            backend.in_table = False
            self.scheduler.remove(backend)
        else:
            self.scheduler.set_down(backend)
        if announce:
            log.warning("pool %s: server %s is down", self.name, backend.key)
        self._changed()

    def check_result(self, backend: Backend, ok: bool, reason: str = "", duration: float = 0.0) -> None:
        """One active check result; the rise/fall machine decides set_up/set_down."""
        now = self.clock()
        backend.checks += 1
        backend.check_duration = duration
        if not ok:
            backend.check_failures += 1
        backend.last_check = {"ok": ok, "reason": reason, "duration": round(duration, 6)}
        self._feed(backend, ok, now)

    def _feed(self, backend: Backend, ok: bool, now: float) -> None:
        flip = backend.health.record(ok, now)
        if flip is True:
            self.set_up(backend)
        elif flip is False:
            self.set_down(backend)

    # -------------------------------------------------------------- the API
    def pick(self, client_ip: str | None = None, exclude: Collection[Backend] = ()) -> Backend | None:
        if self._ramping:
            self._ramp()
        if self.counts is not None:
            self._read_counts(self.counts)
        b = self.scheduler.pick(client_ip, exclude)
        if b is None:
            b = self.sorry if self.sorry is not None and self.sorry not in exclude else None
            if b is None:
                self.picks_none += 1
                return None
        b.picks += 1
        return b

    def take(self, backend: Backend) -> None:
        backend.active += 1
        backend.total += 1
        if backend.slot >= 0 and self.counts is not None:
            self.counts.add(backend.slot, 1)
        if not backend.is_sorry:
            self.scheduler.take(backend)

    def drop(self, backend: Backend, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """A connection (or request) to `backend` is over, having moved these bytes."""
        backend.active -= 1
        backend.bytes_in += bytes_in
        backend.bytes_out += bytes_out
        if backend.slot >= 0 and self.counts is not None:
            self.counts.add(backend.slot, -1)
        if not backend.is_sorry:
            self.scheduler.drop(backend)

    def connect_failed(self, backend: Backend) -> None:
        """Passive health: a failed connect counts as one failed check (in a worker:
        the supervisor's health state decides, and tells every worker)."""
        backend.connect_failures += 1
        if backend.is_sorry:
            return
        if self.report_failure is not None:
            self.report_failure(self.name, backend.key)
        else:
            self._feed(backend, False, self.clock())

    def failed_in_worker(self, backend: Backend) -> None:
        """A worker's connect to `backend` failed: one failed check here, in the supervisor."""
        if not backend.is_sorry:
            self._feed(backend, False, self.clock())

    # ------------------------------------------------- state across workers
    def share_counts(self, counts: SharedCounts) -> None:
        """Count in the workers' shared table if picks need every worker's connections (lc,
        wlc, lblc, max_connections). Other pools count only here (no cost per request);
        the supervisor adds the workers' counts up when it reports them."""
        if self.scheduler.uses_counts or any(s.max_connections for s in self.config.servers):
            self.counts = counts

    def _read_counts(self, counts: SharedCounts) -> None:
        for b in self.backends:
            if b.slot >= 0:
                b.active = counts.total(b.slot)

    def view(self) -> list[ServerView]:
        return [
            ServerView(b.key, b.host, b.configured, b.slot, b.up, b.weight, b.up_since) for b in self.backends
        ]

    def apply_view(self, view: list[ServerView]) -> None:
        """Copy the supervisor's view of this pool (a worker runs no checks of its own):
        up/down, runtime weights, slow-start, the addresses hostnames resolved to."""
        mine = {b.key: b for b in self.backends}
        seen = set()
        for s in view:
            b = mine.get(s.key)
            if b is None:
                server = next((c for c in self.config.servers if str(c.address) == s.configured), None)
                if server is None:
                    continue  # the supervisor runs a newer config than this worker
                b = self._new(s.host, server)
                self._add(b)
            seen.add(s.key)
            b.slot = s.slot
            b.weight = s.weight
            if s.up:
                self.set_up(b, announce=False)
            else:
                self.set_down(b, announce=False)
            b.up_since = s.up_since
            if s.up_since is not None and self.config.slow_start > 0:
                self._ramping.add(b)
            self._sync(b)
        hostnames = {str(server.address) for server in self._hostnames()}
        for b in [b for b in self.backends if b.key not in seen and b.configured in hostnames]:
            self._remove(b)  # an address its hostname no longer resolves to

    # ------------------------------------------------------- background work
    def _hostnames(self) -> list[conf.Server]:
        return [s for s in self.config.servers if not s.address.is_ip]

    async def resolve_now(self, resolver: Callable[[str, int], Any] = resolve) -> None:
        """Re-resolve every hostname server; each address becomes a server.

        A failing lookup keeps the previous addresses (a DNS outage must not
        empty the pool)."""
        for server in self._hostnames():
            a = server.address
            try:
                ips = list(await resolver(a.host, a.port))
            except (OSError, UnicodeError) as exc:
                log.warning("pool %s: cannot resolve %s: %s", self.name, a, exc)
                continue
            current = {b.host: b for b in self.backends if b.configured == str(a)}
            for ip in ips:
                if ip not in current:
                    b = self._new(ip, server)
                    self._add(b)
                    self._start_checker(b)
                    log.info("pool %s: %s resolves to new address %s", self.name, a, ip)
            for ip, b in current.items():
                if ip not in ips:
                    self._remove(b)
                    log.info("pool %s: %s no longer resolves to %s", self.name, a, ip)

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resolve_interval)
            await self.resolve_now()

    def _start_checker(self, b: Backend) -> None:
        if not self.started or b in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(
            Checker(self, b).run(), name=f"check {self.name} {b.key}"
        )
        task.add_done_callback(_log_failure)
        self._tasks[b] = task

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        if self._hostnames():
            await self.resolve_now()
            task = asyncio.get_running_loop().create_task(self._resolve_loop(), name=f"resolve {self.name}")
            task.add_done_callback(_log_failure)
            self._tasks["resolve"] = task
        for b in self.backends:
            self._start_checker(b)

    async def stop(self) -> None:
        self.started = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def stats(self) -> dict[str, Any]:
        servers = []
        for b in [*self.backends, *([self.sorry] if self.sorry else [])]:
            s: dict[str, Any] = {
                "address": b.key,
                "configured": b.configured,
                "up": b.up,
                "weight": b.weight,
                "effective_weight": b.effective_weight,
                "active": self.counts.total(b.slot) if self.counts and b.slot >= 0 else b.active,
                "total": b.total,
                "connect_failures": b.connect_failures,
                "sorry": b.is_sorry,
                "in_table": b.in_table,
                "max_connections": b.max_connections,
                "picks": b.picks,
                "bytes_in": b.bytes_in,
                "bytes_out": b.bytes_out,
                "checks": b.checks,
                "check_failures": b.check_failures,
                "check_duration": b.check_duration,
            }
            if b.last_check is not None:
                s["last_check"] = b.last_check
            servers.append(s)
        return {
            "name": self.name,
            "scheduler": self.config.scheduler,
            "health": self.config.health.kind,
            "up_servers": sum(1 for b in self.backends if b.up and b.in_table),
            "picks_none": self.picks_none,
            "servers": servers,
        }


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


class PoolSet(Mapping[str, BackendPool]):
    """Every pool of one config, keyed by name."""

    def __init__(self, pools: Mapping[str, conf.Pool], clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._pools = {name: BackendPool(p, clock) for name, p in pools.items()}
        self.started = False
        self._pending: set[asyncio.Task[None]] = set()
        # With worker processes (proxy.process.workers), in the supervisor:
        self._columns: Columns | None = None
        self._counts: SharedCounts | None = None
        self._on_change: Callable[[], None] | None = None
        self._with_column: dict[int, Backend] = {}

    def __getitem__(self, name: str) -> BackendPool:
        return self._pools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def reconcile(self, pools: Mapping[str, conf.Pool]) -> None:
        """Apply a reloaded config: unchanged pools keep their runtime state;
        changed ones keep the state of servers that are still there."""
        fresh: dict[str, BackendPool] = {}
        retired: list[BackendPool] = []
        for name, p in pools.items():
            old = self._pools.get(name)
            if old is not None and old.config == p:
                fresh[name] = old
                if self.started and old._hostnames():
                    self._spawn(old.resolve_now())  # reload re-resolves names
                continue
            fresh[name] = BackendPool(p, self.clock, previous=old)
            if old is not None:
                retired.append(old)
            if self.started:
                self._spawn(fresh[name].start())
        retired.extend(bp for name, bp in self._pools.items() if name not in pools)
        for bp in retired if self.started else []:
            self._spawn(bp.stop())
        self._pools = fresh
        for bp in fresh.values():
            self._wire(bp)
        if self._on_change is not None:
            self._on_change()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_log_failure)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start(self) -> None:
        """Resolve hostnames, then start health checks and re-resolution."""
        self.started = True
        await asyncio.gather(*(p.start() for p in self._pools.values()))

    async def stop(self) -> None:
        self.started = False
        for t in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.gather(*(p.stop() for p in self._pools.values()))

    def stats(self) -> list[dict[str, Any]]:
        return [p.stats() for p in self._pools.values()]

    # ------------------------------------------ the health view across workers
    def share_counts(self, counts: SharedCounts, columns: Columns | None = None) -> None:
        """Count connections in `counts`; the supervisor also hands out its columns."""
        self._counts, self._columns = counts, columns
        for bp in self._pools.values():
            self._wire(bp)

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever a server's state, weight or address set changes."""
        self._on_change = on_change
        for bp in self._pools.values():
            self._wire(bp)

    def report_failures(self, report: Callable[[str, str], None]) -> None:
        """A worker: failed connects go to the supervisor's health state, not our own."""
        for bp in self._pools.values():
            bp.report_failure = report

    def _wire(self, bp: BackendPool) -> None:
        if self._counts is not None:
            bp.share_counts(self._counts)
        bp.on_change = self._on_change

    def view(self) -> dict[str, list[ServerView]]:
        """Every pool's servers as the supervisor sees them; servers new since the last
        view get a column of the shared counts, and gone ones give theirs back."""
        if self._columns is not None:
            live = {id(b): b for bp in self._pools.values() for b in bp.backends}
            for b in live.values():
                if b.slot < 0:
                    b.slot = self._columns.take()
                    self._with_column[id(b)] = b
            for key, b in list(self._with_column.items()):
                if key not in live:
                    self._columns.free(b.slot)
                    del self._with_column[key]
        return {name: bp.view() for name, bp in self._pools.items()}

    def apply_view(self, view: Mapping[str, list[ServerView]]) -> None:
        for name, servers in view.items():
            bp = self._pools.get(name)
            if bp is not None:  # a pool of another config generation is not ours
                bp.apply_view(servers)
