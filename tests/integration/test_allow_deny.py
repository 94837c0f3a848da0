"""Deny entries in `allow` on real listeners (issue 20): one client refused by an exclusion
inside a network the list admits, the client next to it served; [[http]] (403),
[[smtp]] (554) and [[tcp]] (reset at accept, before any server is dialled).

The refused client connects from 127.0.0.1, the admitted one from 127.0.0.2 (both loopback).
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from typing import Any

import pytest

import conf
from conf.access import parse_entry
from tests.integration.http_backends import HttpBackend, Proxy, config, read_response
from tests.integration.test_smtp_frontend import FakeMta, start_edge
from tests.integration.test_tcp_failover import Backend, Service, run
from tests.integration.test_tcp_relay import simple_pool

EXCLUDE_ONE = ("!127.0.0.1", "127.0.0.0/8")
ALLOW = tuple(parse_entry(e) for e in EXCLUDE_ONE)


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _ask_tcp(port: int, source: str) -> bytes:
    """Send a line; the answer, or b"reset" if the connection was reset or closed empty."""
    try:  # the reset may come before the connect is even reported
        reader, writer = await _connect(port, source)
    except ConnectionResetError:
        return b"reset"
    try:
        writer.write(b"ping\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        return line or b"reset"
    except ConnectionResetError:
        return b"reset"
    finally:
        writer.close()


async def _tcp() -> None:
    be = await Backend("B").start()
    async with Service(simple_pool(be), allow=ALLOW, max_connections=1) as svc:
        for _ in range(3):  # denied clients give their slot back (max_connections = 1)
            assert await _ask_tcp(svc.port, "127.0.0.1") == b"reset"
        assert await _ask_tcp(svc.port, "127.0.0.2") == b"B\n"
        assert svc.stats.denied == 3 and svc.stats.accepted == 1
        assert be.served == 1  # the excluded client never reached the server
    await be.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tcp_excluded_client_is_reset_before_any_server(loop: str) -> None:
    run(_tcp(), loop)


@pytest.mark.asyncio
async def test_tcp_without_allow_checks_nothing_per_accept() -> None:
    from lb.pool import PoolSet
    from proxy.tcp import TcpFrontend

    pool = conf.Pool("p", (conf.Server(conf.Address("127.0.0.1", 9)),))
    service = conf.TcpService((conf.Address("127.0.0.1", 0),), "p")
    assert TcpFrontend(service, PoolSet({"p": pool})).access is None


@pytest.mark.asyncio
async def test_http_excluded_client_gets_403() -> None:
    backend = await HttpBackend("a").start()
    routes = '[[http.route]]\npath = "/"\npool = "alpha"\n'
    listener = f"allow = {list(EXCLUDE_ONE)!r}".replace("'", '"')
    try:
        async with Proxy(config({"alpha": [backend.address]}, routes, listener)) as p:
            statuses = []
            for source in ("127.0.0.1", "127.0.0.2"):
                reader, writer = await _connect(p.port, source)
                writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                statuses.append((await read_response(reader, 5.0, False))[0])
                writer.close()
            assert statuses == [403, 200]
            assert p.stats.denied == 1
        assert len(backend.requests) == 1
    finally:
        await backend.stop()


@pytest.mark.asyncio
async def test_smtp_excluded_client_gets_554() -> None:
    mta = FakeMta(xclient=False)
    port = await mta.start()
    edge = await start_edge({"alpha": port}, (conf.SmtpRoute("example.com", "alpha"),), allow=ALLOW)
    try:
        reader, writer = await _connect(edge.port, "127.0.0.1")
        assert await asyncio.wait_for(reader.read(), 5) == b"554 5.7.1 Access denied\r\n"
        writer.close()

        def noop() -> Any:
            with smtplib.SMTP("127.0.0.1", edge.port, timeout=10, source_address=("127.0.0.2", 0)) as s:
                return s.noop()[0]

        assert await asyncio.to_thread(noop) == 250
        assert edge.stats.refused_connections == 1
    finally:
        await edge.stop()
        await mta.stop()


def test_sockets_from_127_0_0_2_work_here() -> None:
    """The tests above need a second loopback source address (Linux routes all of 127/8)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.create_connection(srv.getsockname(), source_address=("127.0.0.2", 0))
        conn, peer = srv.accept()
        assert peer[0] == "127.0.0.2"
        conn.close()
        c.close()
