"""The head phase (proxy/http/intake.py): an accepted plain-HTTP connection is a bare socket
in the poller until its first request head is whole; then an H1Connection judges it as
before. Here: what waits there, what comes out of it, and how it ends (408, close, 400)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import uvloop

from proxy import linger
from proxy.http.frontend import attach_accepted
from tests.integration.http_backends import HttpBackend, Proxy, config, read_response
from tests.integration.test_http_proxy import ROUTES
from tests.integration.test_tcp_failover import run

LOOPS = ["asyncio", "uvloop"]
GET = b"GET /echo HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
FAST = "timeouts = { header = 0.4, idle = 5.0, connect = 1.0, response = 5.0 }"


def _counts(p: Proxy) -> dict[str, Any]:
    s = p.frontend.stats()
    return {
        "waiting": s["waiting_for_head"],
        "conns": len(p.frontend.connections),
        "active": s["connections_active"],
        "total": s["connections_total"],
        "listener": p.listener.active,
    }


async def _settle(p: Proxy, seconds: float = 3.0) -> None:
    """Until nothing is open (bounded)."""
    deadline = time.monotonic() + seconds
    while p.frontend.stats()["open_connections"] and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _head_in_pieces() -> dict[str, Any]:
    a = await HttpBackend("a").start()
    try:
        async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"\r\n\r\n" + GET[:12])  # empty lines first: dropped (RFC 9112 2.2)
            await asyncio.sleep(0.1)
            waiting = _counts(p)
            writer.write(GET[12:30])
            await asyncio.sleep(0.1)
            writer.write(GET[30:] + GET)  # the head's end, and a second request pipelined behind
            first = await read_response(reader)
            second = await read_response(reader)
            served = _counts(p)
            writer.close()
            await _settle(p)
            return {"waiting": waiting, "served": served, "first": first, "second": second, "end": _counts(p)}
    finally:
        await a.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_head_in_pieces_waits_in_the_intake_then_is_served(loop: str) -> None:
    r = run(_head_in_pieces(), loop)
    # While the head was incomplete: counted as an open connection, but no H1Connection.
    assert r["waiting"] == {"waiting": 1, "conns": 0, "active": 1, "total": 1, "listener": 1}
    assert r["first"][0] == 200 and r["second"][0] == 200
    assert r["served"] == {"waiting": 0, "conns": 1, "active": 1, "total": 1, "listener": 1}
    assert r["end"] == {"waiting": 0, "conns": 0, "active": 0, "total": 1, "listener": 0}


async def _deadline(send: bytes, keep_sending: bool) -> tuple[bytes, str, float, dict[str, Any]]:
    """Connect, send `send`, (maybe) keep sending a header line every 0.1 s; what comes back,
    how it ended, after how long."""
    async with Proxy(config({"alpha": ["127.0.0.1:9"], "beta": ["127.0.0.1:9"]}, ROUTES, FAST)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        t0 = time.monotonic()
        writer.write(send)

        async def dribble() -> None:
            i = 0
            while keep_sending:
                await asyncio.sleep(0.1)
                i += 1
                try:
                    writer.write(b"X-%d: a\r\n" % i)
                except (OSError, RuntimeError):
                    return

        task = asyncio.create_task(dribble())
        got = bytearray()
        end = "fin"
        try:
            async with asyncio.timeout(5):
                while data := await reader.read(65536):
                    got += data
        except ConnectionResetError:
            end = "reset"
        elapsed = time.monotonic() - t0
        task.cancel()
        writer.transport.abort()
        await _settle(p)
        return bytes(got), end, elapsed, _counts(p)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_partial_head_gets_its_408_at_the_deadline_and_a_fin_while_still_sending(loop: str) -> None:
    answer, end, elapsed, counts = run(_deadline(b"GET /echo HTTP/1.1\r\nHost: www.exa", True), loop)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert end == "fin"  # lingering: the input behind the answer did not turn the close into a reset
    assert elapsed >= 0.3  # not before the 0.4 s deadline, less a wheel tick (a hang: the 5 s read)
    assert counts == {"waiting": 0, "conns": 0, "active": 0, "total": 1, "listener": 0}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_that_sends_nothing_is_closed_without_a_word(loop: str) -> None:
    answer, end, elapsed, counts = run(_deadline(b"", False), loop)
    assert answer == b"" and end == "fin"
    assert elapsed >= 0.3  # not before the 0.4 s deadline, less a wheel tick (a hang: the 5 s read)
    assert counts["waiting"] == 0 and counts["active"] == 0 and counts["listener"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_only_empty_lines_count_as_nothing(loop: str) -> None:
    answer, end, _, _ = run(_deadline(b"\r\n\r\n\r\n", False), loop)
    assert answer == b"" and end == "fin"


async def _one(raw: bytes, then_eof: bool = False, listener: str = "") -> bytes:
    async with Proxy(config({"alpha": ["127.0.0.1:9"], "beta": ["127.0.0.1:9"]}, ROUTES, listener)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        for i in range(0, len(raw), 700):  # in pieces, as a slow client sends
            writer.write(raw[i : i + 700])
            await asyncio.sleep(0.02)
        if then_eof:
            writer.write_eof()
        got = bytearray()
        try:
            async with asyncio.timeout(5):
                while data := await reader.read(65536):
                    got += data
        except ConnectionResetError:
            pass
        writer.transport.abort()
        await _settle(p)
        assert p.frontend.stats()["open_connections"] == 0
        return bytes(got)


@pytest.mark.parametrize("loop", LOOPS)
def test_what_the_intake_hands_over_is_judged_as_before(loop: str) -> None:
    # the client's FIN in the middle of a head
    assert run(_one(b"GET /echo HTTP/1.1\r\nHost: www", then_eof=True), loop).startswith(b"HTTP/1.1 400 ")
    # more than max_header_bytes, slowly, never ending
    big = b"GET /echo HTTP/1.1\r\nHost: www.example.com\r\n" + b"X-Pad: " + b"a" * 3000 + b"\r\n"
    answer = run(_one(big, listener="max_header_bytes = 2048"), loop)
    assert answer.startswith(b"HTTP/1.1 431 ")
    # a bare LF
    assert run(_one(b"GET /echo HTTP/1.1\nHost: www.example.com\n\n"), loop).startswith(b"HTTP/1.1 400 ")


async def _retired() -> tuple[bytes, bytes, float]:
    a = await HttpBackend("a").start()
    try:
        p = Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES))
        await p.__aenter__()
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", p.port)
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", p.port)
        slow_w.write(GET[:20])
        while p.frontend.stats()["waiting_for_head"] < 2:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await p.listener.stop_accepting()
        p.frontend.retire()
        async with asyncio.timeout(5):
            silent = await silent_r.read()  # closed after the retired frontend's grace
        waited = time.monotonic() - t0
        slow_w.write(GET[20:])  # the head that was on its way is still served, then closed
        async with asyncio.timeout(5):
            slow = await slow_r.read()
        await p.frontend.drain(2.0)
        silent_w.close()
        slow_w.close()
        return silent, slow, waited
    finally:
        await a.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_retire_closes_silent_connections_after_a_grace_and_serves_heads_on_their_way(loop: str) -> None:
    silent, slow, waited = run(_retired(), loop)
    assert silent == b""
    assert 0.8 < waited < 3.0
    assert slow.startswith(b"HTTP/1.1 200 ") and b"connection: close" in slow.lower()


async def _drained(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], str]:
    monkeypatch.setattr(linger, "LINGER_QUIET", 30.0)
    p = Proxy(config({"alpha": ["127.0.0.1:9"], "beta": ["127.0.0.1:9"]}, ROUTES, FAST))
    await p.__aenter__()
    waiting = socket.create_connection(("127.0.0.1", p.port))
    waiting.sendall(b"GET / HTTP/1.1\r\n")
    lingering = socket.create_connection(("127.0.0.1", p.port))
    lingering.sendall(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(0.6)  # `lingering` had its 408 and lingers (it never closes)
    waiting2 = socket.create_connection(("127.0.0.1", p.port))
    waiting2.sendall(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(0.1)
    await p.listener.stop_accepting()
    p.frontend.retire()
    await p.frontend.drain(0.2)  # gives up waiting, closes what is left
    await asyncio.sleep(0.05)
    counts = _counts(p)
    waiting2.settimeout(2)
    try:
        end = "fin" if waiting2.recv(100) == b"" else "data"
    except ConnectionResetError:
        end = "reset"
    for s in (waiting, lingering, waiting2):
        s.close()
    return counts, end


@pytest.mark.parametrize("loop", LOOPS)
def test_drain_closes_what_still_waits_or_lingers(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    counts, end = run(_drained(monkeypatch), loop)
    assert counts == {"waiting": 0, "conns": 0, "active": 0, "total": 3, "listener": 0}
    assert end in ("fin", "reset")


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.made = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.data = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no asyncio.Transport subclass)
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


_LOOPS = pytest.mark.parametrize("run_on", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])


@_LOOPS
def test_attach_accepted_makes_the_transport_without_a_task(run_on: Any) -> None:
    """The one reach into the coroutine protocol (proxy.http.frontend.attach_accepted): if
    the loop's connect_accepted_socket stops yielding the future it waits for, this fails.
    On uvloop, the loop sekisho runs, and on asyncio's own."""
    run_on(_attach_accepted_round_trip())


