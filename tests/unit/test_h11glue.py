"""The three reaches inside h11 (proxy/http/h11glue.py) still hold: fails loudly when h11 changes."""

from __future__ import annotations

import h11
import h11._readers
import pytest

from proxy.http import h11glue


def _request(raw: bytes) -> tuple[h11.Connection, h11.Request]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    ev = conn.next_event()
    assert isinstance(ev, h11.Request)
    return conn, ev


def test_header_triples_are_hs_own_list() -> None:
    _, req = _request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: v\r\n\r\n")
    triples = h11glue.header_triples(req)
    assert list(triples) == [(b"Host", b"host", b"a"), (b"X-Mixed-Case", b"x-mixed-case", b"v")]
    assert [(n, v) for _, n, v in triples] == list(req.headers)  # what the public API says


def test_buffered_counts_what_h11_holds() -> None:
    conn, _ = _request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
    assert h11glue.buffered(conn) == 5
    assert h11glue.buffered(conn) == len(conn.trailing_data[0])  # the public, copying way


def test_strict_chunk_reader_is_installed() -> None:
    assert h11._readers.chunk_header_re is h11glue.STRICT_CHUNK_HEADER
    conn, _ = _request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.receive_data(b"5;ext=\x00x\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError):
        while conn.next_event() is not h11.NEED_DATA:
            pass


def test_a_plain_chunk_extension_still_passes() -> None:
    conn, _ = _request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.receive_data(b"5;name=value\r\nhello\r\n0\r\n\r\n")
    events = []
    while (ev := conn.next_event()) is not h11.NEED_DATA:
        events.append(ev)
        if isinstance(ev, h11.EndOfMessage):
            break
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"hello"
