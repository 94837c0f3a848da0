"""Listening sockets and the accept loop shared by every front end.

The daemon owns the sockets; a `Listener` accepts on one and hands each
connection to whatever `Frontend` is current for it. A reload swaps the
frontend, never the socket, so no connection is refused while reloading and
connections already accepted finish on the frontend (config) they started on.

We run our own accept loop rather than `loop.create_server` for two things
users of HAProxy and nginx expect: at `max_connections` we stop accepting, so
new connections wait in the kernel backlog instead of being refused; and when
the process runs out of file descriptors we back off and log once a while
instead of spinning.

A front end that takes bare sockets (it has `take_socket`: the TCP one, which
relays them itself, and the HTTP one, which keeps a connection in its head phase
until the first request head is whole, see proxy.http.intake) is served without
a task: the listening socket sits in the loop's poller (lb.poller) and each
wakeup accepts what is queued (up to _BURST, then other callbacks run) and hands
the sockets over directly. A slow client then costs no transport, protocol or
loop timer, and a burst of connections no task wakeup per accept. SMTP keeps the
accept loop and its transports.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from conf import Address
from lb.poller import EXCLUSIVE_IN, IN, Poller, poller

log = logging.getLogger("sekisho.listener")

_IP_FREEBIND = 15  # linux/in.h; honoured by IPv6 sockets too
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_BACKOFF = 0.1
_LOG_EVERY = 10.0
_BURST = 64  # accepts per wakeup before letting other callbacks run
_HOLD = 0.005  # a worker holding back takes the connection after all if it is still queued


class Frontend(Protocol):
    """What a listener needs from the HTTP, SMTP or TCP side."""

    max_connections: int

    def make_protocol(self, on_close: Callable[[], None]) -> asyncio.BaseProtocol:
        """A protocol for one accepted connection; it calls `on_close` once when done."""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to wrap accepted connections in, or None for plain TCP."""

    def stats(self) -> dict[str, Any]: ...

    def retire(self) -> None:
        """Reload or shutdown: finish in-flight work, keep no connection alive after it."""

    async def drain(self, timeout: float) -> None:
        """Wait until no connection is left; abort what remains after `timeout`."""


