"""The backend side of a client connection: connect or reuse, forward, relay the answer.

The request head was built when the request was judged (proxy/http/connection.py);
here it goes to a backend, the request body follows it, and the strict response
reader's events go back to the client: a head rewritten for the client, body bytes
(re-chunked where the client needs it), and the end, which settles both connections.
Everything one batch of backend bytes produces is written to the client at once.
"""

from __future__ import annotations

import asyncio

import h11

from lb.dial import MAX_ATTEMPTS, open_connection
from lb.errors import UpstreamConnectError
from lb.pool import Backend, BackendPool
from proxy.http.answers import head_bytes, plain
from proxy.http.base import BACKPRESSURE, HELD, ONLY_END, T_BODY, T_NONE, T_RESP, ConnectionBase, log
from proxy.http.headers import response_headers
from proxy.http.response import END, MAX_HEAD, Head, ResponseError
from proxy.http.upstream import UpstreamConnection

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"


class BackendExchange(ConnectionBase):
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
        if early is ONLY_END:
            self.early = ()
            self._on_body_end()
            return
        if early:
            self.early = ()
            ended = False
            for ev in early:
                if isinstance(ev, h11.Data):
                    self._on_body(ev.data)
                else:
                    ended = True
                    self._on_body_end()
                if self._gone():
                    return
            if ended:
                return
        self._arm(T_BODY, self.loop.time() + self.timeouts.header)
        self.pending = False
        self._resume(HELD)
        self._pump()

    def _on_body(self, data: bytes) -> None:
        n = len(data)
        self.body_in += n
        if self.tmode == T_BODY:  # the timer re-arms itself lazily from the deadline
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
            self._arm(T_RESP, now + self.timeouts.response)
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
        status = head.status
        if fields is None:  # `Connection` names fields to remove
            fields = b"".join(
                [
                    n + b": " + v + b"\r\n"
                    for n, v in response_headers(head.headers)
                    if status != 204 or n != b"content-length"  # RFC 9110 8.6
                ]
            )
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
        self.tmode = T_NONE
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
        self._pause(BACKPRESSURE)

    def upstream_resume_writing(self) -> None:
        self._resume(BACKPRESSURE)

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
        self.tmode = T_NONE
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
        self.tmode = T_NONE
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
