"""`[[tcp]]` virtual services: the L4 front end (LVS's job).

accept -> pick a server of the pool (lb.dial: connect timeout, passive health,
retry on another server) -> PROXY header if the pool asks -> relay both ways
(lb.relay: copy for small exchanges, splice for bulk) -> drop from the pool.

The client's bytes stay in the kernel until a backend is connected (reading is
paused), so a retry on another server is invisible to the client. With no
server to take the connection it is reset at once (refused quickly) rather than
left hanging.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import conf
from lb import proxy_protocol
from lb.dial import MAX_ATTEMPTS, dial
from lb.errors import LbError
from lb.pool import Backend, BackendPool, PoolSet
from lb.relay import Held, Relay

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


class _Client(Held):
    """An accepted client until its backend is connected."""

    def __init__(self, frontend: TcpFrontend, on_close: Callable[[], None]) -> None:
        super().__init__()
        self.frontend = frontend
        self.on_close = on_close
        self.task: asyncio.Task[None] | None = None
        self.backend: Backend | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.transport = t
        t.pause_reading()
        fe = self.frontend
        fe.stats_.accepted += 1
        fe.stats_.active += 1
        fe.conns.add(self)
        fe._idle.clear()
        self.task = asyncio.get_running_loop().create_task(fe.connect(self))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # Only before the relay took over (it replaces this protocol).
        if self.task is not None and not self.task.done():
            self.task.cancel()
        else:
            self.frontend.finished(self)


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
        self.conns: set[_Client] = set()
        self.relays: set[Relay] = set()
        self.retired = False
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------ Frontend protocol
    def make_protocol(self, on_close: Callable[[], None]) -> asyncio.BaseProtocol:
        return _Client(self, on_close)

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
        for r in list(self.relays):
            r.close(abort=True)
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()

    # ------------------------------------------------------------- the work
    def _pool(self) -> BackendPool:
        return self.pools[self.config.pool]

    async def connect(self, client: _Client, tried: tuple[Backend, ...] = ()) -> None:
        transport = client.transport
        assert transport is not None
        pool = self._pool()
        peer = transport.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else None
        preamble = None
        if pool.proxy_protocol is not None:
            version = pool.proxy_protocol
            src = (peer[0], peer[1]) if isinstance(peer, tuple) else None
            local = transport.get_extra_info("sockname")
            dst = (local[0], local[1]) if isinstance(local, tuple) else None

            def preamble(_: Backend) -> bytes:
                return proxy_protocol.encode(version, src, dst)

        try:
            backend_t, _, backend = await dial(pool, client_ip, Held, self.config.timeouts.connect, preamble)
        except LbError as exc:
            self.stats_.refused += 1
            log.debug("tcp %s: refusing %s: %s", self.config.listen[0], client_ip, exc)
            self._refuse(transport)
            self.finished(client)
            return
        except asyncio.CancelledError:
            # The client went away while we were connecting.
            self.finished(client)
            raise
        client.backend = backend
        if transport.is_closing():
            backend_t.abort()
            pool.drop(backend)
            self.finished(client)
            return
        self.stats_.relayed += 1
        relay = Relay(
            lambda r: self._relay_done(r, client, pool, backend, tried),
            self.config.timeouts.idle,
            self.splice,
            REPLAY_LIMIT if len(tried) + 1 < MAX_ATTEMPTS else 0,
        )
        self.relays.add(relay)
        relay.start(transport, backend_t)

    def _refuse(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        transport.abort()

    def _relay_done(
        self, relay: Relay, client: _Client, pool: BackendPool, backend: Backend, tried: tuple[Backend, ...]
    ) -> None:
        self.relays.discard(relay)
        pool.drop(backend)
        if relay.retry is not None:
            # The server reset the connection before answering: another server
            # gets what the client sent so far, and the client never knows.
            pool.connect_failed(backend)
            self.stats_.retries += 1
            relay.take_back(client)
            client.held = [relay.retry] if relay.retry else []
            client.task = asyncio.get_running_loop().create_task(self.connect(client, (*tried, backend)))
            return
        pool.add_traffic(backend, relay.a_to_b, relay.b_to_a)
        s = self.stats_
        s.bytes_in += relay.a_to_b
        s.bytes_out += relay.b_to_a
        if relay.spliced:
            s.spliced += 1
        if isinstance(relay.error, TimeoutError):
            s.idle_timeouts += 1
        elif relay.error is not None:
            s.errors += 1
        self.finished(client)

    def finished(self, client: _Client) -> None:
        if client in self.conns:
            self.conns.discard(client)
            self.stats_.active -= 1
            client.on_close()
            if not self.conns:
                self._idle.set()