def bind(address: Address, backlog: int = 1024) -> socket.socket:
    """Bind and listen (non-blocking, SO_REUSEADDR); raises OSError."""
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A service on the VRRP VIP must start on the backup too, before the VIP
        # is there (HAProxy's `transparent`, net.ipv4.ip_nonlocal_bind).
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    def __init__(  # noqa: PLR0917
        self,
        kind: str,
        address: Address,
        sock: socket.socket,
        frontend: Frontend,
        share: int = 1,
        hold_back: Callable[[], bool] | None = None,
    ) -> None:
        self.kind = kind
        self.address = address
        self.sock = sock
        # With N worker processes on one socket each takes 1/N of `max_connections`: a
        # worker at its share leaves the queue to the others (the accept queue is shared).
        self.share = share
        # A worker with clearly more connections than another leaves a new one to it
        # (lb.shared.AcceptBalance); taken after all if nobody has within _HOLD.
        self.hold_back = hold_back
        self.frontend = frontend
        self.active = 0
        self.accepted = 0
        self.accept_errors = 0
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._last_fd_log = 0.0
        self._poller: Poller | None = None  # set while accepting from poller callbacks
        self._full = False
        self._pending: asyncio.Handle | None = None
        self._on_closed = self._closed  # bound once, handed to every accepted connection
        self._family = int(sock.family)  # the property builds an enum on every read

    @property
    def frontend(self) -> Frontend:
        return self._frontend

    @frontend.setter
    def frontend(self, frontend: Frontend) -> None:
        self._frontend = frontend
        self.limit = -(-frontend.max_connections // self.share)

    @property
    def bound(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self) -> None:
        if hasattr(self.frontend, "take_socket"):
            # Accepted sockets inherit TCP_NODELAY (the transports set it per connection).
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._poller = poller()
            # Workers sharing the socket: wake one of them per new connection, not all
            # (the others would find the queue empty: a thundering herd per connect).
            events = EXCLUSIVE_IN if self.share > 1 else IN
            self._poller.add(self.sock.fileno(), self._accept_ready, events)
            self._accept_soon()
            return
        self._task = asyncio.get_running_loop().create_task(
            self._accept_loop(), name=f"accept {self.kind} {self.address}"
        )

    async def stop_accepting(self) -> None:
        """Stop the accept loop and close the socket; accepted connections go on."""
        if self._poller is not None:
            self._poller.remove(self.sock.fileno())
            self._poller = None
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.sock.close()

    def _closed(self) -> None:
        self.active -= 1
        if self._poller is None:
            if self.active < self.limit:
                self._room.set()  # the accept loop waits for it
        elif self._full and self.active < self.limit:
            self._full = False
            self._accept_soon()

    # ------------------------------------------- raw sockets, poller-driven
    def _accept_soon(self) -> None:
        if self._pending is None and self._poller is not None:
            self._pending = asyncio.get_running_loop().call_soon(self._accept_ready, 0)

    def _accept_ready(self, _events: int, force: bool = False) -> None:
        """The listening socket is readable (edge-triggered): accept until the
        backlog is empty, the service is full, or a burst is done."""
        self._pending = None
        if self._poller is None:
            return
        if not force and self.hold_back is not None and self.hold_back():
            self._pending = asyncio.get_running_loop().call_later(_HOLD, self._accept_ready, 0, True)
            return
        sock = self.sock
        family = self._family
        make_socket, stream = socket.SocketType, socket.SOCK_STREAM
        # Workers sharing the socket: before each further accept, a worker ahead of the
        # others (hold_back) leaves the rest of a burst to them.
        hold = self.hold_back
        for i in range(_BURST):
            if i and hold is not None and hold():
                self._pending = asyncio.get_running_loop().call_later(_HOLD, self._accept_ready, 0, True)
                return
            frontend = self._frontend
            if self.active >= self.limit:
                self._full = True  # the backlog waits; _closed() resumes
                return
            try:
                # socket.accept() without its per-call enum conversions
                fd, peer = sock._accept()  # type: ignore[attr-defined]
                conn = make_socket(family, stream, 0, fd)
            except BlockingIOError:
                return
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in _FD_ERRORS:
                    self._log_fd_exhaustion(exc)
                    self._pending = asyncio.get_running_loop().call_later(_BACKOFF, self._accept_ready, 0)
                    return
                continue
            self.accepted += 1
            self.active += 1
            try:
                frontend.take_socket(conn, peer, self._on_closed)  # type: ignore[attr-defined]
            except Exception:
                log.exception("%s %s: taking a connection failed", self.kind, self.address)
                conn.close()
        self._accept_soon()  # more may be queued, and no new edge will say so

    async def _wait_readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _accept_loop(self) -> None:
        while True:
            if self.active >= self.limit:
                self._room.clear()
                await self._room.wait()
            try:
                # Accept straight off the socket while connections are queued:
                # one readiness wait serves a whole burst of connects.
                conn, _ = self.sock.accept()
            except BlockingIOError:
                await self._wait_readable()
                continue
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in _FD_ERRORS:
                    self._log_fd_exhaustion(exc)
                    await asyncio.sleep(_BACKOFF)
                continue
            conn.setblocking(False)
            self.accepted += 1
            self.active += 1
            frontend = self._frontend
            done = _once(self._closed)
            ctx = frontend.ssl_context()
            if ctx is None:
                await self._setup(conn, frontend, done, None)
            else:
                # A TLS handshake takes round trips: never hold the accept loop for it.
                asyncio.get_running_loop().create_task(self._setup(conn, frontend, done, ctx))

    async def _setup(
        self,
        conn: socket.socket,
        frontend: Frontend,
        done: Callable[[], None],
        ctx: ssl.SSLContext | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: frontend.make_protocol(done),
                conn,
                ssl=ctx,
                ssl_handshake_timeout=10.0 if ctx else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            # A client that went away during the TLS handshake is not ours to log loudly.
            log.debug("%s %s: connection setup failed: %s", self.kind, self.address, exc)
            conn.close()
            done()

    def _log_fd_exhaustion(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_fd_log >= _LOG_EVERY:
            self._last_fd_log = now
            log.error(
                "%s %s: cannot accept: %s (%d connections open); backing off",
                self.kind,
                self.address,
                exc.strerror,
                self.active,
            )

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": str(self.address),
            "active": self.active,
            "accepted": self.accepted,
            "accept_errors": self.accept_errors,
        }


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    called = False

    def wrapper() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return wrapper
