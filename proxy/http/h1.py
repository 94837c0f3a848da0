"""One HTTP/1.1 client connection: the I/O around one `Exchange` at a time.

The hot path is callbacks only. Bytes arrive in `data_received`; a gate holds
them until a request head is complete. A bodiless request of the common shape
is then taken in one pass by the fast path (proxy/http/fastpath.py, proven a
subset of what follows); any other head is pre-checked (size, bare LF, the
checks where h11 is lax) and judged by h11, which also frames request bodies.
Either way the exchange (proxy/http/exchange.py) decides what to do with the
request. This module does what the exchange says: it dials or reuses a backend
connection (the only task, and only while a new connection is opened), writes,
closes, lingers, keeps the one timer and the backpressure (proxy/http/flow.py),
and turns network errors into events.
Pipelined requests wait in the kernel until the response before them is done; an
h11 connection is made only for a request the fast path declines, a fresh one per
such request (cheaper than driving h11's sending side, which is never used: heads
are written here from validated fields).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h11

from proxy.http.answers import head_bytes
from proxy.http.errors import BadRequest
from proxy.http.exchange import ABORT, RETRY, Answer, Exchange, Forward, Outcome
from proxy.http.fastpath import RequestHead, recognise
from proxy.http.flow import BACKPRESSURE, HELD, FlowControl
from proxy.http.h11glue import buffered, header_triples
from proxy.http.headers import check_content_length, head_end, precheck_head, response_headers
from proxy.http.leg import BackendLeg
from proxy.http.response import END, Head, ResponseError
from proxy.http.routing import normalize_host
from proxy.http.upstream import UpstreamConnection
from proxy.linger import linger_close

if TYPE_CHECKING:
    from proxy.http.frontend import HttpFrontend

log = logging.getLogger("sekisho.http")

_RETIRE_GRACE = 1.0  # seconds an idle connection of a retired frontend stays open
# The request fields `_on_request` looks at.
_INTAKE = frozenset((b"host", b"content-length", b"transfer-encoding", b"upgrade", b"connection"))
_CRLF = b"\r\n"

# What the connection itself waits for (the exchange has its own deadline).
C_NONE = 0
C_HEAD = 1  # timeouts.header: a request head must complete (408)
C_IDLE = 2  # timeouts.idle: between requests

_EARLY_END: tuple[h11.Event, ...] = (h11.EndOfMessage(),)  # a bodiless request, complete with its head

_Data = h11.Data
_EOM = h11.EndOfMessage
_Request = h11.Request
_NEED_DATA = h11.NEED_DATA
_PAUSED = h11.PAUSED


class H1Connection(asyncio.Protocol):
    """One client connection speaking HTTP/1.x."""

    def __init__(self, frontend: HttpFrontend, on_close: object) -> None:
        self.fe = frontend
        self.site = frontend.site
        self.on_close = on_close
        self.loop = frontend.loop
        self.transport: asyncio.Transport | None = None
        self.flow = FlowControl()
        self.head_limit = self.site.head_limit
        self.timeouts = self.site.timeouts
        # h11 for the current request when the fast path declined it, else None (made lazily).
        self.h11: h11.Connection | None = None
        self.held = b""  # bytes after a fast-path request's head: the next requests
        self.peer = ""
        self.proto = b"http"
        self.allowed = True
        self.trusted = False
        self.closed = False
        self.client_eof = False  # the client shut its side: nothing more will come
        # The request head gate: bytes held back from h11 until the head is complete and checked.
        self.gate_buf = bytearray()
        self.gate: bytearray | None = self.gate_buf
        self.head = b""
        self.fed = 0  # bytes given to h11 after the current request head
        self.data_seen = 0  # body bytes h11 has parsed of the current request
        self.chunks = 0
        self.idle = False  # between requests of a kept-alive connection
        # Prior-knowledge HTTP/2 may start this connection (`h2c = true`, plain listeners).
        self.h2c_possible = self.site.config.h2c
        self.pending = False  # h11's events wait: a backend is being found, or a response runs
        self.early: Sequence[h11.Event] = ()  # the body parsed before the backend was attached
        self.tunnel = False
        self.tunnel_active = 0.0  # a tunnel's last bytes either way (its idle timeout)
        self.replaying = False  # _next_cycle is feeding pipelined bytes back in (see there)
        self.replay: tuple[bytes, bool] | None = None
        self.sent = 0  # response bytes written to the client for this request
        self.ex: Exchange | None = None
        self.req: RequestHead | None = None
        self.leg: BackendLeg | None = None  # the backend side of the current exchange
        # The one timer (see _arm).
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.waiting = C_NONE
        self.conn_deadline = math.inf

    # ------------------------------------------------------------------ transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        self.flow.attach(self.transport)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if transport.get_extra_info("sslcontext") is not None:
            self.proto = b"https"
        fe = self.fe
        self.allowed, self.trusted = fe.classify(self.peer)
        fe.conn_opened(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._become_h2(b"")
            return
        self._wait(C_HEAD, self.loop.time() + self.timeouts.header)

    def _become_h2(self, data: bytes) -> None:
        """The client speaks HTTP/2 (ALPN h2, or the h2c preface on a listener that takes
        it): hand the transport to an H2Connection, with what was read so far."""
        from proxy.http.h2 import H2Connection

        self._cancel_timer()
        self.closed = True  # (this object is done; the new one owns the transport)
        transport = self.transport
        assert transport is not None
        h2conn = H2Connection(self.fe, self.on_close)
        self.fe.conn_replaced(self, h2conn)
        h2conn.take_over(self, transport, data)

    def data_received(self, data: bytes) -> None:
        fe = self.fe
        fe.counters.bytes_in += len(data)
        if self.tunnel:
            self.tunnel_active = self.loop.time()
            up = self.leg.up if self.leg is not None else None
            if up is not None and up.transport is not None:
                up.transport.write(data)
            return
        gate = self.gate
        if gate is not None:
            now = self.loop.time()
            if self.idle:  # first bytes of a kept-alive connection's next request
                self.idle = False
                self._wait(C_HEAD, now + self.timeouts.header)
            if self.h2c_possible:
                self.h2c_possible = False
                if data[:14] == b"PRI * HTTP/2.0":  # RFC 9113 3.4: the preface starts so
                    self._become_h2(bytes(gate) + data)
                    return
            if gate:
                gate += data
                buf: bytes | bytearray = gate
            else:
                if data[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request
                    data = data.lstrip(b"\r\n")
                    if not data:
                        return
                fast = recognise(data)
                if fast is not None and fast.end <= self.head_limit and not self.closed:
                    self.gate = None
                    self.held = data[fast.end :]
                    self._on_fast(fast, now)
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
            if buf is gate:  # a head that came in pieces may still be the common shape
                fast = recognise(head)
                if fast is not None and not self.closed:
                    self.gate = None
                    self.held = bytes(gate[end:])
                    gate.clear()
                    self._on_fast(fast, now)
                    return
            reason = precheck_head(head)
            if reason is not None:
                self._refuse(400, reason)
                return
            self.head = head
            self.gate = None
            self.fed = len(buf) - end
            conn = self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.head_limit)
            if buf is gate:
                conn.receive_data(bytes(gate))
                gate.clear()
            else:
                conn.receive_data(data)
        elif self.h11 is None:  # the fast path took the request: what follows is the next one
            self.held += data
        else:
            self.fed += len(data)
            self.h11.receive_data(data)
        if not self.pending:
            self._pump()
        elif not self.closed:
            # Held (waiting for a backend or a response): keep what came, read no more.
            # Pausing only when bytes actually arrive saves two syscalls per request.
            self.flow.pause_reading(HELD)

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.tunnel:
            up = self.leg.up if self.leg is not None else None
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
        if self.h11 is not None:
            self.h11.receive_data(b"")
            if not self.pending:
                self._pump()
        # (A fast-path request is complete with its head: `_next_cycle` sees `client_eof`.)
        # Keep the transport for the response; half-closed clients still get their answer
        # (TLS has no half-close).
        return not self.closed and self.proto == b"http"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.flow.detach()
        self._cancel_timer()
        self._release_upstream()
        self.fe.conn_closed(self)
        on_close = self.on_close
        assert callable(on_close)
        on_close()

    def pause_writing(self) -> None:
        self.flow.client_pause_writing()

    def resume_writing(self) -> None:
        self.flow.client_resume_writing()

    # ------------------------------------------------------------------ the client's requests

    def _head_too_large(self, buf: bytes | bytearray) -> None:
        """414 when the request line alone passes the limit (RFC 9112 3), else 431."""
        line_end = buf.find(b"\r\n", 0, self.head_limit + 2)
        if line_end < 0 or line_end > self.head_limit:
            self._refuse(414, "request target too long")
        else:
            self._refuse(431, "request head too large")

    def _pump(self) -> None:
        conn = self.h11
        if conn is None:  # (a fast-path request: nothing for h11 to read)
            return
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
                chunk_start = ev.chunk_start  # type: ignore[union-attr]
                if chunk_start and self.ex is not None and self.ex.chunked and not self._framing_ok(False):
                    return
                self._on_body(ev.data)  # type: ignore[union-attr]
            elif t is _Request:
                self._on_request(ev)  # type: ignore[arg-type]
                if self.h11 is not conn:
                    # Answered here, and the connection went on to its next request (the
                    # rest was taken from this h11): this one has nothing more to say.
                    return
            elif t is _EOM:
                if self.ex is not None and self.ex.chunked and not self._framing_ok(True):
                    return
                self._on_body_end()
            elif ev is _NEED_DATA or ev is _PAUSED:
                return
            elif t is h11.ConnectionClosed:
                if self.leg is None and not self.pending:
                    self._close()
                return

    def _on_fast(self, req: RequestHead, now: float) -> None:
        """A request the fast path took: bodiless, complete with its head, in origin form,
        its framing and Host already judged (proxy/http/fastpath.py)."""
        self.waiting = C_NONE
        self.req = req
        self.sent = 0
        self.ex = ex = Exchange(self.site, now)
        decision = ex.start(
            req.method,
            req.target,
            http11=req.http_version == b"1.1",
            keep_alive=req.keep_alive,
            host=req.host,
            items=req.items,
            content_length=req.content_length,
            chunked=False,
            upgrade=None,
            peer=self.peer,
            proto=self.proto,
            allowed=self.allowed,
            trusted=self.trusted,
        )
        if type(decision) is Forward:
            self.pending = True  # (reading pauses if more bytes come while held)
            self.early = _EARLY_END
            self._forward(ex, decision)
        else:
            self._answered(decision, now)  # type: ignore[arg-type]

    def _answered(self, answer: Answer, now: float) -> None:
        """The exchange answered the request itself."""
        if answer.close:
            self._answer(answer)
        else:  # a fixed-status or redirect route on a connection that stays open
            self._write(answer.data)
            self._log(now)
            self._next_cycle(now)

    def _forward(self, ex: Exchange, decision: Forward) -> None:
        assert self.transport is not None
        self.leg = BackendLeg(self.fe, ex, self, self.transport, self.peer)
        self.leg.forward(decision.pool)

    def _on_request(self, req: h11.Request) -> None:
        """A request h11 judged (the fast path declined it)."""
        now = self.loop.time()
        self.waiting = C_NONE
        self.sent = 0
        self.data_seen = 0
        self.chunks = 0
        self.ex = ex = Exchange(self.site, now)
        items = header_triples(req)
        host = b""
        cl: bytes | None = None
        te = False
        upgrade = None
        conn_upgrade = False
        http11 = req.http_version == b"1.1"
        keep_alive = http11
        for _, name, value in items:
            if name not in _INTAKE:
                continue
            if name == b"host":
                host = value
            elif name == b"content-length":
                cl = value
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
        target = req.target
        self.req = RequestHead(req.method, target, req.http_version, items, host, None, keep_alive, 0)
        try:  # framing and the request-target's form: HTTP/1's own rules
            if cl is not None and te:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            if te and not http11:
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            if cl is not None:
                reason = check_content_length(self.head)
                if reason is not None:
                    raise BadRequest(reason)
            if target[:1] != b"/":
                target = _origin_form(target, host)
        except BadRequest as exc:
            ex.keep_alive = keep_alive
            ex.host = normalize_host(host)
            self._answer(ex.refuse(exc.status, str(exc)))
            return
        decision = ex.start(
            req.method,
            target,
            http11=http11,
            keep_alive=keep_alive,
            host=host,
            items=items,
            content_length=int(cl) if cl is not None else None,
            chunked=te,
            upgrade=upgrade if conn_upgrade else None,
            peer=self.peer,
            proto=self.proto,
            allowed=self.allowed,
            trusted=self.trusted,
        )
        if isinstance(decision, Answer):
            self._answered(decision, now)
            return
        self.pending = True  # (reading pauses if more bytes come while held)
        # Judge whatever part of the body came with the head before any backend hears of it.
        if cl is None and not te:
            # No body by RFC 9112 6.3 (and h11's framing): the request ended with its head;
            # what follows in h11's buffer is the next request, judged by the next h11.
            self.early = _EARLY_END
        else:
            early: list[h11.Event] = []
            self.early = early
            conn = self.h11
            assert conn is not None
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
                    if te and ev.chunk_start and not self._framing_ok(False):
                        return
                elif type(ev) is _EOM:
                    if te and not self._framing_ok(True):
                        return
                    early.append(ev)
                    break
                early.append(ev)  # type: ignore[arg-type]
        self._forward(ex, decision)

    def _framing_ok(self, end: bool) -> bool:
        """h11 reads chunk extensions of any length; we allow 256 bytes of framing per chunk."""
        if not end:
            self.chunks += 1
        assert self.h11 is not None  # (chunked requests are h11's)
        overhead = self.fed - buffered(self.h11) - self.data_seen
        allowed = 256 * (self.chunks + 1) + (self.head_limit if end else 0)
        if overhead <= allowed:
            return True
        if self.ex is not None and self.ex.response_started:
            self._abort()
        else:
            self._refuse(400, "chunk framing too large (chunk extensions)")
        return False

    def _on_body(self, data: bytes) -> None:
        ex = self.ex
        assert ex is not None
        out = ex.request_data(data, self.loop.time())
        if type(out) is tuple:
            up = self.leg.up if self.leg is not None else None
            if up is not None and not up.closed and up.transport is not None:
                up.transport.writelines(out)
        elif out is ABORT:
            self._abort()
        elif isinstance(out, Answer):
            self._answer(out)

    def _on_body_end(self) -> None:
        ex = self.ex
        assert ex is not None
        up = self.leg.up if self.leg is not None else None
        if up is None:  # (a local answer was given: the request is just read to its end)
            ex.request_done = True
            return
        self._request_end(ex, up)

    def _request_end(self, ex: Exchange, up: UpstreamConnection) -> None:
        now = self.loop.time()
        last = ex.request_end(now)
        if not up.closed and up.transport is not None:
            if last:
                up.transport.write(last)
            up.sent_all = True
        # Hold further client bytes (pipelining) until this response is done.
        self.pending = True
        if ex.response_done:
            self._finish(now)
        else:
            self._arm(ex.deadline)

    # ------------------------------------------------------------------ the leg's owner

    def gone(self) -> bool:
        return self.closed

    def unreachable(self, answer: Answer) -> None:
        self._answer(answer)

    def attached(self, up: UpstreamConnection) -> None:
        """A backend connection is ours: the request head goes, then what is read of the body."""
        ex = self.ex
        assert ex is not None and up.transport is not None
        up.transport.write(ex.up_head)
        self.flow.follow(up.transport)
        if ex.request_done:  # a retry: the whole request was read already
            self._request_end(ex, up)
            return
        early = self.early
        if early is _EARLY_END:
            self.early = ()
            self._request_end(ex, up)
            return
        if early:
            self.early = ()
            leg = self.leg
            for ev in early:
                if isinstance(ev, _Data):
                    self._on_body(ev.data)
                else:
                    self._request_end(ex, up)
                    return
                if self.closed or leg is None or leg.up is not up:
                    return
        self._arm(ex.deadline)
        self.pending = False
        self.flow.resume_reading(HELD)
        self._pump()

    # ------------------------------------------------------------------ the backend's answer

    def upstream_data(self, data: bytes) -> None:
        if self.tunnel:
            self.tunnel_active = self.loop.time()
            self._write(data)
            return
        leg = self.leg
        ex = self.ex
        assert leg is not None and leg.up is not None and ex is not None
        up = leg.up
        now = self.loop.time()
        ex.heard(now)
        up.reader.receive_data(data)
        self._pump_upstream(up, ex, now)

    def _pump_upstream(self, up: UpstreamConnection, ex: Exchange, now: float) -> None:
        # Everything one batch of backend bytes produces goes out in one write; a
        # response that turns out broken within the batch never reaches the client.
        reader = up.reader
        out: list[bytes] = []
        while True:
            try:
                ev = reader.next_event()
            except ResponseError as exc:
                self._upstream_failed(502, f"bad response from backend: {exc}")
                return
            t = type(ev)
            if t is bytes:
                if ex.resp_chunked:
                    out.append(b"%x\r\n" % len(ev))  # type: ignore[arg-type]
                    out.append(ev)  # type: ignore[arg-type]
                    out.append(_CRLF)
                else:
                    out.append(ev)  # type: ignore[arg-type]
            elif t is Head:
                if ev.status < 200:  # type: ignore[union-attr]
                    if out:
                        self._writelines(out)
                        out = []
                    self._on_informational(ev, ex)  # type: ignore[arg-type]
                    if self.tunnel or self.closed or self.leg is None or self.leg.up is not up:
                        return
                    continue
                out.append(ex.response_head(ev))  # type: ignore[arg-type]
            elif ev is END:
                last = ex.response_end()
                if last:
                    out.append(last)
                self._writelines(out)
                # (If the backend answered before the request body was complete, the
                # client connection cannot be reused: _next_cycle closes it.)
                self._finish(now)
                return
            else:  # NEED_DATA
                if out:
                    self._writelines(out)
                return

    def _on_informational(self, info: Head, ex: Exchange) -> None:
        if info.status == 101:  # the reader refuses a 101 nobody asked for
            ex.switched()
            self._write(head_bytes(101, info.reason, response_headers(info.headers, upgrade=True)))
            self._start_tunnel()
            return
        if ex.http11:  # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client
            self._write(head_bytes(info.status, info.reason, response_headers(info.headers)))

    def _start_tunnel(self) -> None:
        up = self.leg.up if self.leg is not None else None
        assert up is not None and up.transport is not None
        self.tunnel = True
        self.tunnel_active = self.loop.time()
        self.waiting = C_NONE
        self._log()
        client_rest = self.h11.trailing_data[0] if self.h11 is not None else self.held
        up_rest = up.reader.trailing
        if up_rest:
            self._write(up_rest)
        if client_rest:
            up.transport.write(client_rest)
        self.pending = False
        if not self.closed:
            self.flow.reading_resumed()
            self._rearm()  # the tunnel's idle timeout

    def upstream_eof(self) -> None:
        if self.tunnel:
            if self.transport is not None and self.transport.can_write_eof() and not self.closed:
                self.transport.write_eof()
            return
        up = self.leg.up if self.leg is not None else None
        if up is None or self.ex is None:
            return
        up.reader.receive_data(b"")
        self._pump_upstream(up, self.ex, self.loop.time())

    def upstream_lost(self, exc: Exception | None) -> None:
        leg = self.leg
        up = leg.up if leg is not None else None
        if leg is None or up is None:
            return
        if self.tunnel:
            leg.up = None
            leg.drop_backend()
            self._close()
            return
        ex = self.ex
        if ex is not None and not ex.response_done:
            # A closed connection completes a close-delimited body; anything else is a failure.
            up.reader.receive_data(b"")
            self._pump_upstream(up, ex, self.loop.time())
            if not ex.response_done and leg.up is up:
                self._upstream_failed(502, f"backend connection lost: {exc or 'closed'}")

    def upstream_pause_writing(self) -> None:
        self.flow.pause_reading(BACKPRESSURE)

    def upstream_resume_writing(self) -> None:
        self.flow.resume_reading(BACKPRESSURE)

    # ------------------------------------------------------------------ endings

    def _upstream_failed(self, status: int, reason: str) -> None:
        """The backend failed us: do what the exchange says (retry, answer, abort)."""
        leg = self.leg
        assert leg is not None
        self.flow.unfollow()
        outcome = leg.failed(status, reason, self.closed)
        if outcome is RETRY:
            self.pending = True  # (the leg dials again)
        else:
            self._act(outcome, reason)

    def _act(self, outcome: Outcome, reason: str) -> None:
        ex = self.ex
        assert ex is not None
        if outcome is ABORT:
            if not self.closed:
                log.info("%s %s: %s", self.peer, ex.target, reason)
                self._log()
                self._abort()
        elif isinstance(outcome, Answer):
            self._answer(outcome)

    def _finish(self, now: float) -> None:
        """The response is complete: settle the backend connection, then the client one."""
        self.flow.unfollow()
        if self.leg is not None:
            self.leg.settle()
        self._log(now)
        if self.closed:
            return
        self._next_cycle(now)

    def _next_cycle(self, now: float) -> None:
        ex = self.ex
        assert ex is not None
        if not ex.request_done or not ex.keep_alive or ex.resp_close or self.site.retired:
            self._close(linger=self._input_may_follow())
            return
        # h11 only reads here; a fresh one per request that needs it costs less than driving
        # its sending side. What follows the request goes through the gate again.
        conn = self.h11
        if conn is None:  # (the fast path's request: complete with its head)
            rest, closed = self.held, self.client_eof
            self.held = b""
        else:
            rest, closed = conn.trailing_data
            self.h11 = None
        self.req = None
        self.ex = None
        self.leg = None
        self.gate = self.gate_buf  # (empty: it was cleared when the last head was taken)
        self.pending = False
        self.idle = True
        self._wait(C_IDLE, now + self.timeouts.idle)
        self.flow.resume_reading(HELD)
        if closed and not rest:
            self._close()
        elif rest:
            # Pipelined requests that are answered at once would nest a call per request;
            # the outermost replay takes the next one instead (a loop, not a recursion).
            if self.replaying:
                self.replay = (rest, closed)
                return
            self.replaying = True
            try:
                while True:
                    self.data_received(rest)
                    self.fe.counters.bytes_in -= len(rest)
                    nxt = self.replay
                    if nxt is not None and not self.closed:
                        self.replay = None
                        rest, closed = nxt
                        continue
                    if closed and not self.closed:
                        self.eof_received()
                    break
            finally:
                self.replaying = False
                self.replay = None

    def retire(self) -> None:
        """Reload or shutdown: the current response says `Connection: close`. An idle
        keep-alive connection is not cut at once, since the client may have a request on
        its way (HAProxy's idle-close-on-response): it gets a short grace, served with
        `Connection: close` if a request comes, closed if not."""
        if self.gate is not None and not self.gate and self.req is None:
            self._wait(C_IDLE, min(self.conn_deadline, self.loop.time() + _RETIRE_GRACE))

    def _release_upstream(self) -> None:
        """Let go of the backend side: a dial under way, the backend connection."""
        if self.leg is not None:
            self.leg.release()

    # ------------------------------------------------------------------ writes and closes

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)
            n = len(data)
            self.sent += n
            self.fe.counters.bytes_out += n

    def _writelines(self, out: list[bytes]) -> None:
        """Write what one batch of backend bytes produced: the response has started."""
        if self.ex is not None:
            self.ex.response_started = True
        if not self.closed and self.transport is not None:
            self.transport.writelines(out)
            n = 0
            for b in out:
                n += len(b)
            self.sent += n
            self.fe.counters.bytes_out += n

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request we will not forward, then close."""
        if self.closed:
            return
        ex = self.ex
        if ex is None:  # refused before an exchange began (the head gate)
            ex = self.ex = Exchange(self.site, self.loop.time())
        self._answer(ex.refuse(status, reason))

    def _answer(self, answer: Answer) -> None:
        """Write an answer of our own; close after it when it says so."""
        if self.closed:
            return
        if answer.reason:  # (backend failures at info, the client's own at debug)
            level = logging.INFO if answer.status >= 500 else logging.DEBUG
            log.log(
                level,
                "%s %s: %d %s",
                self.peer,
                self.ex.target if self.ex else b"",
                answer.status,
                answer.reason,
            )
        self._write(answer.data)
        self._log()
        if answer.close:
            self._close(linger=self._input_may_follow())

    def _input_may_follow(self) -> bool:
        """The client may still be sending: this request was not read to its end,
        or more came behind it (pipelined, or sent as a reload retired us)."""
        ex = self.ex
        return (
            ex is None
            or not ex.request_done
            or bool(self.flow.read_paused)
            or bool(self.gate)
            or bool(self.held)
            or (self.h11 is not None and bool(buffered(self.h11)))
        )

    def _close(self, linger: bool = False) -> None:
        """Close once what was written is sent. `linger`: the client may still be
        sending (we answered before reading the whole request), and closing with its
        input unread would reset the connection under our answer (see proxy.linger)."""
        if not self.closed:
            self.closed = True
            self.flow.detach()
            self._cancel_timer()
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
        self.flow.detach()
        self._cancel_timer()

    def _log(self, now: float | None = None) -> None:
        fe = self.fe
        ex = self.ex
        if ex is None:
            return
        if now is None:
            now = self.loop.time()
        duration = now - ex.t0
        fe.counters.observe(ex.route.label, ex.status, duration)
        if fe.access_log is not None:
            req = self.req
            backend = ex.backend
            fe.access_log.log(
                client=self.peer,
                host=ex.host,
                method=req.method if req is not None else b"-",
                target=req.target if req is not None else b"",
                version=req.http_version if req is not None else b"1.1",
                status=ex.status,
                size=self.sent,
                upstream=backend.key if backend is not None else "-",
                duration=duration,
                headers=req.items if req is not None else None,
            )

    # ------------------------------------------------------------------ the one timer

    def _wait(self, what: int, deadline: float) -> None:
        self.waiting = what
        self.conn_deadline = deadline
        self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        """Make the connection's one timer fire no later than `deadline`.

        The timer is only moved when the new deadline is earlier than the one it is
        set for; when it fires early it re-arms itself for what is due next. A
        kept-alive connection thus costs no timer calls per request."""
        timer = self.timer
        if deadline == math.inf:
            return
        if timer is None or self.timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _cancel_timer(self) -> None:
        self.waiting = C_NONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        waiting = self.waiting
        if waiting != C_NONE and self.conn_deadline - now <= 0.001:
            self.waiting = C_NONE
            if waiting == C_HEAD:
                if self.gate:  # part of a head arrived: tell the client
                    self._refuse(408, "request head timeout")
                else:
                    self._close()
            elif self.gate is not None and not self.gate:  # C_IDLE, and still idle
                self._close()
            return
        ex = self.ex
        if self.tunnel:
            # Idle both ways for `timeouts.response`: closed, as nginx's proxy_read_timeout
            # closes a WebSocket (and as HTTP/2 tunnels are reset).
            if now >= self.tunnel_active + self.timeouts.response - 0.001:
                log.info("%s %s: tunnel idle, closed", self.peer, ex.target if ex is not None else "-")
                self._release_upstream()
                transport = self.transport
                if transport is not None and transport.get_write_buffer_size():
                    self._abort()  # a client that stopped reading: what is queued will never go
                else:
                    self._close()
                return
        elif ex is not None:
            outcome = ex.expired(now, backend_full=bool(self.flow.read_paused & BACKPRESSURE))
            if outcome is not None:  # (an answer or an abort: timeouts are never retried)
                self._release_upstream()
                self._act(outcome, "timeout")
        self._rearm()

    def _rearm(self) -> None:
        """Arm the timer for what is due next: the connection's wait or the exchange's."""
        if self.closed or self.timer is not None:
            return
        ex = self.ex
        due = self.conn_deadline if self.waiting != C_NONE else math.inf
        if self.tunnel:
            due = min(due, self.tunnel_active + self.timeouts.response)
        elif ex is not None:
            due = min(due, ex.deadline)
        self._arm(due)


def _origin_form(target: bytes, host: bytes) -> bytes:
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
