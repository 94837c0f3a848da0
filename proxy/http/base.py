"""What both sides of a client connection share: its state, writes, answers, the one timer.

`ConnectionBase` is the bottom of `ClientConnection` (proxy/http/connection.py, the
client's requests, judged by h11) over `BackendExchange` (proxy/http/exchange.py, the
backend's answers). No I/O of its own beyond writing to the client transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h11

from lb.pool import Backend, BackendPool
from proxy.http.answers import plain
from proxy.http.routing import Route
from proxy.http.upstream import UpstreamConnection
from proxy.linger import linger_close

if TYPE_CHECKING:
    from proxy.http.frontend import HttpFrontend

log = logging.getLogger("sekisho.http")

# Reasons to stop reading from the client (bits).
HELD = 1  # a request is being dispatched / waits for its backend or its response
BACKPRESSURE = 2  # the backend cannot take more right now

# What the connection's one timer watches (see _arm).
T_NONE = 0
T_HEAD = 1  # timeouts.header: a request head must complete
T_IDLE = 2  # timeouts.idle: between requests
T_RESP = 3  # timeouts.response: since the backend last said something
T_BODY = 4  # timeouts.header again: gaps in a request body (slow-POST defence)

EOM_EVENT = h11.EndOfMessage()  # immutable: stands for the end of a bodiless request
ONLY_END: tuple[h11.Event, ...] = (EOM_EVENT,)  # what a bodiless request has after its head


class ConnectionBase(asyncio.Protocol):
    def __init__(self, frontend: HttpFrontend, on_close: object) -> None:
        self.fe = frontend
        self.on_close = on_close
        self.loop = frontend.loop
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=frontend.config.max_header_bytes)
        self.peer = ""
        self.proto = b"http"
        self.allowed = True
        self.trusted = False
        self.closed = False
        self.client_eof = False  # the client shut its side: nothing more will come
        # request head gate: bytes held back from h11 until the head is complete and checked
        self.gate_buf = bytearray()
        self.gate: bytearray | None = self.gate_buf
        self.head: bytes = b""
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when self.timer fires
        self.tmode = T_NONE
        self.deadline = 0.0
        self.timeouts = frontend.config.timeouts
        self.read_paused = 0
        self.write_paused = False
        self.up_paused = False  # we paused reading from the backend (the client reads slowly)
        self.tunnel = False
        self.idle = False
        self.pending: bool = False  # stop pumping h11 events (waiting for a backend)
        self.early: Sequence[h11.Event] = ()
        self.fed = 0  # bytes given to h11 after the current request head
        self.chunked = False
        self.chunks = 0
        self.data_seen = 0  # body events parsed before the backend was attached
        # the current exchange
        self.req: h11.Request | None = None
        self.route: Route | None = None
        self.host = ""
        self.t0 = 0.0
        self.status = 0
        self.sent = 0  # response bytes written to the client for this request
        self.body_in = 0
        self.response_started = False
        self.response_done = False
        self.request_done = False
        self.upgrade: bytes | None = None
        self.keep_alive = True  # the client's request lets us keep the connection
        self.http11 = True
        self.resp_chunked = False  # the response body is re-framed as chunks for the client
        self.resp_close = False  # the response ends the connection
        self.up: UpstreamConnection | None = None
        self.up_head = b""  # the request head for the backend
        self.backend: Backend | None = None
        self.pool: BackendPool | None = None
        self.reused = False
        self.retried = False
        self.last_up = 0.0
        self.connect_task: asyncio.Task[None] | None = None
        self.head_limit = frontend.config.max_header_bytes
        self.max_body = frontend.config.max_body_bytes

    def _gone(self) -> bool:
        return self.closed

    def _pause(self, bit: int) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.read_paused |= bit

    def _resume(self, bit: int) -> None:
        if self.read_paused & bit:
            self.read_paused &= ~bit
            if not self.read_paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def _cancel_timers(self) -> None:
        self.tmode = T_NONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)
            n = len(data)
            self.sent += n
            self.fe.counters.bytes_out += n

    def _close(self, linger: bool = False) -> None:
        """Close once what was written is sent. `linger`: the client may still be
        sending (we answered before reading the whole request), and closing with its
        input unread would reset the connection under our answer (see proxy.linger)."""
        if not self.closed:
            self.closed = True
            self._cancel_timers()
            transport = self.transport
            if transport is not None:
                if linger and not self.client_eof:
                    self._release_upstream()  # now, not when the lingering ends
                    linger_close(transport, self)
                else:
                    transport.close()

    def _abort(self) -> None:
        """Kill the client connection: a response we cannot complete must not look complete."""
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        self._cancel_timers()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request we will not forward, then close."""
        if self.closed:
            return
        if status in {400, 414, 431}:
            self.fe.counters.bad_requests += 1
        log.debug("%s: %d %s", self.peer, status, reason)
        self._local_done(status, plain(status), close=False)
        self._close(linger=True)  # whatever the request had left may be on its way

    def _local_done(self, status: int, data: bytes, close: bool) -> None:
        self._write(data)
        self.status = status
        self._log(status)
        if close:
            self._close(linger=self._input_may_follow())

    def _input_may_follow(self) -> bool:
        """The client may still be sending: this request was not read to its end,
        or more came behind it (pipelined, or sent as a reload retired us)."""
        return not self.request_done or bool(self.read_paused) or bool(self.h11.trailing_data[0])

    def _log(self, status: int) -> None:
        fe = self.fe
        now = self.loop.time()
        duration = now - self.t0 if self.t0 else 0.0
        route = self.route
        fe.counters.observe(route.label if route is not None else "none", status, duration)
        if fe.access_log is not None:
            req = self.req
            backend = self.backend
            fe.access_log.log(
                client=self.peer,
                host=self.host,
                method=req.method if req is not None else b"-",
                target=req.target if req is not None else b"",
                version=req.http_version if req is not None else b"1.1",
                status=status,
                size=self.sent,
                upstream=backend.key if backend is not None else "-",
                duration=duration,
                headers=req.headers if req is not None else None,
            )

    # ------------------------------------------------------------------ timers

    def _arm(self, mode: int, deadline: float) -> None:
        """Watch `mode` until `deadline` with the connection's one timer.

        The timer is only moved when the new deadline is earlier than the one it
        is set for; when it fires early it re-arms itself for the current
        deadline. A kept-alive connection thus costs no timer calls per request.
        """
        self.tmode = mode
        self.deadline = deadline
        timer = self.timer
        if timer is None or self.timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _on_timer(self) -> None:
        self.timer = None
        mode = self.tmode
        if mode == T_NONE or self.closed:
            return
        deadline = self.last_up + self.timeouts.response if mode == T_RESP else self.deadline
        if deadline - self.loop.time() > 0.001:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline
            return
        self.tmode = T_NONE
        if mode == T_HEAD:
            self._head_timeout()
        elif mode == T_IDLE:
            self._idle_timeout()
        elif mode == T_BODY:
            self._body_timeout()
        else:
            self._response_timeout()

    def _head_timeout(self) -> None:
        if self.closed:
            return
        if self.gate:  # part of a head arrived: tell the client
            self._refuse(408, "request head timeout")
        else:
            self._close()

    def _idle_timeout(self) -> None:
        if self.gate is not None and not self.gate:
            self._close()

    def _body_timeout(self) -> None:
        """A client that stops sending its request body holds a backend connection: 408."""
        if self.closed or self.request_done:
            return
        if self.read_paused & BACKPRESSURE:  # the silence is ours: the backend is slow to read
            self._arm(T_BODY, self.loop.time() + self.timeouts.header)
        elif self.response_started:
            self._abort()
        else:
            self._refuse(408, "request body timeout")

    def _response_timeout(self) -> None:
        if self.closed or self.response_done:
            return
        self._upstream_failure(504, "backend response timeout")

    # ------------------------------------------------------------------ the other parts

    def _pump(self) -> None:
        raise NotImplementedError  # ClientConnection

    def _next_cycle(self) -> None:
        raise NotImplementedError  # ClientConnection

    def _upstream_failure(self, status: int, reason: str) -> None:
        raise NotImplementedError  # BackendExchange

    def _release_upstream(self) -> None:
        raise NotImplementedError  # ClientConnection
