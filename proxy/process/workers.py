"""The supervisor's side of the workers: N processes serving the front ends.

With `global.workers` > 1 the daemon becomes the supervisor (nginx's master, HAProxy's
master-worker): it loads the config, binds every listener once, runs the health checks,
VRRP and the admin listener, and this object stands in for `LocalServing` with the same
methods (prepare, commit, close, stop). Each worker (proxy.process.worker) runs a
LocalServing of its own on the sockets it inherits.

- Sockets: one SO_REUSEPORT group per listen address, one socket per worker slot
  (proxy.listener `bind`, `join`): the kernel hashes each new connection to one socket,
  so only the worker watching it wakes. The sockets belong to the supervisor and are
  never closed while their address is configured, so nothing queued on one is lost
  when its worker dies or drains: worker i of every generation watches slots i, i+N,
  ... (more than N slots after a reload to fewer workers), and while a dead worker is
  being replaced a live sibling watches its slots too ("adopt", then "release").
- One health view: the pools here run the checks; every change (up, down, weight,
  slow-start, addresses) is sent to every worker at the next loop turn ("view").
  Connection counts are shared through lb.shared; a worker's failed connect comes
  back here as a failed check.
- Reload: a new generation of workers on the new config takes the same sockets; once
  every one of them listens, the old generation drains (finishes in-flight work up to
  `drain_timeout`) and exits. If the new workers do not start, the old ones go on.
- A worker that dies unasked is logged, counted (`sekisho_worker_restarts_total`) and
  started again at once (after a second if it died within a second of its start);
  its counters so far stay in the totals.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import conf
from lb.pool import PoolSet
from lb.shared import Columns, SharedCounts
from proxy.http.tls import checked_files, configured_certs
from proxy.listener import join
from proxy.process import control, totals
from proxy.process.frontends import StatsBook, sections
from proxy.process.serving import Key, LocalServing, Prepared, StartupError
from proxy.process.tasks import Background
from proxy.process.worker import SUPERVISOR_ENV, WorkerInit

log = logging.getLogger("sekisho")

START_TIMEOUT = 20.0  # a worker imports, builds its front ends and says "ready" within this
SNAPSHOT_TIMEOUT = 1.0
CRASH_LOOP = 1.0  # a worker that dies sooner than this after its start is restarted after this
SERVER_COLUMNS = 4096
Group = list[socket.socket]  # the SO_REUSEPORT sockets of one address, a slot each


def count_for(setting: int | str) -> int:
    """`global.workers` as a number: "auto" is the CPUs this process may run on (nginx)."""
    if setting == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    return int(setting)


class WorkerProcess:
    def __init__(self, index: int, generation: int, row: int) -> None:
        self.index = index
        self.generation = generation
        self.row = row
        self.proc: subprocess.Popen[bytes] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.started = time.time()
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.draining = False
        self.gone = False  # its control socket closed: it exited or is exiting
        self.last: dict[str, Any] | None = None  # its latest counters
        self._replies: dict[int, asyncio.Future[dict[str, Any] | None]] = {}
        self._closed: dict[Key, asyncio.Future[None]] = {}
        self._seq = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def serving(self) -> bool:
        """Started and not gone (one that drains has left `Workers.current`)."""
        return self.ready.done() and not self.gone

    def send(self, *message: Any) -> None:
        if self.writer is not None:
            control.send(self.writer, *message)

    async def snapshot(self) -> dict[str, Any] | None:
        if not self.ready.done() or self.gone:
            return self.last
        self._seq += 1
        reply = asyncio.get_running_loop().create_future()
        self._replies[self._seq] = reply
        self.send("snapshot", self._seq)
        try:
            report = await asyncio.wait_for(reply, SNAPSHOT_TIMEOUT)
            if report is not None:  # None: it exited meanwhile
                self.last = report
        except TimeoutError:
            log.warning("worker %d (pid %d): no counters in %.0fs", self.index, self.pid, SNAPSHOT_TIMEOUT)
        finally:
            self._replies.pop(self._seq, None)
        return self.last

    async def close(self, key: Key) -> None:
        if self.exited.done():
            return
        done = self._closed.setdefault(key, asyncio.get_running_loop().create_future())
        self.send("close", key)
        await asyncio.wait_for(asyncio.shield(done), START_TIMEOUT)

    def status(self) -> dict[str, Any]:
        last = self.last or {}
        return {
            "index": self.index,
            "pid": self.pid,
            "generation": self.generation,
            "state": "draining" if self.draining else "serving" if self.ready.done() else "starting",
            "connections": last.get("connections", 0),
            "requests": last.get("requests", 0),
            "uptime": round(time.time() - self.started, 1),
        }


def _close_joined(group: Group) -> None:
    """Close the sockets the supervisor joined to an address's group: slot 0 is the daemon's."""
    for sock in group[1:]:
        sock.close()


class Workers:
    def __init__(self, count: int, pools: PoolSet, tasks: Background) -> None:
        self.count = count
        self.pools = pools
        self.tasks = tasks
        rows = 4 * count + 4  # two generations during a reload, and restarts, with room
        self.counts = SharedCounts.create(rows, SERVER_COLUMNS)
        self._free_rows = list(range(rows))
        self.counts.rows_in_use(0)
        pools.share_counts(self.counts, Columns(self.counts))
        pools.watch(self._view_changed)
        self.current: list[WorkerProcess] = []
        self.draining: set[WorkerProcess] = set()
        self.generation = 0
        self.restarts = 0
        self.stats = StatsBook()  # the totals of every worker, refreshed before each scrape
        self._listeners: list[dict[str, Any]] = []
        self._gone: dict[str, Any] | None = None  # counters of workers that have exited
        # What the current generation serves (config, its text, the certificate files as
        # checked): a worker restarted later starts from it, never from a reload that failed.
        self._prepared: Prepared | None = None
        self._groups: dict[Key, Group] = {}  # slot 0 is the daemon's socket
        self._covered: dict[int, WorkerProcess] = {}  # a dead worker's index -> who watches its slots
        self._view_pending = False
        self._stopping = False
        self.drain_timeout = conf.GlobalSettings().drain_timeout

    # ------------------------------------------------------- serving's methods
    def prepare(self, config: conf.Config) -> Prepared:
        """Check that the front ends build here (certificates, ...), and keep the exact
        text of the config for the workers: they never read the file themselves."""
        check = LocalServing(self.pools, self.tasks)
        check.abandon(check.prepare(config))
        cert_files = checked_files(configured_certs(config))
        try:
            text = Path(config.source).read_text(encoding="utf-8")
        except OSError as exc:
            raise StartupError(f"cannot read {config.source} again: {exc.strerror}") from None
        try:
            same = conf.load_text(text, source=config.source) == config
        except conf.ConfigError:
            same = False
        if not same:
            raise StartupError(f"{config.source} changed while it was loaded; load it again")
        return Prepared(config, {}, None, text, cert_files)

    def abandon(self, prepared: Prepared) -> None:
        pass

    async def commit(self, prepared: Prepared, sockets: Mapping[Key, socket.socket]) -> bool:
        """Start a generation on this config; once it listens, the previous one drains."""
        config = prepared.config
        wanted = count_for(config.global_.workers)
        old_count = self.count
        if wanted > 1:  # (to one process: at the next restart; the daemon says so)
            self.count = wanted
        try:
            groups, made = self._grow(sockets)
        except OSError as exc:
            log.error("cannot add a worker socket to a listen address: %s", exc.strerror)
            self.count = old_count
            return False
        old_groups, self._groups = self._groups, groups
        self.generation += 1
        old_prepared, self._prepared = self._prepared, prepared
        fresh = [self._spawn(i, self.generation) for i in range(self.count)]
        results = await asyncio.gather(*(self._wait_ready(w) for w in fresh))
        if not all(results):
            for w in fresh:
                self._kill(w)
            self.generation -= 1
            self.count, self._groups, self._prepared = old_count, old_groups, old_prepared
            for sock in made:
                sock.close()
            return False
        self.drain_timeout = config.global_.drain_timeout
        old, self.current = self.current, fresh
        self._covered.clear()
        for w in old:
            self._drain(w)
        for key, group in old_groups.items():  # addresses gone (or bound anew): their worker sockets
            if key not in groups or groups[key][0] is not group[0]:
                _close_joined(group)
        return True

    def _grow(self, sockets: Mapping[Key, socket.socket]) -> tuple[dict[Key, Group], Group]:
        """Each address's group with a socket per worker: the groups open now, new ones
        for new sockets, and `join`ed sockets where there are fewer than workers."""
        groups: dict[Key, Group] = {}
        made: Group = []
        try:
            for key, sock in sockets.items():
                kept = self._groups.get(key)
                group = list(kept) if kept and kept[0] is sock else [sock]
                while len(group) < self.count:
                    made.append(join(sock))
                    group.append(made[-1])
                groups[key] = group
        except OSError:
            for extra in made:
                extra.close()
            raise
        return groups, made

    async def close(self, key: Key) -> None:
        live = [w for w in (*self.current, *self.draining) if w.ready.done()]
        await asyncio.gather(*(w.close(key) for w in live), return_exceptions=True)
        _close_joined(self._groups.pop(key, []))

    async def stop(self) -> None:
        self._stopping = True
        workers = [*self.current, *self.draining]
        for w in list(self.current):
            self._drain(w)
        waits = [asyncio.shield(w.exited) for w in workers]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.drain_timeout + 5)
            for w in workers:
                if not w.exited.done():
                    self._kill(w)
            if late:
                await asyncio.wait(waits, timeout=5)
        self.counts.close()
        os.close(self.counts.fd)
        for group in self._groups.values():
            _close_joined(group)
        self._groups.clear()

    def listener_stats(self) -> list[dict[str, Any]]:
        return self._listeners

    async def stop_accepting(self) -> None:
        for w in list(self.current):
            self._drain(w)

    # --------------------------------------------------------------- workers
    def _spawn(self, index: int, generation: int) -> WorkerProcess:
        self._free_rows.sort()  # lowest first: readers sum only up to the highest in use
        row = self._free_rows.pop(0) if self._free_rows else -1  # -1: counts its own only
        if row >= 0:
            self.counts.clear_row(row)
            self._publish_rows()
        w = WorkerProcess(index, generation, row)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs.fileno(), self.counts.fd, *(s.fileno() for g in self._groups.values() for s in g)]
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        prepared = self._prepared
        assert prepared is not None  # (commit sets it before the first spawn)
        env["SEKISHO_LOG_LEVEL"] = prepared.config.global_.log_level
        w.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.process.worker", str(theirs.fileno())],
            pass_fds=fds,
            env=env,
        )
        theirs.close()
        init = WorkerInit(
            index=index,
            generation=generation,
            workers=self.count,
            config_text=prepared.text or "",
            cert_files=prepared.cert_files,
            config_source=prepared.config.source,
            sockets=tuple((k[0], k[1], tuple(s.fileno() for s in g)) for k, g in self._groups.items()),
            counts=(self.counts.fd, self.counts.rows, self.counts.columns, row),
            view=self.pools.view(),
        )
        self.tasks.spawn(self._talk(w, ours, init), name=f"worker {index} pid {w.pid}")
        return w

    def _publish_rows(self) -> None:
        in_use = set(range(self.counts.rows)).difference(self._free_rows)
        self.counts.rows_in_use(max(in_use, default=-1) + 1)

    async def _wait_ready(self, w: WorkerProcess) -> bool:
        done, _ = await asyncio.wait(
            (w.ready, w.exited), timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if w.ready in done and not w.exited.done():
            return True
        log.error("worker %d (pid %d) did not start", w.index, w.pid)
        return False

    async def _talk(self, w: WorkerProcess, channel: socket.socket, init: WorkerInit) -> None:
        """Everything the worker says, until it exits; then what its exit means."""
        reader, w.writer = await asyncio.open_unix_connection(sock=channel)
        w.send("init", init)
        try:
            while (message := await control.receive(reader)) is not None:
                self._heard(w, message)
        finally:
            w.gone = True
            for reply in w._replies.values():  # a scrape waiting on a worker that died
                if not reply.done():
                    reply.set_result(None)
            w.writer.close()
            code = await asyncio.to_thread(w.proc.wait) if w.proc is not None else 0
            w.exited.set_result(code)
            self._exited(w, code)

    def _heard(self, w: WorkerProcess, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready" and not w.ready.done():
            w.ready.set_result(True)
        elif kind == "snapshot":
            reply = w._replies.get(message[1])
            if reply is not None and not reply.done():
                reply.set_result(message[2])
        elif kind == "closed":
            done = w._closed.get(message[1])
            if done is not None and not done.done():
                done.set_result(None)
        elif kind == "connect_failed":
            pool = self.pools.get(message[1])
            for backend in pool.find(message[2]) if pool is not None else ():
                pool.failed_in_worker(backend)  # type: ignore[union-attr]
        elif kind == "bye":
            w.last = message[1]

    def _exited(self, w: WorkerProcess, code: int) -> None:
        if w.last is not None:
            self._gone = totals.retire(self._gone, w.last)
        if w.row >= 0:
            self.counts.clear_row(w.row)  # its connections are gone with it
            self._free_rows.append(w.row)
            self._publish_rows()
        self.draining.discard(w)
        if w not in self.current:
            log.info("worker %d (pid %d, generation %d) exited", w.index, w.pid, w.generation)
            return
        self.current.remove(w)
        if self._stopping:
            return
        self._cover(w)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        self.restarts += 1
        log.error("worker %d (pid %d) died (%s); starting another", w.index, w.pid, how)
        delay = CRASH_LOOP if time.time() - w.started < CRASH_LOOP else 0.0
        self.tasks.spawn(self._replace(w, delay), name=f"restart worker {w.index}")

    async def _replace(self, dead: WorkerProcess, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._stopping or dead.generation != self.generation:
            return  # a reload started a new generation meanwhile
        w = self._spawn(dead.index, dead.generation)
        self.current.append(w)
        if await self._wait_ready(w):
            adopter = self._covered.pop(w.index, None)
            if adopter is not None and not adopter.gone:
                adopter.send("release", w.index)

    def _cover(self, dead: WorkerProcess) -> None:
        """Until it is replaced, a live worker watches the dead one's sockets (and those
        the dead one was watching for others): what the kernel queues there is served."""
        live = [w for w in self.current if w.serving]
        if not live:
            return  # nobody to take them: they wait, queued, for the new worker
        orphans = [dead.index, *(i for i, w in self._covered.items() if w is dead)]
        for n, index in enumerate(orphans):
            if any(w.index == index for w in live):
                self._covered.pop(index, None)  # its replacement serves it already
                continue
            if (adopter := self._covered.get(index)) is not None and adopter in live:
                continue  # a replacement that died too: still covered
            adopter = live[(dead.index + n) % len(live)]
            self._covered[index] = adopter
            adopter.send("adopt", index)

    def _drain(self, w: WorkerProcess) -> None:
        if not w.draining:
            w.draining = True
            self.draining.add(w)
            if w in self.current:
                self.current.remove(w)
            w.send("drain")

    def _kill(self, w: WorkerProcess) -> None:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()

    # ------------------------------------------------------------ the view
    def _view_changed(self) -> None:
        if not self._view_pending:
            self._view_pending = True
            asyncio.get_running_loop().call_soon(self._send_view)

    def _send_view(self) -> None:
        self._view_pending = False
        view = self.pools.view()
        for w in (*self.current, *self.draining):
            w.send("view", view)

    # ------------------------------------------------------------ the totals
    def accepting(self) -> bool:
        """Some worker accepts: with every worker dead (a crash loop), nobody does."""
        return any(w.serving for w in self.current)

    async def refresh(self) -> None:
        """Ask every worker for its counters and add them up (before a scrape or status)."""
        live = [*self.current, *self.draining]
        reports = await asyncio.gather(*(w.snapshot() for w in live))
        total = copy.deepcopy(self._gone)
        for report in reports:
            if report is not None:
                total = totals.add(total, report)
        if total is None:
            return
        names = {(s.kind, s.name) for s in sections(self._prepared.config)} if self._prepared else set()
        for kind in ("http", "smtp", "tcp"):
            book = total["stats"].get(kind, {})
            self.stats.by_kind[kind] = {n: v for n, v in book.items() if (kind, n) in names}
        wanted = {f"{k} {a}" for k, a in self._groups}
        self._listeners = [{"active": 0, **s} for name, s in total["listeners"].items() if name in wanted]
        for name, report in total["pools"].items():
            pool = self.pools.get(name)
            if pool is None:
                continue
            pool.picks_none = report["picks_none"]
            for key, counters in report["servers"].items():
                sorry = [pool.sorry] if pool.sorry is not None and pool.sorry.key == key else []
                for backend in pool.find(key) or sorry:
                    for field, value in counters.items():
                        setattr(backend, field, value)

    def status(self) -> list[dict[str, Any]]:
        workers = sorted((*self.current, *self.draining), key=lambda w: (w.generation, w.index))
        return [w.status() for w in workers]
