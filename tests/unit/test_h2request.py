"""proxy.http.h2request: the HTTP/2 -> HTTP/1.1 translation and its header checks.

Three kinds of evidence: one test per rule; a differential test against h2's own
inbound validation (every block h2 rejects, we reject: so switching h2's passes off
loses nothing); and a property that every block we accept becomes an HTTP/1.1 head
that h11 parses as a server into the same method, target, headers and framing.
"""

from __future__ import annotations

import re

import h11
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived, TrailersReceived
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, normalize_outbound_headers, validate_outbound_headers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.http.h2request import (
    COMMON_NAMES,
    H2Request,
    StreamError,
    check_body_length,
    check_trailers,
    response_headers,
    response_trailers,
    translate_request,
)
from proxy.http.headers import RequestPolicy
from proxy.http.response import request_head

Header = tuple[bytes, bytes]

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/")]


def _reason(headers: list[Header], end_stream: bool = True, **kw: bool) -> StreamError:
    with pytest.raises(StreamError) as info:
        translate_request(headers, end_stream=end_stream, **kw)
    return info.value


# -- h2 as the reference ------------------------------------------------------------


def _client_bytes(blocks: list[tuple[list[Header], bool]]) -> bytes:
    """What an h2 client sends for these header blocks on stream 1, unchecked and unchanged."""
    client = H2Connection(
        H2Configuration(
            client_side=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
    )
    client.initiate_connection()
    for headers, end_stream in blocks:
        client.send_headers(1, headers, end_stream=end_stream)
    return client.data_to_send()


def _h2_server(blocks: list[tuple[list[Header], bool]], validate: bool) -> list[list[Header]] | None:
    """The header lists an h2 server hands over; None when it rejects the blocks."""
    server = H2Connection(
        H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=validate,
            normalize_inbound_headers=validate,
        )
    )
    server.initiate_connection()
    try:
        events = server.receive_data(_client_bytes(blocks))
    except ProtocolError:
        return None
    return [
        [(bytes(n), bytes(v)) for n, v in e.headers]
        for e in events
        if isinstance(e, (RequestReceived, TrailersReceived))
    ]


def _ours_accepts(headers: list[Header], end_stream: bool) -> bool:
    try:
        translate_request(headers, end_stream=end_stream)
    except StreamError:
        return False
    return True


# -- generated header blocks: valid ones, and mutations ------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
VALUE_INNER = [*range(0x20, 0x7F), 0x09, 0x80, 0xA0, 0xE3, 0xFF]
VALUE_EDGE = [*range(0x21, 0x7F), 0x80, 0xFF]
CONNECTION_SPECIFIC = [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
RESERVED = {b"host", b"content-length", b"te", b"cookie", *CONNECTION_SPECIFIC}

names = st.one_of(
    st.sampled_from(sorted(COMMON_NAMES - RESERVED)),
    st.text(TCHAR, min_size=1, max_size=10).map(str.encode),
).filter(lambda n: n not in RESERVED)
values = st.one_of(
    st.just(b""),
    st.tuples(
        st.sampled_from(VALUE_EDGE),
        st.lists(st.sampled_from(VALUE_INNER), max_size=20),
        st.sampled_from(VALUE_EDGE),
    ).map(lambda t: bytes([t[0], *t[1], t[2]])),
    st.sampled_from(VALUE_EDGE).map(lambda c: bytes([c])),
)
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
hosts = st.one_of(
    st.lists(label, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["[::1]", "[2001:db8::1]", "192.0.2.7"]),
)
authorities = st.tuples(hosts, st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"))).map(
    lambda t: (t[0] + t[1]).encode()
)
paths = st.tuples(
    st.text("".join(chr(c) for c in range(0x21, 0x7F)), max_size=20),
).map(lambda t: b"/" + t[0].encode())
methods = st.one_of(
    st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]),
    # (a plain CONNECT takes no :scheme or :path: only the extended one below is drawn)
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1, max_size=8)
    .map(str.encode)
    .filter(lambda m: m != b"CONNECT"),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[Header], bool]:
    """A well-formed request header block and its END_STREAM flag."""
    method = draw(methods)
    authority = draw(authorities)
    pseudo = [(b":method", method), (b":scheme", draw(st.sampled_from([b"https", b"http"])))]
    path = b"*" if method == b"OPTIONS" and draw(st.booleans()) else draw(paths)
    pseudo.append((b":path", path))
    if draw(st.booleans()):
        pseudo.append((b":protocol", b"websocket"))
        pseudo[0] = (b":method", b"CONNECT")
        pseudo[2] = (b":path", draw(paths))
    use_host = draw(st.sampled_from(["authority", "host", "both"]))
    if use_host != "host":
        pseudo.append((b":authority", authority))
    pseudo = draw(st.permutations(pseudo))
    regular = draw(st.lists(st.tuples(names, values), max_size=8))
    if use_host != "authority":
        regular.insert(draw(st.integers(0, len(regular))), (b"host", authority))
    crumbs = draw(st.lists(values, max_size=3))
    for crumb in crumbs if len(crumbs) == 1 else [c for c in crumbs if c]:
        regular.insert(draw(st.integers(0, len(regular))), (b"cookie", crumb))
    if draw(st.booleans()):
        regular.append((b"te", b"trailers"))
    end_stream = draw(st.booleans())
    if not end_stream and draw(st.booleans()):
        regular.insert(
            draw(st.integers(0, len(regular))), (b"content-length", b"%d" % draw(st.integers(0, 10**6)))
        )
    return [*pseudo, *regular], end_stream


