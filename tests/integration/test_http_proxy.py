"""The HTTP proxy end to end on loopback: real backends, a real Listener, raw sockets and curl."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.integration.http_backends import (
    HttpBackend,
    Proxy,
    config,
    read_response,
    request,
    unused_port,
    ws_frame,
)
from tests.support import require_tool

ROUTES = """
[[http.route]]
host = "www.example.com"
path = "/"
pool = "alpha"

[[http.route]]
host = "beta.example.com"
path = "/app/"
pool = "beta"
strip_prefix = true

[[http.route]]
host = "*.example.org"
path = "/"
pool = "beta"

[[http.route]]
host = "old.example.com"
redirect = "https://www.example.com/"
status = 301

[[http.route]]
path = "/teapot/"
status = 418

[[http.route]]
path = "/shared/"
pool = "alpha"
"""


@pytest_asyncio.fixture
async def backends() -> AsyncIterator[tuple[HttpBackend, HttpBackend]]:
    a = await HttpBackend("a").start()
    b = await HttpBackend("b").start()
    yield a, b
    await a.stop()
    await b.stop()


def get(path: str, host: str = "www.example.com", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def curl(*args: str) -> tuple[int, str]:
    exe = require_tool("curl")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--max-time",
        "5",
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


@pytest.mark.asyncio
async def test_routing_forms_with_curl(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, b = backends
    async with Proxy(config({"alpha": [a.address], "beta": [b.address]}, ROUTES)) as p:
        url = f"http://127.0.0.1:{p.port}"
        code, body = await curl("-H", "Host: WWW.Example.com:8080", f"{url}/echo?x=1")
        assert code == 200 and json.loads(body)["backend"] == "a"
        assert json.loads(body)["target"] == "/echo?x=1"
        code, body = await curl("-H", "Host: beta.example.com", f"{url}/app/echo/deep?q")
        assert code == 200 and json.loads(body)["target"] == "/echo/deep?q"  # strip_prefix
        code, body = await curl("-H", "Host: beta.example.com", f"{url}/elsewhere")
        assert code == 404 and "sekisho" not in body.lower()
        code, body = await curl("-H", "Host: x.y.example.org", f"{url}/echo")
        assert code == 200 and json.loads(body)["backend"] == "b"
        code, body = await curl("-H", "Host: example.org", f"{url}/echo")
        assert code == 404
        code, body = await curl("-H", "Host: anything", f"{url}/shared/echo")
        assert code == 200 and json.loads(body)["backend"] == "a"
        code, _ = await curl("-H", "Host: anything", f"{url}/teapot/")
        assert code == 418
        exe = require_tool("curl")
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Host: old.example.com",
            f"{url}/a/b?c=d",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert out.startswith(b"HTTP/1.1 301")
        assert b"location: https://www.example.com/a/b?c=d\r\n" in out.lower()
        # No route: 404 and nothing that names the software.
        code, body = await curl("-H", "Host: nowhere", f"{url}/")
        assert code == 404 and "sekisho" not in body.lower()
    # The target passes byte for byte.
    assert [r["target"] for r in a.requests][:1] == ["/echo?x=1"]


@pytest.mark.asyncio
async def test_target_path_normalised_query_byte_for_byte(backends: tuple[HttpBackend, HttpBackend]) -> None:
    """The path goes in the normal form routes were matched in (tests/unit/test_http_target.py);
    the query, which no route looks at, byte for byte."""
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        weird = "/echo/../x/%2e%2E/y;p=1?a=%zz&b=/../"
        status, _, body = await request(p.port, get(weird))
        assert status == 200 and json.loads(body)["target"] == "/y;p=1?a=%zz&b=/../"


@pytest.mark.asyncio
async def test_admin_paths_404_on_every_host(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, b = backends
    async with Proxy(config({"alpha": [a.address], "beta": [b.address]}, ROUTES)) as p:
        url = f"http://127.0.0.1:{p.port}"
        for host in ("www.example.com", "beta.example.com", "x.example.org", "nowhere"):
            for path in ("/-/", "/-/admin/", "/-/version", "/%2d/admin"):
                code, body = await curl("-H", f"Host: {host}", f"{url}{path}")
                assert code == 404, (host, path)
                assert "sekisho" not in body.lower()
    assert a.requests == [] and b.requests == []


@pytest.mark.asyncio
async def test_x_forwarded_for_replaced_from_untrusted_client(
    backends: tuple[HttpBackend, HttpBackend],
) -> None:
    a, _ = backends
    listener = (
        'forwarded_headers = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", '
        '"x-real-ip", "forwarded"]'
    )
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        _, _, body = await request(
            p.port,
            get(
                "/echo", extra="X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
            ),
        )
    headers = dict(json.loads(body)["headers"])
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["forwarded"] == "for=127.0.0.1;proto=http;host=www.example.com"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "www.example.com"


@pytest.mark.asyncio
async def test_x_forwarded_for_appended_from_trusted_proxy(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    listener = 'trusted_proxies = ["127.0.0.0/8"]'
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        _, _, body = await request(p.port, get("/echo", extra="X-Forwarded-For: 203.0.113.5\r\n"))
    headers = json.loads(body)["headers"]
    assert [v for n, v in headers if n == "x-forwarded-for"] == ["203.0.113.5, 127.0.0.1"]


@pytest.mark.asyncio
async def test_denied_client_gets_403(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    listener = 'allow = ["10.0.0.0/8"]'
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        status, headers, _ = await request(p.port, get("/echo"))
        assert status == 403 and headers.get("connection") == "close"
        assert p.stats.denied == 1
    assert a.requests == []


@pytest.mark.asyncio
async def test_keep_alive_reuse_on_both_sides(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        for i in range(20):
            writer.write(get(f"/echo/{i}"))
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["target"] == f"/echo/{i}"
        # Pipelined: three requests in one write, answered in order.
        writer.write(get("/echo/p1") + get("/echo/p2") + get("/echo/p3"))
        for name in ("p1", "p2", "p3"):
            _, _, body = await read_response(reader)
            assert json.loads(body)["target"] == f"/echo/{name}"
        writer.close()
        # A second client connection reuses the idle upstream connection too.
        status, _, _ = await request(p.port, get("/echo/again"))
        assert status == 200
        assert p.stats.connections_total == 2
        assert a.connections == 1
        assert p.stats.upstream_opened == 1 and p.stats.upstream_reused == 23


@pytest.mark.asyncio
async def test_chunked_both_ways(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        body = b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in (1, 100, 5000)) + b"0\r\n\r\n"
        raw = b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        status, _, resp = await request(p.port, raw)
        assert status == 200
        info = json.loads(resp)
        assert info["body_len"] == 5101
        assert ["transfer-encoding", "chunked"] in info["headers"]
        status, headers, resp = await request(p.port, get("/chunked/300000"))
        assert status == 200 and headers["transfer-encoding"] == "chunked" and len(resp) == 300000
        # A close-delimited backend body reaches a 1.1 client chunked, complete.
        status, headers, resp = await request(p.port, get("/close/100000"))
        assert status == 200 and headers["transfer-encoding"] == "chunked" and len(resp) == 100000
        # ... and an HTTP/1.0 client close-delimited.
        raw10 = b"GET /close/5000 HTTP/1.0\r\nHost: www.example.com\r\n\r\n"
        status, headers, resp = await request(p.port, raw10, until_close=True)
        assert status == 200 and len(resp) == 5000


@pytest.mark.asyncio
async def test_head(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"HEAD /size/1000 HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        status, headers, _ = await read_response(reader, head=True)
        assert status == 200 and headers["content-length"] == "1000"
        writer.write(get("/size/10"))  # same connection: no stray body bytes in between
        status, _, body = await read_response(reader)
        assert status == 200 and body == b"x" * 10
        writer.close()


@pytest.mark.asyncio
async def test_expect_100_continue(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(
            b"POST /continue HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(b"hello")
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["body_len"] == 5
        writer.close()


WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.asyncio
async def test_websocket_echo_through_upgrade(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(WS_UPGRADE)
        status, headers, _ = await read_response(reader)
        assert status == 101
        assert headers["upgrade"] == "websocket"
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        for msg in (b"hello", b"second message", b"x" * 100):
            writer.write(ws_frame(msg))
            async with asyncio.timeout(5):
                echoed = await reader.readexactly(2 + len(msg))
            assert echoed[2:] == msg
        writer.close()


@pytest.mark.asyncio
async def test_an_idle_websocket_is_closed_after_the_response_timeout(
    backends: tuple[HttpBackend, HttpBackend],
) -> None:
    """A tunnel with no bytes either way for `timeouts.response` is closed (nginx's
    proxy_read_timeout, HAProxy's `timeout tunnel`); traffic keeps it open."""
    a, _ = backends
    listener = "timeouts = { header = 5.0, idle = 5.0, connect = 1.0, response = 0.6 }"
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(WS_UPGRADE)
        status, _, _ = await read_response(reader)
        assert status == 101
        for _ in range(4):  # 4 x 0.3 s: longer than the timeout, but never 0.6 s quiet
            await asyncio.sleep(0.3)
            writer.write(ws_frame(b"ping"))
            async with asyncio.timeout(5):
                assert (await reader.readexactly(6))[2:] == b"ping"
        t0 = asyncio.get_running_loop().time()
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by sekisho
        quiet = asyncio.get_running_loop().time() - t0
        assert 0.3 < quiet < 4.0  # about 0.6 s: `response`, not `idle` (5 s)
        writer.close()


@pytest.mark.asyncio
async def test_an_idle_websocket_whose_client_stopped_reading_frees_the_backend(
    backends: tuple[HttpBackend, HttpBackend],
) -> None:
    """The client sends and stops reading: the echo fills what sekisho may queue for it, the
    backend is paused, the tunnel goes quiet. Closing politely would wait for a write that
    never ends and keep the backend connection with it; the tunnel is cut."""
    a, _ = backends
    listener = "timeouts = { header = 5.0, idle = 5.0, connect = 1.0, response = 0.6 }"
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (fills fast)
        sock.connect(("127.0.0.1", p.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(WS_UPGRADE)
        status, _, _ = await read_response(reader)
        assert status == 101 and len(a._writers) == 1
        writer.write(ws_frame(b"x" * 125) * 64000)  # 8 MB to echo (more than the sockets hold), never read
        async with asyncio.timeout(10):
            await writer.drain()
        t0 = asyncio.get_running_loop().time()
        async with asyncio.timeout(10):
            while a._writers:  # the backend connection ends
                await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - t0 < 5
        writer.transport.abort()


@pytest.mark.asyncio
async def test_limits_431_and_413(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    listener = "max_header_bytes = 2048\nmax_body_bytes = 1000"
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        status, _, _ = await request(p.port, get("/echo", extra=f"X-Big: {'a' * 3000}\r\n"))
        assert status == 431
        status, _, _ = await request(p.port, get("/echo", extra=f"X-Big: {'a' * 1000}\r\n"))
        assert status == 200
        raw = b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 1001\r\n\r\n"
        status, _, _ = await request(p.port, raw)
        assert status == 413
        chunks = b"".join(b"100\r\n" + b"z" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
        raw = b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        status, _, _ = await request(p.port, raw)
        assert status == 413
        ok = b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 1000\r\n\r\n" + b"q" * 1000
        status, _, body = await request(p.port, ok)
        assert status == 200 and json.loads(body)["body_len"] == 1000


@pytest.mark.asyncio
async def test_header_timeout_408_and_idle_timeout(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    listener = "timeouts = { header = 0.3, idle = 0.4, connect = 1.0, response = 5.0 }"
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: www.exa")
        status, headers, _ = await read_response(reader, read_timeout=3)
        assert status == 408 and headers["connection"] == "close"
        assert await reader.read() == b""
        writer.close()
        # Idle keep-alive connection: closed without a word after timeouts.idle.
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(get("/echo"))
        status, _, _ = await read_response(reader)
        assert status == 200
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        assert 0.3 < loop.time() - t0 < 2.0
        writer.close()


@pytest.mark.asyncio
async def test_slow_backend_504(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    listener = "timeouts = { header = 5.0, idle = 5.0, connect = 1.0, response = 0.3 }"
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, listener)) as p:
        status, _, _ = await request(p.port, get("/slow/2"))
        assert status == 504
        status, _, _ = await request(p.port, get("/echo"))
        assert status == 200


@pytest.mark.asyncio
async def test_connect_failure_502_and_no_server_503(backends: tuple[HttpBackend, HttpBackend]) -> None:
    dead = f"127.0.0.1:{unused_port()}"
    async with Proxy(config({"alpha": [dead], "beta": [dead]}, ROUTES)) as p:
        status, _, body = await request(p.port, get("/echo"))
        assert status == 502 and b"sekisho" not in body.lower()
        assert p.stats.upstream_connect_errors >= 1
        for backend in p.pools["alpha"].backends:
            p.pools["alpha"].set_down(backend)
        status, _, _ = await request(p.port, get("/echo"))
        assert status == 503


@pytest.mark.asyncio
async def test_connect_failure_retries_another_server(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    dead = f"127.0.0.1:{unused_port()}"
    async with Proxy(config({"alpha": [dead, a.address], "beta": [a.address]}, ROUTES)) as p:
        status, _, body = await request(p.port, get("/echo"))
        assert status == 200 and json.loads(body)["backend"] == "a"
        assert p.pools["alpha"].backends[0].connect_failures == 1


@pytest.mark.asyncio
async def test_backend_killed_502_then_next_request_on_the_other_server(
    backends: tuple[HttpBackend, HttpBackend],
) -> None:
    a, b = backends
    async with Proxy(config({"alpha": [a.address, b.address], "beta": [a.address]}, ROUTES)) as p:
        status, _, body = await request(p.port, get("/echo"))
        assert status == 200 and json.loads(body)["backend"] == "a"
        # Server a dies while handling a request (the request was sent: not retried).
        status, _, _ = await request(
            p.port, b"POST /die HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 1\r\n\r\nx"
        )
        assert status == 502
        await a.stop()
        status, _, body = await request(p.port, get("/echo"))
        assert status == 200 and json.loads(body)["backend"] == "b"


@pytest.mark.asyncio
async def test_stale_kept_alive_upstream_is_retried_for_idempotent_requests(
    backends: tuple[HttpBackend, HttpBackend],
) -> None:
    a, _ = backends
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        assert (await request(p.port, get("/echo")))[0] == 200
        # The backend drops its idle connection; we reuse it before noticing.
        idle = p.frontend.upstreams._idle
        (conn,) = next(iter(idle.values()))
        status, _, _ = await request(p.port, get("/die"))
        assert status == 502  # /die kills the request itself: GET is retried once, dies again
        assert conn.closed
        assert (await request(p.port, get("/echo")))[0] == 200


LYING = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "duplicate CL"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "conflicting CL"),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "CL+TE",
    ),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", "unknown TE"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status"),
    (b"garbage\r\n\r\n", "garbage"),
    (b"", "closed without a response"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("raw", "what"), LYING, ids=[w for _, w in LYING])
async def test_lying_backend_502(backends: tuple[HttpBackend, HttpBackend], raw: bytes, what: str) -> None:
    a, _ = backends
    a.raw_response = raw
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        status, _, body = await request(
            p.port, b"POST /raw HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 0\r\n\r\n"
        )
        assert status == 502, what
        assert b"hello" not in body


@pytest.mark.asyncio
async def test_truncated_response_aborts_the_client(backends: tuple[HttpBackend, HttpBackend]) -> None:
    a, _ = backends
    a.raw_response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"h" * 40
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(get("/raw"))
        status_line = await reader.readuntil(b"\r\n\r\n")
        assert status_line.startswith(b"HTTP/1.1 200")
        got = b""
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            async with asyncio.timeout(5):
                got = await reader.readexactly(100)
        assert len(got) < 100
        writer.close()


@pytest.mark.asyncio
async def test_metrics_and_access_log(backends: tuple[HttpBackend, HttpBackend], tmp_path: object) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from proxy.accesslog import AccessLog
    from proxy.process.metrics.http import families

    a, _ = backends
    path = os.path.join(str(tmp_path), "access.log")
    log = AccessLog(path, "combined")
    async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES), access_log=log) as p:
        await request(p.port, get("/echo", extra="User-Agent: probe/1\r\n"))
        await request(p.port, get("/", host="nowhere"))
        stats = p.stats

    class Source:
        def collect(self) -> object:
            return families({"127.0.0.1:80": stats})

    registry = CollectorRegistry()
    registry.register(Source())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    ok = (
        'sekisho_http_requests_total{code="2xx",listener="127.0.0.1:80",'
        'protocol="http/1.1",route="www.example.com/"}'
    )
    assert ok + " 1.0" in text
    none = 'sekisho_http_requests_total{code="4xx",listener="127.0.0.1:80",protocol="http/1.1",route="none"}'
    assert none + " 1.0" in text
    assert "sekisho_http_request_duration_seconds_count" in text
    assert "sekisho_http_upstream_connections_opened_total" in text
    assert "sekisho_http_upstream_connections_reused_total" in text
    log.close()
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("127.0.0.1 - - [")
    assert '"GET /echo HTTP/1.1" 200 ' in lines[0]
    assert '"probe/1"' in lines[0] and '"www.example.com"' in lines[0] and a.address in lines[0]
    assert '"GET / HTTP/1.1" 404 ' in lines[1]
    json_log = AccessLog(os.path.join(str(tmp_path), "j.log"), "json")
    json_log.log(
        client="c",
        host="h",
        method=b"GET",
        target=b"/",
        version=b"1.1",
        status=200,
        size=1,
        upstream="u",
        duration=0.5,
        headers=None,
    )
    json_log.close()
    with open(os.path.join(str(tmp_path), "j.log")) as f:
        entry = json.loads(f.read())
    assert entry["status"] == 200 and entry["upstream"] == "u" and entry["request"] == "GET / HTTP/1.1"


def test_runs_on_uvloop() -> None:
    """The daemon runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    import uvloop

    async def scenario() -> None:
        a = await HttpBackend("a").start()
        try:
            async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                for path in ("/echo", "/chunked/70000", "/size/5"):
                    writer.write(get(path))
                    status, _, _ = await read_response(reader)
                    assert status == 200
                writer.close()
                assert p.stats.upstream_reused == 2
        finally:
            await a.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
