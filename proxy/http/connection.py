"""One client connection: h11 judges the client's requests; backends get a strict reader.

The hot path is callbacks only: bytes arrive in `data_received`, h11 turns them
into events, events are written to the other side. Heads going out (requests
to backends, responses to clients) are written here by hand from headers that
were already validated on the way in; h11 is only ever fed, never asked to send,
and a fresh h11 connection takes each new request. A task exists only while a
new backend connection is being opened. Backpressure: when one side's transport
asks us to pause writing, we pause reading on the other side.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h11
import h11._readers

from lb.dial import MAX_ATTEMPTS, open_connection
from lb.errors import UpstreamConnectError
from lb.pool import Backend, BackendPool
from proxy.http.answers import head_bytes, plain, route_answer
from proxy.http.errors import BadRequest
from proxy.http.headers import check_content_length, head_end, precheck_head, response_headers
from proxy.http.response import END, MAX_HEAD, Head, ResponseError
from proxy.http.routing import Route, normalize_host
from proxy.http.upstream import UpstreamConnection

if TYPE_CHECKING:
    from proxy.http.frontend import HttpFrontend

log = logging.getLogger("sekisho.http")

# RFC 9112 7.1.1: h11 reads a request chunk extension as `;.*`, bare CR and NUL included.
# Make h11 (still the judge) stricter: such a chunk line is a 400, as in HAProxy and nginx.
h11._readers.chunk_header_re = re.compile(
    rb"(?P<chunk_size>[0-9A-Fa-f]{1,20})(?P<chunk_ext>;[^\r\n\x00]*)?[ \t]*\r\n"
)

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
# Reasons to stop reading from the client (bits).
_HELD = 1  # a request is being dispatched / waits for its backend or its response
_BACKPRESSURE = 2  # the backend cannot take more right now

# What the connection's one timer watches (see _arm).
_T_NONE = 0
_T_HEAD = 1  # timeouts.header: a request head must complete
_T_IDLE = 2  # timeouts.idle: between requests
_RETIRE_GRACE = 1.0  # seconds an idle connection of a retired frontend stays open
_T_RESP = 3  # timeouts.response: since the backend last said something
_T_BODY = 4  # timeouts.header again: gaps in a request body (slow-POST defence)

_Data = h11.Data
_EOM = h11.EndOfMessage
_EOM_EVENT = h11.EndOfMessage()  # immutable: stands for the end of a bodiless request
_ONLY_END: tuple[h11.Event, ...] = (_EOM_EVENT,)  # what a bodiless request has after its head
_Request = h11.Request
_NEED_DATA = h11.NEED_DATA
_PAUSED = h11.PAUSED
_DONE = h11.DONE
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"


class ClientConnection(asyncio.Protocol):
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
        # request head gate: bytes held back from h11 until the head is complete and checked
        self.gate_buf = bytearray()
        self.gate: bytearray | None = self.gate_buf
        self.head: bytes = b""
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when self.timer fires
        self.tmode = _T_NONE
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

    # ------------------------------------------------------------------ transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if transport.get_extra_info("sslcontext") is not None:
            self.proto = b"https"
        fe = self.fe
        self.allowed, self.trusted = fe.classify(self.peer)
        fe.conn_opened(self)
        self._arm(_T_HEAD, self.loop.time() + self.timeouts.header)

    def data_received(self, data: bytes) -> None:
        fe = self.fe
        fe.counters.bytes_in += len(data)
        if self.tunnel:
            up = self.up
            if up is not None and up.transport is not None:
                up.transport.write(data)
            return
        gate = self.gate
        if gate is not None:
            if self.idle:  # first bytes of a kept-alive connection's next request
                self.idle = False
                self._arm(_T_HEAD, self.loop.time() + self.timeouts.header)
            if gate:
                gate += data
                buf: bytes | bytearray = gate
            else:
                if data[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request
                    data = data.lstrip(b"\r\n")
                    if not data:
                        return
                buf = data
            end = head_end(buf)
            if end == -1:
                if len(buf) > self.head_limit:
                    self._refuse(431, "request head too large")
                elif buf is data:
                    gate += data
                return
            if end == -2:
                self._refuse(400, "bare LF in request head")
                return
            if end > self.head_limit:
                self._refuse(431, "request head too large")
                return
            head = data if buf is data and end == len(data) else bytes(buf[:end])
            reason = precheck_head(head)
            if reason is not None:
                self._refuse(400, reason)
                return
            self.head = head
            self.gate = None
            self.fed = len(buf) - end
            if buf is gate:
                self.h11.receive_data(bytes(gate))
                gate.clear()
            else:
                self.h11.receive_data(data)
        else:
            self.fed += len(data)
            self.h11.receive_data(data)
        if not self.pending:
            self._pump()
        elif not self.closed:
            # Held (waiting for a backend or a response): keep what came, read no more.
            # Pausing only when bytes actually arrive saves two syscalls per request.
            self._pause(_HELD)

    def eof_received(self) -> bool:
        if self.tunnel:
            up = self.up
            if up is not None and up.transport is not None and up.transport.can_write_eof():
                up.transport.write_eof()
                return True
            self._close()
            return False
        if self.gate is not None:
            if self.gate:
                self._refuse(400, "incomplete request head")
            self._close()
            return False
        self.h11.receive_data(b"")
        if not self.pending:
            self._pump()
        # Keep the transport for the response; half-closed clients still get their answer
        # (TLS has no half-close).
        return not self.closed and self.proto == b"http"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        if self.connect_task is not None:
            self.connect_task.cancel()
        up = self.up
        if up is not None:
            self.up = None
            up.owner = None
            if self.response_done:
                up.close()
            else:
                up.abort()
            self._drop_backend()
        self.fe.conn_closed(self)
        on_close = self.on_close
        assert callable(on_close)
        on_close()

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()
            self.up_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.up
        if up is not None and up.transport is not None and not up.closed:
            up.transport.resume_reading()
            self.up_paused = False

    # ------------------------------------------------------------------ helpers

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
        self.tmode = _T_NONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)
            n = len(data)
            self.sent += n
            self.fe.counters.bytes_out += n

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timers()
            if self.transport is not None:
                self.transport.close()

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
        if status in {400, 431}:
            self.fe.counters.bad_requests += 1
        log.debug("%s: %d %s", self.peer, status, reason)
        self._local_done(status, plain(status), close=True)

    def _local_done(self, status: int, data: bytes, close: bool) -> None:
        self._write(data)
        self.status = status
        self._log(status)
        if close:
            self._close()

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
        if mode == _T_NONE or self.closed:
            return
        deadline = self.last_up + self.timeouts.response if mode == _T_RESP else self.deadline
        if deadline - self.loop.time() > 0.001:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline
            return
        self.tmode = _T_NONE
        if mode == _T_HEAD:
            self._head_timeout()
        elif mode == _T_IDLE:
            self._idle_timeout()
        elif mode == _T_BODY:
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
        if self.read_paused & _BACKPRESSURE:  # the silence is ours: the backend is slow to read
            self._arm(_T_BODY, self.loop.time() + self.timeouts.header)
        elif self.response_started:
            self._abort()
        else:
            self._refuse(408, "request body timeout")

    def _response_timeout(self) -> None:
        if self.closed or self.response_done:
            return
        self._upstream_failure(504, "backend response timeout")

    # ------------------------------------------------------------------ client side

    def _pump(self) -> None:
        conn = self.h11
        while not self.pending and not self.closed:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as exc:
                # The gate already enforced the head size: anything else h11 refuses is a 400.
                self._refuse(400, str(exc))
                return
            t = type(ev)
            if t is _Data:
                self.data_seen += len(ev.data)  # type: ignore[union-attr]
                if self.chunked and ev.chunk_start and not self._framing_ok(False):  # type: ignore[union-attr]
                    return
                self._on_body(ev.data)  # type: ignore[union-attr]
            elif t is _Request:
                self._on_request(ev)  # type: ignore[arg-type]
            elif t is _EOM:
                if self.chunked and not self._framing_ok(True):
                    return
                self._on_body_end()
            elif ev is _NEED_DATA or ev is _PAUSED:
                return
            elif t is h11.ConnectionClosed:
                if self.up is None and not self.pending:
                    self._close()
                return

    def _on_request(self, req: h11.Request) -> None:
        fe = self.fe
        loop = self.loop
        self.t0 = loop.time()
        self.tmode = _T_NONE
        self.req = req
        self.sent = 0
        self.body_in = 0
        self.data_seen = 0
        self.chunks = 0
        self.status = 0
        self.response_started = self.response_done = self.request_done = False
        self.backend = None
        self.retried = False
        self.upgrade = None
        self.resp_chunked = self.resp_close = False
        host = b""
        cl = te = False
        upgrade = None
        conn_upgrade = False
        keep_alive = self.http11 = req.http_version == b"1.1"
        for _, name, value in req.headers._full_items:
            if name == b"host":
                host = value
            elif name == b"content-length":
                cl = True
            elif name == b"transfer-encoding":
                te = True
            elif name == b"upgrade":
                upgrade = value
            elif name == b"connection":
                tokens = value.lower()
                if b"upgrade" in tokens:
                    conn_upgrade = True
                if b"close" in tokens and any(t.strip() == b"close" for t in tokens.split(b",")):
                    keep_alive = False
        self.keep_alive = keep_alive  # h11's rule: HTTP/1.1 and no `Connection: close`
        target = req.target
        try:
            if cl and te:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            if te and req.http_version != b"1.1":
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            if cl:
                reason = check_content_length(self.head)
                if reason is not None:
                    raise BadRequest(reason)
            if target[:1] != b"/":
                target = self._absolute_form(target, host)
        except BadRequest as exc:
            self.host = normalize_host(host)
            self._refuse(exc.status, str(exc))
            return
        self.chunked = te
        hosts = fe.host_cache
        hostname = hosts.get(host)
        if hostname is None:
            if len(hosts) > 1024:
                hosts.clear()
            hostname = hosts[host] = normalize_host(host)
        self.host = hostname
        self.route = route = fe.routes.match(hostname, target)
        if not self.allowed:
            fe.counters.denied += 1
            self._refuse(403, "client not allowed")
            return
        kind = route.kind
        if kind != "pool":
            self._local_route(route, target)
            return
        if self.max_body and cl:
            length = int(req.headers._full_items[self._index_of(req, b"content-length")][2])
            if length > self.max_body:
                self._refuse(413, "request body too large")
                return
        if upgrade is not None and conn_upgrade:
            self.upgrade = upgrade
        assert route.pool is not None
        try:
            pool: BackendPool | None = fe.pools[route.pool]
        except KeyError:
            pool = None
        self.pool = pool
        self.up_head = fe.policy.request_head(
            req.method,
            route.upstream_target(target),
            req.headers._full_items,
            peer=self.peer,
            proto=self.proto,
            trusted=self.trusted,
            chunked=te,
            upgrade=self.upgrade,
        )
        self.pending = True  # (reading pauses if more bytes come while held)
        # Judge whatever part of the body came with the head before any backend hears of it.
        conn = self.h11
        if not cl and not te:
            # No body by RFC 9112 6.3 (and h11's framing): the request ended with its head;
            # what follows in h11's buffer is the next request, judged by the next h11.
            self.early = _ONLY_END
        else:
            early: list[h11.Event] = []
            self.early = early
            while True:
                try:
                    ev = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    self._refuse(400, str(exc))
                    return
                if ev is _NEED_DATA or ev is _PAUSED:
                    break
                if isinstance(ev, _Data):
                    self.data_seen += len(ev.data)
                    if self.chunked and ev.chunk_start and not self._framing_ok(False):
                        return
                elif type(ev) is _EOM:
                    if self.chunked and not self._framing_ok(True):
                        return
                    early.append(ev)
                    break
                early.append(ev)  # type: ignore[arg-type]
        if pool is None:
            self._upstream_failure(503, f"no pool {route.pool}")
            return
        backend = pool.pick(self.peer)
        if backend is None:
            self._upstream_failure(503, f"pool {pool.name}: no server is up")
            return
        if pool.config.proxy_protocol is None:
            up = fe.upstreams.acquire(backend, self.t0)
            if up is not None:
                pool.take(backend)
                fe.counters.upstream_reused += 1
                self._attach(up, pool, backend, reused=True)
                return
        self.connect_task = loop.create_task(self._connect(pool, backend))

    def _gone(self) -> bool:
        return self.closed

    def _framing_ok(self, end: bool) -> bool:
        """h11 reads chunk extensions of any length; we allow 256 bytes of framing per chunk."""
        if not end:
            self.chunks += 1
        overhead = self.fed - len(self.h11._receive_buffer) - self.data_seen
        allowed = 256 * (self.chunks + 1) + (self.head_limit if end else 0)
        if overhead <= allowed:
            return True
        if self.response_started:
            self._abort()
        else:
            self._refuse(400, "chunk framing too large (chunk extensions)")
        return False

    @staticmethod
    def _index_of(req: h11.Request, name: bytes) -> int:
        for i, item in enumerate(req.headers._full_items):
            if item[1] == name:
                return i
        return -1

    def _absolute_form(self, target: bytes, host: bytes) -> bytes:
        """absolute-form (`http://host/path`): route by its authority, which must agree with Host."""
        if target == b"*":
            return target
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise BadRequest("unsupported request target")
        slash = rest.find(b"/")
        authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        if normalize_host(authority) != normalize_host(host):
            raise BadRequest("request target and Host disagree")
        return path

    def _local_route(self, route: Route, target: bytes) -> None:
        """Fixed-status and redirect routes, answered here."""
        conn = self.h11
        ended = conn.their_state is _DONE
        if not ended:
            try:  # a bodiless request's end is already buffered
                ev = conn.next_event()
            except h11.RemoteProtocolError:
                ev = None
            # If not, we will not read a body nobody asked for: answer and close.
            ended = type(ev) is _EOM
        self.request_done = ended
        close = not ended or not self.keep_alive or self.fe.retired
        self.resp_close = close
        with_body = self.req is None or self.req.method != b"HEAD"
        self.response_done = True
        self._local_done(route.status, route_answer(route, target, with_body, close), close=False)
        self._next_cycle()

    # ------------------------------------------------------------------ backend connection

    async def _connect(self, pool: BackendPool, backend: Backend | None) -> None:
        fe = self.fe
        tried: list[Backend] = []
        timeout = fe.config.timeouts.connect
        try:
            for _ in range(MAX_ATTEMPTS):
                if backend is None:
                    break
                pool.take(backend)
                up = UpstreamConnection(backend, fe.upstreams, max(MAX_HEAD, self.head_limit))
                try:
                    await open_connection(backend, lambda up=up: up, timeout)  # type: ignore[misc]
                except UpstreamConnectError as exc:
                    pool.drop(backend)
                    pool.connect_failed(backend)
                    fe.counters.upstream_connect_errors += 1
                    log.info("upstream connect failed: %s", exc)
                    tried.append(backend)
                    backend = pool.pick(self.peer, exclude=tried)
                    continue
                except BaseException:
                    pool.drop(backend)
                    raise
                fe.counters.upstream_opened += 1
                if self.closed:
                    pool.drop(backend)
                    if pool.proxy_protocol is None:
                        fe.upstreams.release(up, self.loop.time())
                    else:
                        up.close()
                    return
                if pool.proxy_protocol is not None and up.transport is not None:
                    up.transport.write(fe.proxy_header(pool.proxy_protocol, self, up))
                self._attach(up, pool, backend, reused=False)
                return
        except asyncio.CancelledError:
            return
        finally:
            self.connect_task = None
        if tried:
            self._upstream_failure(502, "no backend could be reached")
        else:
            self._upstream_failure(503, f"pool {pool.name}: no server is up")

    def _attach(self, up: UpstreamConnection, pool: BackendPool, backend: Backend, reused: bool) -> None:
        self.up = up
        self.pool = pool
        self.backend = backend
        self.reused = reused
        up.owner = self
        up.requests += 1
        req = self.req
        assert req is not None and up.transport is not None
        up.sent_all = False
        up.reader.start(req.method, self.upgrade is not None)
        up.transport.write(self.up_head)
        self.last_up = self.loop.time()
        if self.write_paused:
            up.transport.pause_reading()
            self.up_paused = True
        if self.request_done:  # a retry: the whole request was read already
            self._request_end(up)
            return
        early = self.early
        if early is _ONLY_END:
            self.early = ()
            self._on_body_end()
            return
        if early:
            self.early = ()
            ended = False
            for ev in early:
                if isinstance(ev, _Data):
                    self._on_body(ev.data)
                else:
                    ended = True
                    self._on_body_end()
                if self._gone():
                    return
            if ended:
                return
        self._arm(_T_BODY, self.loop.time() + self.timeouts.header)
        self.pending = False
        self._resume(_HELD)
        self._pump()

    def _on_body(self, data: bytes) -> None:
        n = len(data)
        self.body_in += n
        if self.tmode == _T_BODY:  # the timer re-arms itself lazily from the deadline
            self.deadline = self.loop.time() + self.timeouts.header
        if self.max_body and self.body_in > self.max_body:
            if not self.response_started:
                self._refuse(413, "request body too large")
            else:
                self._abort()
            return
        up = self.up
        if up is None or up.closed or up.transport is None:
            return  # local answer already given; the connection closes
        if not self.chunked:
            up.transport.write(data)
        elif n:
            up.transport.writelines((b"%x\r\n" % n, data, _CRLF))

    def _on_body_end(self) -> None:
        self.request_done = True
        up = self.up
        if up is None:
            return
        self._request_end(up)

    def _request_end(self, up: UpstreamConnection) -> None:
        if not up.closed and up.transport is not None:
            if self.chunked:
                up.transport.write(_LAST_CHUNK)
            up.sent_all = True
        # Hold further client bytes (pipelining) until this response is done.
        self.pending = True
        if not self.response_done:
            self.last_up = now = self.loop.time()
            self._arm(_T_RESP, now + self.timeouts.response)
        else:
            self._finish()

    # ------------------------------------------------------------------ backend side

    def upstream_data(self, data: bytes) -> None:
        if self.tunnel:
            self._write(data)
            return
        up = self.up
        assert up is not None
        self.last_up = self.loop.time()
        up.reader.receive_data(data)
        self._pump_upstream(up)

    def _pump_upstream(self, up: UpstreamConnection) -> None:
        # Everything one batch of backend bytes produces goes out in one write; a
        # response that turns out broken within the batch never reaches the client.
        reader = up.reader
        out: list[bytes] = []
        while True:
            try:
                ev = reader.next_event()
            except ResponseError as exc:
                self._upstream_failure(502, f"bad response from backend: {exc}")
                return
            t = type(ev)
            if t is bytes:
                if self.resp_chunked:
                    out.append(b"%x\r\n" % len(ev))  # type: ignore[arg-type]
                    out.append(ev)  # type: ignore[arg-type]
                    out.append(_CRLF)
                else:
                    out.append(ev)  # type: ignore[arg-type]
            elif t is Head:
                if ev.status < 200:  # type: ignore[union-attr]
                    if out:
                        self._flush(out)
                        out = []
                    self._on_informational(ev)  # type: ignore[arg-type]
                    if self.tunnel or self.closed or self.up is not up:
                        return
                    continue
                out.append(self._on_response(ev))  # type: ignore[arg-type]
            elif ev is END:
                if self.resp_chunked:
                    out.append(_LAST_CHUNK)
                self._flush(out)
                self.response_done = True
                # (If the backend answered before the request body was complete, the
                # client connection cannot be reused: _next_cycle closes it.)
                self._finish()
                return
            else:  # NEED_DATA
                if out:
                    self._flush(out)
                return

    def _flush(self, out: list[bytes]) -> None:
        self.response_started = True
        if not self.closed and self.transport is not None:
            self.transport.writelines(out)
            n = 0
            for b in out:
                n += len(b)
            self.sent += n
            self.fe.counters.bytes_out += n

    def _on_response(self, head: Head) -> bytes:
        """The client's response head: hop-by-hop fields removed, framing as h11 would set it."""
        fields = head.fields
        if fields is None:  # `Connection` names fields to remove
            fields = b"".join([n + b": " + v + b"\r\n" for n, v in response_headers(head.headers)])
        status = head.status
        close = not self.keep_alive or self.fe.retired
        extra = b""
        if not head.content_length and status not in {204, 304}:
            # Chunked, or delimited by the backend's close (judged as for GET when this is HEAD).
            if self.http11:
                extra = b"Transfer-Encoding: chunked\r\n"  # as h11 wrote it
                self.resp_chunked = self.req is not None and self.req.method != b"HEAD"
            elif self.req is None or self.req.method != b"HEAD":
                close = True
        if close:
            self.resp_close = True
            extra += b"Connection: close\r\n"
        self.status = status
        return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, head.reason, fields, extra)

    def _on_informational(self, info: Head) -> None:
        if info.status == 101:  # the reader refuses a 101 nobody asked for
            headers = response_headers(info.headers, upgrade=True)
            self.status = 101
            self.response_started = True
            self._write(head_bytes(101, info.reason, headers))
            self._start_tunnel()
            return
        if self.http11:  # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client
            self._write(head_bytes(info.status, info.reason, response_headers(info.headers)))

    def _start_tunnel(self) -> None:
        up = self.up
        assert up is not None and up.transport is not None
        self.tunnel = True
        self.tmode = _T_NONE
        self._log(101)
        client_rest, _ = self.h11.trailing_data
        up_rest = up.reader.trailing
        if up_rest:
            self._write(up_rest)
        if client_rest:
            up.transport.write(client_rest)
        self.pending = False
        self.read_paused = 0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def upstream_eof(self) -> None:
        if self.tunnel:
            if self.transport is not None and self.transport.can_write_eof() and not self.closed:
                self.transport.write_eof()
            return
        up = self.up
        if up is None:
            return
        up.reader.receive_data(b"")
        self._pump_upstream(up)

    def upstream_lost(self, exc: Exception | None) -> None:
        up = self.up
        if up is None:
            return
        if self.tunnel:
            self.up = None
            self._drop_backend()
            self._close()
            return
        if not self.response_done:
            # A closed connection completes a close-delimited body; anything else is a failure.
            up.reader.receive_data(b"")
            self._pump_upstream(up)
            if not self.response_done and self.up is up:
                self._upstream_failure(502, f"backend connection lost: {exc or 'closed'}")

    def upstream_pause_writing(self) -> None:
        self._pause(_BACKPRESSURE)

    def upstream_resume_writing(self) -> None:
        self._resume(_BACKPRESSURE)

    # ------------------------------------------------------------------ endings

    def _upstream_failure(self, status: int, reason: str) -> None:
        """The backend failed us: a status if nothing was sent yet, else abort the client."""
        up = self.up
        self.up = None
        pool = self.pool
        retry = (
            up is not None
            and self.reused
            and not self.retried
            and not self.response_started
            and self.body_in == 0
            and status == 502
            and self.req is not None
            and self.req.method in _IDEMPOTENT
            and pool is not None
            and not self.closed
        )
        if up is not None:
            up.owner = None
            up.abort()
        self._drop_backend()
        self.tmode = _T_NONE
        if self.closed:
            return
        if retry:
            # A kept-alive connection the server closed as we reused it: try a fresh one.
            assert pool is not None
            self.retried = True
            self.pending = True
            self.connect_task = self.loop.create_task(self._connect(pool, pool.pick(self.peer)))
            return
        if status in (502, 504):
            self.fe.counters.upstream_errors += 1
        log.info("%s %s: %d %s", self.peer, self.req.target if self.req else b"", status, reason)
        if self.response_started:
            self._log(self.status or status)
            self._abort()
        else:
            self._local_done(status, plain(status), close=True)

    def _drop_backend(self) -> None:
        backend, pool = self.backend, self.pool
        if backend is not None and pool is not None:
            self.backend = None
            pool.drop(backend)
            self.backend = backend  # kept for the access log; dropped exactly once
            self.pool = None

    def _finish(self) -> None:
        """The response is complete: settle the backend connection, then the client one."""
        self.tmode = _T_NONE
        up = self.up
        self.up = None
        if up is not None:
            if self.up_paused:  # the backend connection outlives this client's backpressure
                self.up_paused = False
                if up.transport is not None and not up.closed:
                    up.transport.resume_reading()
            pool = self.pool
            if up.sent_all and up.reader.reusable and pool is not None and pool.config.proxy_protocol is None:
                self.fe.upstreams.release(up, self.loop.time())
            else:
                up.owner = None
                up.close()
        self._drop_backend()
        self._log(self.status)
        if self.closed:
            return
        self._next_cycle()

    def _next_cycle(self) -> None:
        if not self.request_done or not self.keep_alive or self.resp_close or self.fe.retired:
            self._close()
            return
        # h11 only reads here; a fresh one per request costs less than driving its sending side.
        rest, closed = self.h11.trailing_data
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.head_limit)
        self.req = None
        self.route = None
        self.t0 = 0.0
        self.gate = self.gate_buf  # (empty: it was cleared when the last head was taken)
        self.pending = False
        self.idle = True
        self._arm(_T_IDLE, self.loop.time() + self.timeouts.idle)
        self._resume(_HELD)
        if closed and not rest:
            self._close()
        elif rest:
            self.data_received(rest)
            self.fe.counters.bytes_in -= len(rest)
            if closed and not self.closed:
                self.eof_received()

    def retire(self) -> None:
        """Reload or shutdown: the current response says `Connection: close`. An idle
        keep-alive connection is not cut at once, since the client may have a request on
        its way (HAProxy's idle-close-on-response): it gets a short grace, served with
        `Connection: close` if a request comes, closed if not."""
        if self.gate is not None and not self.gate and self.req is None:
            self._arm(_T_IDLE, min(self.deadline, self.loop.time() + _RETIRE_GRACE))
