"""One client connection: h11 judges the client's requests; backends get a strict reader.

The hot path is callbacks only: bytes arrive in `data_received`, h11 turns them
into events, events are written to the other side. Heads going out (requests
to backends, responses to clients) are written here by hand from headers that
were already validated on the way in; h11 is only ever fed, never asked to send,
and a fresh h11 connection takes each new request. A task exists only while a
new backend connection is being opened. Backpressure: when one side's transport
asks us to pause writing, we pause reading on the other side.

The class is in three layers: `ConnectionBase` (proxy/http/base.py: state, writes,
answers, the one timer), `BackendExchange` (proxy/http/exchange.py: the backend's
side), and `ClientConnection` here: the transport callbacks and the client's side,
from the head gate through h11 to the backend request head.
"""

from __future__ import annotations

import asyncio
import re

import h11
import h11._readers

from lb.pool import BackendPool
from proxy.http.answers import route_answer
from proxy.http.base import HELD, ONLY_END, T_HEAD, T_IDLE, T_NONE
from proxy.http.errors import BadRequest
from proxy.http.exchange import BackendExchange
from proxy.http.headers import check_content_length, head_end, precheck_head
from proxy.http.routing import Route, normalize_host
from proxy.http.target import NEEDS_WORK, normalize_target

# RFC 9112 7.1.1: h11 reads a request chunk extension as `;.*`, bare CR and NUL included.
# Make h11 (still the judge) stricter: such a chunk line is a 400, as in HAProxy and nginx.
h11._readers.chunk_header_re = re.compile(
    rb"(?P<chunk_size>[0-9A-Fa-f]{1,20})(?P<chunk_ext>;[^\r\n\x00]*)?[ \t]*\r\n"
)

_RETIRE_GRACE = 1.0  # seconds an idle connection of a retired frontend stays open
# The request fields _on_request looks at.
_INTAKE = frozenset((b"host", b"content-length", b"transfer-encoding", b"upgrade", b"connection"))

_NEEDS_WORK = NEEDS_WORK.search
_Data = h11.Data
_EOM = h11.EndOfMessage
_Request = h11.Request
_NEED_DATA = h11.NEED_DATA
_PAUSED = h11.PAUSED
_DONE = h11.DONE


class ClientConnection(BackendExchange):
    """One client connection: the transport callbacks and the client's side of each exchange."""

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
        self._arm(T_HEAD, self.loop.time() + self.timeouts.header)

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
                self._arm(T_HEAD, self.loop.time() + self.timeouts.header)
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
                    self._head_too_large(buf)
                elif buf is data:
                    gate += data
                return
            if end == -2:
                self._refuse(400, "bare LF in request head")
                return
            if end > self.head_limit:
                self._head_too_large(buf)
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
            self._pause(HELD)

    def _head_too_large(self, buf: bytes | bytearray) -> None:
        """414 when the request line alone passes the limit (RFC 9112 3), else 431."""
        line_end = buf.find(b"\r\n", 0, self.head_limit + 2)
        if line_end < 0 or line_end > self.head_limit:
            self._refuse(414, "request target too long")
        else:
            self._refuse(431, "request head too large")

    def eof_received(self) -> bool:
        self.client_eof = True
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
        self._release_upstream()
        self.fe.conn_closed(self)
        on_close = self.on_close
        assert callable(on_close)
        on_close()

    def _release_upstream(self) -> None:
        """Let go of the backend side: a dial under way, the backend connection."""
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
        self.tmode = T_NONE
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
            if name not in _INTAKE:
                continue
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
            if _NEEDS_WORK(target) is not None:
                target = normalize_target(target)  # route on what the backend will see
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
        if upgrade is not None and conn_upgrade and self.http11:
            # An allow-list: a tunnel is traffic no route, rule or log sees again.
            self.upgrade = route.allowed_upgrade(upgrade)
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
            self.early = ONLY_END
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

    def _next_cycle(self) -> None:
        if not self.request_done or not self.keep_alive or self.resp_close or self.fe.retired:
            self._close(linger=self._input_may_follow())
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
        self._arm(T_IDLE, self.loop.time() + self.timeouts.idle)
        self._resume(HELD)
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
            self._arm(T_IDLE, min(self.deadline, self.loop.time() + _RETIRE_GRACE))
