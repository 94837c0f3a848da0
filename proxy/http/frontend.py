"""`HttpFrontend`: what a `proxy.listener.Listener` hands accepted HTTP connections to.

One frontend per [[http]] section and config generation. A reload builds a new
one (new routes, new certificates) and retires the old, which lets in-flight
requests finish and closes its idle connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable
from typing import Any

import conf
from lb.pool import PoolSet
from proxy.accesslog import AccessLog
from proxy.http.exchange import Site
from proxy.http.h1 import H1Connection
from proxy.http.h2 import H2Connection
from proxy.http.stats import HttpStats
from proxy.http.tls import build_server_context
from proxy.http.upstream import UpstreamPool


class HttpFrontend:
    def __init__(
        self,
        config: conf.HttpListener,
        pools: PoolSet,
        stats: HttpStats,
        access_log: AccessLog | None = None,
    ) -> None:
        self.config = config
        self.pools = pools
        self.counters = stats
        self.access_log = access_log if access_log is not None and access_log.enabled else None
        self.max_connections = config.max_connections
        self.site = Site(config, pools, stats)  # what every exchange decides with
        self.routes = self.site.routes
        self.upstreams = UpstreamPool(idle_timeout=min(30.0, config.timeouts.idle))
        self.connections: set[H1Connection | H2Connection] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._allow = _NetSet(config.allow)
        self._trusted = _NetSet(config.trusted_proxies)
        alpn = ("h2", "http/1.1") if config.http2 else ("http/1.1",)
        self._ssl = build_server_context(config.tls, alpn) if config.tls else None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ---------------------------------------------------------------- Frontend protocol

    @property
    def retired(self) -> bool:
        return self.site.retired

    def make_protocol(self, on_close: Callable[[], None]) -> asyncio.BaseProtocol:
        return H1Connection(self, on_close)

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl

    def stats(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        snap["idle_upstream_connections"] = self.upstreams.idle_count()
        snap["open_connections"] = len(self.connections)
        snap["retired"] = self.retired
        return snap

    def retire(self) -> None:
        """Stop keeping connections alive: busy ones close after their response (which says
        `Connection: close`), idle ones after a short grace for a request already on its way."""
        self.site.retired = True
        self.upstreams.close()
        for c in list(self.connections):
            c.retire()

    async def drain(self, timeout: float) -> None:
        """Wait until every client connection is gone; abort the rest after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            for c in list(self.connections):
                if c.transport is not None:
                    c.transport.abort()

    # ---------------------------------------------------------------- for connections

    def classify(self, ip: str) -> tuple[bool, bool]:
        """(allowed, trusted proxy) for a peer address."""
        return self._allow.contains(ip), self._trusted.contains(ip)

    def conn_opened(self, conn: H1Connection | H2Connection) -> None:
        self.connections.add(conn)
        self._empty.clear()
        self.counters.connections_active += 1
        self.counters.connections_total += 1

    def conn_replaced(self, old: H1Connection, new: H2Connection) -> None:
        """A connection switched protocols (HTTP/1 to HTTP/2): still one connection."""
        self.connections.discard(old)
        self.connections.add(new)

    def conn_closed(self, conn: H1Connection | H2Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.counters.connections_active -= 1
            if not self.connections:
                self._empty.set()


class _NetSet:
    """Membership of an address in a set of networks, cached per address string."""

    def __init__(self, nets: tuple[conf.model.IPNetwork, ...]) -> None:
        self.nets = nets
        self.everything = any(n.prefixlen == 0 for n in nets) and {
            n.version for n in nets if n.prefixlen == 0
        } == {4, 6}
        self._cache: dict[str, bool] = {}

    def contains(self, ip: str) -> bool:
        if self.everything:
            return True
        hit = self._cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            hit = any(addr in n for n in self.nets)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[ip] = hit
        return hit
