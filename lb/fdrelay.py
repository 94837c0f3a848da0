"""The L4 relay on raw sockets: two connected sockets joined both
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
Meanwhile src is not watched for input either (`_Flow.paused`): edge-triggered
epoll reports every segment that arrives, and a bulk sender faster than its
reader would wake the loop for each one with nothing to do.
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
# Copying passes MSG_DONTWAIT, so the accepted socket need not be made
# non-blocking (an ioctl per connection) unless the connection turns to splice.
_DONTWAIT = socket.MSG_DONTWAIT
_DONTWAIT_MORE = _DONTWAIT | socket.MSG_MORE
DRAIN = 1 << 30  # _Flow.event(): no event to go by, read until EAGAIN
# _Flow.state bits; 0 is the common case, plain copying
_BLOCKED = 1  # dst is full: src is not read until it drains
_EOF = 2  # src sent its FIN
_DONE = 4  # ... and everything before it is delivered (dst shut down)
_SPLICE = 8  # bulk: src -> pipe -> dst
_OVER = 16  # the relay is over
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
    """One direction: what src sends is written to dst. `reverse` is the other
    direction, whose dst is this one's src."""

    __slots__ = (
        "dst", "from_b", "held", "in_pipe", "nbytes", "paused", "pipe", "relay", "reverse", "src", "state",
    )  # fmt: skip
    reverse: _Flow
    held: bytes  # copy mode, while _BLOCKED: what dst could not take yet
    pipe: tuple[int, int, int]  # while _SPLICE: (read end, write end, size)
    in_pipe: int

    def __init__(self, relay: FdRelay, src: socket.SocketType, dst: socket.SocketType, from_b: bool) -> None:
        # `held` and the pipe are set when first used (the state says so).
        self.relay = relay
        self.src = src
        self.dst = dst
        self.from_b = from_b
        self.state = 0
        self.nbytes = 0
        self.paused = False  # src is not watched for input (set while blocked)

    def event(self, ev: int) -> None:
        """The poller's handler for src: its data, FIN or error are this flow's;
        room to write (OUT) is the reverse flow's. Also called with DRAIN (no
        event to go by: read until the queue is empty)."""
        if ev & OUT:
            self.reverse.writable()
            if not ev & _READ:
                return
        if self.state:  # not plain copying: held back, at EOF, splicing, or over
            self._special(ev)
            return
        src, dst, relay = self.src, self.dst, self.relay
        view = relay.view
        while True:
            try:
                n = src.recv_into(view, 0, _DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                relay.failed(exc, self.from_b)
                return
            if n == 0:
                self.state = _EOF  # was 0: not blocked
                self._finish()
                return
            self.nbytes += n
            data = view[:n]
            replay = relay.replay
            if replay is not None:
                if self.from_b or len(replay) + n > relay.replay_limit:
                    relay.replay = None  # the backend answered (or too much to keep): no retry from now on
                else:
                    replay += data
            try:
                # Data that ends with the FIN (a short read, RDHUP seen): the
                # shutdown below follows at once, and MSG_MORE lets the FIN
                # leave in the same packet as this data.
                sent = dst.send(data, _DONTWAIT_MORE if ev & RDHUP and n < BUF_SIZE else _DONTWAIT)
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
                    self.state = _EOF
                    self._finish()
                    return
                if not ev & DRAIN:
                    return
            elif relay.can_splice:  # a full buffer: the sender has more queued
                self.pipe = pipes.get()
                self.in_pipe = 0
                self.state = _SPLICE
                if not relay.spliced:
                    relay.spliced = True
                    relay.a.setblocking(False)  # splice() goes by O_NONBLOCK (copying passes MSG_DONTWAIT)
                relay.replay = None
                self._splice()
                return

    def _special(self, ev: int) -> None:
        state = self.state
        if state & (_BLOCKED | _OVER):
            return
        if state & _EOF:
            if ev & ERR:  # an error after the FIN (a reset): the relay is over
                code = self.src.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    self.relay.failed(OSError(code, os.strerror(code)), self.from_b)
            return
        self._splice()

    def writable(self) -> None:
        """dst has room again: deliver what is held, then read src again."""
        if not self.state & _BLOCKED:
            return
        if self.state & _SPLICE:
            if not self._flush():
                return
        else:
            try:
                sent = self.dst.send(self.held, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.relay.failed(exc, not self.from_b)
                return
            if sent < len(self.held):
                self.held = self.held[sent:]
                self.relay.watch_out(self)
                return
            self.held = b""
        self.state &= ~_BLOCKED
        if self.state & _EOF:
            self._finish()
            return
        self.event(DRAIN)  # what came while blocked
        if self.paused and not self.state & (_BLOCKED | _EOF | _OVER):
            self.paused = False  # (still blocked: stays unwatched, no syscall either way)
            self.relay.rearm(not self.from_b)

    def _block(self) -> None:
        self.state |= _BLOCKED
        relay = self.relay
        relay.watch_out(self)
        if not self.paused:
            self.paused = True
            relay.rearm(not self.from_b)  # src: no input wanted until dst drains

    def _splice(self) -> None:
        _r, w, size = self.pipe
        relay, src_fd = self.relay, self.src.fileno()
        for _ in range(_SPLICE_ROUNDS):
            try:
                n = os.splice(src_fd, w, size, flags=SPLICE_FLAGS)
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
            if not self._flush():
                return
        # Still more queued: let other connections run, then go on (no new edge will come).
        relay.poller.loop.call_soon(self.event, DRAIN)

    def _flush(self) -> bool:
        """Move the pipe into dst; False when dst is full (now waiting for room)."""
        r, dst_fd = self.pipe[0], self.dst.fileno()
        while self.in_pipe:
            try:
                self.in_pipe -= os.splice(r, dst_fd, self.in_pipe, flags=SPLICE_FLAGS)
            except BlockingIOError:
                self._block()
                return False
            except OSError as exc:
                self.relay.failed(exc, not self.from_b)
                return False
        return True

    def _eof(self) -> None:
        self.state |= _EOF
        if not self.state & _BLOCKED:
            self._finish()

    def _finish(self) -> None:
        self.state |= _DONE
        if self.reverse.state & _DONE:
            self.relay.close()  # both ways over: close() sends the FIN, no shutdown needed
            return
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already reset: the other direction finds out


class FdRelay:
    """Joins client socket `a` (blocking or not: reads and writes pass
    MSG_DONTWAIT) to the non-blocking backend socket given to `start` (b).
    Subclasses get `ended()` once both are closed, or, for a retry, once b is
    closed and a detached (`retry` then holds what the client sent)."""

    # Slots: a connection's object is made and dropped per connection, and an
    # instance dict of this many attributes would be rebuilt for each.
    __slots__ = (
        "a", "a_out", "a_watched", "ab", "b", "b_out", "ba", "can_splice", "closed", "error", "moved",
        "poller", "quiet_since", "replay", "replay_limit", "retry", "spliced", "view",
    )  # fmt: skip

    def __init__(self, poller: Poller, a: socket.SocketType, splice: bool) -> None:
        self.poller = poller
        self.view = poller.view
        self.a = a
        self.can_splice = splice and HAVE_SPLICE
        self.closed = True  # no relay until start() (nor after the end, or while a retry dials)
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
        unsent: bytes = b"",
        replay: bytes = b"",
        replay_limit: int = 0,
        watched: int = 0,
        *,
        read_a: bool = True,
    ) -> None:
        """Relay a <-> b from now on. `unsent` goes to b first: what the caller
        has for b and could not send yet (a PROXY header, the client's bytes).
        `replay`: what the client sent so far; while b has sent nothing, up to
        `replay_limit` bytes from a are kept with it for a retry. `watched`: the
        events b is in the poller for already (0: not in it). `read_a`: a may
        have data queued that nobody has looked at yet."""
        a, p = self.a, self.poller
        self.b = b
        self.replay_limit = replay_limit
        self.replay: bytearray | None = bytearray(replay) if replay_limit else None
        self.moved = -1  # bytes both ways when idle_check last looked (-1: it has not yet)
        self.quiet_since = 0.0
        self.closed = False  # (again, when this is a retry)
        self.retry = None
        self.error = None
        self.ab = ab = _Flow(self, a, b, False)
        self.ba = ba = _Flow(self, b, a, True)
        ab.reverse = ba
        ba.reverse = ab
        ab.nbytes = len(replay)
        self.a_watched = False
        self.a_out = False  # a is watched for EPOLLOUT too
        self.b_out = bool(watched & OUT)  # ... b
        if watched:
            p.rebind(b.fileno(), ba.event)
        else:
            p.add(b.fileno(), ba.event, IN)
        # The client's request is usually queued already: read it before watching
        # a, which saves a wakeup (watching first would report it twice).
        if unsent:
            ab.held = unsent
            ab.state = _BLOCKED  # as if b had been full: writable() sends it, then reads a
            ab.writable()
        elif read_a:
            ab.event(0)
        if not self.closed:
            p.add(a.fileno(), ab.event, (0 if ab.paused else IN) | (OUT if self.a_out else 0))
            self.a_watched = True

    def ended(self) -> None:
        """Both sockets are closed, or b is and a is handed back for a retry."""

    def watch_out(self, flow: _Flow) -> None:
        """A send to `flow.dst` would block: from now on its EPOLLOUT resumes the flow."""
        if flow is self.ba:  # dst is a
            if not self.a_out:
                self.a_out = True
                self.rearm(True)
        elif not self.b_out:
            self.b_out = True
            self.rearm(False)

    def rearm(self, on_a: bool) -> None:
        """Tell the poller what a (or b) is watched for now: input unless the
        flow it feeds is paused, room to write once a send to it blocked."""
        if on_a:
            if not self.a_watched:
                return  # start() adds it with what is wanted by then
            sock, feeds, out = self.a, self.ab, self.a_out
        else:
            sock, feeds, out = self.b, self.ba, self.b_out
        self.poller.modify(sock.fileno(), (0 if feeds.paused else IN) | (OUT if out else 0))

    def failed(self, exc: OSError, on_b: bool) -> None:
        if self.closed:
            return
        if on_b and self.replay is not None and not self.ab.state & _EOF:
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

    def idle_check(self, now: float, timeout: float) -> None:
        """The idle timeout, polled: the owner calls this every so often (a
        fraction of `timeout` apart), which costs a new connection nothing,
        and the relay closes once nothing has moved for `timeout` seconds."""
        if self.closed:
            return
        moved = self.ab.nbytes + self.ba.nbytes
        if moved != self.moved:
            self.moved = moved
            self.quiet_since = now
        elif now - self.quiet_since >= timeout:
            self.error = TimeoutError("idle timeout")
            self.close()

    def close(self) -> None:
        """Close both sockets (an error or timeout: what is unread resets them)."""
        if not self.closed:
            self._end((self.a, self.b))

    def _end(self, socks: tuple[socket.SocketType, ...]) -> None:
        self.closed = True
        close_socket = self.poller.close_socket
        for sock in socks:
            close_socket(sock)
        ab, ba = self.ab, self.ba
        if self.spliced:
            for flow in (ab, ba):
                if flow.state & _SPLICE:
                    pipes.put(flow.pipe, not flow.in_pipe)  # the pipe goes back, if empty
        ab.state = ba.state = _OVER  # no more events for the flows
        ab.relay = ba.relay = ab.reverse = ba.reverse = None  # type: ignore[assignment]  # no cycle left for the GC
        self.ended()
