"""The front ends of one process: a listener per socket, the front end current for it,
and the retired ones finishing their connections.

The daemon owns the sockets and decides when a config changes; this object puts a
config's front ends to work on them. With `workers = 1` the daemon uses it directly;
with more, each worker process runs one (proxy.process.worker) and the daemon's
`proxy.process.workers.Workers` stands in its place with the same methods:

    prepared = serving.prepare(config)       # builds front ends, TLS contexts; StartupError
    await serving.commit(prepared, sockets)  # serve them on these sockets (every listen key)
    await serving.close(key)                 # stop accepting on one address (it moves or goes)
    await serving.stop()                     # stop accepting everywhere, drain, close logs
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import conf
from lb.pool import PoolSet
from proxy.accesslog import AccessLog
from proxy.acme.board import BOARD
from proxy.http.tls import watch_certificates
from proxy.listener import Frontend, Listener
from proxy.process.frontends import StatsBook, build_frontend, sections
from proxy.process.tasks import Background

log = logging.getLogger("sekisho")

Key = tuple[str, conf.Address]  # (kind, listen address)
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython default 700)


class StartupError(Exception):
    """The daemon cannot start (or reload) with this config on this machine."""


@dataclass
class Prepared:
    """A config's front ends, built and checked, not yet serving."""

    config: conf.Config
    frontends: dict[Key, Frontend]
    access_log: AccessLog | None
    text: str | None = None  # the config file's text, for worker processes
    cert_files: dict[str, bytes] = field(default_factory=dict)  # as checked, for worker processes


def listen_keys(config: conf.Config) -> list[Key]:
    return [(s.kind, a) for s in sections(config) for a in s.config.listen]


class LocalServing:
    def __init__(self, pools: PoolSet, tasks: Background) -> None:
        self.pools = pools
        self.tasks = tasks
        self.stats = StatsBook()
        self.listeners: dict[Key, Listener] = {}
        self.frontends: dict[Key, Frontend] = {}
        self.retired: set[Frontend] = set()
        self.access_log: AccessLog | None = None
        self._old_access_logs: list[AccessLog] = []
        self.drain_timeout = conf.GlobalSettings().drain_timeout
        self.share = 1  # in a worker: how many workers share each listener's max_connections
        self._tls_watch: asyncio.Task[None] | None = None  # certificate files changed on disk

    def prepare(self, config: conf.Config) -> Prepared:
        access_log = AccessLog(config.global_.access_log, config.global_.log_format)
        built: dict[Key, Frontend] = {}
        for section in sections(config):
            try:
                frontend = build_frontend(section, self.pools, self.stats, access_log)
            except (OSError, ValueError) as exc:
                access_log.close()
                raise StartupError(f"{section.path}: {exc}") from exc
            for address in section.config.listen:
                built[(section.kind, address)] = frontend
        return Prepared(config, built, access_log)

    def abandon(self, prepared: Prepared) -> None:
        if prepared.access_log is not None:
            prepared.access_log.close()

    async def commit(self, prepared: Prepared, sockets: Mapping[Key, socket.socket]) -> bool:
        """Serve `prepared` on `sockets` (one per listen key of its config): listeners
        already open keep their socket and take the new front end; old front ends retire."""
        if self.access_log is not None:
            self._old_access_logs.append(self.access_log)
        self.access_log = prepared.access_log
        self.drain_timeout = prepared.config.global_.drain_timeout
        BOARD.follow(prepared.config)  # ACME challenges this process answers (proxy/acme/board.py)
        if self._tls_watch is None:  # new certificates (ACME's or certbot's) from the next handshake
            self._tls_watch = self.tasks.spawn(watch_certificates(), name="tls watch")
        for key in [k for k in self.listeners if k not in prepared.frontends]:
            await self.close(key)
        for key, frontend in prepared.frontends.items():
            old = self.frontends.get(key)
            if key in self.listeners:
                self.listeners[key].frontend = frontend
            else:
                listener = Listener(key[0], key[1], sockets[key], frontend, self.share)
                self.listeners[key] = listener
                listener.start()
                log.info("listening: %s %s", key[0], key[1])
            self.frontends[key] = frontend
            if old is not None and old is not frontend:
                self._retire(old)
        self.stats.prune({(s.kind, s.name) for s in sections(prepared.config)})
        return True

    async def close(self, key: Key) -> None:
        listener = self.listeners.pop(key, None)
        if listener is None:
            return
        await listener.stop_accepting()
        frontend = self.frontends.pop(key, None)
        if frontend is not None and frontend not in self.frontends.values():
            self._retire(frontend)
        log.info("closed: %s %s", key[0], key[1])

    async def watch(self, key: Key, sock: socket.socket, on: bool) -> None:
        """A worker accepts from one more socket of `key`'s group, or stops (it stays open)."""
        listener = self.listeners.get(key)
        if listener is None:
            return
        if on:
            listener.watch(sock)
        else:
            await listener.unwatch(sock)

    def _retire(self, frontend: Frontend) -> None:
        if frontend in self.retired:
            return
        self.retired.add(frontend)
        frontend.retire()

        async def drain() -> None:
            try:
                await frontend.drain(self.drain_timeout)
            finally:
                self.retired.discard(frontend)
                if not self.retired:  # nobody writes to the old logs any more
                    for old in self._old_access_logs:
                        old.close()
                    self._old_access_logs.clear()

        self.tasks.spawn(drain(), name="drain")

    async def stop_accepting(self) -> None:
        for listener in list(self.listeners.values()):
            await listener.stop_accepting()

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish up to the drain timeout."""
        await self.stop_accepting()
        frontends = {*self.frontends.values(), *self.retired}
        for frontend in frontends:
            with contextlib.suppress(Exception):
                frontend.retire()
        if frontends:
            await asyncio.gather(*(f.drain(self.drain_timeout) for f in frontends), return_exceptions=True)
        for access_log in (self.access_log, *self._old_access_logs):
            if access_log is not None:
                access_log.close()

    def listener_stats(self) -> list[dict[str, Any]]:
        return [listener.stats() for listener in self.listeners.values()]

    async def refresh(self) -> None:
        """Counters are read live in one process (workers gather theirs here)."""

    def accepting(self) -> bool:
        """Some process accepts on the listeners (here: this one, once they are open)."""
        return bool(self.listeners)

    def connections(self) -> int:
        return sum(listener.active for listener in self.listeners.values())


def tune_gc() -> None:
    """Per-connection objects die by reference counting; the cyclic collector only
    needs to run now and then. Freezing what start-up built (config, pools, modules)
    keeps full collections from walking it again, and a larger first threshold runs
    young collections less often on the request path (about 4% of its CPU)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
