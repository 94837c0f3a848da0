"""A worker process: the HTTP, SMTP and TCP front ends of one config, on sockets it inherits.

Started by the supervisor (proxy.process.workers) as `python -m proxy.process.worker FD`,
FD being its end of the control socketpair. It receives its config (the text the
supervisor validated, never the file again), the listening sockets, its row of the
shared connection counts and the pools' health view; it runs no health check, VRRP or
admin listener of its own. It dies with the supervisor (PR_SET_PDEATHSIG, and the
control socket's end of file), so a restart by systemd starts from a clean state.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import conf
from lb.pool import PoolSet, ServerView
from lb.shared import SharedCounts
from proxy.http.tls import keep_checked
from proxy.process import control
from proxy.process.serving import Key, LocalServing, tune_gc
from proxy.process.tasks import Background

log = logging.getLogger("sekisho")

_PR_SET_PDEATHSIG = 1
SUPERVISOR_ENV = "SEKISHO_SUPERVISOR_PID"


@dataclass(frozen=True)
class WorkerInit:
    index: int  # worker number, for logs and status (a restarted worker keeps it)
    generation: int  # which config it serves: one more at each reload
    workers: int  # how many serve this generation (they share each listener's max_connections)
    config_text: str
    config_source: str
    cert_files: dict[str, bytes]  # certificate and key files as the supervisor checked them
    # kind, address, the inherited fds of its SO_REUSEPORT group: worker i watches slots
    # i, i+workers, ... (and a dead sibling's while the supervisor says so)
    sockets: tuple[tuple[str, conf.Address, tuple[int, ...]], ...]
    counts: tuple[int, int, int, int]  # fd, rows, columns, our row
    view: dict[str, list[ServerView]]


def slots_of(index: int, workers: int, slots: int) -> list[int]:
    """The sockets of an address's group that worker `index` of `workers` watches: its
    own, and after a reload to fewer workers, those left over (none is ever unwatched)."""
    return list(range(index, slots, workers))


def snapshot(serving: LocalServing, pools: PoolSet, started: float) -> dict[str, Any]:
    """This worker's counters, in the shapes proxy.process.totals adds up."""
    http = serving.stats.by_kind["http"]
    return {
        "stats": serving.stats.by_kind,
        "listeners": {f"{s['kind']} {s['address']}": s for s in serving.listener_stats()},
        "pools": {
            name: {
                "picks_none": bp.picks_none,
                "servers": {
                    b.key: {
                        # (a pool with shared counts reads them there: lb.shared)
                        "active": b.active if bp.counts is None else 0,
                        "total": b.total,
                        "picks": b.picks,
                        "bytes_in": b.bytes_in,
                        "bytes_out": b.bytes_out,
                        "connect_failures": b.connect_failures,
                    }
                    for b in (*bp.backends, *((bp.sorry,) if bp.sorry else ()))
                },
            }
            for name, bp in pools.items()
        },
        "connections": serving.connections(),
        "requests": sum(n for stats in http.values() for n in stats.requests.values()),
        "started": started,
    }


def _die_with_parent() -> None:
    """SIGKILL when the supervisor dies, however it dies; and if it is already gone, go."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if str(os.getppid()) != os.environ.get(SUPERVISOR_ENV):
        os._exit(1)


class Worker:
    def __init__(self, init: WorkerInit, writer: asyncio.StreamWriter) -> None:
        self.init = init
        self.started = time.time()
        self.writer = writer
        config = conf.load_text(init.config_text, source=init.config_source)
        self.config = config
        keep_checked(init.cert_files)  # before any TLS listener loads its files
        self.tasks = Background(log)
        self.pools = PoolSet(config.pools)
        fd, rows, columns, row = init.counts
        # No row left in the table (more workers than it has room for): count alone.
        self.counts = SharedCounts(fd, rows, columns, row) if row >= 0 else None
        if self.counts is not None:
            self.pools.share_counts(self.counts)
        self.pools.apply_view(init.view)
        self.pools.report_failures(lambda pool, server: control.send(writer, "connect_failed", pool, server))
        self.serving = LocalServing(self.pools, self.tasks)
        self.serving.share = init.workers
        self.groups: dict[Key, list[socket.socket]] = {}
        for kind, address, fds in init.sockets:
            self.groups[(kind, address)] = [socket.socket(fileno=fd) for fd in fds]
        self.drain = asyncio.Event()

    def slots(self, index: int) -> dict[Key, list[socket.socket]]:
        """The sockets of worker `index`, per address."""
        n = self.init.workers
        return {key: [group[j] for j in slots_of(index, n, len(group))] for key, group in self.groups.items()}

    async def watch(self, index: int, on: bool) -> None:
        for key, socks in self.slots(index).items():
            for sock in socks:
                await self.serving.watch(key, sock, on)

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.serving, self.pools, self.started)

    async def run(self, reader: asyncio.StreamReader) -> int:
        mine = self.slots(self.init.index)
        await self.serving.commit(self.serving.prepare(self.config), {k: s[0] for k, s in mine.items()})
        await self.watch(self.init.index, True)  # its other slots, after a reload to fewer workers
        tune_gc()
        control.send(self.writer, "ready", os.getpid())
        log.info("worker %d (generation %d) serving", self.init.index, self.init.generation)
        # SIGTERM from someone but the supervisor: drain and go (the supervisor starts another).
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.drain.set)
        reading = asyncio.ensure_future(self._messages(reader))
        draining = asyncio.ensure_future(self.drain.wait())
        await asyncio.wait((reading, draining), return_when=asyncio.FIRST_COMPLETED)
        draining.cancel()
        if reading.done() and not self.drain.is_set():
            # The supervisor's end of the socket closed: it has gone, no one to report to.
            log.error("worker %d: the supervisor has gone; exiting", self.init.index)
            return 1
        reading.cancel()
        await self.serving.stop_accepting()
        self._close_sockets()  # the slots we did not watch too: an address dropped is freed now
        await self.serving.stop()
        await self.tasks.close()
        control.send(self.writer, "bye", self.snapshot())
        await self.writer.drain()
        self.writer.close()
        return 0

    async def _messages(self, reader: asyncio.StreamReader) -> None:
        while (message := await control.receive(reader)) is not None:
            if message[0] == "drain":
                self.drain.set()
                return
            try:
                await self._heard(message)
            except Exception:  # one message we failed on must not take the worker down
                log.exception("worker %d: handling %r failed", self.init.index, message[0])

    async def _heard(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "view":
            self.pools.apply_view(message[1])
        elif kind == "snapshot":
            control.send(self.writer, "snapshot", message[1], self.snapshot())
        elif kind == "close":
            await self.serving.close(message[1])
            self._close_sockets(message[1])
            control.send(self.writer, "closed", message[1])
        elif kind in ("adopt", "release"):
            await self.watch(message[1], kind == "adopt")

    def _close_sockets(self, key: Key | None = None) -> None:
        """Close our copies of listening sockets: the kernel frees an address (or stops
        queueing on a slot) only once no process holds the socket."""
        for k in [key] if key is not None else list(self.groups):
            for sock in self.groups.pop(k, []):
                sock.close()


async def run(control_fd: int) -> int:
    channel = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    message = await control.receive(reader)
    if message is None or message[0] != "init":
        return 1
    return await Worker(message[1], writer).run(reader)


def main(argv: list[str]) -> int:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the supervisor decides, and tells us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from proxy.process.cli import setup_logging

    setup_logging(os.environ.get("SEKISHO_LOG_LEVEL", "info"))
    import uvloop

    return uvloop.run(run(int(argv[0])))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
