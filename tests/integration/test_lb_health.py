"""Each health check kind against real servers on loopback."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from aiosmtpd.controller import Controller

import conf
from lb.health import probe
from lb.pool import PoolSet
from tests.integration.test_tcp_failover import Backend, run
from tests.support import free_port


async def _tcp() -> None:
    be = await Backend("T").start()
    check = conf.HealthCheck("tcp", timeout=1.0)
    assert (await probe(check, "127.0.0.1", be.port, "x")).ok
    await be.stop()
    r = await probe(check, "127.0.0.1", be.port, "x")
    assert not r.ok and r.reason


def test_tcp_check() -> None:
    run(_tcp())


def http_server(status: int, body: bytes, seen: list[bytes]) -> Backend:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
        )
        await writer.drain()
        writer.close()

    return Backend("H", handler)


async def _http() -> None:
    seen: list[bytes] = []
    ok = await http_server(200, b"status: healthy", seen).start()
    check = conf.HealthCheck("http", timeout=1.0, path="/healthz", host="www.example.com")
    r = await probe(check, "127.0.0.1", ok.port, f"127.0.0.1:{ok.port}")
    assert r.ok, r.reason
    assert seen[0].startswith(b"GET /healthz HTTP/1.1\r\n")
    assert b"\r\nHost: www.example.com\r\n" in seen[0]
    # expect_body
    good = conf.HealthCheck("http", timeout=1.0, expect_body="healthy")
    bad = conf.HealthCheck("http", timeout=1.0, expect_body="ready")
    assert (await probe(good, "127.0.0.1", ok.port, "x")).ok
    r = await probe(bad, "127.0.0.1", ok.port, "x")
    assert not r.ok and "body" in r.reason
    # Default Host: the server address as configured.
    await probe(conf.HealthCheck("http", timeout=1.0), "127.0.0.1", ok.port, "backend.test:8080")
    assert b"\r\nHost: backend.test:8080\r\n" in seen[-1]
    await ok.stop()
    # expect_status
    err = await http_server(503, b"", seen).start()
    r = await probe(conf.HealthCheck("http", timeout=1.0), "127.0.0.1", err.port, "x")
    assert not r.ok and r.reason == "status 503"
    assert (
        await probe(
            conf.HealthCheck("http", timeout=1.0, expect_status=(200, 503)), "127.0.0.1", err.port, "x"
        )
    ).ok
    await err.stop()


def test_http_check() -> None:
    run(_http())


async def _http_timeout() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # never answers; ends when the checker gives up
        finally:
            writer.close()

    be = await Backend("M", mute).start()
    start = time.monotonic()
    r = await probe(conf.HealthCheck("http", timeout=0.2), "127.0.0.1", be.port, "x")
    assert not r.ok and r.reason == "timed out"
    assert time.monotonic() - start < 0.5
    await asyncio.sleep(0.05)
    await be.stop()


def test_http_check_times_out() -> None:
    run(_http_timeout())


class _Handler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        return "250 OK"


async def _smtp(port: int) -> None:
    check = conf.HealthCheck("smtp", timeout=2.0)
    r = await probe(check, "127.0.0.1", port, "x")
    assert r.ok, r.reason


def test_smtp_check_against_aiosmtpd() -> None:
    port = free_port()
    controller = Controller(_Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        run(_smtp(port))
    finally:
        controller.stop()


async def _smtp_bad_banner() -> None:
    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 busy\r\n")
        await writer.drain()
        writer.close()

    be = await Backend("B", busy).start()
    r = await probe(conf.HealthCheck("smtp", timeout=1.0), "127.0.0.1", be.port, "x")
    assert not r.ok and "554" in r.reason
    await be.stop()


def test_smtp_check_bad_banner() -> None:
    run(_smtp_bad_banner())


async def _script() -> None:
    py = sys.executable
    ok = conf.HealthCheck("script", timeout=2.0, command=(py, "-c", "raise SystemExit(0)"))
    fail = conf.HealthCheck("script", timeout=2.0, command=(py, "-c", "raise SystemExit(3)"))
    slow = conf.HealthCheck("script", timeout=0.3, command=("sleep", "30"))
    assert (await probe(ok, "127.0.0.1", 1, "x")).ok
    r = await probe(fail, "127.0.0.1", 1, "x")
    assert not r.ok and r.reason == "exit status 3"
    start = time.monotonic()
    r = await probe(slow, "127.0.0.1", 1, "x")
    assert not r.ok and r.reason == "timed out"
    assert time.monotonic() - start < 1.0  # killed at the timeout


def test_script_check() -> None:
    run(_script())


async def _pool_checks_mark_down_and_up() -> None:
    be = await Backend("C").start()
    pool_cfg = conf.Pool(
        "p",
        (conf.Server(be.address),),
        health=conf.HealthCheck("tcp", interval=0.05, timeout=0.2, rise=2, fall=2),
    )
    pools = PoolSet({"p": pool_cfg})
    await pools.start()
    b = pools["p"].backends[0]
    await asyncio.sleep(0.2)
    assert b.up and b.checks >= 2
    await be.stop()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not b.up:
            break
    assert not b.up and b.check_failures >= 2
    await be.start()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if b.up:
            break
    assert b.up
    s = pools.stats()[0]["servers"][0]
    assert s["last_check"]["ok"] is True and s["check_duration"] >= 0
    await pools.stop()
    await be.stop()


def test_pool_checks_flip_state() -> None:
    run(_pool_checks_mark_down_and_up())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_hostname_pool_resolves_localhost(loop: str) -> None:
    async def main() -> None:
        be = await Backend("N").start()
        cfg = conf.Pool("p", (conf.Server(conf.Address("localhost", be.port), 2),))
        pools = PoolSet({"p": cfg})
        assert pools["p"].backends == []
        await pools.start()
        keys = [b.key for b in pools["p"].backends]
        assert f"127.0.0.1:{be.port}" in keys
        assert all(b.weight == 2 and b.configured == f"localhost:{be.port}" for b in pools["p"].backends)
        await pools.stop()
        await be.stop()

    run(main(), loop)
