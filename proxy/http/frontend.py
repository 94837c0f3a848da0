"""`HttpFrontend`: what a `proxy.listener.Listener` hands accepted HTTP connections to.

One frontend per [[http]] section and config generation. A reload builds a new
one (new routes, new certificates) and retires the old, which lets in-flight
requests finish and closes its idle connections.

The listener hands it bare accepted sockets (`take_socket`). A plain-HTTP one waits
in proxy.http.intake until its first request head is whole and only then gets a
transport and an `H1Connection` (`hand_over`); a TLS one gets them at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import conf
from lb.poller import poller
from lb.pool import PoolSet
from proxy.access import ClientFilter
from proxy.accesslog import AccessLog
from proxy.acme.board import BOARD
from proxy.acme.listen import acme_cert_paths, context_for_hello, needs_hello
from proxy.http.exchange import Site
from proxy.http.h1 import H1Connection
from proxy.http.h2 import H2Connection
from proxy.http.intake import Intake
from proxy.http.stats import HttpStats
from proxy.http.tls import SniSelector, build_server_context
from proxy.http.upstream import UpstreamPool

log = logging.getLogger("sekisho.http")


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
        self.intake: set[Intake] = set()  # accepted, first request head not whole yet
        self._setups: set[asyncio.Task[None]] = set()  # transports being made (hand_over)
        self._empty = asyncio.Event()
        self._empty.set()
        self._allow = ClientFilter(config.allow)
        self._trusted = ClientFilter(config.trusted_proxies)
        alpn = ("h2", "http/1.1") if config.http2 else ("http/1.1",)
        self._ssl = build_server_context(config.tls, alpn) if config.tls else None
        self._acme_tls: SniSelector | None = None
        if config.acme is not None:  # ACME: certificates from the state directory, by route host
            self._acme_tls = SniSelector(config.tls, alpn, acme_cert_paths(config))
            self._ssl = self._acme_tls.context
        elif config.answers_http01:
            self.site.challenges = BOARD.http01  # plain HTTP answers ACME HTTP-01 before routing
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

    def take_socket(self, sock: socket.socket, peer: Any, on_close: Callable[[], None]) -> None:
        """An accepted socket (proxy.listener calls this; `on_close` once when it is done).
        Plain HTTP waits in proxy.http.intake for its first request head; TLS is set up
        at once (and counted once its handshake is done, in `conn_opened`)."""
        if self._ssl is not None:
            self.hand_over(sock, on_close, counted=False)
            return
        counters = self.counters
        counters.connections_active += 1
        counters.connections_total += 1
        intake = Intake(self, sock, peer[0] if peer else "", on_close, poller())
        self.intake.add(intake)
        self._empty.clear()
        if not intake.start():
            return  # handed over, or gone, already

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl

    def stats(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        snap["idle_upstream_connections"] = self.upstreams.idle_count()
        snap["open_connections"] = len(self.connections) + len(self.intake)
        snap["waiting_for_head"] = len(self.intake)
        snap["retired"] = self.retired
        return snap

    def retire(self) -> None:
        """Stop keeping connections alive: busy ones close after their response (which says
        `Connection: close`), idle ones after a short grace for a request already on its way."""
        self.site.retired = True
        self.upstreams.close()
        for c in list(self.connections):
            if c.transport is not None:  # (else handed over, its head whole: answered, then closed)
                c.retire()
        for i in list(self.intake):
            i.retire()

    async def drain(self, timeout: float) -> None:
        """Wait until every client connection is gone; abort the rest after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            for c in list(self.connections):
                if c.transport is not None:
                    c.transport.abort()
            for i in list(self.intake):
                i.abort()

    # ---------------------------------------------------------------- for connections

    def classify(self, ip: str) -> tuple[bool, bool]:
        """(allowed, trusted proxy) for a peer address."""
        return self._allow.admits(ip), self._trusted.admits(ip)

    def conn_opened(self, conn: H1Connection | H2Connection) -> None:
        if conn in self.connections:
            return  # came through the intake: counted since it was accepted
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
            if not self.connections and not self.intake:
                self._empty.set()

    def hand_over(self, sock: socket.socket, on_close: Callable[[], None], counted: bool) -> None:
        """Give an accepted socket its transport and `H1Connection` (`counted`: it
        is counted already, as an intake connection is)."""
        conn = H1Connection(self, _once(on_close))
        if counted:
            self.connections.add(conn)
            self._empty.clear()
        if self._ssl is None and self._acme_tls is None:  # plain HTTP: no handshake to wait for
            try:
                sock.setblocking(False)
            except OSError as exc:
                self._set_up_failed(conn, sock, exc)
                return
            attach_accepted(self.loop, conn, sock, lambda exc: self._set_up_failed(conn, sock, exc))
            return
        task = self.loop.create_task(self._set_up(conn, sock))
        self._setups.add(task)
        task.add_done_callback(self._setups.discard)

    async def _set_up(self, conn: H1Connection, sock: socket.socket) -> None:
        ctx = self._ssl
        try:
            sock.setblocking(False)
            if self._acme_tls is not None and needs_hello(self._acme_tls):
                ctx = await context_for_hello(sock, self._acme_tls)  # TLS-ALPN-01? no cert yet?
                if ctx is None:
                    raise ConnectionRefusedError("no certificate yet for the name asked for")
            await self.loop.connect_accepted_socket(
                lambda: conn, sock, ssl=ctx, ssl_handshake_timeout=10.0 if ctx else None
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._set_up_failed(conn, sock, exc)

    def _set_up_failed(self, conn: H1Connection, sock: socket.socket, exc: BaseException) -> None:
        # A client that went away during the TLS handshake is not ours to log loudly.
        log.debug("http: connection setup failed: %s", exc)
        sock.close()
        if conn.transport is None:  # (else connection_lost comes, and does the rest)
            self.conn_closed(conn)
            on_close = conn.on_close
            assert callable(on_close)
            on_close()

    def intake_done(self, intake: Intake) -> None:
        """`intake` is handed over or closed: it no longer waits for its head."""
        self.intake.discard(intake)

    def intake_closed(self) -> None:
        """An intake connection closed without being handed over."""
        self.counters.connections_active -= 1
        if not self.connections and not self.intake:
            self._empty.set()


def attach_accepted(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.Protocol,
    sock: socket.socket,
    failed: Callable[[BaseException], None],
) -> None:
    """`loop.connect_accepted_socket(...)` for a plain socket, without a task per connection.

    The loop makes the transport at once and then only waits for `connection_made`; a task
    would cost an object, a registration, and three loop callbacks per connection for that
    wait. So the coroutine is stepped here: to its first wait now, and once more when what it
    waits for is done. This leans on the coroutine protocol (a coroutine yields the future it
    waits for), which every asyncio loop's task relies on too; tests/integration/
    test_http_intake.py's `test_attach_accepted_*` fail if a loop stops doing so."""
    _step(loop.connect_accepted_socket(lambda: protocol, sock), failed)


def _step(steps: Coroutine[Any, Any, object], failed: Callable[[BaseException], None]) -> None:
    """Run `steps` to its next wait, and again each time what it waits for is done."""
    try:
        waiting = steps.send(None)
    except StopIteration:
        return
    except Exception as exc:  # refused, or the loop closed the transport it made: say so once
        failed(exc)
        return
    waiting.add_done_callback(lambda _: _step(steps, failed))


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    called = False

    def wrapper() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return wrapper
