"""One edge-triggered epoll set per event loop, for the sockets the L4 path
drives itself (proxy.tcp._Conn, lb.fdrelay, the TCP listener).

Why not `loop.add_reader`: uvloop starts watching a new fd with four syscalls
(libuv probes it with an epoll ADD and DEL, sets O_NONBLOCK, then ADDs it) and
stops with one more, and an L4 connection brings two new fds. Here a socket is
added once, edge-triggered, so nothing is re-armed as its state changes, and
closing it takes it out of the set. The loop watches only the epoll fd.

Edge-triggered means a handler must consume what it was told about (read
until the kernel queue is empty) or remember that it did not.

Connect timeouts of those sockets live on a coarse timer wheel here
(`arm`/`disarm`, TICK resolution): a set insert per connect that has to wait,
instead of a loop timer that must be made and cancelled. (Idle timeouts are
polled by their owner, proxy.tcp, which costs a new connection nothing.)
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
import weakref
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("sekisho.poller")

IN = select.EPOLLIN | select.EPOLLRDHUP
OUT = select.EPOLLOUT
RDHUP = select.EPOLLRDHUP
ERR = select.EPOLLERR | select.EPOLLHUP
_ET = select.EPOLLET
_BATCH = 256  # events per wakeup; the rest wait for the next loop iteration
BUF_SIZE = 65536
TICK = 0.05  # timer wheel resolution, seconds

Handler = Callable[[int], None]


class Timed(Protocol):
    slot: int

    def expired(self, now: float) -> None: ...


class Poller:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # not strong: the loop keys this poller's weak table
        self.ep = select.epoll()
        self.handlers: dict[int, Handler] = {}
        # Sockets closed while a batch is dispatched are closed after it, so
        # that no fd number is reused within the batch: the batch's remaining
        # events for a closed socket then find no handler, rather than the
        # handler of a new socket that got the same number.
        self._closing: list[socket.SocketType] | None = None
        # The copy buffer of the relays on this loop: each use is a recv then a
        # send in the same callback, so one is enough (and one per loop is safe
        # with loops in threads).
        self.buf = bytearray(BUF_SIZE)
        self.view = memoryview(self.buf)
        self._wheel: dict[int, set[Timed]] = {}  # slot (time // TICK) -> what expires in it
        self._done_slot = int(time.monotonic() / TICK)
        self._ticker: asyncio.TimerHandle | None = None
        loop.add_reader(self.ep.fileno(), self._dispatch)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        assert loop is not None
        return loop

    def add(self, fd: int, handler: Handler, events: int = IN) -> None:
        self.ep.register(fd, events | _ET)
        self.handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self.ep.modify(fd, events | _ET)

    def rebind(self, fd: int, handler: Handler) -> None:
        self.handlers[fd] = handler

    def close_socket(self, sock: socket.SocketType) -> None:
        """Close a socket (watched or not): no more events for it."""
        self.handlers.pop(sock.fileno(), None)
        closing = self._closing
        if closing is None:
            sock.close()  # closing takes it out of the epoll set
        else:
            closing.append(sock)

    def remove(self, fd: int) -> None:
        """Stop watching a socket that stays open."""
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def _dispatch(self) -> None:
        events = self.ep.poll(0, _BATCH)
        handlers = self.handlers
        closing: list[socket.SocketType] = []
        self._closing = closing
        try:
            for fd, ev in events:
                try:
                    handler = handlers[fd]  # (cheaper than .get when it is there)
                except KeyError:
                    continue  # closed or removed earlier in this batch
                try:
                    handler(ev)
                except Exception:  # one broken connection must not strand the rest of the batch
                    log.exception("handler for fd %d failed", fd)
        finally:
            self._closing = None
            for sock in closing:
                sock.close()

    # ------------------------------------------------------------ timer wheel
    def arm(self, obj: Timed, delay: float) -> int:
        """`obj.expired(now)` in `delay` seconds (up to TICK later); returns the key for `disarm`."""
        slot = int((time.monotonic() + delay) / TICK) + 1
        bucket = self._wheel.get(slot)
        if bucket is None:
            bucket = self._wheel[slot] = set()
        bucket.add(obj)
        if self._ticker is None:
            self._ticker = self.loop.call_later(TICK, self._tick)
        return slot

    def disarm(self, obj: Timed, slot: int) -> None:
        bucket = self._wheel.get(slot)
        if bucket is not None:
            bucket.discard(obj)
            if not bucket:
                del self._wheel[slot]

    def _tick(self) -> None:
        now = time.monotonic()
        current = int(now / TICK)
        wheel = self._wheel
        for slot in range(self._done_slot + 1, current + 1):
            for obj in wheel.pop(slot, ()):
                try:
                    obj.expired(now)
                except Exception:
                    log.exception("timeout of %r failed", obj)
        self._done_slot = current
        self._ticker = self.loop.call_later(TICK, self._tick) if wheel else None

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        loop = self._loop()
        if not self.ep.closed:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self.ep.fileno())
            self.ep.close()


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()


def poller() -> Poller:
    """The running loop's poller, made on first use."""
    loop = asyncio.get_running_loop()
    p = _pollers.get(loop)
    if p is None:
        p = _pollers[loop] = Poller(loop)
    return p
