"""The `[[tcp]]` front end's relay (proxy.tcp over lb.fdrelay) on loopback:
half-close, 1 GB with flat RSS (splice), PROXY headers parsed by a backend,
max_connections, retry, idle timeout."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import psutil
import pytest

import conf
from lb import proxy_protocol
from tests.integration.test_tcp_failover import Backend, Service, ask, run

LOOPS = ["asyncio", "uvloop"]


def simple_pool(*backends: Backend, **kw: object) -> conf.Pool:
    servers = kw.pop("servers", None) or tuple(conf.Server(b.address) for b in backends)
    return conf.Pool("p", servers, **kw)  # type: ignore[arg-type]


async def _half_close() -> None:
    # The backend reads until EOF, then answers with what it got and closes.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        await asyncio.sleep(0.05)
        writer.write(b"got " + str(len(data)).encode() + b" bytes\n" + b"z" * 300_000)
        await writer.drain()
        writer.close()

    be = await Backend("H", handler).start()
    async with Service(simple_pool(be)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"x" * 12345)
        writer.write_eof()  # the client shuts its write side...
        answer = await reader.read()  # ...and still receives the whole response
        assert answer.startswith(b"got 12345 bytes\n") and len(answer) == 16 + 300_000
        writer.close()
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close(loop: str) -> None:
    run(_half_close(), loop)


async def _gigabyte() -> None:
    total = 1 << 30

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        sock = writer.get_extra_info("socket")
        assert sock is not None
        while True:
            chunk = await reader.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        writer.write(str(n).encode())
        await writer.drain()
        writer.close()

    be = await Backend("S", sink).start()
    proc = psutil.Process()
    async with Service(simple_pool(be)) as svc:
        loop = asyncio.get_running_loop()
        client = socket.create_connection(("127.0.0.1", svc.port))
        block = b"\0" * (1 << 20)

        def blast() -> tuple[bytes, list[int]]:
            rss = []
            for i in range(total // len(block)):
                client.sendall(block)
                if i % 128 == 0:
                    rss.append(proc.memory_info().rss)
            client.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := client.recv(100):
                reply += chunk
            return reply, rss

        start = time.monotonic()
        rss0 = proc.memory_info().rss
        reply, rss = await loop.run_in_executor(None, blast)
        took = time.monotonic() - start
        client.close()
        assert int(reply) == total
        assert max(rss) - rss0 < 32 << 20, [(r - rss0) >> 20 for r in rss]  # flat: no buffering
        assert svc.stats.spliced == 1 and svc.stats.bytes_in == total
        print(f"1 GiB through the relay in {took:.2f}s ({total / took / 1e9 * 8:.1f} Gbit/s)")
    await be.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_one_gigabyte_flat_rss(loop: str) -> None:
    run(_gigabyte(), loop)


async def _proxy_header(version: str) -> None:
    headers: list[proxy_protocol.ProxyHeader] = []

    async def parse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        while (h := proxy_protocol.decode(buf)) is None:
            buf += await reader.read(1)
        headers.append(h)
        rest = buf[h.length :] + await reader.readline()
        writer.write(b"echo " + rest)
        await writer.drain()
        writer.close()

    be = await Backend("P", parse).start()
    async with Service(simple_pool(be, proxy_protocol=version)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"hello\n")
        assert await reader.readline() == b"echo hello\n"
        local = writer.get_extra_info("sockname")
        port = svc.port
        writer.close()
    h = headers[0]
    assert h.version == int(version[1]) and h.family == "TCP4"
    assert h.src == ("127.0.0.1", local[1])
    assert h.dst == ("127.0.0.1", port)
    await be.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_parsed_by_backend(version: str) -> None:
    run(_proxy_header(version))


_TCPI_SEGS_IN = 140  # offsets in Linux's struct tcp_info
_TCPI_DATA_SEGS_IN = 152


async def _first_bytes_with_the_handshake() -> None:
    # What the client sent before it was accepted goes out with the connect,
    # in the packet that completes the handshake (tcp-smart-connect): the
    # server's socket gets the SYN, then data, and no bare ACK in between.
    received: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        received.set_result((line, _segments_without_data(writer.get_extra_info("socket"))))
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    be = await Backend("D", handler).start()
    async with Service(simple_pool(be)) as svc:
        # Connect and send without yielding: the service accepts (on this
        # loop) only after the request is queued.
        client = socket.create_connection(("127.0.0.1", svc.port))
        try:
            client.sendall(b"GET / HTTP/1.0\r\n")
            client.setblocking(False)
            line, bare = await asyncio.wait_for(received, 5)
            assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 10), 5) == b"ok\n"
        finally:
            client.close()
            await be.stop()
    assert line == b"GET / HTTP/1.0\r\n"
    assert bare == 1  # the SYN only


@pytest.mark.parametrize("loop", LOOPS)
def test_first_bytes_go_with_the_handshake(loop: str) -> None:
    run(_first_bytes_with_the_handshake(), loop)


def _segments_without_data(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return int(
        struct.unpack_from("I", info, _TCPI_SEGS_IN)[0] - struct.unpack_from("I", info, _TCPI_DATA_SEGS_IN)[0]
    )


async def _fin_with_the_last_data() -> None:
    # The server's last bytes and its FIN reach the proxy together: the client
    # gets them in one segment too (MSG_MORE, then shutdown).
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    async def serve_one() -> None:
        conn, _ = await loop.sock_accept(listener)
        with conn:
            assert await loop.sock_recv(conn, 100) == b"hi\n"
            conn.send(b"bye\n")
            conn.shutdown(socket.SHUT_WR)  # right behind the data, before the proxy looks
            await loop.sock_recv(conn, 100)

    server = loop.create_task(serve_one())
    pool = conf.Pool("p", (conf.Server(conf.Address("127.0.0.1", listener.getsockname()[1])),))
    try:
        async with Service(pool) as svc:
            client = socket.create_connection(("127.0.0.1", svc.port))
            try:
                client.sendall(b"hi\n")
                client.setblocking(False)
                data = b""
                while chunk := await asyncio.wait_for(loop.sock_recv(client, 100), 5):
                    data += chunk
                bare = _segments_without_data(client)
            finally:
                client.close()
            await asyncio.wait_for(server, 5)
    finally:
        server.cancel()
        listener.close()
    assert data == b"bye\n"
    assert bare == 2  # the SYN-ACK and the ACK of "hi": the FIN came with "bye"


@pytest.mark.parametrize("loop", LOOPS)
def test_fin_leaves_with_the_last_data(loop: str) -> None:
    run(_fin_with_the_last_data(), loop)


async def _reset_before_pick() -> None:
    # A client that resets before it is accepted costs no server a connection.
    be = await Backend("R").start()
    try:
        async with Service(simple_pool(be)) as svc:
            client = socket.create_connection(("127.0.0.1", svc.port))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST, before this loop runs the accept
            for _ in range(100):
                if svc.stats.accepted:
                    break
                await asyncio.sleep(0.01)
            counts = (svc.stats.accepted, svc.stats.errors, svc.stats.active, svc.stats.relayed)
            connections = svc.pools["p"].find(str(be.address))[0].total
            answer = await ask(svc.port)
    finally:
        await be.stop()
    assert counts == (1, 1, 0, 0)
    assert connections == 0
    assert answer == "R"  # and the service goes on


@pytest.mark.parametrize("loop", LOOPS)
def test_client_reset_before_a_server_is_picked(loop: str) -> None:
    run(_reset_before_pick(), loop)


async def _max_connections() -> None:
    hold = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await hold.wait()
        writer.write(b"slow\n")
        await writer.drain()
        writer.close()

    a = await Backend("A", slow).start()
    b = await Backend("B").start()
    servers = (conf.Server(a.address, 10, max_connections=2), conf.Server(b.address, 1))
    async with Service(simple_pool(servers=servers, scheduler="wrr")) as svc:
        pending = [asyncio.get_running_loop().create_task(ask(svc.port)) for _ in range(2)]
        await asyncio.sleep(0.2)
        pool = svc.pools["p"]
        assert pool.find(str(a.address))[0].active == 2
        # A is full although heavier: the next connections go to B.
        assert [await ask(svc.port) for _ in range(5)] == ["B"] * 5
        hold.set()
        assert await asyncio.gather(*pending) == ["slow", "slow"]
    await a.stop()
    await b.stop()


def test_max_connections_next_server() -> None:
    run(_max_connections())


async def _reset_after_a_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A backend that reads the request, then resets without answering."""
    await reader.readline()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    writer.transport.abort()


