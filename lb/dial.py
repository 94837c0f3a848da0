"""Connect to a backend of a pool, retrying on another server when one fails.

Shared by the HTTP, SMTP and TCP front ends so that passive health (a failed
connect counts against the server), retries and connection accounting behave
the same everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import TypeVar

from lb.errors import NoBackendAvailable, UpstreamConnectError
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
            pool.drop(backend)
            pool.connect_failed(backend)
            tried.append(backend)
            last = exc
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
