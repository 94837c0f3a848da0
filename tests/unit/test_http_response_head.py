"""The one-pass response head (`parse_head`, `Exchange.response_head`) against the field loop it
replaced, kept here as the oracle: hypothesis generates backend response heads, mutations
included, and both must refuse the same heads with the same reason, frame the body the same
way, keep the connection alike, and give the client the same bytes, except that field names
keep the backend's case (RFC 9110 5.1: they are case-insensitive; nginx relays them so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import conf
from lb.pool import PoolSet
from proxy.http.exchange import Exchange, Site
from proxy.http.headers import response_headers
from proxy.http.response import (
    _BODY,
    _CHUNK_SIZE,
    _END,
    _UNTIL_CLOSE,
    CHUNKED,
    CLOSE,
    LENGTH,
    NO_BODY,
    Head,
    ResponseError,
    ResponseReader,
    parse_head,
)

# ---------------------------------------------------------------- the oracle: parse_head as it was

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\r\n")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade")
)
_PLAIN_TOKENS = _HOP_BY_HOP | {b"close", b"content-length", b"host"}
_FRAMING = _HOP_BY_HOP | {b"content-length"}
_LINES = re.compile(
    rb"\n(" + _TOKEN + rb"):[ \t]*+((?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[ \t]*\r(?=\n)"
)


@dataclass
class OldHead:
    status: int
    reason: bytes
    http11: bool
    headers: list[tuple[bytes, bytes]]
    chunked: bool
    content_length: bool
    length: int
    close: bool
    fields: bytes | None


def reference_parse_head(head: bytes) -> OldHead:
    """parse_head before the one-pass rebuild (commit 7f33b30), unchanged but for its result type."""
    m = _STATUS.match(head)
    if m is None:
        line = head[: head.find(b"\r\n")][:60]
        raise ResponseError(f"bad status line {line!r}")
    start = m.end()
    status = int(m.group(2))
    pairs = _LINES.findall(head, start - 1)
    n = head.count(b"\r\n", start)
    if len(pairs) != n or head.count(b"\n", start) != n or head.count(b"\r", start) != n:
        raise ResponseError("malformed header field (bare CR/LF, obs-fold, NUL, missing colon)")
    lines: list[bytes] = []
    cl: bytes | None = None
    te: bytes | None = None
    close = False
    foreign = False
    for raw_name, value in pairs:
        name = raw_name.lower()
        if name not in _FRAMING:
            lines.append(name + b": " + value)
        elif name == b"content-length":
            if cl is not None:
                raise ResponseError("duplicate Content-Length")
            cl = value
            if status != 204:
                lines.append(b"content-length: " + value)
        elif name == b"transfer-encoding":
            if te is not None:
                raise ResponseError("duplicate Transfer-Encoding")
            te = value
        elif name == b"connection":
            for raw_token in value.lower().split(b","):
                token = raw_token.strip()
                if token == b"close":
                    close = True
                elif token and token not in _PLAIN_TOKENS:
                    foreign = True
    http11 = m.group(1) == b"1"
    length = 0
    if te is not None:
        if cl is not None:
            raise ResponseError("both Content-Length and Transfer-Encoding")
        if te.lower() != b"chunked":
            raise ResponseError("unsupported Transfer-Encoding")
        if not http11:
            raise ResponseError("Transfer-Encoding in an HTTP/1.0 response")
    elif cl is not None:
        if _DIGITS.fullmatch(cl) is None:
            raise ResponseError("malformed Content-Length")
        length = int(cl)
    if close and not foreign:
        foreign = any(line[:6].lower() == b"close:" for line in lines)
    if foreign:
        fields = None
    elif lines:
        lines.append(b"")
        fields = b"\r\n".join(lines)
    else:
        fields = b""
    return OldHead(
        status,
        m.group(3) or b"",
        http11,
        [(n.lower(), v) for n, v in pairs],
        te is not None,
        cl is not None,
        length,
        close or not http11,
        fields,
    )


def reference_reader(head: OldHead, method: bytes, upgrade: bool) -> tuple[str, int, bool]:
    """ResponseReader._head's decisions on a parsed head, as they were: (what follows, framing,
    whether the connection stays reusable)."""
    status = head.status
    if status < 200:
        if status == 101:
            if not upgrade:
                raise ResponseError("backend switched protocols unasked")
            return "switched", NO_BODY, True
        if status < 100:
            raise ResponseError(f"bad status {status}")
        return "informational", NO_BODY, True
    keep = not head.close
    if method == b"HEAD" or status in {204, 304}:
        return "end", NO_BODY, keep
    if head.chunked:
        return "chunks", CHUNKED, keep
    if head.content_length:
        return ("body" if head.length else "end"), LENGTH, keep
    return "until close", CLOSE, keep


def reference_response_head(
    head: OldHead, method: bytes, http11: bool, keep_alive: bool, retired: bool
) -> tuple[bytes, bool, bool]:
    """Exchange.response_head as it was: (the client's head, re-chunked, closes)."""
    fields = head.fields
    status = head.status
    if fields is None:
        fields = b"".join(
            [
                n + b": " + v + b"\r\n"
                for n, v in response_headers(head.headers)
                if status != 204 or n != b"content-length"
            ]
        )
    close = not keep_alive or retired
    chunked = False
    extra = b""
    if not head.content_length and status not in {204, 304}:
        if http11:
            extra = b"Transfer-Encoding: chunked\r\n"
            chunked = method != b"HEAD"
        elif method != b"HEAD":
            close = True
    if close:
        extra += b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, head.reason, fields, extra), chunked, close


