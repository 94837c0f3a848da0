"""Request smuggling: malformed requests get 400 and close; the backend receives nothing."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.http_backends import HttpBackend, Proxy, config, read_response

ROUTES = '[[http.route]]\npath = "/"\npool = "alpha"\n'
H = b"POST / HTTP/1.1\r\nHost: a\r\n"

MALFORMED: list[tuple[str, bytes]] = [
    ("CL+TE", H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE+CL", H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
    ("duplicate CL equal", H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("duplicate CL differ", H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("CL list", H + b"Content-Length: 3, 3\r\n\r\nabc"),
    ("CL plus sign", H + b"Content-Length: +3\r\n\r\nabc"),
    ("CL negative", H + b"Content-Length: -1\r\n\r\n"),
    ("CL hex", H + b"Content-Length: 0x3\r\n\r\nabc"),
    ("CL empty", H + b"Content-Length: \r\n\r\n"),
    ("CL huge", H + b"Content-Length: 99999999999999999999999\r\n\r\n"),
    ("TE gzip", H + b"Transfer-Encoding: gzip\r\n\r\nabc"),
    ("TE gzip, chunked", H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE chunked, identity", H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("TE twice", H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE xchunked", H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE space before colon", H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("TE tab value", H + b"Transfer-Encoding:\tchunked\x0b\r\n\r\n0\r\n\r\n"),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE obs-fold", H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
    ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("bare LF line", b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
    ("bare LF end", b"GET / HTTP/1.1\r\nHost: a\n\n"),
    ("bare LF before CRLF", b"GET / HTTP/1.1\r\nHost: a\n\r\n"),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rX-B: c\r\n\r\n"),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
    ("NUL in name", b"GET / HTTP/1.1\r\nHost: a\r\nX-\x00A: b\r\n\r\n"),
    ("NUL in target", b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n"),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("bad version", b"GET / HTTP/1.2.3\r\nHost: a\r\n\r\n"),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("no version", b"GET /\r\nHost: a\r\n\r\n"),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"),
    ("bad chunk size", H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("chunk size overflow", H + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 21 + b"\r\nabc\r\n0\r\n\r\n"),
    ("negative chunk size", H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n"),
    ("chunk missing CRLF", H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n"),
    (
        "oversized chunk extension",
        H + b"Transfer-Encoding: chunked\r\n\r\n3;" + b"e" * 20000 + b"\r\nabc\r\n0\r\n\r\n",
    ),
    ("absolute-form Host mismatch", b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("CONNECT", b"CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n"),
]


def test_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 30
    assert len({name for name, _ in MALFORMED}) == len(MALFORMED)


@pytest.mark.asyncio
async def test_malformed_requests_get_400_and_reach_no_backend() -> None:
    backend = await HttpBackend("a").start()
    failures = []
    try:
        async with Proxy(config({"alpha": [backend.address]}, ROUTES)) as p:
            for name, raw in MALFORMED:
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                writer.write(raw)
                try:
                    status, headers, _ = await read_response(reader, read_timeout=3)
                    closed = await asyncio.wait_for(reader.read(), 3) == b""
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                    failures.append(f"{name}: no answer ({exc!r})")
                    continue
                finally:
                    writer.close()
                if status != 400 or headers.get("connection") != "close" or not closed:
                    failures.append(f"{name}: {status} {headers}")
            # Let anything that leaked reach the backend before looking.
            await asyncio.sleep(0.05)
            assert p.stats.bad_requests >= len(MALFORMED) - len(failures)
    finally:
        await backend.stop()
    assert failures == []
    assert backend.connections == 0 and backend.raw_bytes == 0


@pytest.mark.asyncio
async def test_well_formed_neighbours_pass() -> None:
    """The checks refuse only what they must: close relatives of the table are accepted."""
    backend = await HttpBackend("a").start()
    good = [
        H + b"Content-Length: 3\r\n\r\nabc",
        H + b"content-length:3\r\n\r\nabc",
        H + b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        H + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
        b"GET http://a/echo HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    try:
        async with Proxy(config({"alpha": [backend.address]}, ROUTES)) as p:
            for raw in good:
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                writer.write(raw)
                status, _, _ = await read_response(reader)
                writer.close()
                assert status == 200, raw
    finally:
        await backend.stop()
    assert len(backend.requests) == len(good)
