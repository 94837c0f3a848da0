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

With worker processes, each listen address is a SO_REUSEPORT group of sockets (`bind`
opens it, `join` adds to it), one per worker: a worker's listener watches its own
socket, and for a while a dead sibling's (proxy.process.workers).
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
from lb.poller import IN, Poller, poller

log = logging.getLogger("sekisho.listener")

_IP_FREEBIND = 15  # linux/in.h; honoured by IPv6 sockets too
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_BACKOFF = 0.1
_LOG_EVERY = 10.0
_BURST = 64  # accepts per wakeup before letting other callbacks run


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


def bind(address: Address, backlog: int = 1024, reuseport: bool = False) -> socket.socket:
    """Bind and listen (non-blocking, SO_REUSEADDR); raises OSError.

    `reuseport`: the socket opens a SO_REUSEPORT group that `join` adds worker sockets
    to. It is bound first without SO_REUSEPORT, so the bind still fails when anything
    else holds the address (another sekisho left running, or any process's SO_REUSEPORT
    group), instead of silently sharing its connections; the option is set before
    listen(), where the kernel forms the group."""
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, sockaddr = infos[0]
    sock = _socket(family, kind, proto)
    try:
        sock.bind(sockaddr)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def join(group: socket.socket, backlog: int = 1024) -> socket.socket:
    """Another listening socket in `group`'s SO_REUSEPORT group (one per worker): the
    kernel hashes each new connection to one socket of the group, so only the worker
    watching that socket wakes for it."""
    sock = _socket(group.family, group.type, group.proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(group.getsockname())
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _socket(family: int, kind: int, proto: int) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # A service on the VRRP VIP must start on the backup too, before the VIP
    # is there (HAProxy's `transparent`, net.ipv4.ip_nonlocal_bind).
    sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


class Listener:
    """Accepting on one listen address: one socket, or (a worker process) the sockets of
    the SO_REUSEPORT group this worker watches; `watch`/`unwatch` change them."""

    def __init__(
        self,
        kind: str,
        address: Address,
        sock: socket.socket,
        frontend: Frontend,
        share: int = 1,
    ) -> None:
        self.kind = kind
        self.address = address
        self.sock = sock  # the first socket: its name is the listener's
        # With N worker processes each takes 1/N of `max_connections`.
        self.share = share
        self.frontend = frontend
        self.active = 0
        self.accepted = 0
        self.accept_errors = 0
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: dict[socket.socket, asyncio.Task[None]] = {}  # accept loops (SMTP)
        self._last_fd_log = 0.0
        self._poller: Poller | None = None  # set while accepting from poller callbacks
        self._watched: list[socket.socket] = []
        self._full = False
        self._pending: dict[socket.socket, asyncio.Handle] = {}
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
            self._poller = poller()
        self.watch(self.sock)

    def watch(self, sock: socket.socket) -> None:
        """Accept from `sock` too (a worker's own socket, or a dead sibling's it covers)."""
        if sock in self._watched:
            return
        self._watched.append(sock)
        if self._poller is not None:
            # Accepted sockets inherit TCP_NODELAY (the transports set it per connection).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._poller.add(sock.fileno(), lambda _events: self._accept_ready(sock), IN)
            self._accept_soon(sock)
            return
        self._tasks[sock] = asyncio.get_running_loop().create_task(
            self._accept_loop(sock), name=f"accept {self.kind} {self.address}"
        )

    async def unwatch(self, sock: socket.socket) -> None:
        """Stop accepting from `sock`; it stays open (what is queued waits for its owner)."""
        if sock not in self._watched:
            return
        self._watched.remove(sock)
        if self._poller is not None:
            self._poller.remove(sock.fileno())
            pending = self._pending.pop(sock, None)
            if pending is not None:
                pending.cancel()
        task = self._tasks.pop(sock, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def stop_accepting(self) -> None:
        """Stop accepting and close the sockets; accepted connections go on."""
        watched = list(self._watched)
        for sock in watched:
            await self.unwatch(sock)
        self._poller = None
        for sock in {self.sock, *watched}:
            sock.close()

    def _closed(self) -> None:
        self.active -= 1
        if self._poller is None:
            if self.active < self.limit:
                self._room.set()  # the accept loops wait for it
        elif self._full and self.active < self.limit:
            self._full = False
            for sock in self._watched:
                self._accept_soon(sock)

    # ------------------------------------------- raw sockets, poller-driven
    def _accept_soon(self, sock: socket.socket) -> None:
        if sock not in self._pending and self._poller is not None:
            self._pending[sock] = asyncio.get_running_loop().call_soon(self._accept_ready, sock)

    def _accept_ready(self, sock: socket.socket) -> None:
        """The listening socket is readable (edge-triggered): accept until the
        backlog is empty, the service is full, or a burst is done."""
        self._pending.pop(sock, None)
        if self._poller is None or sock not in self._watched:
            return
        family = self._family
        make_socket, stream = socket.SocketType, socket.SOCK_STREAM
        for _ in range(_BURST):
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
                    loop = asyncio.get_running_loop()
                    self._pending[sock] = loop.call_later(_BACKOFF, self._accept_ready, sock)
                    return
                continue
            self.accepted += 1
            self.active += 1
            try:
                frontend.take_socket(conn, peer, self._on_closed)  # type: ignore[attr-defined]
            except Exception:
                log.exception("%s %s: taking a connection failed", self.kind, self.address)
                conn.close()
        self._accept_soon(sock)  # more may be queued, and no new edge will say so

    async def _wait_readable(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            if self.active >= self.limit:
                self._room.clear()
                await self._room.wait()
            try:
                # Accept straight off the socket while connections are queued:
                # one readiness wait serves a whole burst of connects.
                conn, _ = sock.accept()
            except BlockingIOError:
                await self._wait_readable(sock)
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