# ---------------------------------------------------------------- the new code, driven the same way

_STATES = {_END: "end", _CHUNK_SIZE: "chunks", _BODY: "body", _UNTIL_CLOSE: "until close"}


def new_reader(raw: bytes, method: bytes, upgrade: bool) -> tuple[Head, tuple[str, int, bool]]:
    r = ResponseReader()
    r.start(method, upgrade)
    r.receive_data(raw + b"\r\n")
    ev = r.next_event()
    assert isinstance(ev, Head)
    if ev.status < 200:
        return ev, ("switched" if ev.status == 101 else "informational", ev.framing, True)
    return ev, (_STATES[r._state], ev.framing, r.keep)  # (the reader's decision, read directly)


TOML = """
[global]
access_log = ""
[pool.alpha]
servers = [{ address = "127.0.0.1:9" }]
[[http]]
listen = ["127.0.0.1:1"]
  [[http.route]]
  path = "/"
  pool = "alpha"
"""
_CONFIG = conf.load_text(TOML)
_SITE = Site(_CONFIG.http[0], PoolSet(_CONFIG.pools))


def new_response_head(
    head: Head, method: bytes, http11: bool, keep_alive: bool, retired: bool
) -> tuple[bytes, bool, bool]:
    site = _SITE
    site.retired = retired
    ex = Exchange(site, 0.0)
    ex.method = method
    ex.http11 = http11
    ex.keep_alive = keep_alive
    out = ex.response_head(head)
    return out, ex.resp_chunked, ex.resp_close


def names_lowered(client_head: bytes) -> bytes:
    """A client head with every field name lower-cased (values and everything else as they are)."""
    status_line, _, rest = client_head.partition(b"\r\n")
    lines = [
        n.lower() + b":" + v for n, _, v in (line.partition(b":") for line in rest.split(b"\r\n") if line)
    ]
    return status_line + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def backend_names(raw: bytes) -> set[bytes]:
    return {n for n, _ in _LINES.findall(raw, raw.find(b"\n"))}


# ---------------------------------------------------------------- generated heads

STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.0 204 ",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 103 Early Hints",
    b"HTTP/1.1 200",
    b"HTTP/1.1 200 ",
    b"HTTP/1.1 502 Bad\tGateway \x80",
]
BAD_STATUS_LINES = [
    b"HTTP/1.1 099 Low",
    b"HTTP/2.0 200 OK",
    b"HTTP/1.1  200 OK",
    b"http/1.1 200 OK",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 20 OK",
]
NAMES = [
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"upgrade",
    b"close",
    b"host",
    b"server",
    b"x-a",
    b"content-type",
    b"content-lengthx",
    b"tex",
    b"x-te",
    b"content_length",
    b"set-cookie",
]
VALUES = [
    b"0",
    b"5",
    b"128",
    b"007",
    b"5, 5",
    b"+5",
    b"0x5",
    b"1" * 19,
    b"chunked",
    b"Chunked",
    b"gzip",
    b"gzip, chunked",
    b"chunked, chunked",
    b"close",
    b"Close",
    b"keep-alive",
    b"Keep-Alive, Close",
    b"close, x-a",
    b"x-a",
    b"upgrade",
    b"te, upgrade",
    b"host, content-length",
    b", ,",
    b"trailers",
    b"a b",
    b"a\tb",
    b'W/"x:y"',
    b"Mon, 30 Nov 2026 07:45:00 GMT",
    b"caf\xc3\xa9",
    b"\x80\xff",
    b"",
]
OWS = [b"", b" ", b"  ", b"\t", b" \t", b"\t "]
MUTANTS = [b"\r", b"\n", b"\r\n", b"\x00", b"\x01", b"\x7f", b" ", b"\t", b":", b"\r\n ", b"\r\n\t", b"A"]


@st.composite
def field_lines(draw: st.DrawFn, clean: bool) -> bytes:
    name = draw(st.sampled_from(NAMES))
    # Names in any case: the backend's case must reach the client, the parse must not care.
    flips = draw(st.integers(0, (1 << len(name)) - 1))
    name = bytes(c ^ 0x20 if flips >> i & 1 and 0x61 <= c <= 0x7A else c for i, c in enumerate(name))
    value = draw(
        st.sampled_from(VALUES) if clean else st.one_of(st.sampled_from(VALUES), st.binary(max_size=6))
    )
    return name + b":" + draw(st.sampled_from(OWS)) + value + draw(st.sampled_from(OWS))


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    """A head as ResponseReader hands it to parse_head: status line through the last field's CRLF."""
    clean = draw(st.booleans())  # half the heads as a backend would send them, half damaged
    status = draw(st.sampled_from(STATUS_LINES if clean else STATUS_LINES + BAD_STATUS_LINES))
    lines = [status, *draw(st.lists(field_lines(clean), max_size=8))]
    head = b"".join(line + b"\r\n" for line in lines)
    for _ in range(0 if clean else draw(st.integers(1, 2))):  # a byte inserted, removed or replaced
        # (in the field lines, mostly: hypothesis leans towards small numbers)
        fields_at = min(len(status) + 2, len(head))
        i = draw(st.integers(0 if draw(st.integers(0, 3)) == 3 else fields_at, len(head)))
        what = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(st.sampled_from(MUTANTS), st.binary(min_size=1, max_size=2)))
        if what == "insert":
            head = head[:i] + piece + head[i:]
        elif what == "delete":
            head = head[:i] + head[i + 1 :]
        else:
            head = head[:i] + piece + head[i + 1 :]
    # parse_head's contract: the reader hands it the head up to the blank line, so it ends
    # with a CRLF (past that, the old loop never looked: "X: 1\r\n\x00" passed it).
    return head if head.endswith(b"\r\n") else head + b"\r\n"


DIFFERENTIAL = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except ResponseError as exc:
        return ("refused", str(exc))


