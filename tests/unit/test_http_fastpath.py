"""The request fast path (proxy/http/fastpath.py) is a subset of the gate and h11.

The proof ARCHITECTURE.md asks for: hypothesis generates request heads from a grammar
(methods, targets, versions, field names and values, odd ones included, Content-Length
and Transfer-Encoding combinations, bytes after the head) and mutates them (bytes
inserted, deleted, replaced; case flipped; whitespace, CR, LF, NUL put in; field lines
duplicated; lines folded). Whenever `recognise` accepts, the reference, which is what
H1Connection does without the fast path (`head_end`, `precheck_head`, h11 with the
strict chunk reader, `_on_request`'s framing checks and `check_content_length`),
accepts too with the same method, target, version, fields (raw name, lower name, value,
in order), Host, keep-alive and framing (no body: h11's next event ends the request
and leaves every byte after the head for the next one).

Then end to end: what a client sends on one connection (generated and mutated requests,
pipelined, cut into reads, EOF or not) goes through H1Connection with and without the
fast path, and the backend and the client get the same bytes and the same close.

SEKISHO_FASTPATH_EXAMPLES sets the example counts (1000; a long run: 30000).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from proxy.http import fastpath, h11glue
from proxy.http.fastpath import MAX_FIELDS, RequestHead, recognise
from proxy.http.h1 import H1Connection
from proxy.http.headers import check_content_length, head_end, precheck_head
from proxy.http.upstream import UpstreamConnection
from tests.adversarial.corpus import all_cases
from tests.unit.test_http_h1 import RESPONSE, FakeTransport, frontend

EXAMPLES = int(os.environ.get("SEKISHO_FASTPATH_EXAMPLES", "1000"))
LIMIT = 1 << 16
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ----------------------------------------------------------------------- the reference


@dataclass
class Judged:
    method: bytes
    target: bytes
    http_version: bytes
    items: list[tuple[bytes, bytes, bytes]]
    host: bytes
    content_length: int | None
    keep_alive: bool
    end: int
    h11_keep_alive: bool


def reference(raw: bytes) -> Judged | str:
    """What H1Connection makes of `raw` without the fast path: the judged request with a body
    framed as none, or why not (refused, incomplete, or has a body)."""
    end = head_end(raw)
    if end < 0:
        return "incomplete or bare LF"
    head = raw[:end]
    reason = precheck_head(head)
    if reason is not None:
        return reason
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMIT)
    conn.receive_data(raw)
    try:
        req = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return f"h11: {exc}"
    assert isinstance(req, h11.Request), req  # the head is complete: h11 must have a verdict
    items = list(h11glue.header_triples(req))
    # _on_request's intake and framing checks, as written there
    host = b""
    cl: bytes | None = None
    te = False
    http11 = req.http_version == b"1.1"
    keep_alive = http11
    for _, name, value in items:
        if name == b"host":
            host = value
        elif name == b"content-length":
            cl = value
        elif name == b"transfer-encoding":
            te = True
        elif name == b"connection":
            tokens = value.lower()
            if b"close" in tokens and any(t.strip() == b"close" for t in tokens.split(b",")):
                keep_alive = False
    if cl is not None and te:
        return "both Content-Length and Transfer-Encoding"
    if te and not http11:
        return "Transfer-Encoding in an HTTP/1.0 request"
    if cl is not None and check_content_length(head) is not None:
        return "check_content_length"
    try:
        ev = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return f"h11 body: {exc}"
    if type(ev) is not h11.EndOfMessage:
        return "has a body"
    rest, closed = conn.trailing_data
    assert rest == raw[end:] and not closed  # nothing after the head was read as this request's
    return Judged(
        req.method,
        req.target,
        req.http_version,
        items,
        host,
        int(cl) if cl is not None else None,
        keep_alive,
        end,
        conn.their_state is h11.DONE,  # h11's own keep-alive verdict (MUST_CLOSE if not)
    )


def check(raw: bytes) -> RequestHead | None:
    fast = recognise(raw)
    if fast is None:
        return None
    ref = reference(raw)
    assert isinstance(ref, Judged), (raw, ref)
    assert fast.method == ref.method
    assert fast.target == ref.target
    assert fast.http_version == ref.http_version
    assert list(fast.items) == ref.items  # names as sent, lower names, values, order
    assert all(type(x) is bytes for item in fast.items for x in item)
    assert fast.host == ref.host
    assert fast.content_length == ref.content_length
    assert fast.keep_alive == ref.keep_alive == ref.h11_keep_alive
    assert fast.end == ref.end
    # What the fast path adds on its own: origin form, no tunnel, few fields.
    assert fast.target[:1] == b"/" and fast.method != b"CONNECT"
    assert not any(name in (b"upgrade", b"transfer-encoding") for _, name, _ in fast.items)
    assert len(fast.items) <= MAX_FIELDS
    return fast


# ----------------------------------------------------------------------- the grammar

TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ODD_BYTES = b'\r\n\t \x00\x01\x0b\x0c\x1f\x7f\x80\xa0\xff:;,"()/?=@[]{}\\'
tokens = st.text(TOKEN_CHARS.decode(), min_size=1, max_size=10).map(str.encode)
visible = st.binary(min_size=1, max_size=16).map(lambda b: bytes(0x21 + c % 94 for c in b))
odd_bytes = st.text((TOKEN_CHARS + ODD_BYTES).decode("latin-1"), max_size=10).map(
    lambda s: s.encode("latin-1")
)

METHODS = [b"GET", b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"get"]
ODD_METHODS = [b"CONNECT", b"M-SEARCH", b"!#$%&'*+.^_`|~", b"G(T", b"", b"G T", b"GET\x00", b"G\x80T"]
TARGETS = [b"/", b"/small", b"/a/b?c=d&e=f#x", b"//x", b"/%2e%2e/", b"/./../a", b"/~!$&'()*+,;=:@[]"]
ODD_TARGETS = [
    b"*", b"http://a/b", b"https://a:443/", b"a/b", b"/a b", b"/\x7f", b"/\x80", b"/caf\xc3\xa9",
    b"/\x00", b"/\t", b"/" + b"a" * 300, b"", b"/\r",
]  # fmt: skip
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]
ODD_VERSIONS = [
    b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11", b"HTTP/1.10", b"",
    b"HTTP/1.1\x00", b"HTTP/ 1.1",
]  # fmt: skip
NAMES = [
    b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Connection", b"connection",
    b"Expect", b"TE", b"Keep-Alive", b"Proxy-Connection", b"X-Forwarded-For", b"Forwarded",
    b"Cookie", b"X-A", b"Accept", b"User-Agent", b"Close", b"X_Y",
]  # fmt: skip
ODD_NAMES = [
    b"Transfer-Encoding", b"transfer-encoding", b"Upgrade", b"transfer_encoding", b"Content_Length",
    b"X A", b"X\x00", b"", b" Host", b"Host ", b"X\x80", b"Host\t", b"X:Y", b"X\x7f", b"X\r",
]  # fmt: skip
VALUES = [
    b"", b"a", b"a.example", b"A.Example.", b"127.0.0.1:12345", b"[::1]:8080", b"[v1.x]", b"a:",
    b"a b", b"a\tb", b"a  b", b"a_b", b"a@b", b"a/b", b"0", b"00", b"5", b"0, 0", b"0,0", b"-0",
    b"+0", b"0x0", b"0.0", b"9" * 18, b"0" * 18, b"0" * 19, b"9" * 19, b"0" * 21, b"chunked",
    b"identity", b"close", b"Close", b"CLOSE", b"keep-alive", b"keep-alive, close", b"close , x",
    b"x,close", b"x,\tclose", b"closed", b"enclose", b"upgrade", b"Upgrade, close", b"h2c",
    b"100-continue", b"trailers", b'"q"', b"x" * 200,
]  # fmt: skip
ODD_VALUES = [
    b"\x01", b"\x7f", b"\x0b", b"\x0c", b"caf\xc3\xa9", b"\xff", b"a\x00b", b"a\rb", b"a\nb",
    b"a\r\n b", b"a\x85",
]  # fmt: skip
COLONS = [b": ", b":", b":\t", b": \t"]
ODD_COLONS = [b" : ", b" :", b"\t:", b"::", b";", b""]
PADS = [b"", b"", b" ", b"\t", b" \t "]
ENDINGS = [b"\n", b"\r", b"\r\r\n", b"\r\n\t", b"\r\n ", b"\n\r"]
AFTER = [
    b"", b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"hello", b"0\r\n\r\n", b"\r\n", b"\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
]  # fmt: skip


PARTS = ["method", "target", "version", "space", "start", "end", "name", "value", "colon", "ending"]


def pick(common: list[bytes], more: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    c = st.sampled_from(common)
    return c if more is None else st.one_of(c, more)


def odd(values: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(values), odd_bytes)


@st.composite
def field_line(draw: st.DrawFn, odd_parts: frozenset[str] = frozenset()) -> bytes:
    name = draw(odd(ODD_NAMES) if "name" in odd_parts else pick(NAMES, tokens))
    colon = draw(odd(ODD_COLONS) if "colon" in odd_parts else pick(COLONS))
    value = draw(odd(ODD_VALUES) if "value" in odd_parts else pick(VALUES, visible))
    ending = draw(odd(ENDINGS) if "ending" in odd_parts else st.just(b"\r\n"))
    return name + colon + value + draw(st.sampled_from(PADS)) + ending


@st.composite
def requests(draw: st.DrawFn, odd_parts: int = 2) -> bytes:
    """A request head (and what follows it) from the grammar, with up to `odd_parts` odd
    pieces: method, target, version, spacing, start or end of the head, or a field line's
    name, colon, value or line ending."""
    parts = frozenset(draw(st.lists(st.sampled_from(PARTS), max_size=odd_parts)))
    method = draw(odd(ODD_METHODS) if "method" in parts else pick(METHODS, tokens))
    target = draw(odd(ODD_TARGETS) if "target" in parts else pick(TARGETS, visible.map(lambda t: b"/" + t)))
    version = draw(odd(ODD_VERSIONS) if "version" in parts else pick(VERSIONS))
    space = draw(odd([b"  ", b"\t", b""]) if "space" in parts else st.just(b" "))
    start = draw(odd([b"\r\n", b" ", b"\n", b"\x00"]) if "start" in parts else st.just(b""))
    end = draw(odd([b"\n", b"", b"\r", b" \r\n"]) if "end" in parts else st.just(b"\r\n"))
    fields = draw(st.lists(field_line(), max_size=6))
    if parts & {"name", "colon", "value", "ending"}:
        fields.insert(draw(st.integers(0, len(fields))), draw(field_line(parts)))
    if draw(st.integers(0, 3)):  # Host first, as most clients send it
        fields.insert(0, b"Host: " + draw(st.sampled_from(VALUES[:8])) + b"\r\n")
    if draw(st.integers(0, 30)) == 0:  # around MAX_FIELDS
        fields += [b"X-N: %d\r\n" % i for i in range(draw(st.integers(MAX_FIELDS - 3, MAX_FIELDS + 2)))]
    line = start + method + space + target + b" " + version + b"\r\n"
    return line + b"".join(fields) + end + draw(st.one_of(st.sampled_from(AFTER), odd_bytes))


SEEDS = [c.raw for c in all_cases()] + [
    b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:12345\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
]
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b"\x80", b"a", b"-", b"_", b"\x7f"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A request from the grammar (or the smuggling corpus) with one to three mutations."""
    raw = bytearray(draw(st.one_of(requests(0), requests(0), requests(), st.sampled_from(SEEDS))))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3]))):
        op = draw(st.integers(0, 7))
        i = draw(st.integers(0, len(raw)))
        if op == 0:  # insert bytes, often the ones that matter to framing
            raw[i:i] = draw(st.one_of(st.sampled_from(INSERTS), odd_bytes))
        elif op == 1:  # delete a few
            del raw[i : i + draw(st.integers(1, 3))]
        elif op == 2 and raw:  # replace one
            raw[min(i, len(raw) - 1)] = draw(st.integers(0, 255))
        elif op == 3:  # flip the case of a run
            j = i + draw(st.integers(1, 20))
            raw[i:j] = raw[i:j].swapcase()
        elif op == 4:  # duplicate a line
            start = raw.rfind(b"\n", 0, i) + 1
            stop = raw.find(b"\n", i)
            if stop >= 0:
                raw[start:start] = raw[start : stop + 1]
        elif op == 5:  # fold the line at i (obs-fold)
            raw[i:i] = b"\r\n" + draw(st.sampled_from([b" ", b"\t"]))
        elif op == 6:  # whitespace around a colon
            colon = raw.find(b":", i)
            if colon >= 0:
                raw[colon : colon + 1] = draw(st.sampled_from([b" :", b": ", b"\t:", b":\t", b" : ", b":  "]))
        else:  # a field line put in before the end of the head
            stop = raw.find(b"\r\n\r\n")
            if stop >= 0:
                line = draw(field_line(frozenset(draw(st.lists(st.sampled_from(PARTS[6:]), max_size=1)))))
                raw[stop + 2 : stop + 2] = line
    return bytes(raw)


