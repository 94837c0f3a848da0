"""The L4 relay on raw sockets: two connected non-blocking sockets joined both
ways by poller callbacks (lb.poller), with no transport, protocol or task.
The `[[tcp]]` front end uses it; lb.relay does the same job for transports.

Each direction is a `_Flow` (src -> dst) with two strategies:

* copy: `recv_into` the poller's buffer and `send` it on: two syscalls and no
  allocation per message, the cheapest for small request/response exchanges.
* splice: a read that fills the buffer means the sender has more queued; the
  flow then moves src -> pipe -> dst with `os.splice` for good, so bulk data
  never enters Python. Pipes are kept on a free list between connections.

Backpressure: what dst cannot take stays in Python (copy) or in the pipe
(splice), src is not read meanwhile, and dst's EPOLLOUT resumes the flow.
Half-close: EOF from src becomes `shutdown(SHUT_WR)` on dst once everything
before it is delivered; the other direction goes on until it ends too. A
reset or error on either side closes both.

Retry: while the backend (b) has sent nothing, what the client (a) sent is
kept (up to `replay_limit`). If b then fails, the relay ends with `retry` set
to those bytes and a still open and unwatched, so the caller can replay them
to another server without the client noticing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket

from lb.poller import BUF_SIZE, ERR, IN, OUT, RDHUP, Poller

PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size default; falls back to 64 KiB
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
HAVE_SPLICE = hasattr(os, "splice")
_DISCONNECT = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH)
_READ = IN | ERR
DRAIN = 1 << 30  # readable(): no event to go by, read until EAGAIN
_SPLICE_ROUNDS = 8  # pipe loads per callback, so that one bulk flow does not starve the rest
_KEEP_PIPES = 32


class _Pipes:
    """Empty pipes kept for the next bulk flow: a new one costs pipe2, fcntl and two closes."""

    def __init__(self) -> None:
        self.free: list[tuple[int, int, int]] = []

    def get(self) -> tuple[int, int, int]:
        if self.free:
            return self.free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size = fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            size = 65536
        return r, w, size

    def put(self, pipe: tuple[int, int, int], empty: bool) -> None:
        if empty and len(self.free) < _KEEP_PIPES:
            self.free.append(pipe)
        else:
            for fd in pipe[:2]:
                with contextlib.suppress(OSError):
                    os.close(fd)


pipes = _Pipes()


def _reset(exc: OSError) -> OSError:
    return ConnectionResetError(exc.errno, exc.strerror) if exc.errno in _DISCONNECT else exc


class _Flow:
    """One direction: what src sends is written to dst."""

    __slots__ = (
        "blocked", "done", "dst", "dst_fd", "eof", "from_b", "held", "in_pipe",
        "nbytes", "pipe", "relay", "src", "src_fd", "view",
    )  # fmt: skip

    def __init__(self, relay: FdRelay, src: socket.SocketType, dst: socket.SocketType, from_b: bool) -> None:
        self.relay = relay
        self.src = src
        self.dst = dst
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.from_b = from_b
        self.view = relay.poller.view
        self.held = b""  # copy mode: bytes dst could not take yet
        self.pipe: tuple[int, int, int] | None = None
        self.in_pipe = 0
        self.blocked = False  # dst is full: src is not read until it drains
        self.eof = False
        self.done = False
        self.nbytes = 0

    def readable(self, ev: int) -> None:
        """src has data, its FIN or an error: read until the queue is empty."""
        if self.blocked or self.eof:
            return
        if self.pipe is not None:
            self._splice()
            return
        src, dst, view, relay = self.src, self.dst, self.view, self.relay
        while True:
            try:
                n = src.recv_into(view)
            except BlockingIOError:
                return
            except OSError as exc:
                relay.failed(exc, self.from_b)
                return
            if n == 0:
                self._eof()
                return
            self.nbytes += n
            relay.activity = True
            data = view[:n]
            replay = relay.replay
            if replay is not None:
                if self.from_b or len(replay) + n > relay.replay_limit:
                    relay.replay = None  # the backend answered (or too much to keep): no retry from now on
                else:
                    replay += data
            try:
                sent = dst.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                relay.failed(exc, not self.from_b)
                return
            if sent < n:
                self.held = bytes(view[sent:n])
                self._block()
                return
            if n < BUF_SIZE:
                # A short read emptied the queue: more data brings a new edge.
                if ev & RDHUP:  # the FIN came with this event, after this data
                    self._eof()
                    return
                if not ev & DRAIN:
                    return
            elif relay.can_splice:  # a full buffer: the sender has more queued
                self.pipe = pipes.get()
                relay.spliced = True
                relay.replay = None
                self._splice()
                return

    def writable(self) -> None:
        """dst has room again: deliver what is held, then read src again."""
        if not self.blocked:
            return
        if self.pipe is not None:
            if not self._flush():
                return
        else:
            try:
                sent = self.dst.send(self.held)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.relay.failed(exc, not self.from_b)
                return
            if sent < len(self.held):
                self.held = self.held[sent:]
                self.relay.watch_out(self.dst_fd)
                return
            self.held = b""
        self.blocked = False
        if self.eof:
            self._finish()
        else:
            self.readable(DRAIN)  # edges came and went while blocked

    def _block(self) -> None:
        self.blocked = True
        self.relay.watch_out(self.dst_fd)

    def _splice(self) -> None:
        assert self.pipe is not None
        w, size, relay = self.pipe[1], self.pipe[2], self.relay
        for _ in range(_SPLICE_ROUNDS):
            try:
                n = os.splice(self.src_fd, w, size, flags=SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError as exc:
                relay.failed(exc, self.from_b)
                return
            if n == 0:
                self._eof()
                return
            self.in_pipe += n
            self.nbytes += n
            relay.activity = True
            if not self._flush():
                return
        # Still more queued: let other connections run, then go on (no new edge will come).
        relay.poller.loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self.relay is not None and not self.relay.closed:
            self.readable(DRAIN)

    def _flush(self) -> bool:
        """Move the pipe into dst; False when dst is full (now waiting for room)."""
        assert self.pipe is not None
        r = self.pipe[0]
        while self.in_pipe:
            try:
                self.in_pipe -= os.splice(r, self.dst_fd, self.in_pipe, flags=SPLICE_FLAGS)
            except BlockingIOError:
                self._block()
                return False
            except OSError as exc:
                self.relay.failed(exc, not self.from_b)
                return False
        return True

    def _eof(self) -> None:
        self.eof = True
        if not self.blocked:
            self._finish()

    def _finish(self) -> None:
        self.done = True
        relay = self.relay
        if relay.ab.done and relay.ba.done:
            relay.close()  # both ways over: close() sends the FIN, no shutdown needed
            return
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already reset: the other direction finds out

    def release(self) -> None:
        if self.pipe is not None:
            pipes.put(self.pipe, not self.in_pipe)
            self.pipe = None


class FdRelay:
    """Joins client socket `a` to the backend socket given to `start` (b).
    Subclasses get `ended()` once both are closed, or, for a retry, once b is
    closed and a detached (`retry` then holds what the client sent)."""

    def __init__(
        self, poller: Poller, a: socket.SocketType, *, idle_timeout: float | None = None, splice: bool = True
    ) -> None:
        self.poller = poller
        self.a = a
        self.idle_timeout = idle_timeout
        self.can_splice = splice and HAVE_SPLICE
        self.slot = -1  # armed on the poller's timer wheel (idle timeout)
        self.closed = False
        self.error: BaseException | None = None
        self.retry: bytes | None = None
        self.spliced = False

    @property
    def a_to_b(self) -> int:
        return self.ab.nbytes

    @property
    def b_to_a(self) -> int:
        return self.ba.nbytes

    def start(
        self,
        b: socket.SocketType,
        preamble: bytes = b"",
        replay: bytes = b"",
        replay_limit: int = 0,
        watched: int = 0,
    ) -> None:
        """Relay a <-> b from now on. `preamble` (a PROXY header), then `replay`
        (what the client sent to a server that failed) go to b first. While b
        has sent nothing, up to `replay_limit` bytes from a are kept for a retry.
        `watched`: the events b is in the poller for already (0: not in it)."""
        a, p = self.a, self.poller
        self.b = b
        self.replay_limit = replay_limit
        self.replay: bytearray | None = bytearray(replay) if replay_limit else None
        self.retry = None
        self.error = None
        self.closed = False
        self.activity = False
        self.ab = _Flow(self, a, b, False)
        self.ba = _Flow(self, b, a, True)
        self.ab.nbytes = len(replay)
        self.a_watched = False
        self.a_out = False  # a is watched for EPOLLOUT too
        self.b_out = bool(watched & OUT)  # ... b
        if watched:
            p.rebind(b.fileno(), self._on_b)
        else:
            p.add(b.fileno(), self._on_b, IN)
        if self.idle_timeout:
            p.arm_soon(self, self.idle_timeout)
        # The client's request is usually queued already: read it before watching
        # a, which saves a wakeup (watching first would report it twice).
        if preamble or replay:
            self.ab.held = preamble + replay
            self.ab.blocked = True  # as if b had been full: writable() sends it, then reads a
            self.ab.writable()
        else:
            self.ab.readable(0)
        if not self.closed:
            p.add(a.fileno(), self._on_a, IN | OUT if self.a_out else IN)
            self.a_watched = True

    def ended(self) -> None:
        """Both sockets are closed, or b is and a is handed back for a retry."""

    # -------------------------------------------------------------- events
    def _on_a(self, ev: int) -> None:
        if ev & OUT:
            self.ba.writable()
        if ev & _READ and not self.closed:
            if not self.ab.eof:
                self.ab.readable(ev)
            elif ev & ERR:
                self._sock_error(self.a, False)

    def _on_b(self, ev: int) -> None:
        if ev & OUT:
            self.ab.writable()
        if ev & _READ and not self.closed:
            if not self.ba.eof:
                self.ba.readable(ev)
            elif ev & ERR:
                self._sock_error(self.b, True)

    def _sock_error(self, sock: socket.SocketType, on_b: bool) -> None:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.failed(OSError(code, os.strerror(code)), on_b)

    def watch_out(self, fd: int) -> None:
        """A send to `fd` would block: from now on its EPOLLOUT resumes the flow."""
        if fd == self.ab.src_fd:
            if not self.a_out:
                self.a_out = True
                if self.a_watched:
                    self.poller.modify(fd, IN | OUT)
        elif not self.b_out:
            self.b_out = True
            self.poller.modify(fd, IN | OUT)

    def failed(self, exc: OSError, on_b: bool) -> None:
        if self.closed:
            return
        if on_b and self.replay is not None and not self.ab.eof:
            # The backend failed before answering: hand the client back for a retry.
            self.retry = bytes(self.replay)
            self.error = exc
            if self.a_watched:
                self.poller.remove(self.a.fileno())
                self.a_watched = False
            self._end((self.b,))
            return
        if self.error is None:
            self.error = _reset(exc)
        self.close()

    def expired(self, now: float) -> None:
        """The idle timer: nothing moved for a whole period -> close."""
        self.slot = -1
        if self.closed:
            return
        if self.activity:
            self.activity = False
            assert self.idle_timeout is not None
            self.slot = self.poller.arm(self, self.idle_timeout)
            return
        self.error = TimeoutError("idle timeout")
        self.close()

    def close(self) -> None:
        """Close both sockets (an error or timeout: what is unread resets them)."""
        if not self.closed:
            self._end((self.a, self.b))

    def _end(self, socks: tuple[socket.SocketType, ...]) -> None:
        self.closed = True
        forget = self.poller.forget
        for sock in socks:
            forget(sock.fileno())
            sock.close()
        ab, ba = self.ab, self.ba
        if ab.pipe is not None:
            ab.release()
        if ba.pipe is not None:
            ba.release()
        if self.slot >= 0:
            self.poller.disarm(self, self.slot)
        self.slot = -1  # also takes it off the poller's pending list (arm_soon)
        self.ab.relay = self.ba.relay = None  # type: ignore[assignment]  # no cycle left for the GC
        self.ended()
