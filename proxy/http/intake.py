"""The head phase of a plain-HTTP connection: a socket in the poller until its first head is whole.

An accepted connection (proxy.listener, poller-driven) waits here as its bare socket,
watched edge-triggered in the loop's poller (lb.poller), with its header deadline on the
poller's timer wheel: no transport, no `H1Connection`, no h11 connection, no loop timer.
Each arrival is looked at with MSG_PEEK, nothing is read. As soon as what is there
holds a whole head (or more than `max_header_bytes`, a bare LF, or the client's FIN), the
socket is handed to the frontend, which builds the transport and the `H1Connection`;
that reads the same bytes from the kernel and judges them exactly as before (head gate,
prechecks, h11). Most clients send their head in the first segment, so a legitimate
connection passes straight through: one peek at accept time, no epoll registration.

What waits here is what a slow client costs: nginx allocates its request only when the
first bytes arrive, HAProxy its stream on accept; a slowloris connection here is one
small object, one poller entry and one wheel entry, no loop timer, transport or protocol
(measured: about 19 µs of CPU to accept and set up instead of 41, about 50 µs from
accept to its closed 408 instead of 85; 2,000 of them and 200 slow-POSTs add 3.5 MB to
the process instead of 12).

At the deadline: nothing came, the socket is closed without a word; part of a head came,
it gets its 408 and a lingering close (proxy.linger.linger_socket), as an
`H1Connection` would. Empty lines before the request (RFC 9112 2.2) are read and
dropped here, as the head gate drops them.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lb.poller import IN, RDHUP, Poller
from proxy.http.answers import plain
from proxy.http.headers import head_end
from proxy.linger import SocketLinger, linger_socket

if TYPE_CHECKING:
    from proxy.http.frontend import HttpFrontend

log = logging.getLogger("sekisho.http")

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_DONTWAIT_MORE = socket.MSG_DONTWAIT | socket.MSG_MORE
_RETIRE_GRACE = 1.0  # as proxy.http.h1: an idle connection of a retired frontend
_TIMEOUT_408 = plain(408)


class Intake:
    """One accepted plain-HTTP connection whose first request head is not whole yet."""

    __slots__ = (
        "deadline",
        "fd",
        "fe",
        "head_by",
        "limit",
        "linger",
        "on_close",
        "peer",
        "poller",
        "seen",
        "slot",
        "sock",
        "watched",
    )

    def __init__(
        self,
        fe: HttpFrontend,
        sock: socket.socket,
        peer: str,
        on_close: Callable[[], None],
        poller: Poller,
    ) -> None:
        self.fe = fe
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.on_close = on_close
        self.poller = poller
        self.limit = fe.config.max_header_bytes
        self.head_by = time.monotonic() + fe.config.timeouts.header  # timeouts.header
        self.deadline = self.head_by  # the wheel's: earlier for a retired frontend's grace
        self.seen = 0  # bytes of a head seen so far (0: nothing but maybe empty lines)
        self.slot = 0  # on the poller's timer wheel; 0 while not on it
        self.watched = False  # in the poller's epoll set
        self.linger: SocketLinger | None = None

    def start(self) -> bool:
        """Look once now (the head has often arrived with the handshake's last ACK); True
        if the connection waits here (it was added to the poller and the wheel)."""
        if not self._look(0):
            return False
        self.poller.add(self.fd, self._event, IN)
        self.watched = True
        self.slot = self.poller.arm(self, self.deadline - time.monotonic())
        return True

    # ------------------------------------------------------------------ poller callbacks

    def _event(self, events: int) -> None:
        self._look(events)

    def _look(self, events: int) -> bool:
        """Peek at what the client sent; True while the head is still on its way. Anything
        else (a whole head, too much, a bare LF, the client's FIN) goes to the frontend."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(self.limit + 1, _PEEK)
            except BlockingIOError:
                return True
            except OSError:  # reset before a head came: nothing to answer
                self._drop()
                return False
            if not data:  # closed without a request
                self._drop()
                return False
            if data[:2] != b"\r\n":
                break
            # RFC 9112 2.2: empty lines before a request are dropped (so does the head gate).
            n = len(data) - len(data.lstrip(b"\r\n"))
            try:
                sock.recv(n, socket.MSG_DONTWAIT)
            except OSError:
                self._drop()
                return False
            self.fe.counters.bytes_in += n
            if n == len(data):
                continue  # (the edge was consumed: look again, a FIN may be behind them)
        self.seen = len(data)
        if head_end(data) == -1 and len(data) <= self.limit and not events & RDHUP:
            return True
        self._unwatch()
        self.fe.hand_over(self.sock, self.on_close, counted=True)
        self.fe.intake_done(self)
        return False

    def expired(self, now: float) -> None:
        """The poller's timer wheel: the header deadline (or a retired frontend's grace)."""
        self.slot = 0
        if self.linger is not None:
            return
        if self.seen and self.head_by - now > 0.001:  # a retired frontend's grace: a head came since
            self.deadline = self.head_by
            self.slot = self.poller.arm(self, self.head_by - now)
            return
        if not self.seen:
            self._drop()
            return
        fe = self.fe
        try:
            # MSG_MORE: the FIN (linger_socket's shutdown, next) leaves in the same packet.
            self.sock.send(_TIMEOUT_408, _DONTWAIT_MORE)
        except OSError:
            self._drop()
            return
        log.debug("%s: %d %s", self.peer, 408, "request head timeout")
        counters = fe.counters
        counters.bytes_in += self.seen  # (peeked only: now it counts as read)
        counters.bytes_out += len(_TIMEOUT_408)
        counters.observe("none", 408, 0.0)
        if fe.access_log is not None:
            fe.access_log.log(
                client=self.peer,
                host="",
                method=b"-",
                target=b"",
                version=b"1.1",
                status=408,
                size=len(_TIMEOUT_408),
                upstream="-",
                duration=0.0,
                headers=None,
            )
        # The client is still sending its head: FIN, then read and drop until it closes.
        self.linger = linger_socket(self.sock, self.poller, self._closed, watched=self.watched)

    # ------------------------------------------------------------------ the frontend's calls

    def retire(self) -> None:
        """Reload or shutdown: a connection that sent nothing yet gets a short grace (as an
        idle keep-alive connection does); one that is sending its head may finish it."""
        if self.seen or self.linger is not None or not self.slot:
            return
        now = time.monotonic()
        if self.deadline - now > _RETIRE_GRACE:
            self.deadline = now + _RETIRE_GRACE
            self.poller.disarm(self, self.slot)
            self.slot = self.poller.arm(self, _RETIRE_GRACE)

    def abort(self) -> None:
        """Drain timed out: close now."""
        if self.linger is not None:
            self.linger.abort()
        else:
            self._drop()

    def _unwatch(self) -> None:
        if self.slot:
            self.poller.disarm(self, self.slot)
            self.slot = 0
        if self.watched:
            self.watched = False
            self.poller.remove(self.fd)

    def _drop(self) -> None:
        if self.slot:
            self.poller.disarm(self, self.slot)
            self.slot = 0
        self.watched = False
        self.poller.close_socket(self.sock)  # (closing takes it out of the epoll set)
        self._closed()

    def _closed(self) -> None:
        self.fe.intake_done(self)
        self.fe.intake_closed()
        self.on_close()
