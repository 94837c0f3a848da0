"""One request and its answer: every decision, no I/O (h11's and hypercorn's shape).

The client side (proxy/http/h1.py) parses what the client sends and tells the
exchange what happened; the exchange says what to do: which pool to forward to
and the request head for it, the bytes for the backend and for the client, a
local answer, a retry, an abort. It holds the states of one request and its
upstream, the header policy, the limits and the retry rule. It reads no clock
and arms no timer: methods that start or end a wait take `now`, and `deadline`
says when the I/O side must call `expired(now)`.

Tests drive it with plain values and a fake clock (tests/unit/test_http_exchange.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import conf
from lb.pool import Backend, BackendPool
from proxy.http.answers import plain, route_answer
from proxy.http.errors import BadRequest
from proxy.http.headers import RequestPolicy, response_headers
from proxy.http.response import Head
from proxy.http.routing import NO_ROUTE, Route, RouteTable, normalize_host
from proxy.http.stats import HttpStats
from proxy.http.target import NEEDS_WORK, normalize_target

Triple = tuple[bytes, bytes, bytes]  # (name as sent, lower-case name, value)

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_needs_work = NEEDS_WORK.search


@dataclass(frozen=True, slots=True)
class Answer:
    """A response sekisho writes itself; the connection closes after it when `close`."""

    status: int
    data: bytes
    close: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request (its head is `Exchange.up_head`) to a server of `pool`."""

    pool: BackendPool


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ABORT: Final = _Signal("ABORT")  # the response started and cannot be completed: cut the client
RETRY: Final = _Signal("RETRY")  # dial again (a fresh connection to another server)
WAIT: Final = _Signal("WAIT")  # a deadline passed that is not ours to act on: look again later

Outcome = Answer | _Signal


class Site:
    """What one listener decides with, built once per config generation."""

    def __init__(
        self, config: conf.HttpListener, pools: Mapping[str, BackendPool], stats: HttpStats | None = None
    ) -> None:
        self.config = config
        self.routes = RouteTable(config.routes)
        self.policy = RequestPolicy(config.forwarded_headers)
        self.pools = pools
        self.stats = stats if stats is not None else HttpStats()
        self.timeouts = config.timeouts
        self.max_body = config.max_body_bytes
        self.head_limit = config.max_header_bytes
        self.retired = False  # reload or shutdown: every response closes its connection
        self._hosts: dict[bytes, str] = {}  # Host header -> normalised host name
        # ACME HTTP-01 (proxy/acme/board.py), set by the frontend of a plain listener:
        # (host, target) -> the answer's body, b"" for 404, None when not ours to answer.
        self.challenges: Callable[[str, bytes], bytes | None] | None = None

    def host(self, raw: bytes) -> str:
        hosts = self._hosts
        name = hosts.get(raw)
        if name is None:
            if len(hosts) > 1024:
                hosts.clear()
            name = hosts[raw] = normalize_host(raw)
        return name


# What an exchange is waiting for, if anything (see `deadline`).
W_NONE = 0
W_BODY = 1  # the rest of the request body (slow-POST defence: timeouts.header between reads)
W_RESPONSE = 2  # the backend (timeouts.response since it last said something)


