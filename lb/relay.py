"""The L4 relay: two connected transports joined both ways.

Used by the `[[tcp]]` front end (proxy.tcp) and by the SMTP front end for the
DATA phase. Two strategies, chosen per connection by what flows:

* copy: each side's protocol writes what it reads to the other transport.
  Cheapest for small request/response exchanges (one read and one write per
  message, no extra syscalls). Backpressure: when one transport's write
  buffer passes its high-water mark, the other side stops reading.
* splice: once a side delivers `BULK_READS` reads of at least `BULK_CHUNK`
  bytes in a row, the relay pauses both transports, waits for their write
  buffers to empty, and from then on moves bytes socket -> pipe -> socket with
  `os.splice`, so bulk data never enters Python. Backpressure: a direction
  stops reading its source while its pipe holds bytes the destination cannot
  take yet.

Both keep half-close semantics: EOF from one side becomes a `shutdown(SHUT_WR)`
towards the other, and the reverse direction goes on until it ends too.

Use from a coroutine:

    result = await relay(client_transport, backend_transport, idle_timeout=300.0)

or without a task, as the TCP front end does:

    Relay(on_done=callback, idle_timeout=...).start(client_transport, backend_transport)

`relay()` takes over both transports (their protocols are replaced), resumes
reading on both, and returns a `RelayResult` once both transports are closed:
bytes each way, whether splice was used, and the error that ended it (None for
a clean close). Cancelling it aborts both connections. TLS transports are
relayed by copy only.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lb.fdrelay import HAVE_SPLICE
from lb.pump import DISCONNECT, Pump, splice_capable

BULK_CHUNK = 32768  # a read at least this large: the sender has more queued
BULK_READS = 4  # this many in a row: switch the connection to splice


@dataclass
class RelayResult:
    a_to_b: int  # bytes from the first transport (client) to the second (backend)
    b_to_a: int
    spliced: bool
    error: BaseException | None


class Held(asyncio.Protocol):
    """A connection waiting to be relayed: reading paused, and whatever still
    arrives (uvloop starts reading after `connection_made` regardless) is kept
    with its EOF for `Relay.start`, which sends it on first."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.held_eof = False
        self.held_lost = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.held.append(data)
        assert self.transport is not None
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.held_eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.held_lost = True


class _Half(asyncio.Protocol):
    """One end: what it reads goes to its peer's transport."""

    __slots__ = ("big", "eof", "lost", "nbytes", "peer", "relay", "transport")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: _Half = self
        self.eof = False  # EOF received from this side
        self.lost = False
        self.big = 0
        self.nbytes = 0  # bytes read from this side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)
        n = len(data)
        self.nbytes += n
        relay = self.relay
        relay.activity = True
        if relay.replay is not None:
            if self is relay.a and len(relay.replay) + n <= relay.replay_limit:
                relay.replay += data
            else:  # the backend answered (or too much to keep): no retry from now on
                relay.replay = None
        if n >= BULK_CHUNK:
            self.big += 1
            if self.big >= BULK_READS and relay.can_splice:
                relay.to_splice()
        else:
            self.big = 0

    def eof_received(self) -> bool:
        self.eof = True
        self.relay._eof(self)
        return True  # keep our write side open: half-close

    def pause_writing(self) -> None:
        # Our transport cannot keep up: stop reading what we would write to it.
        peer = self.peer
        if not peer.eof and not peer.lost:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        relay = self.relay
        if relay.switching:
            relay._flushed()
            return
        peer = self.peer
        if not peer.eof and not peer.lost and not relay.spliced:
            peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay._lost(self, exc)