def _at(draw: st.DrawFn, headers: list[Header], regular: bool = False) -> int:
    first = next((i for i, (n, _) in enumerate(headers) if n[:1] != b":"), len(headers))
    candidates = range(first, len(headers)) if regular else range(len(headers))
    if not candidates:
        return -1
    return draw(st.sampled_from(candidates))


def _insert(draw: st.DrawFn, s: bytes, junk: bytes) -> bytes:
    i = draw(st.integers(0, len(s)))
    return s[:i] + junk + s[i:]


MUTATIONS = (
    "upper_name",
    "bad_byte_value",
    "bad_byte_name",
    "ctl_value",
    "space_edge",
    "connection_specific",
    "te_other",
    "pseudo_after_regular",
    "unknown_pseudo",
    "duplicate_pseudo",
    "drop_pseudo",
    "empty_path",
    "relative_path",
    "host_mismatch",
    "content_length",
    "bad_authority",
    "non_token_name",
    "status_pseudo",
    "protocol_on_get",
    "plain_connect",
    "empty_name",
    "bad_method",
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[list[Header], bool, str]:
    headers, end_stream = draw(requests())
    kind = draw(st.sampled_from(MUTATIONS))
    h = list(headers)
    i = _at(draw, h)
    r = _at(draw, h, regular=True)
    if kind == "upper_name" and r >= 0:
        n, v = h[r]
        j = draw(st.integers(0, len(n) - 1))
        h[r] = (n[:j] + n[j : j + 1].upper() + n[j + 1 :] if n[j : j + 1].isalpha() else n + b"X", v)
    elif kind == "bad_byte_value":
        n, v = h[i]
        h[i] = (n, _insert(draw, v, draw(st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n", b"\r\nx: y"]))))
    elif kind == "bad_byte_name":
        n, v = h[i]
        h[i] = (_insert(draw, n, draw(st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\x7f"]))), v)
    elif kind == "ctl_value" and r >= 0:
        n, v = h[r]
        h[r] = (n, _insert(draw, v, draw(st.sampled_from([b"\x01", b"\x0b", b"\x0c", b"\x1f", b"\x7f"]))))
    elif kind == "space_edge":
        n, v = h[i]
        ws = draw(st.sampled_from([b" ", b"\t"]))
        h[i] = (n, ws + v if draw(st.booleans()) else v + ws)
    elif kind == "connection_specific":
        h.append(
            (
                draw(st.sampled_from(CONNECTION_SPECIFIC)),
                draw(st.sampled_from([b"close", b"chunked", b"h2c"])),
            )
        )
    elif kind == "te_other":
        h.append((b"te", draw(st.sampled_from([b"gzip", b"trailers, deflate", b"Trailers", b""]))))
    elif kind == "pseudo_after_regular":
        h.append((b"x", b"y"))
        h.append(h.pop(0))
    elif kind == "unknown_pseudo":
        h.insert(0, (draw(st.sampled_from([b":foo", b":", b":Method", b":host"])), b"x"))
    elif kind == "duplicate_pseudo":
        n, v = h[0]
        h.insert(0, (n, v))
    elif kind == "drop_pseudo":
        drop = draw(st.sampled_from([b":method", b":scheme", b":path", b":authority"]))
        gone = {drop, b"host"} if drop == b":authority" else {drop}  # Host would stand in
        h = [(n, v) for n, v in h if n not in gone]
    elif kind == "empty_path":
        h = [(n, b"" if n == b":path" else v) for n, v in h]
    elif kind == "relative_path":
        bad = draw(st.sampled_from([b"index.html", b"http://a/", b"*", b"?x", b"/a b", b"/\x80", b"/a\x7f"]))
        if bad == b"*" and (b":method", b"OPTIONS") in h:
            bad = b"index.html"  # `*` is OPTIONS's own form (RFC 9113 8.3.1): not a mutation there
        h = [(n, bad if n == b":path" else v) for n, v in h]
    elif kind == "host_mismatch":
        h.append((b"host", b"evil.example"))
        if not any(n == b":authority" for n, _ in h):
            h.insert(0, (b":authority", b"good.example"))
    elif kind == "content_length":
        lengths = draw(
            st.sampled_from([[b"1", b"1"], [b"-1"], [b"1x"], [b"1, 1"], [b" 1"], [b"0x10"], [b""]])
        )
        h += [(b"content-length", v) for v in lengths]
    elif kind == "bad_authority":
        bad = draw(
            st.sampled_from([b"a b", b"user@host", b"host:port", b"[::1", b"", b"host:123456", b"a/b"])
        )
        h = [(n, bad if n in (b":authority", b"host") else v) for n, v in h]
        if not any(n in (b":authority", b"host") for n, _ in h):
            h.insert(0, (b":authority", bad))
    elif kind == "non_token_name":
        h.append((draw(st.sampled_from([b"a(b", b"a:b", b'a"b', b"a/b", b"\xe3", b"{x}"])), b"v"))
    elif kind == "status_pseudo":
        h.insert(0, (b":status", b"200"))
    elif kind == "protocol_on_get":
        h = [(n, b"GET" if n == b":method" else v) for n, v in h if n != b":protocol"]
        h.insert(0, (b":protocol", b"websocket"))
    elif kind == "plain_connect":
        h = [(n, b"CONNECT" if n == b":method" else v) for n, v in h if n not in (b":protocol", b":path")]
    elif kind == "empty_name":
        h.append((b"", b"v"))
    elif kind == "bad_method":
        bad = draw(st.sampled_from([b"", b"GE T", b"G\x00T", b"GET\r\n"]))
        h = [(n, bad if n == b":method" else v) for n, v in h]
    return h, end_stream, kind


# -- the differential against h2 and h11 ----------------------------------------------


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(requests().map(lambda r: (*r, "none")), mutated()))
def test_we_reject_every_block_h2_rejects(case: tuple[list[Header], bool, str]) -> None:
    headers, end_stream, _ = case
    if _h2_server([(headers, end_stream)], validate=True) is None:
        assert not _ours_accepts(headers, end_stream)
    else:
        # What the server hands over with its passes off is what we are given.
        assert _h2_server([(headers, end_stream)], validate=False) is not None


@settings(max_examples=800, deadline=None)
@given(requests())
def test_h2_without_its_passes_hands_over_the_block_unchanged(case: tuple[list[Header], bool]) -> None:
    headers, end_stream = case
    assert _h2_server([(headers, end_stream)], validate=False) == [headers]


@settings(max_examples=1500, deadline=None)
@given(requests())
def test_valid_blocks_are_accepted(case: tuple[list[Header], bool]) -> None:
    headers, end_stream = case
    req = translate_request(headers, end_stream=end_stream)
    assert req.has_body is not end_stream
    assert all(n[:1] != b":" and n != b"host" for n, _ in req.headers)


def _h11_parse(req: H2Request) -> tuple[h11.Request, list[Header], str]:
    """Write the backend head as the proxy does and read it back with h11 as a server."""
    headers = RequestPolicy(["x-forwarded-for"]).apply(
        req.h1_headers(),
        peer="192.0.2.1",
        proto=req.scheme,
        trusted=False,
        chunked=req.chunked,
        upgrade=req.protocol,
    )
    head = request_head(req.h1_method, req.target, headers)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    # The framing h11 reads must be the one HTTP/2 gave: a body of content-length bytes,
    # a chunked body, or none.
    if req.content_length is not None:
        conn.receive_data(b"x" * req.content_length)
        body = b""
        while not isinstance(ev := conn.next_event(), h11.EndOfMessage):
            assert isinstance(ev, h11.Data)
            body += ev.data
        framing = f"length {len(body)}"
    elif req.chunked:
        conn.receive_data(b"3\r\nabc\r\n0\r\n\r\n")
        assert isinstance(conn.next_event(), h11.Data)
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        framing = "chunked"
    elif req.protocol is not None:
        framing = "upgrade"
    else:
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        framing = "none"
    return event, headers, framing


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(requests().map(lambda r: (*r, "none")), mutated()))
def test_every_accepted_block_is_an_h1_head_h11_reads_the_same(case: tuple[list[Header], bool, str]) -> None:
    headers, end_stream, _ = case
    try:
        req = translate_request(headers, end_stream=end_stream)
    except StreamError:
        return
    event, sent, framing = _h11_parse(req)
    assert event.method == req.h1_method
    assert event.target == req.target
    assert list(event.headers) == sent
    if req.content_length is not None:
        assert framing == f"length {req.content_length}"
    elif req.has_body and req.protocol is None:
        assert framing == "chunked"
    elif req.protocol is None:
        assert framing == "none"


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_mutations_are_refused(case: tuple[list[Header], bool, str]) -> None:
    """Each mutation breaks a rule (a few draws leave the block valid; those are skipped)."""
    headers, end_stream, kind = case
    if kind in ("upper_name", "ctl_value") and not any(n[:1] != b":" for n, _ in headers):
        return
    assert not _ours_accepts(headers, end_stream), kind


# -- one test per rule ------------------------------------------------------------------


def test_a_plain_get() -> None:
    req = translate_request([*GET, (b"accept", b"*/*")], end_stream=True)
    assert req == H2Request(b"GET", b"/", b"example.com", b"https", None, [(b"accept", b"*/*")], None, False)
    assert req.h1_headers() == [(b"host", b"example.com"), (b"accept", b"*/*")]
    assert not req.chunked


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([*GET, (b"Accept", b"x")], "malformed field name"),
        ([*GET, (b"a b", b"x")], "malformed field name"),
        ([*GET, (b"a(b", b"x")], "malformed field name"),
        ([*GET, (b"", b"x")], "malformed field name"),
        ([*GET, (b"x", b"a\r\nb")], "control character"),
        ([*GET, (b"x", b"a\nb")], "control character"),
        ([*GET, (b"x", b"a\x00b")], "control character"),
        ([*GET, (b"x", b"a\x01b")], "control character"),
        ([*GET, (b"x", b" a")], "whitespace"),
        ([*GET, (b"x", b"a\t")], "whitespace"),
        ([*GET, (b"connection", b"close")], "connection-specific"),
        ([*GET, (b"keep-alive", b"5")], "connection-specific"),
        ([*GET, (b"proxy-connection", b"x")], "connection-specific"),
        ([*GET, (b"transfer-encoding", b"chunked")], "connection-specific"),
        ([*GET, (b"upgrade", b"h2c")], "connection-specific"),
        ([*GET, (b"te", b"gzip")], "te other"),
        ([*GET, (b"te", b"Trailers")], "te other"),
        ([*GET, (b"te", b"trailers"), (b"te", b"trailers")], "te other"),
        ([(b"x", b"y"), *GET], "after a regular field"),
        ([*GET[:2], (b"x", b"y"), *GET[2:]], "after a regular field"),
        ([(b":foo", b"x"), *GET], "unknown pseudo-header"),
        ([(b":status", b"200"), *GET], "unknown pseudo-header"),
        ([*GET, (b":path", b"/")], "duplicate :path"),
        ([(b":method", b"GET"), *GET], "duplicate :method"),
        ([(b":scheme", b"http"), *GET], "duplicate :scheme"),
        ([(b":authority", b"a"), *GET], "duplicate :authority"),
        (GET[1:], "missing :method"),
        ([GET[0], *GET[2:]], "missing :scheme or :path"),
        (GET[:3], "missing :scheme or :path"),
        ([*GET[:3], (b":path", b"")], "empty :path"),
        ([*GET[:3], (b":path", b"index.html")], "malformed :path"),
        ([*GET[:3], (b":path", b"*")], "malformed :path"),
        ([*GET[:3], (b":path", b"/a b")], "malformed :path"),
        ([*GET[:3], (b":path", b"/\xc3\xa9")], "malformed :path"),
        ([(b":method", b"G T"), *GET[1:]], "malformed :method"),
        ([GET[0], (b":scheme", b"1x"), *GET[2:]], "malformed :scheme"),
        ([*GET[:2], GET[3]], "neither :authority nor Host"),
        ([*GET, (b"host", b"other.example")], "Host disagrees"),
        ([*GET, (b"host", b"Example.com")], "Host disagrees"),
        ([*GET[:2], GET[3], (b"host", b"a"), (b"host", b"a")], "duplicate Host"),
        ([*GET[:2], (b":authority", b"user@example.com"), GET[3]], "malformed :authority"),
        ([*GET[:2], (b":authority", b"example.com:80:80"), GET[3]], "malformed :authority"),
        ([*GET[:2], (b":authority", b""), GET[3]], "malformed :authority"),
        ([*GET[:2], GET[3], (b"host", b"a b")], "malformed Host"),
        ([*GET, (b"content-length", b"1"), (b"content-length", b"1")], "duplicate content-length"),
        ([*GET, (b"content-length", b"1, 1")], "malformed content-length"),
        ([*GET, (b"content-length", b"-1")], "malformed content-length"),
        ([*GET, (b"content-length", b"1" * 19)], "malformed content-length"),
        ([*GET, (b":protocol", b"websocket")], ":protocol on a request"),
    ],
)
def test_malformed(headers: list[Header], reason: str) -> None:
    error = _reason(headers, end_stream=False)
    assert reason in error.reason
    assert error.status is None


def test_content_length_without_data_is_malformed() -> None:
    assert "without DATA" in _reason([*GET, (b"content-length", b"3")], end_stream=True).reason
    assert translate_request([*GET, (b"content-length", b"0")], end_stream=True).content_length == 0


def test_content_length_is_written_in_normal_form() -> None:
    req = translate_request([*GET, (b"content-length", b"007")], end_stream=False)
    assert req.content_length == 7
    assert req.headers == [(b"content-length", b"7")]
    assert not req.chunked


def test_a_body_without_length_is_chunked() -> None:
    req = translate_request([*GET, (b"te", b"trailers")], end_stream=False)
    assert req.chunked and req.has_body
    assert req.headers == [(b"te", b"trailers")]


def test_cookie_crumbs_are_joined_in_place() -> None:
    req = translate_request(
        [*GET, (b"a", b"1"), (b"cookie", b"x=1"), (b"b", b"2"), (b"cookie", b"y=2")], end_stream=True
    )
    assert req.headers == [(b"a", b"1"), (b"cookie", b"x=1; y=2"), (b"b", b"2")]


def test_an_empty_crumb_among_several_is_malformed() -> None:
    assert translate_request([*GET, (b"cookie", b"")], end_stream=True).headers == [(b"cookie", b"")]
    assert "empty cookie crumb" in _reason([*GET, (b"cookie", b"a=1"), (b"cookie", b"")]).reason


def test_host_stands_in_for_authority() -> None:
    req = translate_request([*GET[:2], GET[3], (b"host", b"example.com:8443")], end_stream=True)
    assert req.authority == b"example.com:8443"
    assert req.headers == []
    same = translate_request([*GET, (b"host", b"example.com")], end_stream=True)
    assert same.authority == b"example.com"
    assert same.headers == []


def test_options_asterisk() -> None:
    req = translate_request([(b":method", b"OPTIONS"), *GET[1:3], (b":path", b"*")], end_stream=True)
    assert req.target == b"*"


def test_plain_connect_is_refused_with_405() -> None:
    error = _reason([(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
    assert error.status == 405
    malformed = _reason([(b":method", b"CONNECT"), (b":authority", b"a:443"), (b":path", b"/")])
    assert malformed.status is None
    assert _reason([(b":method", b"CONNECT")]).status is None


def test_extended_connect() -> None:
    ws = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *GET[1:]]
    req = translate_request([*ws, (b"sec-websocket-version", b"13")], end_stream=False)
    assert (req.method, req.h1_method, req.protocol) == (b"CONNECT", b"GET", b"websocket")
    assert not req.chunked
    assert _reason([*ws[:2], *GET[1:3]], end_stream=False).status is None  # no :path
    other = [(b":method", b"CONNECT"), (b":protocol", b"connect-udp"), *GET[1:]]
    assert _reason(other, end_stream=False).status == 501
    off = _reason(ws, end_stream=False, extended_connect=False)
    assert off.status is None and "SETTINGS_ENABLE_CONNECT_PROTOCOL" in off.reason
    assert "duplicate :protocol" in _reason([ws[1], *ws], end_stream=False).reason


def test_check_body_length() -> None:
    check_body_length(None, 10**9, True)
    check_body_length(5, 3, False)
    check_body_length(5, 5, True)
    with pytest.raises(StreamError, match="exceeds"):
        check_body_length(5, 6, False)
    with pytest.raises(StreamError, match="short"):
        check_body_length(5, 4, True)
    with pytest.raises(StreamError, match="exceeds"):
        check_body_length(0, 1, True)


def test_common_names_are_lower_case_tokens() -> None:
    assert all(re.fullmatch(rb"[-!#$%&'*+.^_`|~0-9a-z]+", n) for n in COMMON_NAMES)


def test_stricter_than_h2_where_http1_needs_it() -> None:
    """Blocks h2 lets through that would be unsafe or unparseable as HTTP/1.1."""
    for headers in (
        [*GET, (b"a(b", b"x")],  # not a token: h11 refuses it
        [*GET, (b"x", b"a\x01b")],  # a CTL in a value
        [*GET, (b"te", b"Trailers")],
        [*GET, (b"content-length", b"1"), (b"content-length", b"1")],
        [*GET[:3], (b":path", b"/a b")],  # splits the request line
        [*GET[:3], (b":path", b"index.html")],
        [*GET[:2], (b":authority", b"user@example.com"), GET[3]],
        [*GET, (b"content-length", b"3")],  # END_STREAM with a length
    ):
        assert _h2_server([(headers, True)], validate=True) is not None, headers
        assert not _ours_accepts(headers, True), headers


# -- trailers --------------------------------------------------------------------------


def test_trailers() -> None:
    assert check_trailers([(b"grpc-status", b"0"), (b"content-length", b"5"), (b"te", b"trailers")]) == [
        (b"grpc-status", b"0")
    ]
    for bad in (
        [(b":path", b"/")],
        [(b"X", b"1")],
        [(b"x", b"a\r\nb")],
        [(b"x", b" a")],
        [(b"transfer-encoding", b"chunked")],
        [(b"te", b"gzip")],
    ):
        with pytest.raises(StreamError):
            check_trailers(bad)


trailer_blocks = st.lists(
    st.one_of(
        st.tuples(names, values),
        st.sampled_from(
            [
                (b":path", b"/"),
                (b":status", b"200"),
                (b"Upper", b"x"),
                (b"x", b"\r\n"),
                (b"x", b" a"),
                (b"connection", b"x"),
                (b"te", b"gzip"),
                (b"", b"x"),
                (b"x", b"a\x00"),
            ]
        ),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=400, deadline=None)
@given(trailer_blocks)
def test_we_reject_every_trailer_block_h2_rejects(trailers: list[Header]) -> None:
    blocks = [([*GET, (b"content-length", b"0")], False), (trailers, True)]
    h2_rejects = _h2_server(blocks, validate=True) is None
    try:
        check_trailers(trailers)
    except StreamError:
        return
    assert not h2_rejects


# -- responses -------------------------------------------------------------------------


def test_response_headers() -> None:
    out = response_headers(
        200,
        [
            (b"Content-Type", b"text/html"),
            (b"connection", b"keep-alive, x-hop"),
            (b"keep-alive", b"timeout=5"),
            (b"x-hop", b"1"),
            (b"content-length", b"12"),
            (b"te", b"trailers"),
            (b"upgrade", b"h2c"),
            (b"proxy-connection", b"x"),
            (b"http2-settings", b"x"),
            (b"set-cookie", b"a=1"),
        ],
    )
    assert out == [
        (b":status", b"200"),
        (b"content-type", b"text/html"),
        (b"content-length", b"12"),
        (b"set-cookie", b"a=1"),
    ]


def test_response_content_length() -> None:
    cl = [(b"content-length", b"0")]
    assert response_headers(204, cl) == [(b":status", b"204")]
    assert response_headers(103, [(b"link", b"</a>"), *cl]) == [(b":status", b"103"), (b"link", b"</a>")]
    assert response_headers(304, [(b"content-length", b"5")]) == [
        (b":status", b"304"),
        (b"content-length", b"5"),
    ]
    chunked = [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]
    assert response_headers(200, chunked) == [(b":status", b"200")]
    # A Connection option cannot remove Content-Length.
    assert response_headers(200, [(b"connection", b"content-length"), *cl]) == [(b":status", b"200"), *cl]


@pytest.mark.parametrize("status", [101, 99, 600, 0])
def test_no_101_on_h2(status: int) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        response_headers(status, [])


def test_response_trailers() -> None:
    assert response_trailers([(b"Grpc-Status", b"0"), (b"connection", b"x"), (b"content-length", b"1")]) == [
        (b"grpc-status", b"0")
    ]


backend_names = st.one_of(
    names,
    st.sampled_from(
        [
            b"Connection",
            b"keep-alive",
            b"Transfer-Encoding",
            b"content-length",
            b"TE",
            b"Upgrade",
            b"X-Mixed",
            b"Date",
        ]
    ),
)


@settings(max_examples=800, deadline=None)
@given(
    st.integers(100, 599).filter(lambda s: s != 101), st.lists(st.tuples(backend_names, values), max_size=10)
)
def test_response_headers_pass_h2_outbound_checks_unchanged(status: int, headers: list[Header]) -> None:
    """What we send satisfies h2's outbound validation and is a fixpoint of its normalisation."""
    out = response_headers(status, headers)
    flags = HeaderValidationFlags(
        is_client=False, is_trailer=False, is_response_header=True, is_push_promise=False
    )
    assert [tuple(h) for h in validate_outbound_headers(out, flags)] == out
    assert [tuple(h) for h in normalize_outbound_headers(out, flags)] == out
    assert out[0] == (b":status", b"%d" % status)
    assert all(n[:1] != b":" and n == n.lower() for n, _ in out[1:])


def test_a_response_sent_by_h2_with_its_outbound_passes_off() -> None:
    """End to end: request in, our checks, response out with h2's passes off; the client reads it."""
    off = H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    server = H2Connection(off)
    server.initiate_connection()
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [*GET, (b"cookie", b"a=1"), (b"cookie", b"b=2")], end_stream=True)
    (event,) = [e for e in server.receive_data(client.data_to_send()) if isinstance(e, RequestReceived)]
    req = translate_request(event.headers, end_stream=event.stream_ended is not None)
    assert req.headers == [(b"cookie", b"a=1; b=2")]
    server.send_headers(
        1, response_headers(200, [(b"Content-Type", b"text/plain"), (b"connection", b"close")])
    )
    server.send_data(1, b"ok", end_stream=True)
    events = client.receive_data(server.data_to_send())
    got = next(e for e in events if hasattr(e, "headers") and e.headers)
    assert got.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
