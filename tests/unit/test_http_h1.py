"""H1Connection driven by fake transports (uvicorn's test style): no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import conf
from lb.pool import PoolSet
from proxy.http import HttpFrontend, HttpStats
from proxy.http.h1 import H1Connection
from proxy.http.upstream import UpstreamConnection

TOML = """
[global]
access_log = ""
[pool.alpha]
scheduler = "rr"
servers = [{ address = "127.0.0.1:9" }]
[[http]]
listen = ["127.0.0.1:1"]
  [[http.route]]
  path = "/"
  pool = "alpha"
"""


class FakeTransport:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.protocol: Any = None
        self.full = False  # writes make the protocol pause writing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.full and self.protocol is not None:
            self.protocol.pause_writing()

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True


def frontend() -> HttpFrontend:
    cfg = conf.load_text(TOML)
    return HttpFrontend(cfg.http[0], PoolSet(cfg.pools), HttpStats(), None)


def client(fe: HttpFrontend) -> tuple[H1Connection, FakeTransport]:
    conn = fe.make_protocol(lambda: None)
    assert isinstance(conn, H1Connection)
    t = FakeTransport(("192.0.2.1", 40000))
    t.protocol = conn
    conn.connection_made(t)  # type: ignore[arg-type]
    return conn, t


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nServer: s\r\n\r\nhello"


@pytest.mark.asyncio
async def test_keep_alive_exchange_reuses_the_backend_connection() -> None:
    fe = frontend()
    backend = fe.pools["alpha"].backends[0]
    up = UpstreamConnection(backend, fe.upstreams)
    ut = FakeTransport(("127.0.0.1", 9))
    up.connection_made(ut)  # type: ignore[arg-type]
    fe.upstreams.release(up, asyncio.get_running_loop().time())
    conn, ct = client(fe)
    for i in range(3):
        conn.data_received(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        assert ut.written[-1] == (
            b"GET /%d HTTP/1.1\r\nhost: h\r\nx-forwarded-for: 192.0.2.1\r\n"
            b"x-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n" % i
        )
        up.data_received(RESPONSE)
        # (field names as the backend sent them: proxy/http/response.py parse_head)
        assert ct.written[-1] == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\nhello"
    assert fe.counters.upstream_reused == 3
    assert fe.upstreams.idle_count() == 1 and not ct.closed


@pytest.mark.asyncio
async def test_backend_connection_paused_by_a_slow_client_goes_back_readable() -> None:
    """The response ends while the client's transport asks us to pause: we stopped reading
    the backend for that client; the idle connection must be readable again, or the next
    request on it waits for a response nobody reads."""
    fe = frontend()
    backend = fe.pools["alpha"].backends[0]
    up = UpstreamConnection(backend, fe.upstreams)
    ut = FakeTransport(("127.0.0.1", 9))
    up.connection_made(ut)  # type: ignore[arg-type]
    fe.upstreams.release(up, asyncio.get_running_loop().time())
    conn, ct = client(fe)
    ct.full = True  # the client reads slowly: this response fills its buffer
    conn.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    up.data_received(RESPONSE)
    assert ct.written[-1].endswith(b"hello")
    assert fe.upstreams.idle_count() == 1
    assert ut.reading, "an idle backend connection was left paused"
    other, ot = client(fe)
    other.data_received(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert ut.written[-1].startswith(b"GET /next ")
    up.data_received(RESPONSE)
    assert ot.written[-1].endswith(b"hello")
