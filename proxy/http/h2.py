"""One HTTP/2 client connection: the I/O around one `Exchange` per stream.

The protocol (framing, stream states, flow-control windows, HPACK) is our sans-IO
`ServerConnection` (proxy/http/h2server.py); every stream's request is checked and
translated in one pass of our own (proxy/http/h2request.py), judged by the same
`Exchange` as HTTP/1.1 requests (routing, the `/-/` rule, header policy, limits,
retries, timeouts) and sent to an HTTP/1.1 backend connection, as nginx and HAProxy
do by default. The abuse rules (rapid reset, CONTINUATION and control-frame floods,
HPACK bombs, slow reads) are `AbuseGuard`'s (proxy/http/h2guard.py); a connection it
condemns gets GOAWAY.

Flow control: a stream's request body is acknowledged to the client (WINDOW_UPDATE)
only once it is written to the backend, and not while the backend's transport is
full, so a slow backend slows its own client down and nobody else; a response body
waits for the client's windows, and its backend is not read while it waits. One
write per batch of frames (everything queued while one read was handled).

Reload and shutdown (`retire`): GOAWAY with the last stream we took, the streams in
flight finish, then the connection closes.

WebSockets (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL is offered when a route of the
listener tunnels `websocket`; an extended CONNECT becomes an HTTP/1.1 `GET` with
`Upgrade: websocket` and a Sec-WebSocket-Key of ours (HTTP/2 clients send none), the
backend's 101 (its Accept checked) becomes a 200, and the stream is a byte tunnel: DATA
to the backend without body rules, the backend's bytes as DATA, END_STREAM as a
half-close either way. A tunnel with no bytes either way for `timeouts.response` is reset
(RST_STREAM CANCEL) and its backend connection closed, as nginx closes one after
proxy_read_timeout (HAProxy: `timeout tunnel`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lb.pool import BackendPool
from proxy.http.exchange import ABORT, RETRY, Answer, Exchange, Outcome, Triple
from proxy.http.h2frames import (
    CANCEL,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    encode_block,
    fields_block,
    status_field,
)
from proxy.http.h2guard import AbuseGuard, GuardLimits, Verdict
from proxy.http.h2request import (
    H2Request,
    StreamError,
    check_body_length,
    response_headers,
    translate_request,
)
from proxy.http.h2server import (
    ABORTED,
    DATA_RECEIVED,
    ENDED,
    REQUEST,
    RESET,
    TERMINATED,
    WINDOW,
    H2ConnectionError,
    HeaderListTooLarge,
    ServerConnection,
    StreamClosedError,
)
from proxy.http.leg import BackendLeg
from proxy.http.response import END, Head, ResponseError
from proxy.http.upstream import UpstreamConnection
from proxy.linger import linger_close

if TYPE_CHECKING:
    from proxy.http.frontend import HttpFrontend
    from proxy.http.h1 import H1Connection

log = logging.getLogger("sekisho.http")

_OUT_HIGH = 1 << 16  # response bytes buffered per stream before its backend is paused


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3


def _client_key(triples: Sequence[Triple]) -> bytes | None:
    return next((v for _, n, v in triples if n == b"sec-websocket-key"), None)


def _accept(key: bytes) -> bytes:
    """RFC 6455 4.2.2: the Sec-WebSocket-Accept a server answers `key` with."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


_TRANSLATED_MAX = 256  # header lists remembered (one dict for the process)
_TRANSLATED_FIELDS_MAX = 64
_translated: dict[tuple[object, ...], tuple[H2Request, list[Triple]]] = {}


