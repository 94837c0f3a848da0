"""Connect to a backend of a pool, retrying on another server when one fails.

Shared by the HTTP, SMTP and TCP front ends so that passive health (a failed
connect counts against the server), retries and connection accounting behave
the same everywhere.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Collection
from typing import TypeVar

from lb.errors import LbError, NoBackendAvailable, UpstreamConnectError
from lb.poller import ERR, IN, OUT, Poller
from lb.pool import Backend, BackendPool

P = TypeVar("P", bound=asyncio.BaseProtocol)

MAX_ATTEMPTS = 3  # HAProxy's `retries 3`


async def open_connection(
    backend: Backend, protocol_factory: Callable[[], P], timeout: float
) -> tuple[asyncio.Transport, P]:
    """One connect attempt to one backend; raises UpstreamConnectError."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(protocol_factory, backend.host, backend.port)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UpstreamConnectError(f"{backend.key}: {reason}") from None
    return transport, protocol


def connect_failed(
    pool: BackendPool, backend: Backend, tried: list[Backend], error: UpstreamConnectError
) -> UpstreamConnectError:
    """A taken server could not be reached: give it back, count it against its
    health (passive check) and do not pick it again for this client."""
    pool.drop(backend)
    pool.connect_failed(backend)
    tried.append(backend)
    return error


async def dial(
    pool: BackendPool,
    client_ip: str | None,
    protocol_factory: Callable[[], P],
    timeout: float,
    preamble: Callable[[Backend], bytes] | None = None,
    *,
    exclude: Collection[Backend] = (),
) -> tuple[asyncio.Transport, P, Backend]:
    """Pick, take, connect; on failure count it, drop, and try another server.

    The returned backend is *taken*: the caller calls `pool.drop(backend)` when
    the connection (or request) is over. `preamble(backend)`, when given, is
    written before anything else (a PROXY protocol header). Servers in
    `exclude` (already tried by the caller) are not picked.
    """
    tried: list[Backend] = list(exclude)
    last: UpstreamConnectError | None = None
    for _ in range(MAX_ATTEMPTS):
        backend = pool.pick(client_ip, exclude=tried)
        if backend is None:
            break
        pool.take(backend)
        try:
            transport, protocol = await open_connection(backend, protocol_factory, timeout)
        except UpstreamConnectError as exc:
            last = connect_failed(pool, backend, tried, exc)
            continue
        except BaseException:
            pool.drop(backend)
            raise
        if preamble is not None:
            transport.write(preamble(backend))
        return transport, protocol, backend
    if last is not None:
        raise last
    raise NoBackendAvailable(f"pool {pool.name}: no server is up")


def connect_start(backend: Backend) -> socket.SocketType:
    """A non-blocking socket with its connect to `backend` under way (TCP_NODELAY,
    as the transports set it); raises OSError when it fails at once. The bare C
    socket type: the Python subclass only adds per-call overhead here."""
    family = socket.AF_INET6 if ":" in backend.host else socket.AF_INET
    sock = socket.SocketType(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((backend.host, backend.port))
    except OSError:
        sock.close()
        raise
    if err and err != errno.EINPROGRESS:
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock


class SocketDial:
    """`dial` without a task, for the raw-socket L4 path: pick, take, connect
    (non-blocking, watched by the poller), and on failure count it, drop and
    try another server. Calls `on_done(sock, backend, None)` with a connected
    socket left in the poller (as lb.fdrelay expects)
    and a *taken* backend, or `on_done(None, None, error)`."""

    __slots__ = (
        "attempts", "backend", "client_ip", "last", "on_done", "poller",
        "pool", "slot", "sock", "timeout", "tried",
    )  # fmt: skip

    def __init__(
        self,
        poller: Poller,
        pool: BackendPool,
        client_ip: str | None,
        on_done: Callable[[socket.SocketType | None, Backend | None, LbError | None], None],
        *,
        timeout: float,
        exclude: Collection[Backend] = (),
    ) -> None:
        self.poller = poller
        self.pool = pool
        self.client_ip = client_ip
        self.timeout = timeout
        self.on_done = on_done
        self.tried: list[Backend] = list(exclude)
        self.attempts = 0
        self.last: LbError | None = None
        self.sock: socket.SocketType | None = None
        self.backend: Backend | None = None
        self.slot = -1  # armed on the poller's timer wheel while connecting

    def start(self) -> None:
        pool = self.pool
        while self.attempts < MAX_ATTEMPTS:
            self.attempts += 1
            backend = pool.pick(self.client_ip, exclude=self.tried)
            if backend is None:
                break
            pool.take(backend)
            try:
                sock = connect_start(backend)
            except OSError as exc:
                self._count_failure(backend, exc.strerror or str(exc))
                continue
            try:
                # On loopback (and fast LANs) the handshake is done by now:
                # no need to wait for a wakeup to say so.
                sock.getpeername()
            except OSError:
                self.sock, self.backend = sock, backend
                self.poller.add(sock.fileno(), self._event, IN | OUT)
                self.slot = self.poller.arm(self, self.timeout)
                return
            self.poller.add(sock.fileno(), self._event, IN)
            self.on_done(sock, backend, None)
            return
        self.on_done(None, None, self.last or NoBackendAvailable(f"pool {pool.name}: no server is up"))

    def _event(self, ev: int) -> None:
        sock, backend = self.sock, self.backend
        assert sock is not None and backend is not None
        if ev & ERR:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._failed(os.strerror(code) if code else "connection closed")
        elif ev & OUT:
            self.poller.disarm(self, self.slot)
            self.slot = -1
            self.sock = self.backend = None
            self.on_done(sock, backend, None)

    def expired(self, now: float) -> None:
        self.slot = -1
        self._failed("timed out")

    def _failed(self, reason: str) -> None:
        backend = self.backend
        assert backend is not None
        self._close()
        self._count_failure(backend, reason)
        self.start()

    def _count_failure(self, backend: Backend, reason: str) -> None:
        self.last = connect_failed(
            self.pool, backend, self.tried, UpstreamConnectError(f"{backend.key}: {reason}")
        )

    def _close(self) -> None:
        if self.slot >= 0:
            self.poller.disarm(self, self.slot)
            self.slot = -1
        sock, self.sock = self.sock, None
        if sock is not None:
            self.poller.forget(sock.fileno())
            sock.close()

    def cancel(self) -> None:
        """The client is gone (or everything is being closed): give the server back."""
        backend, self.backend = self.backend, None
        self._close()
        if backend is not None:
            self.pool.drop(backend)
