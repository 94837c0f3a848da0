"""One client's tries at a pool (`Attempts`, sans-IO), and the I/O that drives it.

The policy is written once, here, for the HTTP, SMTP and TCP front ends, so that
passive health (a failed connect counts against the server), retries and
connection accounting behave the same everywhere:

* `Attempts.next()` picks a server this client has not tried and takes it.
* A server that fails (`failed`) is given back, counted against its health and
  not picked again for this client; one that is only wrong for this client
  (`skipped`: an SMTP server without the XCLIENT the route asks for) is given
  back and not picked again, with no health penalty.
* A round is at most `MAX_ATTEMPTS` servers (HAProxy's `retries 3`). When a
  server that was connected turns out useless before it was of any use (TCP:
  reset before it answered, the client's bytes are replayed; SMTP: it would not
  talk), the caller starts another round with `again()`: at most `MAX_ATTEMPTS`
  rounds in all.
* A round that ends with nothing connected: 502 when a server in it failed,
  503 when nothing was up (`outcome()`, or as an exception `give_up()`).

`dial` (asyncio transports: SMTP) and `connect_start` (a raw non-blocking
socket: the `[[tcp]]` front end) are the I/O sides. HTTP connects with
`open_connection` in a loop of its own (it may reuse a kept-alive connection to
the server `next()` gave it instead of connecting), meant to run over the same
`Attempts`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Collection
from typing import TypeVar

from lb.errors import LbError, NoBackendAvailable, UpstreamConnectError
from lb.pool import Backend, BackendPool

P = TypeVar("P", bound=asyncio.BaseProtocol)

MAX_ATTEMPTS = 3  # HAProxy's `retries 3`: servers per round, and rounds per client
_DEFER_ACCEPT: int | None = getattr(socket, "TCP_DEFER_ACCEPT", None)  # Linux only


class Attempts:
    """One client's tries at a pool: which server next, what a failure means, when to stop.

        attempts = Attempts(pool, client_ip)
        while (backend := attempts.next()) is not None:   # picked and taken
            try:
                connect(backend)
            except ...:
                attempts.failed(backend, "10.0.0.1:80: refused")  # given back, penalised
                continue
            return backend        # the caller owns it now: pool.drop(backend) when done
        status, reason = attempts.outcome()                # (502, ...) or (503, ...)

    No I/O and no clock: every rule is testable with a pool and no loop. A
    backend handed out by `next()` is taken (`pool.take`); `failed`, `skipped`
    and `release` give it back (`pool.drop`) unless `released=True` says the
    caller has already. The sorry server is whatever `pool.pick` returns when
    nothing is up; it is tried once like any server (its failures count, but it
    has no health to lose).
    """

    __slots__ = (
        "client_ip", "error", "max_attempts", "pool", "rounds", "skips", "tried", "tries",
    )  # fmt: skip

    def __init__(
        self,
        pool: BackendPool,
        client_ip: str | None,
        *,
        exclude: Collection[Backend] = (),
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.pool = pool
        self.client_ip = client_ip
        self.max_attempts = max_attempts
        self.tried: list[Backend] = list(exclude)  # never picked again for this client
        self.tries = 0  # servers handed out in this round
        self.rounds = 1  # rounds started
        self.error: str | None = None  # the last failure in this round (None: none yet)
        self.skips = 0  # servers skipped for this client (no penalty), all rounds

    def next(self) -> Backend | None:
        """The next server to try, taken; None: stop (nothing left to pick, or
        this round has had its `max_attempts` servers)."""
        if self.tries >= self.max_attempts:
            return None
        self.tries += 1
        pool = self.pool
        backend = pool.pick(self.client_ip, self.tried)
        if backend is not None:
            pool.take(backend)
        return backend

    def failed(self, backend: Backend, error: str, *, released: bool = False) -> None:
        """`backend` could not be reached (or would not serve): give it back,
        count it against its health (passive check), never pick it again for
        this client. `error` names the server and says what happened."""
        pool = self.pool
        if not released:
            pool.drop(backend)
        pool.connect_failed(backend)
        self.tried.append(backend)
        self.error = error

    def skipped(self, backend: Backend, reason: str, *, released: bool = False) -> None:
        """`backend` is up but not for this client (an SMTP server without the
        XCLIENT the route asks for): give it back, never pick it again for this
        client, and hold nothing against its health."""
        if not released:
            self.pool.drop(backend)
        self.tried.append(backend)
        self.skips += 1
        self.error = reason

    def release(self, backend: Backend) -> None:
        """Give `backend` back unjudged: the caller stopped before the connect
        said anything about it (cancelled, the client went away)."""
        self.pool.drop(backend)

    @property
    def may_retry(self) -> bool:
        """Another round may follow this one (TCP keeps the client's bytes for a replay while so)."""
        return self.rounds < self.max_attempts

    def again(self) -> bool:
        """A server that was connected failed before it was of any use (TCP:
        it reset before answering; SMTP: it would not talk); report that with
        `failed` or `skipped` first. Start another round of up to
        `max_attempts` servers, the tried ones still excluded. False: that was
        the last round (`next()` returns None from now on)."""
        if self.rounds >= self.max_attempts:
            self.tries = self.max_attempts
            return False
        self.rounds += 1
        self.tries = 0
        self.error = None
        return True

    def outcome(self) -> tuple[int, str]:
        """What to answer when `next()` gave nothing that worked: (502, ...) when
        a server failed (or was skipped) in this round, (503, ...) when nothing was up."""
        if self.error is not None:
            return 502, "no backend could be reached"
        return 503, f"pool {self.pool.name}: no server is up"

    def give_up(self) -> LbError:
        """`outcome()` as an exception: UpstreamConnectError (the last failure)
        or NoBackendAvailable."""
        if self.error is not None:
            return UpstreamConnectError(self.error)
        return NoBackendAvailable(f"pool {self.pool.name}: no server is up")


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
    attempts: Attempts,
    protocol_factory: Callable[[], P],
    timeout: float,
    preamble: Callable[[Backend], bytes] | None = None,
) -> tuple[asyncio.Transport, P, Backend]:
    """One round of `attempts` over transports: connect to the next server
    until one answers; raises `attempts.give_up()` (UpstreamConnectError or
    NoBackendAvailable) when none did.

    The returned backend is *taken*: the caller calls `pool.drop(backend)` when
    the connection is over (or reports it to `attempts`, to go on with
    `again()` and dial once more). `preamble(backend)`, when given, is written
    before anything else (a PROXY protocol header).
    """
    while (backend := attempts.next()) is not None:
        try:
            transport, protocol = await open_connection(backend, protocol_factory, timeout)
        except UpstreamConnectError as exc:
            attempts.failed(backend, str(exc))
            continue
        except BaseException:
            attempts.release(backend)
            raise
        if preamble is not None:
            transport.write(preamble(backend))
        return transport, protocol, backend
    raise attempts.give_up()


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