def _translate(
    headers: Sequence[tuple[bytes, bytes]], end_stream: bool, extended_connect: bool
) -> tuple[H2Request, list[Triple]]:
    """`translate_request`, and the fields as `Exchange.start` takes them, remembered per
    header list: a client repeats its blocks (see h2glue's decode cache), so most
    requests are one dict lookup here. Only what passed is remembered; the request is
    read-only (H2Request says so), the list is only read by the exchange."""
    key = (end_stream, extended_connect, *headers)
    hit = _translated.get(key)
    if hit is None:
        req = translate_request(headers, end_stream=end_stream, extended_connect=extended_connect)
        hit = (req, [(n, n, v) for n, v in req.h1_headers()])
        if len(headers) <= _TRANSLATED_FIELDS_MAX:
            if len(_translated) >= _TRANSLATED_MAX:
                _translated.clear()
            _translated[key] = hit
    return hit


class Stream:
    """One stream: its exchange and the backend connection that carries it (its owner)."""

    __slots__ = (
        "active",
        "conn",
        "declared",
        "early",
        "ended",
        "ex",
        "leg",
        "method",
        "out",
        "out_end",
        "paused_up",
        "received",
        "sent",
        "sid",
        "target",
        "to_ack",
        "tunnel",
        "up_full",
        "ws_key",
    )

    def __init__(self, conn: H2Connection, sid: int, ex: Exchange) -> None:
        self.conn = conn
        self.sid = sid
        self.ex = ex
        self.method = b""
        self.target = b""
        self.leg: BackendLeg | None = None  # the backend side, once the request is forwarded
        self.declared: int | None = None  # the request's content-length
        self.received = 0  # request body bytes received
        self.early: list[bytes] = []  # body for the backend, received before it was attached
        self.ended = False  # the client ended the stream (END_STREAM)
        self.to_ack = 0  # flow-controlled bytes not yet acknowledged to the client
        self.up_full = False  # the backend's transport asked us to stop writing
        self.out = bytearray()  # response body waiting for the client's window
        self.out_end = False  # the response ends after `out`
        self.paused_up = False  # we stopped reading the backend (window, buffer or client full)
        self.sent = 0  # response body bytes sent to the client
        # RFC 8441: an extended CONNECT for a WebSocket; `ws_key` is the Sec-WebSocket-Key we
        # sent the backend (None: not such a stream), `tunnel` is set once it answered 101.
        self.ws_key: bytes | None = None
        self.tunnel = False
        self.active = 0.0  # when bytes last moved through the tunnel, either way

    @property
    def up(self) -> UpstreamConnection | None:
        return self.leg.up if self.leg is not None else None

    # the leg's owner (proxy.http.leg.LegOwner)

    def gone(self) -> bool:
        return self.conn.closed or self.conn.streams.get(self.sid) is not self

    def attached(self, up: UpstreamConnection) -> None:
        self.conn.attached(self, up)

    def unreachable(self, answer: Answer) -> None:
        self.conn.answer_now(self, answer)

    def upstream_data(self, data: bytes) -> None:
        self.conn.upstream_data(self, data)

    def upstream_eof(self) -> None:
        self.conn.upstream_eof(self)

    def upstream_lost(self, exc: Exception | None) -> None:
        self.conn.upstream_lost(self, exc)

    def upstream_pause_writing(self) -> None:
        self.up_full = True  # the client's window stays closed until the backend drains

    def upstream_resume_writing(self) -> None:
        self.up_full = False
        self.conn.ack(self)