class Relay:
    """Joins two transports both ways; calls `on_done(relay)` once both are closed."""

    def __init__(
        self,
        on_done: Callable[[Relay], None] | None = None,
        idle_timeout: float | None = None,
        splice: bool = True,
        replay_limit: int = 0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        # Retry support: while b (the backend) has sent nothing, keep what a sent
        # (up to replay_limit bytes). If b then resets, the relay ends with
        # `retry` set to those bytes and a (the client) still open and paused,
        # so the caller can try another server invisibly to the client.
        self.replay_limit = replay_limit
        self.replay: bytearray | None = bytearray() if replay_limit else None
        self.retry: bytes | None = None
        self.on_done = on_done
        self.idle_timeout = idle_timeout
        self.want_splice = splice and HAVE_SPLICE
        self.can_splice = False
        self.a = _Half(self)
        self.b = _Half(self)
        self.a.peer, self.b.peer = self.b, self.a
        self.activity = False
        self.switching = False
        self.spliced = False
        self.closing = False
        self.finished = False
        self.error: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pumps: list[Pump] = []
        self._socks: list[socket.socket] = []

    @property
    def a_to_b(self) -> int:
        return self.a.nbytes

    @property
    def b_to_a(self) -> int:
        return self.b.nbytes

    def result(self) -> RelayResult:
        return RelayResult(self.a.nbytes, self.b.nbytes, self.spliced, self.error)

    def start(self, a: asyncio.Transport, b: asyncio.Transport) -> None:
        """Take over both transports and start relaying."""
        self.can_splice = self.want_splice and splice_capable(a) and splice_capable(b)
        held: list[Held | None] = []
        for half, t in ((self.a, a), (self.b, b)):
            old = t.get_protocol()
            held.append(old if isinstance(old, Held) else None)
            half.transport = t
            t.set_protocol(half)
            if t.is_closing() or (isinstance(old, Held) and old.held_lost):
                half.lost = True
        if self.a.lost or self.b.lost:
            self.close(abort=True)
            return
        if self.idle_timeout:
            self._timer = self.loop.call_later(self.idle_timeout, self._idle_check)
        for half, h in zip((self.a, self.b), held, strict=True):
            if h is not None:
                for data in h.held:
                    half.data_received(data)
                h.held.clear()
                if h.held_eof:
                    half.eof_received()
        for half in (self.a, self.b):
            if not half.eof and not self.closing and not self.switching and not self.spliced:
                half.transport.resume_reading()

    # -------------------------------------------------------------- events
    def _eof(self, half: _Half) -> None:
        peer = half.peer
        if peer.lost:
            return
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        if half.eof and peer.eof:
            self.close()

    def _lost(self, half: _Half, exc: BaseException | None) -> None:
        if (
            half is self.b
            and exc is not None
            and self.replay is not None
            and not self.a.lost
            and not self.a.eof
            and not self.closing
            and not self.spliced
            and not self.switching
        ):
            self.retry = bytes(self.replay)
            self.a.transport.pause_reading()
            self.closing = True
            self.error = exc
            self._finish()
            return
        if exc is not None and self.error is None:
            self.error = exc
        peer = half.peer
        if not peer.lost and not self.closing:
            # Reset, or closed under us: nothing more can flow either way.
            self.close(abort=exc is not None or not half.eof)
        if self.a.lost and self.b.lost:
            self._finish()

    def take_back(self, protocol: asyncio.BaseProtocol) -> asyncio.Transport:
        """After a retry-ending relay: give transport a to `protocol` (paused)."""
        t = self.a.transport
        t.set_protocol(protocol)
        return t

    def _idle_check(self) -> None:
        if self.activity:
            self.activity = False
            assert self.idle_timeout is not None
            self._timer = self.loop.call_later(self.idle_timeout, self._idle_check)
            return
        self._timer = None
        self.error = TimeoutError("idle timeout")
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self._teardown_splice()
        for half in (self.a, self.b):
            if not half.lost and half.transport is not None:
                if abort:
                    half.transport.abort()
                else:
                    half.transport.close()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._teardown_splice()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.on_done is not None:
            self.on_done(self)

    # --------------------------------------------------------------- splice
    def to_splice(self) -> None:
        if self.switching or self.spliced or self.closing:
            return
        self.switching = True
        for half in (self.a, self.b):
            if not half.eof:
                half.transport.pause_reading()
            # From now on resume_writing fires when the buffer is empty.
            half.transport.set_write_buffer_limits(high=0, low=0)
        self._flushed()

    def _flushed(self) -> None:
        if not self.switching or self.closing:
            return
        if self.a.transport.get_write_buffer_size() or self.b.transport.get_write_buffer_size():
            return
        self.switching = False
        try:
            self._start_splice()
        except OSError as exc:
            self.error = exc
            self.close(abort=True)

    def _start_splice(self) -> None:
        self.spliced = True
        fds = []
        for half in (self.a, self.b):
            raw = half.transport.get_extra_info("socket")
            sock = socket.socket(fileno=os.dup(raw.fileno()))
            self._socks.append(sock)
            fds.append(sock.fileno())
        fa, fb = fds
        sa, sb = self._socks
        if not self.a.eof:
            self._pumps.append(Pump(self, self.a, fa, fb, sb))
        if not self.b.eof:
            self._pumps.append(Pump(self, self.b, fb, fa, sa))
        for p in self._pumps:
            p.start()
        if not self._pumps:
            self.close()

    def _pump_done(self) -> None:
        if all(p.done for p in self._pumps):
            self.close()

    def _pump_failed(self, exc: OSError) -> None:
        if exc.errno not in DISCONNECT and self.error is None:
            self.error = exc
        elif self.error is None:
            self.error = ConnectionResetError(exc.errno, exc.strerror)
        self.close(abort=True)

    def _teardown_splice(self) -> None:
        pumps, self._pumps = self._pumps, []
        for p in pumps:
            p.close()
        socks, self._socks = self._socks, []
        for s in socks:
            s.close()


async def relay(
    a: asyncio.Transport,
    b: asyncio.Transport,
    *,
    idle_timeout: float | None = None,
    splice: bool = True,
) -> RelayResult:
    """Relay between `a` (usually the client) and `b` (the backend) until both
    are closed; see the module docstring. Both transports are closed on return."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finished(_: Relay) -> None:
        if not done.done():
            done.set_result(None)

    r = Relay(finished, idle_timeout, splice)
    r.start(a, b)
    try:
        await done
    except asyncio.CancelledError:
        r.close(abort=True)
        raise
    return r.result()
