"""`[[tcp]]` virtual services: the L4 front end (LVS's job).

accept (the listener hands over the raw socket) -> read what the client sent
already -> pick a server of the pool (connect timeout, passive health, retry on
another server) -> send the PROXY header if the pool asks, and those first
bytes, right after connect -> relay both ways (lb.fdrelay: copy for small
exchanges, splice for bulk) -> drop from the pool. All of it runs in poller
callbacks (lb.poller): no task, transport or protocol object per connection.

What the client sent is kept until the server answers, so a retry on another
server is invisible to the client. Which server, and when to give up, is
lb.dial.Attempts' policy, as for HTTP and SMTP: a server that fails to connect,
or resets before it answers, is counted against its health and not tried again
for this client. With no server to take the connection the client is reset at
once (refused quickly) rather than left hanging.

When the first bytes are in hand before the connect, the handshake's last ACK
waits to carry them (HAProxy's `option tcp-smart-connect`, see
lb.dial.connect_start): the server gets its connection and the request in one
packet and wakes once for both. Measured on the bench's loopback setup, where
the server shares a CPU with the proxy: 1.55 -> 1.05 preemptions of the proxy
per new connection, and 6-11% more connections per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import conf
from lb import proxy_protocol
from lb.dial import Attempts, connect_start
from lb.fdrelay import FdRelay
from lb.poller import BUF_SIZE, ERR, IN, OUT, TICK, Poller, poller
from lb.pool import Backend, PoolSet
from proxy.access import ClientFilter
from proxy.accesslog import AccessLog

log = logging.getLogger("sekisho.tcp")

_LINGER_RESET = struct.pack("ii", 1, 0)
REPLAY_LIMIT = 65536  # client bytes kept for a retry until the server answers
_CONNECTED = (0, errno.EISCONN)
_IN_PROGRESS = (errno.EALREADY, errno.EINPROGRESS)
_DONTWAIT = socket.MSG_DONTWAIT


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
    denied: int = 0  # the client is not in `allow`: reset at accept

    def stats(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Conn(FdRelay):
    """One client from accept to close, in one object (the L4 path's cost is
    per-connection Python, so no dial, relay or task object of its own):
    pick and connect (connect timeout, passive health, another server when
    one fails), then relay (lb.fdrelay), with a retry on another server if
    the first one fails before answering."""

    __slots__ = (
        "attempts", "backend", "connecting", "frontend", "on_close", "peer", "pending", "pool", "preamble",
        "slot", "started", "unread",
    )  # fmt: skip

    def __init__(
        self, frontend: TcpFrontend, sock: socket.SocketType, peer: Any, on_close: Callable[[], None]
    ) -> None:
        super().__init__(frontend.poller, sock, frontend.splice)
        self.frontend = frontend
        self.peer = peer
        self.on_close = on_close
        self.pool = pool = frontend.pools[frontend.config.pool]
        # Which server next, and when to give up (retries, passive health).
        self.attempts = Attempts(pool, peer[0] if type(peer) is tuple else None)
        self.backend: Backend | None = None  # taken while dialled or relayed
        self.connecting: socket.SocketType | None = None  # its connect is under way
        self.slot = -1  # its connect timeout on the poller's timer wheel
        self.pending = b""  # what the client sent so far: it goes out right after connect
        self.unread = True  # the client may have sent more than `pending`
        self.preamble = b""  # the PROXY header, if the pool asks for one
        self.started = time.monotonic() if frontend.access_log is not None else 0.0  # for the session log

    def read_first(self) -> bool:
        """Read what the client sent before connecting, so that it goes out
        with the connect (see connect_next). False: the client is gone."""
        view = self.view
        try:
            n = self.a.recv_into(view, 0, _DONTWAIT)
        except BlockingIOError:
            self.unread = False  # nothing yet; watching the client will report it
            return True
        except OSError:
            return False  # reset before a server was even picked
        if n:  # (0 is an early FIN: the relay finds it again and passes it on)
            self.pending = bytes(view[:n])
            self.unread = n == BUF_SIZE  # a full read: more is queued
        return True

    # -------------------------------------------------------------- dial
    def dial(self, replay: bytes) -> None:
        """Dial again for a retry (a new round of attempts): `replay` is what
        the client sent so far."""
        self.pending = replay
        self.unread = True  # the client was not watched meanwhile
        self.connect_next()

    def connect_next(self) -> None:
        """Pick a server not tried yet and connect (take_socket calls this
        first: __init__ set up the first dial)."""
        pool = self.pool
        if not self.preamble and pool.proxy_protocol is not None:  # once per client, not per attempt
            self.preamble = self._proxy_header(pool.proxy_protocol)
        first = self.preamble + self.pending
        attempts = self.attempts
        while (backend := attempts.next()) is not None:
            try:
                sock = connect_start(backend, bool(first))
            except OSError as exc:
                self._count_failure(backend, exc.strerror or str(exc))
                continue
            # On loopback (and fast LANs) the handshake is done by now, so the
            # client's first bytes go out at once: send() fails with EAGAIN
            # while the connect is still under way. With nothing to send,
            # connect() asked again answers 0 or EISCONN once connected.
            self.backend = backend
            if first:
                try:
                    sent = sock.send(first, _DONTWAIT)
                except BlockingIOError:
                    err = errno.EINPROGRESS
                except OSError as exc:
                    err = exc.errno or errno.ECONNREFUSED
                else:
                    self._connected(sock, 0, first[sent:])
                    return
            else:
                err = sock.connect_ex(backend.sockaddr)
                if err in _CONNECTED:
                    self._connected(sock, 0)
                    return
            if err in _IN_PROGRESS:
                self.connecting = sock
                self.poller.add(sock.fileno(), self._connect_event, IN | OUT)
                self.slot = self.poller.arm(self, self.frontend.config.timeouts.connect)
                return
            self.backend = None
            sock.close()  # refused (or another error) while we asked
            self._count_failure(backend, os.strerror(err))
        fe = self.frontend
        fe.stats_.refused += 1
        reason = attempts.give_up()
        log.debug("tcp %s: refusing %s: %s", fe.config.listen[0], attempts.client_ip, reason)
        if fe.access_log is not None:
            fe.log_session(self.peer, 502, "no_server", self.started)
        _refuse(self.a)
        fe.finished(self)

    def _connect_event(self, ev: int) -> None:
        sock = self.connecting
        assert sock is not None
        if ev & ERR:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._connect_aborted(os.strerror(code) if code else "connection closed")
        elif ev & OUT:
            self.poller.disarm(self, self.slot)
            self.slot = -1
            self.connecting = None
            self._connected(sock, IN | OUT, self.preamble + self.pending)

    def expired(self, now: float) -> None:
        """The connect timeout (the poller's timer wheel)."""
        self.slot = -1
        if self.connecting is not None:
            self._connect_aborted("timed out")

    def _connect_aborted(self, reason: str) -> None:
        backend = self._forget_connect()
        assert backend is not None
        self._count_failure(backend, reason)
        self.connect_next()

    def _forget_connect(self) -> Backend | None:
        """Close the socket being connected; the (still taken) backend is returned."""
        sock, self.connecting = self.connecting, None
        if self.slot >= 0:
            self.poller.disarm(self, self.slot)
            self.slot = -1
        if sock is not None:
            self.poller.close_socket(sock)
        backend, self.backend = self.backend, None
        return backend

    def _count_failure(self, backend: Backend, reason: str) -> None:
        self.attempts.failed(backend, f"{backend.key}: {reason}")

    def _proxy_header(self, version: str) -> bytes:
        peer = self.peer
        src = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        local = self.a.getsockname()
        dst = (local[0], local[1]) if isinstance(local, tuple) else None
        return proxy_protocol.encode(version, src, dst)

    def _connected(self, sock: socket.SocketType, watched: int, unsent: bytes = b"") -> None:
        """`unsent`: what of the PROXY header and the client's bytes has not gone out yet."""
        self.frontend.stats_.relayed += 1
        limit = REPLAY_LIMIT if self.attempts.may_retry else 0
        self.start(sock, unsent, self.pending, limit, watched, read_a=self.unread)

    # -------------------------------------------------------------- end
    def ended(self) -> None:
        fe, pool, backend = self.frontend, self.pool, self.backend
        assert backend is not None
        self.backend = None
        a_to_b, b_to_a = self.ab.nbytes, self.ba.nbytes
        if self.retry is not None:
            # The server failed before answering: another server gets what the
            # client sent so far (a new round: a replay is kept only while one
            # may follow), and the client never knows.
            self.attempts.failed(backend, f"{backend.key}: failed before answering")
            self.attempts.again()
            fe.stats_.retries += 1
            self.dial(self.retry)
            return
        pool.drop(backend, a_to_b, b_to_a)
        s = fe.stats_
        s.bytes_in += a_to_b
        s.bytes_out += b_to_a
        if self.spliced:
            s.spliced += 1
        error = self.error
        result = "ok"
        if error is not None:
            if isinstance(error, TimeoutError):
                s.idle_timeouts += 1
                result = "idle_timeout"
            else:
                s.errors += 1
                result = "error"
        if fe.access_log is not None:
            fe.log_session(
                self.peer, 200, result, self.started, upstream=backend.key, bytes_out=b_to_a, bytes_in=a_to_b
            )
        fe.finished(self)

    def abort(self) -> None:
        if self.connecting is not None:
            backend = self._forget_connect()
            if backend is not None:
                self.attempts.release(backend)
            self.a.close()
            self.frontend.finished(self)
        elif not self.closed:
            self.close()


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
        access_log: AccessLog | None = None,
    ) -> None:
        self.config = config
        # One line per session when the access log is on (AccessLog.session).
        self.access_log = access_log if access_log is not None and access_log.enabled else None
        self.pools = pools
        self.stats_ = stats if stats is not None else TcpStats()
        self.max_connections = config.max_connections
        self.splice = splice
        access = ClientFilter(config.allow)
        self.access = None if access.everyone else access  # None: nothing to check per accept
        self.idle_timeout = config.timeouts.idle
        # Idle timeouts are polled (FdRelay.idle_check) a few times per timeout,
        # at least once a second: a relay is closed within idle .. idle + this.
        self.sweep_every = min(max(self.idle_timeout / 4, TICK), 1.0)
        self._sweeper: asyncio.TimerHandle | None = None
        self.conns: set[_Conn] = set()
        self.retired = False
        self.poller: Poller = poller()
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------ Frontend protocol
    def make_protocol(self, on_close: Callable[[], None]) -> asyncio.BaseProtocol:
        raise NotImplementedError("the TCP front end takes raw sockets (take_socket)")

    def take_socket(self, sock: socket.SocketType, peer: Any, on_close: Callable[[], None]) -> None:
        """An accepted client socket, left blocking (the relay passes MSG_DONTWAIT,
        which saves an ioctl per connection); `on_close` is called once when it is done."""
        access = self.access
        if access is not None and not access.admits(peer[0] if type(peer) is tuple else ""):
            # As nginx's stream `deny` and HAProxy's `tcp-request connection reject`: closed
            # before anything is read or any server is picked; a reset, as when no server can.
            self.stats_.denied += 1
            log.debug("tcp %s: %s is not in allow", self.config.listen[0], peer)
            if self.access_log is not None:
                self.log_session(peer, 403, "denied", time.monotonic())
            _refuse(sock)
            on_close()
            return
        conn = _Conn(self, sock, peer, on_close)
        s = self.stats_
        s.accepted += 1
        s.active += 1
        if not self.conns:
            self._idle.clear()
            if self._sweeper is None:
                self._sweeper = self.poller.loop.call_later(self.sweep_every, self._sweep)
        self.conns.add(conn)
        if conn.read_first():
            conn.connect_next()
        else:
            s.errors += 1
            if self.access_log is not None:
                self.log_session(peer, 499, "client_gone", conn.started)
            conn.a.close()
            self.finished(conn)

    def log_session(
        self,
        peer: Any,
        status: int,
        result: str,
        started: float,
        *,
        upstream: str = "-",
        bytes_out: int = 0,
        bytes_in: int = 0,
    ) -> None:
        assert self.access_log is not None
        self.access_log.session(
            protocol="TCP",
            client=str(peer[0]) if type(peer) is tuple else "-",
            listener=str(self.config.listen[0]),
            status=status,
            route=self.config.pool,
            upstream=upstream,
            bytes_out=bytes_out,
            bytes_in=bytes_in,
            duration=time.monotonic() - started,
            result=result,
        )

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

    def _sweep(self) -> None:
        now, timeout = time.monotonic(), self.idle_timeout
        for conn in list(self.conns):
            conn.idle_check(now, timeout)
        self._sweeper = self.poller.loop.call_later(self.sweep_every, self._sweep) if self.conns else None

    def close_all(self) -> None:
        for c in list(self.conns):
            c.abort()

    def finished(self, conn: _Conn) -> None:
        conns = self.conns
        try:
            conns.remove(conn)
        except KeyError:
            return  # already finished
        self.stats_.active -= 1
        conn.on_close()
        if not conns:
            self._idle.set()