class H2Connection(asyncio.Protocol):
    """One client connection speaking HTTP/2 (TLS with ALPN h2, or h2c with prior knowledge)."""

    def __init__(self, frontend: HttpFrontend, on_close: object) -> None:
        self.fe = frontend
        self.site = frontend.site
        self.on_close = on_close
        self.loop = frontend.loop
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.proto = b"http"
        self.allowed = True
        self.trusted = False
        self.closed = False
        self.streams: dict[int, Stream] = {}
        self.last_sid = 0  # the highest stream we took
        self.goaway_sent = False
        self.write_paused = False
        self.flush_pending = False  # a _flush is scheduled for the end of this loop turn
        limits = GuardLimits(max_concurrent_streams=self.site.config.max_concurrent_streams)
        self.guard = AbuseGuard(limits)
        # RFC 8441: WebSockets over HTTP/2 when a route of the listener tunnels them.
        self.extended_connect = any(
            "websocket" in route.upgrade for route in self.site.config.routes if route.pool is not None
        )
        self.h2 = ServerConnection(
            max_concurrent_streams=limits.max_concurrent_streams,
            max_header_list_size=limits.max_header_list_size,
            max_frame_size=limits.max_frame_size,
            extended_connect=self.extended_connect,
        )
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.idle_since = 0.0

    # ------------------------------------------------------------------ transport callbacks

    def take_over(self, h1: H1Connection, transport: asyncio.Transport, data: bytes) -> None:
        """Carry on a connection an H1Connection accepted (every client connection starts as
        one): its TLS handshake chose ALPN h2, or its first bytes were the h2c preface."""
        self.transport = transport
        self.peer, self.proto, self.allowed, self.trusted = h1.peer, h1.proto, h1.allowed, h1.trusted
        transport.set_protocol(self)
        self._start()
        if data:
            self.data_received(data)

    def _start(self) -> None:
        self.h2.initiate()
        self.idle_since = self.loop.time()
        self._flush()
        self._arm(self.idle_since + self.site.timeouts.header)  # the client's preface and SETTINGS

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.fe.counters.bytes_in += len(data)
        now = self.loop.time()
        verdict = self.guard.receive(data, now)
        if verdict is not None:
            self._condemn(verdict)
            return
        try:
            events = self.h2.receive(data)
        except HeaderListTooLarge:
            self._condemn(self.guard.hpack_bomb())
            return
        except H2ConnectionError as exc:
            log.debug("%s: HTTP/2 protocol error: %s", self.peer, exc)
            self._flush()  # (its GOAWAY is queued)
            self._close(linger=True)
            return
        for ev in events:
            kind = ev[0]
            if kind is REQUEST:
                self._on_request(ev[1], ev[2], ev[3], now)  # type: ignore[arg-type]
            elif kind is DATA_RECEIVED:
                self._on_data(ev[1], ev[2], ev[3], now)  # type: ignore[arg-type]
            elif kind is ENDED:
                self._on_end(ev[1], now)  # type: ignore[arg-type]
            elif kind is RESET:
                self._on_reset(ev[1])  # type: ignore[arg-type]
            elif kind is WINDOW:
                self._on_window(ev[1])  # type: ignore[arg-type]
            elif kind is ABORTED:  # (RST_STREAM queued: the client's fault)
                self._on_reset(ev[1], 400)  # type: ignore[arg-type]
                verdict = self.guard.stream_error(ev[1], now)  # type: ignore[arg-type]
                if verdict is not None:
                    self._condemn(verdict)
            elif kind is TERMINATED:
                self._flush()
                self._close()
            # (TRAILERS: dropped, as nginx does: HTTP/1.1 backends rarely read request trailers)
            if self._gone():
                return
        self._flush()

    def _gone(self) -> bool:
        return self.closed

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        for st in list(self.streams.values()):
            self._release(st)
        self.streams.clear()
        self.fe.conn_closed(self)
        on_close = self.on_close
        assert callable(on_close)
        on_close()

    def pause_writing(self) -> None:
        self.write_paused = True
        for st in self.streams.values():
            self._pause_up(st)

    def resume_writing(self) -> None:
        self.write_paused = False
        for st in list(self.streams.values()):
            self._send_body(st)
        self._flush()

    # ------------------------------------------------------------------ the client's streams

    def _on_request(self, sid: int, headers: Sequence[tuple[bytes, bytes]], ended: bool, now: float) -> None:
        if self.goaway_sent and sid > self.last_sid:
            self.h2.reset_stream(sid, REFUSED_STREAM)
            self.guard.stream_closed(sid)
            return
        self.last_sid = max(self.last_sid, sid)
        ex = Exchange(self.site, now)
        st = self.streams[sid] = Stream(self, sid, ex)
        try:
            req, triples = _translate(headers, ended, self.extended_connect)
        except StreamError as exc:
            if exc.status is None:
                self._stream_error(st, exc.reason, now)
            else:
                self._answer(st, ex.refuse(exc.status, exc.reason))
            return
        upgrade = None
        if req.protocol is not None:  # RFC 8441: a WebSocket, an HTTP/1.1 Upgrade to the backend
            upgrade = req.protocol  # (translate_request takes "websocket" only)
            st.ws_key = _client_key(triples)
            if st.ws_key is None:  # (RFC 8441 5: HTTP/2 clients send none; the backend needs one)
                st.ws_key = base64.b64encode(os.urandom(16))
                triples = [*triples, (b"sec-websocket-key", b"sec-websocket-key", st.ws_key)]
        st.method = req.method
        st.target = req.target
        st.declared = req.content_length
        st.ended = not req.has_body
        decision = ex.start(
            req.h1_method,
            req.target,
            http11=True,
            keep_alive=True,
            host=req.authority,
            items=triples,
            content_length=req.content_length,
            chunked=req.chunked,
            upgrade=upgrade,
            peer=self.peer,
            proto=self.proto,
            allowed=self.allowed,
            trusted=self.trusted,
        )
        if isinstance(decision, Answer):
            self._answer(st, decision)
            return
        if upgrade is not None and ex.upgrade is None:  # the route's `upgrade` leaves it out
            self._answer(st, ex.refuse(501, "this route does not tunnel websocket"))
            return
        self._forward(st, decision.pool)

    def _on_data(self, sid: int, data: bytes, flow_len: int, now: float) -> None:
        st = self.streams.get(sid)
        if st is None:  # answered already: the body is not wanted, but the window is
            self.h2.ack_data(sid, flow_len)
            return
        st.to_ack += flow_len  # given back when written, or when the stream is forgotten
        if st.ws_key is not None:  # WebSocket bytes: a tunnel, no body rules
            st.active = now
            st.received += len(data)
            self._to_backend(st, (data,))
            return
        try:
            check_body_length(st.declared, st.received + len(data), end=False)
        except StreamError as exc:
            self._stream_error(st, exc.reason, now)
            return
        st.received += len(data)
        out = st.ex.request_data(data, now)
        if type(out) is tuple:
            self._to_backend(st, out)
        elif out is ABORT:
            self._reset(st, CANCEL)
        elif isinstance(out, Answer):
            self._answer(st, out)

    def _to_backend(self, st: Stream, chunks: tuple[bytes, ...]) -> None:
        """Request bytes for the backend: kept until it is attached, else written and the
        client's window given back."""
        up = st.up
        if up is None:
            st.early.extend(chunks)
            return
        if up.transport is not None and not up.closed:
            up.transport.writelines(chunks)
        self.ack(st)

    def ack(self, st: Stream) -> None:
        """Give the client back the window of what was written to the backend (not while
        the backend's transport is full, nor before a backend is attached)."""
        n = st.to_ack
        if n > 0 and not st.up_full and st.up is not None and st.sid in self.streams:
            st.to_ack = 0
            self.h2.ack_data(st.sid, n)
            if self.h2.out:
                self._flush_soon()

    def _on_end(self, sid: int, now: float) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        if st.ws_key is not None:  # the client is done sending: half-close towards the backend
            st.ended = True
            up = st.up
            if up is not None and up.transport is not None and not up.closed and up.transport.can_write_eof():
                up.transport.write_eof()
            return
        try:
            check_body_length(st.declared, st.received, end=True)
        except StreamError as exc:
            self._stream_error(st, exc.reason, now)
            return
        st.ended = True
        if st.up is not None:
            self._request_end(st, st.up, now)

    def _on_reset(self, sid: int, status: int = 499) -> None:
        """The stream is closed by the client's RST_STREAM (or, `status` 400, by our
        RST_STREAM for a protocol error of the client's)."""
        st = self.streams.get(sid)
        if st is None:
            self.guard.stream_closed(sid)
        elif self._forget(st):
            self._release(st)
            st.ex.status = st.ex.status or status  # (nginx logs a client gone as 499)
            self._log(st)
            self._maybe_done()

    def _on_window(self, sid: int) -> None:
        if sid == 0:
            for st in list(self.streams.values()):
                self._send_body(st)
        else:
            one = self.streams.get(sid)
            if one is not None:
                self._send_body(one)

    # ------------------------------------------------------------------ finding a backend

    def _forward(self, st: Stream, pool: BackendPool) -> None:
        assert self.transport is not None
        st.leg = BackendLeg(self.fe, st.ex, st, self.transport, self.peer)
        st.leg.forward(pool)

    def attached(self, st: Stream, up: UpstreamConnection) -> None:
        """A backend connection carries the stream: its head and the body read so far go."""
        ex = st.ex
        assert up.transport is not None
        if st.early:
            up.transport.writelines([ex.up_head, *st.early])
            st.early = []
        else:
            up.transport.write(ex.up_head)
        if self.write_paused:
            self._pause_up(st)
        self.ack(st)
        if st.ws_key is not None:  # the upgrade request is its head; then it waits for the 101
            self._request_end(st, up, self.loop.time())
            if st.ended and up.transport.can_write_eof():
                up.transport.write_eof()
        elif st.ended:
            self._request_end(st, up, self.loop.time())
        else:
            self._arm(ex.deadline)

    def answer_now(self, st: Stream, answer: Answer) -> None:
        """An answer from outside a read (a dial that found no server): sent at once."""
        self._answer(st, answer)
        self._flush()

    def _request_end(self, st: Stream, up: UpstreamConnection, now: float) -> None:
        ex = st.ex
        if ex.request_done:
            return
        last = ex.request_end(now)
        if not up.closed and up.transport is not None:
            if last:
                up.transport.write(last)
            up.sent_all = True
        if not ex.response_done:
            self._arm(ex.deadline)

    # ------------------------------------------------------------------ the backends' answers

    def upstream_data(self, st: Stream, data: bytes) -> None:
        up = st.up
        if up is None:
            return
        if st.tunnel:
            st.active = self.loop.time()
            st.out += data
            self._send_body(st)
            self._flush_soon()
            return
        st.ex.heard(self.loop.time())
        up.reader.receive_data(data)
        self._pump_upstream(st, up)
        self._flush_soon()

    def upstream_eof(self, st: Stream) -> None:
        up = st.up
        if up is None:
            return
        if st.tunnel:  # the backend closed the WebSocket's connection: END_STREAM
            if not st.out_end:
                st.ex.response_end()
                st.out_end = True
                self._send_body(st)
                self._flush_soon()
            return
        up.reader.receive_data(b"")
        self._pump_upstream(st, up)
        self._flush_soon()

    def upstream_lost(self, st: Stream, exc: Exception | None) -> None:
        up = st.up
        if up is None:
            return
        if st.tunnel:
            self.upstream_eof(st)
            return
        if not st.ex.response_done:
            up.reader.receive_data(b"")
            self._pump_upstream(st, up)
            if not st.ex.response_done and st.up is up:
                self._upstream_failed(st, 502, f"backend connection lost: {exc or 'closed'}")
        self._flush_soon()

    def _pump_upstream(self, st: Stream, up: UpstreamConnection) -> None:
        ex = st.ex
        reader = up.reader
        while True:
            try:
                ev = reader.next_event()
            except ResponseError as exc:
                self._upstream_failed(st, 502, f"bad response from backend: {exc}")
                return
            t = type(ev)
            if t is bytes:
                st.out += ev  # type: ignore[arg-type]
            elif t is Head:
                head: Head = ev  # type: ignore[assignment]
                if head.status < 200:
                    if head.status == 101 and st.ws_key is not None:
                        self._switch(st, up, head)
                        return
                    if head.status != 101 and st.sid in self.streams:  # (101: never asked for)
                        block = encode_block(response_headers(head.status, head.headers))
                        try:
                            self.h2.send_headers(st.sid, block, False)
                        except StreamClosedError:
                            self._on_reset(st.sid)
                            return
                    continue
                if st.ws_key is not None and head.status < 300:  # a 2xx would open no tunnel
                    self._upstream_failed(st, 502, "backend did not switch to websocket")
                    return
                ex.status = head.status
                bodiless = ex.method == b"HEAD" or head.status in (204, 304)
                try:
                    self._send_head(st.sid, head)
                except StreamClosedError:
                    self._on_reset(st.sid)
                    return
                ex.response_started = True
                self.guard.response_started(st.sid)
                if bodiless:
                    st.out_end = True
            elif ev is END:
                ex.response_end()
                st.out_end = True
                self._send_body(st)
                return
            else:  # NEED_DATA
                self._send_body(st)
                return

    def _send_head(self, sid: int, head: Head) -> None:
        """A final response head, encoded by proxy/http/h2frames.py (cached per field block)."""
        fields = head.fields
        if fields is not None and head.status != 204:
            block = status_field(head.status) + fields_block(fields)
        else:
            block = encode_block(response_headers(head.status, head.headers))
        self.h2.send_headers(sid, block, False)

    def _switch(self, st: Stream, up: UpstreamConnection, head: Head) -> None:
        """The backend switched to WebSocket: the client gets 200 (RFC 8441 5), the stream
        becomes a tunnel, and what followed the 101 is its first bytes."""
        ex = st.ex
        assert st.ws_key is not None
        accept = next((v for n, v in head.headers if n == b"sec-websocket-accept"), None)
        if accept != _accept(st.ws_key):
            self._upstream_failed(st, 502, "backend's Sec-WebSocket-Accept does not match our key")
            return
        ex.switched()
        ex.status = 200
        fields = [(n, v) for n, v in head.headers if n != b"sec-websocket-accept"]
        try:
            self.h2.send_headers(st.sid, encode_block(response_headers(200, fields)), False)
        except StreamClosedError:
            self._on_reset(st.sid)
            return
        self.guard.response_started(st.sid)
        st.tunnel = True
        st.active = self.loop.time()
        self._arm(st.active + self.site.timeouts.response)
        rest = up.reader.trailing
        if rest:
            st.out += rest
        self._send_body(st)

    def _send_body(self, st: Stream) -> None:
        """Send what the client's windows allow; pause the backend while much waits."""
        if st.sid not in self.streams or self.closed:
            return
        h2c = self.h2
        sid = st.sid
        out = st.out
        try:
            while out:
                size = min(h2c.send_window_of(sid), h2c.max_outbound_frame_size, len(out))
                if size <= 0:
                    self.guard.flow_blocked(sid if h2c.stream_window(sid) <= 0 else 0, self.loop.time())
                    break
                chunk = out[:size]
                del out[:size]
                h2c.send_data(sid, chunk, st.out_end and not out)
                self.guard.data_sent()
                st.sent += size
                self.fe.counters.bytes_out += size
                if not out and st.out_end:
                    self._finish(st)
                    return
            else:
                self.guard.flow_unblocked(sid)
                if st.out_end:
                    h2c.send_data(sid, b"", True)
                    self._finish(st)
                    return
        except StreamClosedError:
            self._on_reset(sid)
            return
        if len(out) > _OUT_HIGH or self.write_paused:
            self._pause_up(st)
        else:
            self._resume_up(st)

    def _pause_up(self, st: Stream) -> None:
        up = st.up
        if not st.paused_up and up is not None and up.transport is not None and not up.closed:
            up.transport.pause_reading()
            st.paused_up = True

    def _resume_up(self, st: Stream) -> None:
        up = st.up
        if st.paused_up and up is not None and up.transport is not None and not up.closed:
            up.transport.resume_reading()
        st.paused_up = False

    # ------------------------------------------------------------------ endings

    def _upstream_failed(self, st: Stream, status: int, reason: str) -> None:
        leg = st.leg
        assert leg is not None
        outcome = leg.failed(status, reason, self.closed)
        if outcome is not RETRY:  # (a retry is the leg's to dial)
            self._act(st, outcome, reason)

    def _act(self, st: Stream, outcome: Outcome, reason: str) -> None:
        ex = st.ex
        if outcome is ABORT:
            log.info("%s %s: %s", self.peer, ex.target, reason)
            self._reset(st, INTERNAL_ERROR)
        elif isinstance(outcome, Answer):
            if reason and outcome.status >= 500:
                log.info("%s %s: %d %s", self.peer, ex.target, outcome.status, reason)
            self._answer(st, outcome)

    def _answer(self, st: Stream, answer: Answer) -> None:
        """An answer of our own on a stream (HTTP/1.1 bytes, rendered as HTTP/2 frames)."""
        if st.sid not in self.streams:
            return
        self._release(st)
        head, _, body = answer.data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        headers = response_headers(
            answer.status, [(n.lower(), v) for n, v in fields if n.lower() != b"connection"]
        )
        if st.method == b"HEAD":
            body = b""
        st.ex.status = answer.status
        try:
            self.h2.send_headers(st.sid, encode_block(headers), not body)
            if body:
                st.out += body
                st.out_end = True
                self._send_body(st)
                return
        except StreamClosedError:
            pass
        self._finish(st)

    def _stream_error(self, st: Stream, reason: str, now: float) -> None:
        """A malformed request: RST_STREAM(PROTOCOL_ERROR); it reaches no backend."""
        log.debug("%s: stream %d: %s", self.peer, st.sid, reason)
        self.site.stats.bad_requests += 1
        st.ex.status = 400
        self._reset(st, PROTOCOL_ERROR)
        verdict = self.guard.stream_error(st.sid, now)
        if verdict is not None:
            self._condemn(verdict)

    def _reset(self, st: Stream, code: int) -> None:
        if not self._forget(st):
            return
        self._release(st)
        self.h2.reset_stream(st.sid, code)
        self._log(st)
        self._maybe_done()

    def _finish(self, st: Stream) -> None:
        """The stream's response is complete: settle its backend connection, forget it."""
        if not self._forget(st):
            return
        if st.leg is not None:
            self._resume_up(st)
            st.leg.settle()
        if not st.ended:  # answered before the request was whole: stop its upload (RFC 9113 8.1)
            self.h2.reset_stream(st.sid, NO_ERROR)
        self._log(st)
        self._maybe_done()

    def _forget(self, st: Stream) -> bool:
        """Take a stream off the books (False: it was already). What the client sent on it and
        was not acknowledged (not written to a backend: a 413, a reset, a failed dial) goes back
        to the connection's window; the stream's own window closes with it. Without this every
        later upload on the connection stalls once 64 KiB were refused."""
        if self.streams.pop(st.sid, None) is None:
            return False
        self.guard.stream_closed(st.sid)
        if st.to_ack:
            self.h2.ack_data(0, st.to_ack)
            st.to_ack = 0
            if self.h2.out:
                self._flush_soon()
        return True

    def _release(self, st: Stream) -> None:
        """Let go of a stream's backend side: a dial under way, the backend connection."""
        if st.leg is not None:
            st.leg.release()

    def _maybe_done(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.goaway_sent:
                self._finish_connection()
            else:
                self._arm(self.idle_since + self.site.timeouts.idle)

    def _log(self, st: Stream) -> None:
        fe = self.fe
        ex = st.ex
        duration = self.loop.time() - ex.t0
        fe.counters.observe(ex.route.label, ex.status, duration, "h2")
        if fe.access_log is not None:
            backend = ex.backend
            fe.access_log.log(
                client=self.peer,
                host=ex.host,
                method=st.method or b"-",
                target=st.target,
                version=b"2.0",
                status=ex.status,
                size=st.sent,
                upstream=backend.key if backend is not None else "-",
                duration=duration,
                headers=None,
            )

    # ------------------------------------------------------------------ the connection's end

    def retire(self) -> None:
        """Reload or shutdown: GOAWAY naming the last stream we took; those finish, then close."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        self.h2.goaway(NO_ERROR, self.last_sid)
        self._flush()
        if not self.streams:
            self._finish_connection()

    def _condemn(self, verdict: Verdict) -> None:
        """The abuse guard's verdict: GOAWAY with its code, count it, close."""
        log.info("%s: HTTP/2 connection closed: %s (%s)", self.peer, verdict.kind, verdict.reason)
        abuse = self.fe.counters.h2_abuse
        abuse[verdict.kind] = abuse.get(verdict.kind, 0) + 1
        self.h2.close(verdict.error_code, self.last_sid)  # (an HPACK bomb's is queued already)
        self._flush()
        self._close(linger=True)  # (the client's unread frames must not reset our GOAWAY away)

    def _finish_connection(self) -> None:
        self.h2.close(NO_ERROR, self.last_sid)
        self._flush()
        self._close()

    def _flush(self) -> None:
        self.flush_pending = False
        data = self.h2.data_to_send()
        if data:
            self._write(data)

    def _flush_soon(self) -> None:
        """Write what h2 queued at the end of this loop turn: the frames of every stream a
        backend answered in the same turn go out in one write (and TLS records)."""
        if not self.flush_pending and not self.closed:
            self.flush_pending = True
            self.loop.call_soon(self._flush)

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _close(self, linger: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            transport = self.transport
            if transport is not None:
                if linger:
                    linger_close(transport, self)
                else:
                    transport.close()

    # ------------------------------------------------------------------ the one timer

    def _arm(self, deadline: float) -> None:
        if deadline == math.inf or self.closed:
            return
        timer = self.timer
        if timer is None or self.timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        verdict = self.guard.check(now)
        if verdict is not None:
            self._condemn(verdict)
            return
        for sid in self.guard.expired_streams(now):
            st = self.streams.get(sid)
            if st is not None:
                self._reset(st, CANCEL)
        if not self.streams:
            idle = self.site.timeouts.idle if self.last_sid else self.site.timeouts.header
            if now - self.idle_since >= idle - 0.001:
                self._finish_connection()  # GOAWAY, as nginx does on its idle timeout
                return
            self._arm(self.idle_since + idle)
        due = math.inf
        for st in list(self.streams.values()):
            ex = st.ex
            if st.leg is None:
                continue
            if st.tunnel:  # idle both ways for `timeouts.response`: as nginx's proxy_read_timeout
                quiet_until = st.active + self.site.timeouts.response
                if now >= quiet_until - 0.001:
                    log.info("%s %s: WebSocket tunnel idle, closed", self.peer, ex.target)
                    self._reset(st, CANCEL)
                else:
                    due = min(due, quiet_until)
                continue
            outcome = ex.expired(now, backend_full=st.up_full)
            if outcome is not None:  # (an answer or an abort: timeouts are never retried)
                self._release(st)
                self._act(st, outcome, "timeout")
            elif st.sid in self.streams:
                due = min(due, ex.deadline)
        guard_due = self.guard.deadline()
        if guard_due is not None:
            due = min(due, guard_due)
        self._flush()
        self._arm(due)
