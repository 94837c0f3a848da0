"""The backend side of one exchange, for every client protocol (HTTP/1.1 connection, HTTP/2 stream).

`BackendLeg.forward(pool)` finds a server: an idle kept-alive connection to the one
`lb.dial.Attempts` picks, or a new connection through one round of attempts (the
only task: it lives while a connect is under way). The owner (proxy/http/h1.py's
connection, proxy/http/h2.py's stream) is told `attached(up)` and writes the request;
the backend connection reports its bytes to the owner, which turns them into its own
protocol's frames. When the exchange is over, `settle()` keeps the connection for the
next request or closes it; `failed()` asks the exchange what a failure means and
redials itself for a retry; `release()` lets go of everything at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from lb import proxy_protocol
from lb.dial import Attempts, open_connection
from lb.errors import UpstreamConnectError
from lb.pool import Backend, BackendPool
from proxy.http.exchange import RETRY, Answer, Exchange, Outcome
from proxy.http.response import MAX_HEAD
from proxy.http.stats import HttpStats
from proxy.http.upstream import UpstreamConnection, UpstreamOwner, UpstreamPool

if TYPE_CHECKING:
    from proxy.http.frontend import HttpFrontend

log = logging.getLogger("sekisho.http")


class LegOwner(UpstreamOwner, Protocol):
    """The client side of one exchange."""

    def gone(self) -> bool: ...  # the client (connection or stream) is no longer there
    def attached(self, up: UpstreamConnection) -> None: ...  # the head may go: write it
    def unreachable(self, answer: Answer) -> None: ...  # no server took it: answer the client


class BackendLeg:
    __slots__ = ("client", "ex", "fe", "owner", "peer", "task", "up")

    def __init__(
        self, fe: HttpFrontend, ex: Exchange, owner: LegOwner, client: asyncio.Transport, peer: str
    ) -> None:
        self.fe = fe
        self.ex = ex
        self.owner = owner
        self.client = client  # (for a PROXY protocol header: the client's addresses)
        self.peer = peer
        self.up: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None

    def forward(self, pool: BackendPool) -> None:
        """Find a server for the exchange; the owner hears `attached` or `unreachable`."""
        attempts = Attempts(pool, self.peer)
        backend = attempts.next()
        if backend is None:
            self.owner.unreachable(self.ex.fail(*attempts.outcome()))
            return
        if pool.config.proxy_protocol is None:
            up = self.fe.upstreams.acquire(backend, self.ex.t0)
            if up is not None:
                self.fe.counters.upstream_reused += 1
                self._attach(up, backend, reused=True)
                return
        self.task = self.fe.loop.create_task(self._dial(attempts, backend))

    async def _dial(self, attempts: Attempts, backend: Backend) -> None:
        fe = self.fe
        pool = attempts.pool
        try:
            up = await connect(
                attempts,
                backend,
                fe.upstreams,
                timeout=fe.site.timeouts.connect,
                max_head=max(MAX_HEAD, fe.site.head_limit),
                stats=fe.counters,
            )
        except asyncio.CancelledError:
            return
        finally:
            self.task = None
        if up is None:
            self.owner.unreachable(self.ex.fail(*attempts.outcome()))
            return
        if self.owner.gone():
            pool.drop(up.backend)
            if pool.proxy_protocol is None:
                fe.upstreams.release(up, fe.loop.time())
            else:
                up.close()
            return
        if pool.proxy_protocol is not None and up.transport is not None:
            up.transport.write(self._proxy_header(pool.proxy_protocol))
        self._attach(up, up.backend, reused=False)

    def _proxy_header(self, version: str) -> bytes:
        src = self.client.get_extra_info("peername")
        dst = self.client.get_extra_info("sockname")
        return proxy_protocol.encode(
            version, tuple(src[:2]) if src else None, tuple(dst[:2]) if dst else None
        )

    def _attach(self, up: UpstreamConnection, backend: Backend, reused: bool) -> None:
        ex = self.ex
        self.up = up
        ex.attached(backend, reused, self.fe.loop.time())
        up.owner = self.owner
        up.requests += 1
        up.sent_all = False
        up.reader.start(ex.method, ex.upgrade is not None)
        self.owner.attached(up)

    def failed(self, status: int, reason: str, client_gone: bool) -> Outcome:
        """The backend failed the exchange: let its connection go and do what the exchange
        says; a RETRY is dialled here (a fresh round: the server was not at fault)."""
        up = self.up
        self.up = None
        if up is not None:
            up.owner = None
            up.abort()
        self.drop_backend()
        outcome = self.ex.upstream_failed(status, reason, client_gone)
        if outcome is RETRY:
            pool = self.ex.pool
            assert pool is not None
            attempts = Attempts(pool, self.peer)
            backend = attempts.next()
            if backend is None:
                return self.ex.fail(*attempts.outcome())
            self.task = self.fe.loop.create_task(self._dial(attempts, backend))
        return outcome

    def settle(self) -> None:
        """The response is complete: keep the backend connection for the next request when
        it is clean (the whole request went out, the response was framed), else close it."""
        up = self.up
        self.up = None
        if up is not None:
            pool = self.ex.pool
            if up.sent_all and up.reader.reusable and pool is not None and pool.config.proxy_protocol is None:
                self.fe.upstreams.release(up, self.fe.loop.time())
            else:
                up.owner = None
                up.close()
        self.drop_backend()

    def release(self) -> None:
        """Let go of everything: a dial under way, the backend connection (closed when its
        response was complete, else aborted), the server taken for the exchange."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        up = self.up
        if up is not None:
            self.up = None
            up.owner = None
            if self.ex.response_done:
                up.close()
            else:
                up.abort()
        self.drop_backend()

    def drop_backend(self) -> None:
        """Give the server back to its pool, exactly once (it stays named for the access log)."""
        ex = self.ex
        if ex.backend is not None and ex.pool is not None:
            ex.pool.drop(ex.backend)
            ex.pool = None


async def connect(
    attempts: Attempts,
    backend: Backend,
    upstreams: UpstreamPool,
    *,
    timeout: float,
    max_head: int,
    stats: HttpStats,
) -> UpstreamConnection | None:
    """A new connection to `backend` (taken by `attempts`), or to the next servers
    `attempts` gives when it cannot be reached. None: no server could be reached, and
    `attempts.outcome()` says what to answer. The connection's `backend` is the server
    it reached, taken for the caller (`pool.drop` when the request is done)."""
    current: Backend | None = backend
    while current is not None:
        up = UpstreamConnection(current, upstreams, max_head)
        try:
            await open_connection(current, lambda up=up: up, timeout)  # type: ignore[misc]
        except UpstreamConnectError as exc:
            stats.upstream_connect_errors += 1
            log.info("upstream connect failed: %s", exc)
            attempts.failed(current, str(exc))
            current = attempts.next()
            continue
        except BaseException:
            attempts.release(current)
            raise
        stats.upstream_opened += 1
        return up
    return None