class Exchange:
    """One request from the moment its head is judged until its response is complete."""

    __slots__ = (
        "backend",
        "body_deadline",
        "body_in",
        "chunked",
        "host",
        "http11",
        "keep_alive",
        "last_up",
        "method",
        "pool",
        "request_done",
        "resp_chunked",
        "resp_close",
        "response_done",
        "response_started",
        "retried",
        "reused",
        "route",
        "site",
        "status",
        "t0",
        "target",
        "up_head",
        "upgrade",
        "waiting",
    )

    def __init__(self, site: Site, now: float) -> None:
        self.site = site
        self.t0 = now
        self.method = b""
        self.target = b""  # normalised: what was routed and what the backend gets
        self.host = ""
        self.route: Route = NO_ROUTE
        self.pool: BackendPool | None = None
        self.backend: Backend | None = None  # the server taken for this request (dropped once)
        self.up_head = b""
        self.keep_alive = True  # the client lets us keep the connection
        self.http11 = True
        self.chunked = False  # the request body is chunked (and so is what the backend gets)
        self.upgrade: bytes | None = None  # the protocols offered to the backend
        self.body_in = 0
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.resp_chunked = False  # the response body is re-framed as chunks for the client
        self.resp_close = False  # the response ends the connection
        self.status = 0
        self.retried = False
        self.reused = False
        self.waiting = W_NONE
        self.body_deadline = math.inf
        self.last_up = now

    # ------------------------------------------------------------------ the request

    def start(
        self,
        method: bytes,
        target: bytes,
        *,
        http11: bool,
        keep_alive: bool,
        host: bytes,
        items: Sequence[Triple],
        content_length: int | None,
        chunked: bool,
        upgrade: bytes | None,
        peer: str,
        proto: bytes,
        allowed: bool,
        trusted: bool,
    ) -> Answer | Forward:
        """Judge a request head (framing already checked by the protocol side): route it,
        apply the listener's rules and limits, and build the backend's request head.
        `target` is in origin form; `upgrade` the offered protocols when the request
        asked to switch (`Connection: upgrade`)."""
        site = self.site
        self.method = method
        self.http11 = http11
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.host = site.host(host)
        if _needs_work(target) is not None:
            try:
                target = normalize_target(target)  # route on what the backend will see
            except BadRequest as exc:
                return self.refuse(exc.status, str(exc))
        self.target = target
        # Before the allow list too: the CA validates from addresses nobody knows in advance,
        # and a key authorization is no secret (Caddy answers the same way).
        if site.challenges is not None and target.startswith(b"/.well-known/acme-challenge/"):
            body = site.challenges(self.host, target)
            if body is not None:  # a host we order for: never routed to a backend
                return self._challenge_answer(body, method, keep_alive, chunked, content_length)
        self.route = route = site.routes.match(self.host, target)
        if not allowed:
            site.stats.denied += 1
            return self.refuse(403, "client not allowed")
        if route.kind != "pool":
            # A body nobody asked for is not read: answer and close.
            ended = not chunked and not content_length
            close = not ended or not keep_alive or site.retired
            self.status = route.status
            self.request_done = ended
            self.response_done = True
            self.resp_close = close
            return Answer(route.status, route_answer(route, target, method != b"HEAD", close), close)
        if site.max_body and content_length is not None and content_length > site.max_body:
            return self.refuse(413, "request body too large")
        if upgrade is not None and http11:
            # An allow-list: a tunnel is traffic no route, rule or log sees again.
            self.upgrade = route.allowed_upgrade(upgrade)
        assert route.pool is not None
        pool = site.pools.get(route.pool)
        if pool is None:
            return self.fail(503, f"no pool {route.pool}")
        self.pool = pool
        self.up_head = site.policy.request_head(
            method,
            route.upstream_target(target) if route.strip_prefix else target,
            items,
            peer=peer,
            proto=proto,
            trusted=trusted,
            chunked=chunked,
            upgrade=self.upgrade,
        )
        return Forward(pool)

    def _challenge_answer(
        self, body: bytes, method: bytes, keep_alive: bool, chunked: bool, content_length: int | None
    ) -> Answer:
        ended = not chunked and not content_length
        close = not ended or not keep_alive or self.site.retired
        self.status = 200 if body else 404
        self.request_done = ended
        self.response_done = True
        self.resp_close = close
        data = plain(self.status, body or None, close=close)
        if method == b"HEAD":
            data = data[: data.index(b"\r\n\r\n") + 4]
        return Answer(self.status, data, close, "acme challenge")

    def refuse(self, status: int, reason: str) -> Answer:
        """A request we will not forward (400, 403, 408, 413, 414, 431): answer, then close."""
        if status in {400, 414, 431}:
            self.site.stats.bad_requests += 1
        self.status = status
        self.resp_close = True
        return Answer(status, plain(status), True, reason)

    def fail(self, status: int, reason: str) -> Answer:
        """No backend could take the request (502, 503, 504): answer, then close."""
        if status in (502, 504):
            self.site.stats.upstream_errors += 1
        self.status = status
        self.resp_close = True
        return Answer(status, plain(status), True, reason)

    def attached(self, backend: Backend, reused: bool, now: float) -> None:
        """The request head went to `backend` (taken from its pool for this request)."""
        self.backend = backend
        self.reused = reused
        self.last_up = now
        if not self.request_done:
            self.waiting = W_BODY
            self.body_deadline = now + self.site.timeouts.header

    def request_data(self, data: bytes, now: float) -> Sequence[bytes] | Outcome:
        """A piece of the request body: the bytes for the backend, or what to do instead."""
        n = len(data)
        self.body_in += n
        if self.waiting == W_BODY:
            self.body_deadline = now + self.site.timeouts.header
        max_body = self.site.max_body
        if max_body and self.body_in > max_body:
            return ABORT if self.response_started else self.refuse(413, "request body too large")
        if not self.chunked:
            return (data,)
        return (b"%x\r\n" % n, data, _CRLF) if n else ()

    def request_end(self, now: float) -> bytes:
        """The request is complete: what ends it for the backend."""
        self.request_done = True
        if not self.response_done:
            self.waiting = W_RESPONSE
            self.last_up = now
        return _LAST_CHUNK if self.chunked else b""

    # ------------------------------------------------------------------ the response

    def heard(self, now: float) -> None:
        """The backend said something: its response timeout starts again."""
        self.last_up = now

    def response_head(self, head: Head) -> bytes:
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
        close = not self.keep_alive or self.site.retired
        extra = b""
        if not head.content_length and status not in {204, 304}:
            # Chunked, or delimited by the backend's close (judged as for GET when this is HEAD).
            if self.http11:
                extra = b"Transfer-Encoding: chunked\r\n"  # as h11 wrote it
                self.resp_chunked = self.method != b"HEAD"
            elif self.method != b"HEAD":
                close = True
        if close:
            self.resp_close = True
            extra += b"Connection: close\r\n"
        self.status = status
        # (`response_started` is set by the I/O side once the head is written: a response
        # that turns out broken within the same batch of bytes can still become a 502.)
        return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, head.reason, fields, extra)

    def response_end(self) -> bytes:
        """The response is complete: what ends it for the client."""
        self.response_done = True
        self.waiting = W_NONE
        return _LAST_CHUNK if self.resp_chunked else b""

    def switched(self) -> None:
        """The backend answered 101: from here on the connection is a byte tunnel."""
        self.status = 101
        self.response_started = True
        self.waiting = W_NONE

    # ------------------------------------------------------------------ failures and time

    def upstream_failed(self, status: int, reason: str, closed: bool) -> Outcome:
        """The backend failed us (502: lost or broken, 504: too slow). A kept-alive
        connection that the server closed as we reused it is retried once on a fresh
        one, when nothing of the request body or the response has moved yet and the
        method is idempotent (HAProxy's `retry-on conn-failure` with `http-reuse`)."""
        self.waiting = W_NONE
        if closed:
            return ABORT
        if (
            status == 502
            and self.reused
            and not self.retried
            and not self.response_started
            and self.body_in == 0
            and self.method in _IDEMPOTENT
            and self.pool is not None
        ):
            self.retried = True
            return RETRY
        if self.response_started:
            self.site.stats.upstream_errors += 1
            return ABORT
        return self.fail(status, reason)

    @property
    def deadline(self) -> float:
        """When `expired` must be called (inf: nothing to wait for)."""
        waiting = self.waiting
        if waiting == W_BODY:
            return self.body_deadline
        if waiting == W_RESPONSE:
            return self.last_up + self.site.timeouts.response
        return math.inf

    def expired(self, now: float, *, backend_full: bool) -> Outcome | None:
        """The deadline may have passed. None: nothing to do yet (look at `deadline` again).
        `backend_full`: the backend is not taking the body (then silence is ours, not the
        client's)."""
        if now < self.deadline - 0.001:
            return None
        waiting = self.waiting
        if waiting == W_BODY:
            if backend_full:
                self.body_deadline = now + self.site.timeouts.header
                return None
            self.waiting = W_NONE
            if self.response_started:
                return ABORT
            return self.refuse(408, "request body timeout")
        if waiting == W_RESPONSE:
            return self.upstream_failed(504, "backend response timeout", closed=False)
        return None