async def _attach_accepted_round_trip() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname(), timeout=5)  # (a lost write fails, not hangs)
    accepted, _ = server.accept()
    accepted.setblocking(False)
    protocol = _Recorder()
    failures: list[BaseException] = []
    tasks = len(asyncio.all_tasks())
    try:
        attach_accepted(asyncio.get_running_loop(), protocol, accepted, failures.append)
        assert len(asyncio.all_tasks()) == tasks  # no task for it
        await asyncio.wait_for(protocol.made, 5)
        client.sendall(b"hello")
        for _ in range(100):
            if protocol.data:
                break
            await asyncio.sleep(0.01)
        assert protocol.data == b"hello" and not failures
        assert protocol.transport is not None
        protocol.transport.write(b"back")
        await asyncio.sleep(0.05)
        assert client.recv(10) == b"back"
        protocol.transport.close()
        await asyncio.wait_for(protocol.lost, 5)
        await asyncio.sleep(0.05)  # the loop closes the handle (and lets the socket go) after that
    finally:
        client.close()
        server.close()


@_LOOPS
def test_attach_accepted_refuses_what_the_loop_refuses(run_on: Any) -> None:
    async def refuse() -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        failures: list[BaseException] = []
        try:  # told at once, with what the awaited call would have raised
            attach_accepted(asyncio.get_running_loop(), _Recorder(), udp, failures.append)
            assert len(failures) == 1 and isinstance(failures[0], ValueError)
        finally:
            udp.close()

    run_on(refuse())
