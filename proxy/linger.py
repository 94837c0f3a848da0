"""Lingering close, as nginx (`lingering_close`) and Apache do it.

Closing a TCP socket while client input is still unread makes the kernel send RST
instead of FIN, and an RST that reaches the client before it has read our last
answer destroys that answer: a client still uploading the body of a request we
refused sees "connection reset" instead of the 413 that says why. So after the
answer we send our FIN (`write_eof`), read and discard what the client still sends
until it closes its side, and only then close: bounded by LINGER_QUIET seconds
without input and LINGER_TOTAL seconds in all.

The transport is handed to a small protocol of its own for that time; the owner's
`connection_lost` still comes at the very end, so the connection counts as open
until it is gone (and a frontend's drain can still abort it).

`linger_socket` is the same for a bare socket in the loop's poller (lb.poller): the
408 of a connection still in its head phase (proxy.http.intake), which has no
transport. Its deadlines live on the poller's timer wheel.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from lb.poller import BUF_SIZE, IN, RDHUP, Poller

LINGER_QUIET = 2.0  # seconds without client input (nginx lingering_timeout: 5 s)
LINGER_TOTAL = 30.0  # seconds in all (nginx lingering_time: 30 s)


class _Linger(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, owner: asyncio.BaseProtocol) -> None:
        self.transport = transport
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.until = now + LINGER_TOTAL
        self.quiet_until = now + LINGER_QUIET
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self.quiet_until, self._on_timer)

    def data_received(self, data: bytes) -> None:
        # Discarded. The timer is not moved per read; it re-arms itself when it fires early.
        self.quiet_until = self.loop.time() + LINGER_QUIET

    def eof_received(self) -> bool:
        return False  # the client is done sending: close now, nothing is left unread

    def _on_timer(self) -> None:
        end = min(self.quiet_until, self.until)
        if end - self.loop.time() > 0.001:
            self.timer = self.loop.call_at(end, self._on_timer)
            return
        self.timer = None
        self.transport.abort()  # (a client that neither reads nor closes may hold our buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.owner.connection_lost(exc)


def linger_close(transport: asyncio.Transport, owner: asyncio.BaseProtocol) -> None:
    """Close `transport` once what was written is sent, lingering as above where
    TCP half-close allows it (not over TLS, which closes at once as before)."""
    if transport.is_closing() or not transport.can_write_eof():
        transport.close()
        return
    transport.set_protocol(_Linger(transport, owner))
    transport.write_eof()
    if not transport.is_reading():
        transport.resume_reading()


class SocketLinger:
    """Read and drop what a bare socket still receives until the client closes (see above)."""

    __slots__ = ("done", "poller", "quiet_until", "slot", "sock", "until")

    def __init__(self, sock: socket.socket, poller: Poller, done: Callable[[], None]) -> None:
        self.sock = sock
        self.poller = poller
        self.done: Callable[[], None] | None = done
        now = time.monotonic()
        self.until = now + LINGER_TOTAL
        self.quiet_until = now + LINGER_QUIET
        self.slot = poller.arm(self, LINGER_QUIET)

    def event(self, events: int) -> None:
        view = self.poller.view
        recv_into = self.sock.recv_into
        got = False
        while self.done is not None:
            try:
                n = recv_into(view, BUF_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if got:  # discarded; the wheel entry re-arms itself when it fires early
                    self.quiet_until = time.monotonic() + LINGER_QUIET
                return
            except OSError:
                break
            if not n:
                break  # the client is done sending: close now, nothing is left unread
            got = True
            if n < BUF_SIZE and not events & RDHUP:
                # All there was (a stream socket returns what it has), and no FIN came with
                # it: what comes later, or came since the last event, is an edge still to
                # be reported (to this handler, whoever owned the socket before).
                self.quiet_until = time.monotonic() + LINGER_QUIET
                return
        self._end()

    def expired(self, now: float) -> None:
        self.slot = 0
        end = min(self.quiet_until, self.until)
        if end - now > 0.001:
            self.slot = self.poller.arm(self, end - now)
            return
        self._end()  # (a client that neither reads nor closes may hold our buffer)

    def abort(self) -> None:
        self._end()

    def _end(self) -> None:
        done = self.done
        if done is None:
            return
        self.done = None
        if self.slot:
            self.poller.disarm(self, self.slot)
            self.slot = 0
        self.poller.close_socket(self.sock)
        done()


def linger_socket(
    sock: socket.socket, poller: Poller, done: Callable[[], None], watched: bool
) -> SocketLinger | None:
    """After an answer was sent on `sock`: FIN, then drop the client's input until it
    closes (LINGER_QUIET / LINGER_TOTAL as above), then close and call `done()` once.
    `watched`: `sock` is in the poller already (its handler is replaced)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        poller.close_socket(sock)
        done()
        return None
    linger = SocketLinger(sock, poller, done)
    if watched:
        poller.rebind(sock.fileno(), linger.event)
    else:
        poller.add(sock.fileno(), linger.event, IN)
    linger.event(0)  # what came already (edge-triggered: no new edge will tell)
    return linger
