"""The strict backend response reader: framing, events, and every refusal (the proxy's 502)."""

from __future__ import annotations

import h11
import pytest

from proxy.http.response import (
    CHUNKED,
    CLOSE,
    END,
    LENGTH,
    NEED_DATA,
    Head,
    MissingHost,
    ResponseError,
    ResponseReader,
    request_head,
)


def events(
    raw: bytes | list[bytes], method: bytes = b"GET", eof: bool = False, upgrade: bool = False
) -> list[object]:
    """Feed `raw` (or pieces of it) and collect events until the reader needs data."""
    r = ResponseReader()
    r.start(method, upgrade)
    out: list[object] = []
    pieces = [raw] if isinstance(raw, bytes) else raw
    if eof:
        pieces = [*pieces, b""]
    for piece in pieces:
        r.receive_data(piece)
        while True:
            ev = r.next_event()
            if ev is NEED_DATA:
                break
            out.append(ev)
            if ev is END:
                return out
    return out


def body_of(evs: list[object]) -> bytes:
    return b"".join(e for e in evs if isinstance(e, bytes))


def h11_rejects(raw: bytes, method: bytes = b"GET") -> bool:
    """What h11 (as a client reading the same bytes) thinks, for the cases it judges too."""
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    c.send(h11.EndOfMessage())
    c.receive_data(raw)
    c.receive_data(b"")
    try:
        while True:
            ev = c.next_event()
            if ev is h11.NEED_DATA or type(ev) in (h11.EndOfMessage, h11.ConnectionClosed):
                return False
    except h11.RemoteProtocolError:
        return True


# ---------------------------------------------------------------- accepted


def test_content_length_in_one_piece() -> None:
    evs = events(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    head = evs[0]
    assert isinstance(head, Head)
    assert (head.status, head.reason, head.framing, head.length) == (200, b"OK", LENGTH, 5)
    assert head.headers == [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    assert evs[1:] == [b"hello", END]


def test_content_length_byte_by_byte() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    evs = events([raw[i : i + 1] for i in range(len(raw))])
    assert body_of(evs) == b"hello" and evs[-1] is END


def test_chunked_with_extension_and_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"
    )
    evs = events(raw)
    assert isinstance(evs[0], Head) and evs[0].framing == CHUNKED
    assert body_of(evs) == b"hello!" and evs[-1] is END
    split = events([raw[i : i + 3] for i in range(0, len(raw), 3)])
    assert body_of(split) == b"hello!" and split[-1] is END


def test_close_delimited_ends_at_eof() -> None:
    evs = events(b"HTTP/1.0 200 OK\r\n\r\nall of it", eof=True)
    assert isinstance(evs[0], Head) and evs[0].framing == CLOSE and evs[0].close
    assert body_of(evs) == b"all of it" and evs[-1] is END


@pytest.mark.parametrize(
    ("raw", "method"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"HEAD"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", b"GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"GET"),
    ],
)
def test_no_body(raw: bytes, method: bytes) -> None:
    evs = events(raw, method)
    assert isinstance(evs[0], Head) and evs[1:] == [END]


def test_informational_then_final_and_missing_reason() -> None:
    evs = events(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx")
    assert [e.status for e in evs if isinstance(e, Head)] == [100, 200]
    assert isinstance(evs[1], Head) and evs[1].reason == b""
    assert evs[-2:] == [b"x", END]


def test_switching_protocols_keeps_the_tunnel_bytes() -> None:
    r = ResponseReader()
    r.start(b"GET", upgrade=True)
    r.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x01a"
    )
    head = r.next_event()
    assert isinstance(head, Head) and head.status == 101
    assert r.next_event() is NEED_DATA
    assert r.trailing == b"\x81\x01a"


def _reusable_after(r: ResponseReader, raw: bytes) -> bool:
    r.start(b"GET")
    r.receive_data(raw)
    while r.next_event() is not END:
        pass
    return r.reusable


