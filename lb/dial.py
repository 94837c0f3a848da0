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

from lb.errors import NoBackendAvailable, UpstreamConnectError
from lb.pool import Backend, BackendPool

P = TypeVar("P", bound=asyncio.BaseProtocol)

MAX_ATTEMPTS = 3  # HAProxy's `retries 3`
_DEFER_ACCEPT: int | None = getattr(socket, "TCP_DEFER_ACCEPT", None)  # Linux only


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


def connect_start(backend: Backend, data_follows: bool = False) -> socket.SocketType:
    """A non-blocking socket with its connect to `backend` under way (TCP_NODELAY,
    as the transports set it); raises OSError when it fails at once. The bare C
    socket type: the Python subclass only adds per-call overhead here.

    `data_follows`: the caller sends right after connecting, so the handshake's
    last ACK waits to ride with that data (HAProxy's `option tcp-smart-connect`;
    Linux does this for a connecting socket with TCP_DEFER_ACCEPT set). The
    server then gets its new connection and the request in one packet: one
    packet less, and one wakeup of the server instead of two."""
    sock = socket.SocketType(backend.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if data_follows and _DEFER_ACCEPT is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _DEFER_ACCEPT, 1)
        err = sock.connect_ex(backend.sockaddr)
    except OSError:
        sock.close()
        raise
    if err and err != errno.EINPROGRESS:
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock
