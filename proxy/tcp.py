"""`[[tcp]]` virtual services: the L4 front end (LVS's job).

accept (the listener hands over the raw socket) -> pick a server of the pool
(lb.dial.SocketDial: connect timeout, passive health, retry on another server)
-> PROXY header if the pool asks -> relay both ways (lb.fdrelay: copy for small
exchanges, splice for bulk) -> drop from the pool. All of it runs in poller
callbacks (lb.poller): no task, transport or protocol object per connection.

The client's bytes stay in the kernel until a backend is connected (the client
socket is not read), so a retry on another server is invisible to the client.
With no server to take the connection it is reset at once (refused quickly)
rather than left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import conf
from lb import proxy_protocol
from lb.dial import MAX_ATTEMPTS, SocketDial
from lb.errors import LbError
from lb.fdrelay import FdRelay
from lb.poller import Poller, poller
from lb.pool import Backend, BackendPool, PoolSet

log = logging.getLogger("sekisho.tcp")

_LINGER_RESET = struct.pack("ii", 1, 0)
REPLAY_LIMIT = 65536  # client bytes kept for a retry until the server answers


@dataclass
class TcpStats:
    """Per-listener counters that survive reloads."""

    accepted: int = 0
    active: int = 0
    refused: int = 0  # no server available / every connect failed
    relayed: int = 0  # connections that reached a backend
    spliced: int = 0  # ... of which switched to splice
    bytes_in: int = 0  # client -> backend
    bytes_out: int = 0  # backend -> client
    errors: int = 0  # relays ended by a reset or an error
    idle_timeouts: int = 0
    retries: int = 0  # a server reset before answering; replayed on another

    def stats(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Conn:
    """One client from accept to close: dial (lb.dial.SocketDial), relay
    (lb.fdrelay.FdRelay), and a retry on another server if the first one
    fails before answering. No task, no transport."""

    __slots__ = ("backend", "dialing", "frontend", "on_close", "peer", "pool", "relay", "sock", "tried")

    def __init__(
        self, frontend: TcpFrontend, sock: socket.SocketType, peer: Any, on_close: Callable[[], None]
    ) -> None:
        self.frontend = frontend
        self.sock = sock
        self.peer = peer
        self.on_close = on_close
        self.pool = frontend._pool()
        self.dialing: SocketDial | None = None
        self.relay: FdRelay | None = None
        self.backend: Backend | None = None
        self.tried: tuple[Backend, ...] = ()

    def dial(self, replay: bytes = b"") -> None:
        fe = self.frontend
        peer = self.peer
        client_ip = peer[0] if isinstance(peer, tuple) else None

        def connected(sock: socket.SocketType | None, backend: Backend | None, exc: LbError | None) -> None:
            self.dialing = None
            if sock is None or backend is None:
                fe.stats_.refused += 1
                log.debug("tcp %s: refusing %s: %s", fe.config.listen[0], client_ip, exc)
                _refuse(self.sock)
                fe.finished(self)
                return
            self.start_relay(sock, backend, replay)

        timeout = fe.config.timeouts.connect
        self.dialing = SocketDial(
            fe.poller, self.pool, client_ip, connected, timeout=timeout, exclude=self.tried
        )
        self.dialing.start()

    def start_relay(self, sock: socket.SocketType, backend: Backend, replay: bytes) -> None:
        fe = self.frontend
        fe.stats_.relayed += 1
        self.backend = backend
        preamble = b""
        if self.pool.proxy_protocol is not None:
            peer = self.peer
            src = (peer[0], peer[1]) if isinstance(peer, tuple) else None
            local = self.sock.getsockname()
            dst = (local[0], local[1]) if isinstance(local, tuple) else None
            preamble = proxy_protocol.encode(self.pool.proxy_protocol, src, dst)
        retry_ok = len(self.tried) + 1 < MAX_ATTEMPTS
        self.relay = FdRelay(
            fe.poller,
            self.sock,
            sock,
            self.relayed,
            idle_timeout=fe.config.timeouts.idle,
            splice=fe.splice,
            replay_limit=REPLAY_LIMIT if retry_ok else 0,
        )
        self.relay.start(preamble, replay)

    def relayed(self, relay: FdRelay) -> None:
        fe, pool, backend = self.frontend, self.pool, self.backend
        assert backend is not None
        self.relay = self.backend = None
        pool.drop(backend)
        if relay.retry is not None:
            # The server failed before answering: another server gets what the
            # client sent so far, and the client never knows.
            pool.connect_failed(backend)
            fe.stats_.retries += 1
            self.tried = (*self.tried, backend)
            self.dial(relay.retry)
            return
        pool.add_traffic(backend, relay.a_to_b, relay.b_to_a)
        s = fe.stats_
        s.bytes_in += relay.a_to_b
        s.bytes_out += relay.b_to_a
        if relay.spliced:
            s.spliced += 1
        if isinstance(relay.error, TimeoutError):
            s.idle_timeouts += 1
        elif relay.error is not None:
            s.errors += 1
        fe.finished(self)

    def abort(self) -> None:
        if self.relay is not None:
            self.relay.close()
        elif self.dialing is not None:
            self.dialing.cancel()
            self.dialing = None
            self.sock.close()
            self.frontend.finished(self)


def _refuse(sock: socket.SocketType) -> None:
    """Reset at once: a refused client should not wait for anything."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class TcpFrontend:
    def __init__(
        self,
        config: conf.TcpService,
        pools: PoolSet,
        stats: TcpStats | None = None,
        *,
        splice: bool = True,
    ) -> None:
        self.config = config
        self.pools = pools
        self.stats_ = stats if stats is not None else TcpStats()
        self.max_connections = config.max_connections
        self.splice = splice
        self.conns: set[_Conn] = set()
        self.retired = False
        self.poller: Poller = poller()
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------ Frontend protocol
    def make_protocol(self, on_close: Callable[[], None]) -> asyncio.BaseProtocol:
        raise NotImplementedError("the TCP front end takes raw sockets (take_socket)")

    def take_socket(self, sock: socket.SocketType, peer: Any, on_close: Callable[[], None]) -> None:
        """An accepted, non-blocking client socket; `on_close` is called once when it is done."""
        conn = _Conn(self, sock, peer, on_close)
        s = self.stats_
        s.accepted += 1
        s.active += 1
        self.conns.add(conn)
        self._idle.clear()
        conn.dial()

    def ssl_context(self) -> ssl.SSLContext | None:
        return None

    def stats(self) -> dict[str, Any]:
        return {
            "pool": self.config.pool,
            "listen": [str(a) for a in self.config.listen],
            **self.stats_.stats(),
        }

    def retire(self) -> None:
        """An L4 service has no idle connections: in-flight streams go on."""
        self.retired = True

    async def drain(self, timeout: float) -> None:
        """Wait until every connection is over, at most `timeout` seconds.

        Connections still open after that are left alone: on a reload they
        go on (as LVS keeps established connections); at shutdown the process
        exit ends them. `close_all()` resets them explicitly."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass

    def close_all(self) -> None:
        for c in list(self.conns):
            c.abort()

    def _pool(self) -> BackendPool:
        return self.pools[self.config.pool]

    def finished(self, conn: _Conn) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self.stats_.active -= 1
            conn.on_close()
            if not self.conns:
                self._idle.set()