def test_reuse_only_after_a_clean_keep_alive_response() -> None:
    r = ResponseReader()
    assert _reusable_after(r, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert _reusable_after(r, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    assert not _reusable_after(r, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
    assert not _reusable_after(ResponseReader(), b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")
    # Bytes after the end are never read as the next response.
    assert not _reusable_after(
        ResponseReader(), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n"
    )


# ---------------------------------------------------------------- refused (-> 502)

REFUSED = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "duplicate CL"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "conflicting CL"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "CL list"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "signed CL"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", "hex CL"),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "CL+TE",
    ),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", "unknown TE"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "TE list"),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "TE twice",
    ),
    (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "TE in 1.0"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "negative chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "0x chunk size"),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 17 + b"\r\nx\r\n0\r\n\r\n",
        "huge chunk size",
    ),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", "bare LF chunk line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", "chunk without CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", "chunk ends with LF"),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"e" * 2000 + b"\r\nhello\r\n0\r\n\r\n",
        "long ext",
    ),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\nY: b\r\n\r\n", "bare LF trailer"),
    (b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", "bare LF head"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\nhello", "bare LF at the end"),
    (b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 5\r\n\r\nhello", "bare CR in value"),
    (b"HTTP/1.1 200 OK\rContent-Length: 5\r\n\r\nhello", "bare CR line end"),
    (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", "obs-fold"),
    (b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello", "obs-fold tab"),
    (b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 5\r\n\r\nhello", "header without colon"),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 5\r\n\r\nhello", "NUL in value"),
    (b"HTTP/1.1 200 OK\r\nX\x00: a\r\nContent-Length: 5\r\n\r\nhello", "NUL in name"),
    (b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 5\r\n\r\nhello", "control char in value"),
    (b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", "space before colon"),
    (b"HTTP/1.1 200 OK\r\n: empty\r\nContent-Length: 5\r\n\r\nhello", "empty name"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "short status"),
    (b"HTTP/1.1 099 Low\r\n\r\n", "status below 100"),
    (b"HTTP/2.0 200 OK\r\n\r\n", "HTTP/2 status line"),
    (b"HTTP/1.1  200 OK\r\n\r\n", "double space"),
    (b"garbage\r\n\r\n", "garbage"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101 unasked"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000 + b"\r\n\r\n", "over-long head"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000, "over-long incomplete head"),
]


@pytest.mark.parametrize(("raw", "what"), REFUSED, ids=[w for _, w in REFUSED])
def test_refused(raw: bytes, what: str) -> None:
    with pytest.raises(ResponseError):
        events(raw, eof=False)
    # Fed in small pieces, the same bytes are refused too (never half accepted).
    with pytest.raises(ResponseError):
        events([raw[i : i + 7] for i in range(0, len(raw), 7)], eof=True)


# Cases h11 judges the same way (where h11 is laxer, e.g. "5, 5", CL+TE or obs-fold, we are stricter).
H11_AGREES = [
    "conflicting CL",
    "unknown TE",
    "bad chunk size",
    "header without colon",
    "NUL in value",
    "space before colon",
    "bad status",
    "garbage",
    "over-long incomplete head",
    "101 unasked",
]


@pytest.mark.parametrize("what", H11_AGREES)
def test_h11_refuses_these_too(what: str) -> None:
    raw = dict((w, r) for r, w in REFUSED)[what]
    assert h11_rejects(raw)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"", "no response at all"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", "in the head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", "in a Content-Length body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "in a chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "before the last chunk"),
    ],
)
def test_eof_before_the_end_is_refused(raw: bytes, where: str) -> None:
    with pytest.raises(ResponseError):
        events(raw, eof=True)


# ---------------------------------------------------------------- request heads


def test_request_head_puts_host_first() -> None:
    head = request_head(
        b"GET", b"/a?b", [(b"accept", b"*/*"), (b"host", b"example.com"), (b"x-forwarded-for", b"1.2.3.4")]
    )
    assert (
        head == b"GET /a?b HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nx-forwarded-for: 1.2.3.4\r\n\r\n"
    )
    # h11 reads it as the same request.
    s = h11.Connection(h11.SERVER)
    s.receive_data(head)
    req = s.next_event()
    assert isinstance(req, h11.Request) and req.target == b"/a?b"


def test_request_head_without_host_is_refused() -> None:
    with pytest.raises(MissingHost):
        request_head(b"GET", b"/", [(b"accept", b"*/*")])


def test_garbage_is_refused_before_a_line_ends() -> None:
    with pytest.raises(ResponseError):
        events(b"\x16\x03\x01\x00\x05hello")
    assert events(b"HTTP/1") == []  # a prefix of a status line waits for more