# ----------------------------------------------------------------------- the tests


@SETTINGS
@given(mutated())
@example(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\ncontent_length: 0\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n")
def test_accepted_mutants_are_accepted_alike(raw: bytes) -> None:
    event("taken by the fast path" if check(raw) else "declined")


@SETTINGS
@given(requests())
def test_accepted_grammar_requests_are_accepted_alike(raw: bytes) -> None:
    event("taken by the fast path" if check(raw) else "declined")


@settings(max_examples=max(EXAMPLES // 3, 100), deadline=None)
@given(requests(0))
def test_the_common_shape_is_taken(raw: bytes) -> None:
    """Not a vacuous subset: plain requests the reference takes without a body, the fast path
    takes too, unless they are outside its shape on purpose."""
    ref = reference(raw)
    fast = check(raw)
    event("taken by the fast path" if fast else "declined")
    if isinstance(ref, Judged) and fast is None:
        assert (
            ref.target[:1] != b"/"
            or ref.method == b"CONNECT"
            or len(ref.items) > MAX_FIELDS
            or any(
                name in (b"upgrade", b"transfer-encoding") or (name == b"content-length" and int(value))
                for _, name, value in ref.items
            )
        ), raw


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
def test_the_smuggling_corpus(case: object) -> None:
    raw = case.raw  # type: ignore[attr-defined]
    fast = check(raw)
    if fast is not None:  # only the corpus's plain bodiless requests
        assert fast.content_length in (None, 0)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:12345\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"HEAD /a?b HTTP/1.0\r\nHost: [::1]:80\r\nX-A:b\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\nhost:a\r\nConnection: Close\r\n\r\nGET / HTTP/1.1\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        b"Accept: text/html,*/*;q=0.8\r\nCookie: a=b; c=d\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * (MAX_FIELDS - 1) + b"\r\n",
    ],
)
def test_taken(raw: bytes) -> None:
    assert check(raw) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",  # obs-text
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n",  # a control character
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",  # obs-fold
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",  # a body
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",  # no Host
        b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n",  # incomplete
        b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * MAX_FIELDS + b"\r\n",
    ],
)
def test_declined(raw: bytes) -> None:
    assert recognise(raw) is None


# ----------------------------------------------------------------------- through H1Connection


class Transport(FakeTransport):
    """The fake transport, with what a lingering close asks of it."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__(peer)
        self.eof = False

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def write_eof(self) -> None:
        self.eof = True

    def is_reading(self) -> bool:
        return self.reading


@dataclass
class Transcript:
    to_backend: bytes
    to_client: bytes
    closed: bool
    h11_made: int  # h11 connections made: one per request h11 judged


def run(pieces: list[bytes], eof: bool, fast: bool) -> Transcript:
    """Send `pieces` (then EOF) through an H1Connection whose backend answers every request
    head with RESPONSE; with `fast` False the fast path declines everything."""
    made = 0
    real = h11.Connection

    def counting(*args: object, **kwargs: object) -> h11.Connection:
        nonlocal made
        made += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    async def body() -> Transcript:
        fe = frontend()
        up = UpstreamConnection(fe.pools["alpha"].backends[0], fe.upstreams)
        ut = Transport(("127.0.0.1", 9))
        up.connection_made(ut)  # type: ignore[arg-type]
        fe.upstreams.release(up, asyncio.get_running_loop().time())
        conn = fe.make_protocol(lambda: None)
        assert isinstance(conn, H1Connection)
        ct = Transport(("192.0.2.1", 40000))
        ct.protocol = conn
        conn.connection_made(ct)  # type: ignore[arg-type]

        def answer() -> None:  # the backend answers each request it was sent
            for _ in range(8):
                ex, leg = conn.ex, conn.leg
                if ex is None or leg is None or leg.up is None or ex.response_done or conn.closed:
                    return
                leg.up.data_received(RESPONSE)

        for piece in pieces:  # (to whoever reads the transport now: a lingering close takes it)
            if not ct.closed:
                ct.protocol.data_received(piece)
                answer()
        if eof and not ct.closed:
            if not ct.protocol.eof_received():
                ct.close()
            answer()
        for t in (ct, ut):
            t.closed = t.closed or t.eof
        out = Transcript(b"".join(ut.written), b"".join(ct.written), ct.closed, made)
        conn.connection_lost(None)  # (a dial under way is cancelled)
        await asyncio.sleep(0)
        return out

    loop = asyncio.new_event_loop()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(h11, "Connection", counting)
            if not fast:
                mp.setattr("proxy.http.h1.recognise", lambda buf: None)
            return loop.run_until_complete(body())
    finally:
        loop.close()


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """What a client sends on one connection: one or two generated or mutated requests,
    pipelined, cut into up to three reads; then maybe EOF."""
    raw = b"".join(draw(st.lists(st.one_of(requests(0), requests(1), mutated()), min_size=1, max_size=2)))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=2)))
    pieces = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return [p for p in pieces if p], draw(st.booleans())


@settings(max_examples=max(EXAMPLES // 2, 100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_a_connection_behaves_the_same_with_or_without_the_fast_path(
    session: tuple[list[bytes], bool],
) -> None:
    """End to end through H1Connection: the same bytes to the backend and the client, the
    same close, whichever requests the fast path took."""
    pieces, eof = session
    with_fast = run(pieces, eof, fast=True)
    without = run(pieces, eof, fast=False)
    assert with_fast.to_backend == without.to_backend
    assert with_fast.to_client == without.to_client
    assert with_fast.closed == without.closed
    event("some request taken by the fast path" if with_fast.h11_made < without.h11_made else "all h11")


def test_the_common_request_makes_no_h11() -> None:
    raw = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    out = run([raw, raw, raw[:10], raw[10:]], eof=True, fast=True)
    assert out.h11_made == 0
    assert out.to_backend.count(b"GET /a HTTP/1.1\r\nhost: h\r\n") == 3
    assert out.to_client.count(b"hello") == 3 and out.closed
    before = run([raw, raw, raw[:10], raw[10:]], eof=True, fast=False)
    assert before.h11_made == 3
    assert (out.to_backend, out.to_client, out.closed) == (before.to_backend, before.to_client, before.closed)


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        (b"GET /x HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n", b"x: caf\xc3\xa9\r\n"),  # obs-text
        (
            b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"transfer-encoding: chunked\r\n",
        ),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", b"content-length: 5\r\n"),
        (b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /x HTTP/1.1\r\n"),
    ],
)
def test_what_the_fast_path_declines_goes_through_h11_as_before(raw: bytes, sent: bytes) -> None:
    pipelined = raw + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    out = run([pipelined], eof=True, fast=True)
    assert out.h11_made == 1  # the first request only: the pipelined one takes the fast path
    assert sent in out.to_backend and b"GET /next HTTP/1.1\r\n" in out.to_backend
    assert out.to_client.count(b"HTTP/1.1 200 OK\r\n") == 2
    before = run([pipelined], eof=True, fast=False)
    assert before.h11_made == 2
    assert (out.to_backend, out.to_client, out.closed) == (before.to_backend, before.to_client, before.closed)


def test_a_request_answered_here_through_h11_leaves_the_connection_usable() -> None:
    """Bug (found by the end-to-end test): a bodiless request that h11 judged and sekisho answered
    itself on a kept-alive connection (a 404 here, no route for `*`) made `_pump` read on
    from the h11 it had just let go, and `_on_body_end` failed its assertion: the
    exception escaped `data_received`, and uvloop closes a connection whose protocol
    raises."""
    pieces = [b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"]
    out = run(pieces, eof=False, fast=True)
    assert out.to_client.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert out.to_client.count(b"hello") == 1 and not out.closed
    assert run(pieces, eof=False, fast=False).to_client == out.to_client


def test_a_common_head_over_the_limit_is_still_refused() -> None:
    big = b"GET /x HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
    out = run([big], eof=True, fast=True)
    assert out.to_client.startswith(b"HTTP/1.1 431 ") and out.to_backend == b""
    assert out == run([big], eof=True, fast=False)


def test_a_head_sent_again_is_judged_once_and_alike() -> None:
    head = b"GET /memo HTTP/1.1\r\nHost: memo.example\r\nConnection: close\r\n\r\n"
    first = recognise(head + b"GET /next")  # the next request's start follows in the buffer
    again = recognise(head)
    assert first is not None and again is first  # remembered: one object for the same bytes
    assert again.end == len(head) and not again.keep_alive and isinstance(again.items, tuple)
    other = recognise(head.replace(b"close", b"keep-alive"))  # other bytes: judged on their own
    assert other is not None and other.keep_alive and other is not first
    long = b"GET /long HTTP/1.1\r\nHost: memo.example\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n"
    judged = recognise(long)
    assert judged is not None and recognise(long) is not judged  # long heads: not remembered


def test_a_full_memo_starts_again_and_still_answers_right() -> None:
    heads = [b"GET /m%d HTTP/1.1\r\nHost: memo.example\r\n\r\n" % i for i in range(fastpath._MEMO_SIZE + 1)]
    judged = [recognise(h) for h in heads]  # the last one finds the memo full: it is emptied
    assert all(j is not None and j.target == b"/m%d" % i for i, j in enumerate(judged))
    assert len(fastpath._seen) <= fastpath._MEMO_SIZE
    again = recognise(heads[0])  # forgotten when the memo was emptied: judged again, alike
    assert again is not None and again.target == b"/m0" and again.items == judged[0].items
    assert recognise(b"GET / HTTP/1.1\r\nHost: a\r\n") is None  # no end of head yet
    assert recognise(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n") is None  # unusual: h11 judges
    assert recognise(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n") is None  # (remembered as such)
