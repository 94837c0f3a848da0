"""Connections to backends: one strict response reader each, and a per-server pool of idle keep-alive ones.

An `UpstreamConnection` forwards everything it hears to whoever owns it at the
moment (the client connection whose request it carries). Idle, it belongs to
the `UpstreamPool`, which closes it when the server closes it, when it sat idle
too long, or when the server is marked down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from lb.pool import Backend
from proxy.http.response import MAX_HEAD, ResponseReader

IDLE_TIMEOUT = 30.0  # an idle upstream connection older than this is closed
MAX_IDLE_PER_SERVER = 256


class UpstreamOwner(Protocol):
    def upstream_data(self, data: bytes) -> None: ...
    def upstream_eof(self) -> None: ...
    def upstream_lost(self, exc: Exception | None) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "backend",
        "closed",
        "idle_since",
        "owner",
        "pool",
        "reader",
        "requests",
        "sent_all",
        "transport",
    )

    def __init__(self, backend: Backend, pool: UpstreamPool | None, max_head: int = MAX_HEAD) -> None:
        self.backend = backend
        self.pool = pool
        self.reader = ResponseReader(max_head)
        self.sent_all = False  # the whole current request went out
        self.transport: asyncio.Transport | None = None
        self.owner: UpstreamOwner | None = None
        self.closed = False
        self.idle_since = 0.0
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_data(data)
        else:
            self.close()  # an idle server has nothing to say

    def eof_received(self) -> bool:
        owner = self.owner
        if owner is not None:
            owner.upstream_eof()
        else:
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        owner = self.owner
        self.owner = None
        if owner is not None:
            owner.upstream_lost(exc)
        elif self.pool is not None:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resume_writing()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections per backend server (LIFO: the warmest first)."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_idle: int = MAX_IDLE_PER_SERVER) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._idle: dict[Backend, list[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.retired = False

    def acquire(self, backend: Backend, now: float) -> UpstreamConnection | None:
        conns = self._idle.get(backend)
        if not conns:
            return None
        if not backend.up:
            self._close_all(backend)
            return None
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
                return conn
            conn.close()
        return None

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Keep a connection whose exchange finished cleanly; close it if it cannot be kept."""
        conn.owner = None
        if self.retired or conn.closed or not conn.backend.up:
            conn.close()
            return
        conns = self._idle.setdefault(conn.backend, [])
        if len(conns) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        conns.append(conn)
        if self._sweeper is None:
            self._arm()

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self._idle.get(conn.backend)
        if conns is not None and conn in conns:
            conns.remove(conn)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        left = 0
        for backend, conns in list(self._idle.items()):
            if not backend.up:
                self._close_all(backend)
                continue
            keep = [c for c in conns if not c.closed and now - c.idle_since < self.idle_timeout]
            for c in conns:
                if c not in keep:
                    c.close()
            self._idle[backend] = keep
            left += len(keep)
        if left:
            self._arm()

    def _close_all(self, backend: Backend) -> None:
        for c in self._idle.pop(backend, []):
            c.close()

    def idle_count(self) -> int:
        return sum(len(c) for c in self._idle.values())

    def close(self) -> None:
        """Close every idle connection and keep no more (the frontend is retired)."""
        self.retired = True
        for backend in list(self._idle):
            self._close_all(backend)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


Factory = Callable[[], UpstreamConnection]
