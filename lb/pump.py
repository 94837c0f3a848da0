"""One direction of lb.relay's splice mode: src socket -> pipe -> dst socket,
driven by loop readers and writers on fds it borrows from two transports
(the raw-socket relay, lb.fdrelay, has its own). Pipes come from lb.fdrelay's
free list.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from typing import TYPE_CHECKING

from lb.fdrelay import SPLICE_FLAGS, pipes

if TYPE_CHECKING:
    from lb.relay import Relay, _Half

DISCONNECT = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH)


def splice_capable(t: asyncio.Transport) -> bool:
    return t.get_extra_info("ssl_object") is None and t.get_extra_info("socket") is not None


class Pump:
    """One direction in splice mode: src socket -> pipe -> dst socket."""

    def __init__(self, relay: Relay, half: _Half, src: int, dst: int, dst_sock: socket.socket) -> None:
        self.relay = relay
        self.half = half  # the side we read from (for byte accounting)
        self.src = src
        self.dst = dst
        self.dst_sock = dst_sock
        self.pipe = pipes.get()
        self.rpipe, self.wpipe, self.size = self.pipe
        self.pending = 0
        self.writing = False
        self.reading = False
        self.eof = False
        self.done = False

    def start(self) -> None:
        self.reading = True
        self.relay.loop.add_reader(self.src, self._readable)

    def _readable(self) -> None:
        for _ in range(4):
            try:
                n = os.splice(self.src, self.wpipe, self.size, flags=SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError as exc:
                self.relay._pump_failed(exc)
                return
            if n == 0:
                self.eof = True
                self._stop_reading()
                if not self.pending:
                    self._finish()
                return
            self.pending += n
            self.half.nbytes += n
            self.relay.activity = True
            if not self._flush():
                return
            if n < self.size:  # drained what was queued; wait for the next wakeup
                return

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.relay.loop.remove_reader(self.src)

    def _flush(self) -> bool:
        """Move the pipe into dst; False when dst is full (now waiting for it)."""
        while self.pending:
            try:
                m = os.splice(self.rpipe, self.dst, self.pending, flags=SPLICE_FLAGS)
            except BlockingIOError:
                if not self.writing:
                    self._stop_reading()
                    self.writing = True
                    self.relay.loop.add_writer(self.dst, self._writable)
                return False
            except OSError as exc:
                self.relay._pump_failed(exc)
                return False
            self.pending -= m
        return True

    def _writable(self) -> None:
        if not self._flush():
            return
        self.writing = False
        self.relay.loop.remove_writer(self.dst)
        if self.eof:
            self._finish()
        elif not self.reading:
            self.start()

    def _finish(self) -> None:
        with contextlib.suppress(OSError):
            self.dst_sock.shutdown(socket.SHUT_WR)
        self.done = True
        self.relay._pump_done()

    def close(self) -> None:
        self._stop_reading()
        if self.writing:
            self.writing = False
            self.relay.loop.remove_writer(self.dst)
        pipes.put(self.pipe, not self.pending)