async def _bad_then_good() -> tuple[Backend, Backend, conf.Pool]:
    bad = await Backend("X", _reset_after_a_line).start()
    good = await Backend("G").start()
    return bad, good, simple_pool(bad, good, scheduler="rr", health=conf.HealthCheck("none", interval=60.0))


async def _retry_on_reset() -> None:
    bad, good, pool = await _bad_then_good()
    async with Service(pool) as svc:
        answers = [await ask(svc.port) for _ in range(6)]
        assert answers == ["G"] * 6  # the reset server's clients were replayed to G
        assert svc.stats.retries >= 1
    await bad.stop()
    await good.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_retry_when_backend_resets_before_answering(loop: str) -> None:
    run(_retry_on_reset(), loop)


async def _conversation_goes_on_after_retry() -> None:
    # The relay object is reused for the retry: everything about the first
    # backend must be reset, the client watched again, and the end counted once.
    bad, good, pool = await _bad_then_good()
    async with Service(pool) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        for _ in range(3):  # the first line is replayed to G, the next ones go on to it
            writer.write(b"ping\n")
            assert await asyncio.wait_for(reader.readline(), 3) == b"G\n"
        writer.close()
        for _ in range(100):
            if svc.stats.active == 0:
                break
            await asyncio.sleep(0.01)
        s = svc.stats
        assert (s.retries, s.active, s.errors, s.idle_timeouts) == (1, 0, 0, 0)
        assert s.bytes_in == 3 * len(b"ping\n") and s.bytes_out == 3 * len(b"G\n")
        server = svc.pools["p"].find(str(good.address))[0]
        assert (server.active, server.bytes_in) == (0, 3 * len(b"ping\n"))
    await bad.stop()
    await good.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_conversation_goes_on_after_a_retry(loop: str) -> None:
    run(_conversation_goes_on_after_retry(), loop)


