"""The raw-socket L4 path (lb.poller, proxy.tcp._Conn, lb.fdrelay) on
loopback: integrity and byte counts under backpressure both ways, copy then
splice in one connection, half-close from the server side, a client reset,
connect timeout then retry, max_connections holding the backlog, no fd leak."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time

import pytest

import conf
from lb import fdrelay, poller
from tests.integration.test_tcp_failover import Backend, Service, ask, run

LOOPS = ["asyncio", "uvloop"]


def pool_of(*backends: Backend, **kw: object) -> conf.Pool:
    servers = kw.pop("servers", None) or tuple(conf.Server(b.address) for b in backends)
    return conf.Pool("p", servers, health=conf.HealthCheck("none", interval=60.0), **kw)  # type: ignore[arg-type]


def blob(n: int, seed: int = 1) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1))[:n]


async def _both_ways_slow_readers() -> None:
    up, down = blob(6 << 20, 1), blob(5 << 20, 2)

    async def slow_sink_then_send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        while len(got) < len(up):
            got += await reader.read(65536)
            await asyncio.sleep(0.001)  # slower than the client: the relay holds back
        writer.write(hashlib.sha256(got).digest() + down)
        await writer.drain()
        writer.close()

    be = await Backend("S", slow_sink_then_send).start()
    async with Service(pool_of(be)) as svc:
        loop = asyncio.get_running_loop()

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", svc.port)) as s:
                s.sendall(up)
                out = bytearray()
                while chunk := s.recv(32768):
                    out += chunk
                    time.sleep(0.0005)  # a slow reader: the relay holds back the other way too
                return bytes(out)

        answer = await loop.run_in_executor(None, client)
        assert answer[:32] == hashlib.sha256(up).digest()
        assert answer[32:] == down
        await asyncio.sleep(0.05)
        s = svc.stats
        assert (s.bytes_in, s.bytes_out) == (len(up), 32 + len(down))
        assert s.spliced == 1 and s.active == 0 and s.errors == 0
        server = svc.pools["p"].backends[0]
        assert (server.bytes_in, server.bytes_out, server.active) == (len(up), 32 + len(down), 0)
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_both_ways_under_backpressure(loop: str) -> None:
    run(_both_ways_slow_readers(), loop)


async def _fast_sender_slow_reader() -> list[int]:
    # A server thread sends 16 MiB as fast as it can; the client reads a bit
    # slower, so the relay blocks on it again and again while the server's
    # segments keep arriving. Counted: events that woke a blocked flow for
    # input it cannot take (edge-triggered epoll reports each segment).
    data = blob(16 << 20, 3)
    wasted = [0]
    event = fdrelay._Flow.event

    def counting(flow: fdrelay._Flow, ev: int) -> None:
        if ev & poller.IN and flow.state & fdrelay._BLOCKED:
            wasted[0] += 1
        event(flow, ev)

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(16)
            conn.sendall(data)

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"go\n")
            out = bytearray()
            while chunk := s.recv(65536):
                out += chunk
                time.sleep(0.0002)  # a little slower than the server
            return bytes(out)

    loop = asyncio.get_running_loop()
    server = loop.run_in_executor(None, serve)
    fdrelay._Flow.event = counting  # type: ignore[method-assign]
    try:
        pool = conf.Pool("p", (conf.Server(conf.Address("127.0.0.1", listener.getsockname()[1])),))
        async with Service(pool) as svc:
            answer = await loop.run_in_executor(None, client, svc.port)
            spliced = svc.stats.spliced
        await server
    finally:
        fdrelay._Flow.event = event  # type: ignore[method-assign]
        listener.close()
    assert answer == data
    return [wasted[0], spliced]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_blocked_flow_is_not_woken_for_input(loop: str) -> None:
    wasted, spliced = run(_fast_sender_slow_reader(), loop)
    assert spliced == 1
    assert wasted <= 2, wasted  # (one may be queued in the batch that blocked it)


async def _small_then_bulk_then_small() -> None:
    # A line protocol that switches to a bulk transfer and back: copy, then splice.
    big = blob(3 << 20, 3)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"HELLO\n"
        writer.write(b"OK\n")
        await writer.drain()
        data = await reader.readexactly(len(big))
        writer.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
        await writer.drain()
        assert await reader.readline() == b"BYE\n"
        writer.write(b"CIAO\n")
        await writer.drain()
        writer.close()

    be = await Backend("B", handler).start()
    async with Service(pool_of(be)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"HELLO\n")
        assert await reader.readline() == b"OK\n"
        writer.write(big)
        assert await reader.readline() == hashlib.sha256(big).hexdigest().encode() + b"\n"
        writer.write(b"BYE\n")
        assert await reader.readline() == b"CIAO\n"
        assert await reader.read() == b""
        writer.close()
        await asyncio.sleep(0.05)
        assert svc.stats.spliced == 1 and svc.stats.bytes_in == 6 + len(big) + 4
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_copy_then_splice_in_one_connection(loop: str) -> None:
    run(_small_then_bulk_then_small(), loop)


async def _server_half_closes_first() -> None:
    # The server says its piece and shuts its side; the client goes on sending.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"banner\n")
        writer.write_eof()
        data = await reader.read()
        assert data == b"x" * 100_000
        writer.close()

    be = await Backend("H", handler).start()
    async with Service(pool_of(be)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        assert await reader.read() == b"banner\n"  # EOF forwarded, our side still open
        writer.write(b"x" * 100_000)
        await writer.drain()
        writer.write_eof()
        writer.close()
        await asyncio.sleep(0.1)
        assert svc.stats.active == 0 and svc.stats.errors == 0 and svc.stats.bytes_in == 100_000
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_server_half_closes_first(loop: str) -> None:
    run(_server_half_closes_first(), loop)


async def _client_reset() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"hi\n")
        await writer.drain()
        try:
            await reader.read()  # ends when the relay closes our connection
        except ConnectionError:
            pass
        closed.set()
        writer.close()

    be = await Backend("R", handler).start()
    async with Service(pool_of(be)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"hello\n")
        assert await reader.readline() == b"hi\n"
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        writer.transport.abort()  # RST
        await asyncio.wait_for(closed.wait(), 3)
        await asyncio.sleep(0.05)
        assert svc.stats.errors == 1 and svc.stats.active == 0
        assert svc.pools["p"].backends[0].active == 0
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_client_reset_closes_both(loop: str) -> None:
    run(_client_reset(), loop)


async def _connect_timeout_then_retry() -> None:
    # A server whose accept queue is full drops SYNs: the connect hangs.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(hole.getsockname())
        fillers.append(f)
    await asyncio.sleep(0.1)
    good = await Backend("G").start()
    servers = (conf.Server(conf.Address("127.0.0.1", hole.getsockname()[1])), conf.Server(good.address))
    async with Service(
        pool_of(servers=servers, scheduler="rr"), timeouts=conf.TcpTimeouts(connect=0.3)
    ) as svc:
        start = time.monotonic()
        answers = [await ask(svc.port) for _ in range(2)]
        assert answers == ["G", "G"]
        assert time.monotonic() - start < 2.0
        dead = svc.pools["p"].backends[0]
        assert dead.connect_failures >= 1 and dead.active == 0
        assert svc.stats.refused == 0
    for f in fillers:
        f.close()
    hole.close()
    await good.stop()


def test_connect_timeout_retries_another_server() -> None:
    run(_connect_timeout_then_retry(), "uvloop")


async def _max_connections_backlog() -> None:
    release = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await release.wait()
        writer.write(b"done\n")
        await writer.drain()
        writer.close()

    be = await Backend("M", held).start()
    async with Service(pool_of(be), max_connections=2) as svc:
        first = [asyncio.get_running_loop().create_task(ask(svc.port, 5)) for _ in range(2)]
        await asyncio.sleep(0.2)
        third = asyncio.get_running_loop().create_task(ask(svc.port, 5))
        await asyncio.sleep(0.2)
        assert svc.stats.accepted == 2  # the third waits in the kernel backlog
        release.set()
        assert await asyncio.gather(*first, third) == ["done"] * 3
        assert svc.stats.accepted == 3 and svc.stats.refused == 0
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_max_connections_waits_in_backlog(loop: str) -> None:
    run(_max_connections_backlog(), loop)


def test_no_fd_leak_with_splice() -> None:
    async def main() -> None:
        big = blob(1 << 20, 4)

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = len(await reader.read())
            writer.write(str(n).encode())
            await writer.drain()
            writer.close()

        be = await Backend("F", sink).start()
        async with Service(pool_of(be)) as svc:

            async def upload() -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
                writer.write(big)
                writer.write_eof()
                answer = await reader.read()
                writer.close()
                return answer

            await upload()
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(20):
                assert await upload() == str(len(big)).encode()
            await asyncio.sleep(0.1)
            assert len(os.listdir("/proc/self/fd")) <= before + 2
            assert svc.stats.spliced == 21
            assert len(fdrelay.pipes.free) <= 32  # pipes go back to the free list
        await be.stop()

    run(main(), "uvloop")


def test_poller_timer_wheel() -> None:
    from lb.poller import TICK, poller

    class Timer:
        def __init__(self) -> None:
            self.fired: list[float] = []

        def expired(self, now: float) -> None:
            self.fired.append(now)

    async def main() -> None:
        p = poller()
        a, b, c = Timer(), Timer(), Timer()
        start = time.monotonic()
        p.arm(a, 0.1)
        slot_b = p.arm(b, 0.1)
        p.arm(c, 0.3)
        p.disarm(b, slot_b)
        await asyncio.sleep(0.2)
        assert len(a.fired) == 1 and not b.fired and not c.fired
        assert 0.1 <= a.fired[0] - start <= 0.1 + 2 * TICK + 0.05
        await asyncio.sleep(0.25)
        assert len(c.fired) == 1 and not b.fired
        assert p is poller()  # one per loop

    run(main(), "uvloop")