@DIFFERENTIAL
@given(response_heads())
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n")  # a hop-by-hop first line
@example(b"HTTP/1.1 200 OK\r\nConnection: close\r\nClose: x\r\n")
@example(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX: y\r\n")
@example(b"HTTP/1.1 200 OK\r\nX:\r\nY: \t\r\nKeep-Alive:\r\nZ: v \t\r\n")
@example(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n")
@example(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n")
@example(b"HTTP/1.1 200 OK\r\nX: a\x00\r\n")
@example(b"HTTP/1.1 200 OK\r\nX: a\rb\r\n")
@example(b"HTTP/1.1 200 OK\r\nX\r\n")
@example(b"HTTP/1.1 2000 OK\r\n")
def test_parse_head_agrees_with_the_field_loop(raw: bytes) -> None:
    old = _outcome(reference_parse_head, raw)
    new = _outcome(parse_head, raw)
    if isinstance(old, tuple) or isinstance(new, tuple):
        event(f"refused: {str(old[1]).split(' b')[0] if isinstance(old, tuple) else None}")
        assert new == old, raw  # the same refusal, for the same reason
        return
    event(f"accepted, {'general path' if new.fields is None else 'one pass'}")  # type: ignore[union-attr]
    assert isinstance(old, OldHead) and isinstance(new, Head)
    assert (new.status, new.reason, new.http11) == (old.status, old.reason, old.http11), raw
    assert (new.chunked, new.content_length, new.length, new.close) == (
        old.chunked,
        old.content_length,
        old.length,
        old.close,
    ), raw
    assert new.headers == old.headers, raw  # what HTTP/2, 1xx and the general path read
    assert (new.fields is None) == (old.fields is None), raw
    if new.fields is not None:
        assert names_lowered(b"HTTP/1.1 200 OK\r\n" + new.fields) == names_lowered(
            b"HTTP/1.1 200 OK\r\n" + old.fields  # type: ignore[operator]
        ), raw
        # ... and the names as the backend spelled them.
        assert {n for n, _, _ in (line.partition(b":") for line in new.fields.split(b"\r\n") if line)} <= (
            backend_names(raw)
        ), raw


@DIFFERENTIAL
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", b"GET", False, True, True, False)
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", b"GET", False, True, True, False)
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", b"GET", False, False, True, False)
@example(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", b"GET", False, True, True, False)
@example(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n", b"GET", True, True, True, False)
@given(
    response_heads(),
    st.sampled_from([b"GET", b"HEAD"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_framing_and_client_bytes_agree(  # noqa: PLR0917
    raw: bytes, method: bytes, upgrade: bool, http11: bool, keep_alive: bool, retired: bool
) -> None:
    if (raw + b"\r\n").find(b"\r\n\r\n") != len(raw) - 2:
        return  # the reader would not take this as the whole head: another example
    try:
        old_head = reference_parse_head(raw)
        old_framing: object = reference_reader(old_head, method, upgrade)
    except ResponseError:
        old_framing = "refused"
    try:
        new_head, new_framing = new_reader(raw, method, upgrade)
    except ResponseError:
        assert old_framing == "refused", raw
        event("refused")
        return
    assert new_framing == old_framing, raw  # what follows the head, the framing, reuse
    event(f"{new_framing[0]}")
    if new_head.status < 200:
        return
    old_out = reference_response_head(old_head, method, http11, keep_alive, retired)
    new_out = new_response_head(new_head, method, http11, keep_alive, retired)
    assert new_out[1:] == old_out[1:], raw
    assert names_lowered(new_out[0]) == names_lowered(old_out[0]), raw


# ---------------------------------------------------------------- the name-case choice, spelled out


def test_names_reach_the_client_as_the_backend_sent_them() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b'ETag: "a"\r\nx-lower: v\r\n'
    )
    assert head.fields == b'Server: nginx\r\nContent-Length: 2\r\nETag: "a"\r\nx-lower: v\r\n'
    assert head.headers == [
        (b"server", b"nginx"),
        (b"content-length", b"2"),
        (b"connection", b"keep-alive"),
        (b"etag", b'"a"'),
        (b"x-lower", b"v"),
    ]


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (b"HTTP/1.1 200 OK\r\nX:v\r\nY:  \t w \t\r\nZ:\r\n", b"X: v\r\nY: w\r\nZ: \r\n"),
        (b"HTTP/1.1 200 OK\r\nTE: trailers\r\nA: 1\r\nKeep-Alive: 5\r\nUpgrade: x\r\n", b"A: 1\r\n"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX: y\r\n", b"X: y\r\n"),
        (b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\n", None),  # the general path decides
    ],
)
def test_client_fields(raw: bytes, fields: bytes | None) -> None:
    assert parse_head(raw).fields == fields


# ---------------------------------------------------------------- parse_head remembers heads


def test_a_remembered_head_is_a_new_head_each_time() -> None:
    raw = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
    first = parse_head(raw)
    first.framing = CHUNKED  # (the reader sets it per response)
    second = parse_head(bytes(raw))
    assert second is not first and second.framing == NO_BODY
    assert [getattr(second, a) for a in Head.__slots__ if a != "framing"] == [
        getattr(first, a) for a in Head.__slots__ if a != "framing"
    ]


def test_a_refused_head_is_refused_every_time() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n"
    for _ in range(2):
        with pytest.raises(ResponseError, match="duplicate Content-Length"):
            parse_head(raw)