async def _idle_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    be = await Backend("I", silent).start()
    async with Service(simple_pool(be), timeouts=conf.TcpTimeouts(connect=1.0, idle=0.2)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        start = time.monotonic()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await reader.readexactly(1)
        assert 0.15 < time.monotonic() - start < 1.0
        writer.close()
        await asyncio.sleep(0.05)
        assert svc.stats.idle_timeouts == 1 and svc.stats.active == 0
    await be.stop()


def test_idle_timeout() -> None:
    run(_idle_timeout())


async def _traffic_keeps_a_relay_open() -> None:
    # The idle timeout is polled (every idle/4 here): a connection that moves a
    # byte more often than `idle` must outlive several timeouts; one that then
    # falls silent is closed within idle .. idle + idle/4 (+ a poll).
    be = await Backend("K").start()
    async with Service(simple_pool(be), timeouts=conf.TcpTimeouts(connect=1.0, idle=0.3)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        for _ in range(8):  # 1.2 s, four idle timeouts long
            writer.write(b"ping\n")
            assert await asyncio.wait_for(reader.readline(), 1) == b"K\n"
            await asyncio.sleep(0.15)
        assert svc.stats.idle_timeouts == 0
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed for silence
        assert 0.3 - 0.15 <= time.monotonic() - start < 0.3 + 0.075 + 0.2
        await asyncio.sleep(0.05)
        assert svc.stats.idle_timeouts == 1 and svc.stats.active == 0
        writer.close()
    await be.stop()


def test_traffic_keeps_a_relay_open_then_silence_closes_it() -> None:
    run(_traffic_keeps_a_relay_open())


def test_no_fd_leak() -> None:
    async def main() -> None:
        be = await Backend("L").start()
        async with Service(simple_pool(be)) as svc:
            await ask(svc.port)
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(50):
                assert await ask(svc.port) == "L"
            await asyncio.sleep(0.1)
            assert len(os.listdir("/proc/self/fd")) <= before + 2
        await be.stop()

    run(main())
