"""Issue 7, part 5: backends that die, hang and flap; reload storms; nothing lost."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import h11
import pytest

from tests.adversarial.daemon import daemon_config, start_daemon
from tests.adversarial.harness import RecordingBackend, Sekisho, exchange, fd_count, proxy_config, rss_kb
from tests.adversarial.load import load

# The issue asks for a server flapping every second for a minute.
FLAP_SECONDS = 60.0


class _DyingBackend:
    """Sends a response head and part of its body, then resets the connection."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _DyingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.head + self.body)
            await writer.drain()
            await asyncio.sleep(0.2)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()  # RST mid-response

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def _looks_complete(answer: bytes) -> bool:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(answer)
    client.receive_data(b"")
    try:
        while True:
            ev = client.next_event()
            if isinstance(ev, h11.EndOfMessage):
                return True
            if ev is h11.NEED_DATA or isinstance(ev, h11.ConnectionClosed):
                return False
    except h11.RemoteProtocolError:
        return False


KILLED = [
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"x" * 300_000),
    (
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"10000\r\n" + b"x" * 0x10000 + b"\r\n",
    ),
    ("chunked at a chunk boundary", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"2\r\nok\r\n"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "head", "body"), KILLED, ids=[k[0] for k in KILLED])
async def test_backend_killed_mid_response_aborts_the_client(name: str, head: bytes, body: bytes) -> None:
    backend = await _DyingBackend(head, body).start()
    try:
        async with Sekisho(proxy_config(f"127.0.0.1:{backend.port}")) as p:
            for _ in range(20):
                answer = await exchange(p.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
                assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
                assert not _looks_complete(answer), name
    finally:
        await backend.stop()


@pytest.mark.asyncio
async def test_backend_that_never_answers_gets_504_at_the_timeout() -> None:
    backend = await RecordingBackend(answer=False).start()
    try:
        toml = proxy_config(backend.address, "timeouts = { header = 5.0, idle = 30.0, response = 1.0 }")
        async with Sekisho(toml) as p:
            t0 = time.monotonic()
            answers = await asyncio.gather(
                *(exchange(p.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5) for _ in range(20))
            )
            elapsed = time.monotonic() - t0
    finally:
        await backend.stop()
    assert all(a.startswith(b"HTTP/1.1 504 ") for a in answers), answers[:2]
    assert 1.0 <= elapsed < 2.5
    assert backend.requests == 20


RELOAD_SECONDS = 30.0


@pytest.mark.asyncio
async def test_sighup_every_200ms_under_load_loses_nothing(tmp_path: Path) -> None:
    backend = await RecordingBackend().start()
    toml, port = daemon_config([backend.address])
    daemon = await asyncio.to_thread(start_daemon, tmp_path, toml, port)
    try:
        await load(port, 1.0)  # warm up: imports, pools, first connections
        await asyncio.sleep(0.5)
        fds0, rss0 = fd_count(daemon.pid), rss_kb(daemon.pid)
        reloads = 0

        async def hup() -> None:
            nonlocal reloads
            until = time.monotonic() + RELOAD_SECONDS
            while time.monotonic() < until:
                daemon.signal(signal.SIGHUP)
                reloads += 1
                await asyncio.sleep(0.2)

        # Keep-alive and fresh connections alike (every 5th request reconnects).
        results = await asyncio.gather(
            hup(),
            load(port, RELOAD_SECONDS, workers=4, new_connection_every=5, max_requests=400_000),
        )
        result = results[1]
        await asyncio.sleep(3.0)  # let retired frontends drain
        fds1, rss1 = fd_count(daemon.pid), rss_kb(daemon.pid)
        assert daemon.alive()
    finally:
        await asyncio.to_thread(daemon.stop)
        await backend.stop()
    reloaded = sum("reload" in line.lower() for line in daemon.log)
    print(
        f"\n{reloads} SIGHUPs, {result.ok} requests ok, {result.failed} failed "
        f"({result.reused_unanswered} on a kept-alive connection closed before answering); "
        f"fds {fds0} -> {fds1}; rss {rss0} -> {rss1} kB; {reloaded} reload log lines"
    )
    assert reloads >= 100
    # Fresh connections never fail: the listening socket survives every reload.
    assert result.failed == result.reused_unanswered, result.errors[:10]
    # Regressions: test_regression_reload_* below.
    assert result.failed == 0, result.errors[:10]
    assert result.ok > 1000
    assert fds1 <= fds0 + 5
    assert rss1 - rss0 < 16 * 1024


@pytest.mark.asyncio
async def test_health_flapping_server_costs_no_requests(tmp_path: Path) -> None:
    """One of two servers stops and starts listening every second for a minute (its
    health check follows); requests never fail: connects to it are retried on the
    other one."""
    stable = await RecordingBackend().start()
    flappy = await RecordingBackend().start()
    flappy_port = flappy.port
    toml, port = daemon_config(
        [stable.address, flappy.address],
        pool_extra='health = { kind = "tcp", interval = 0.3, timeout = 0.5, rise = 1, fall = 1 }',
    )
    daemon = await asyncio.to_thread(start_daemon, tmp_path, toml, port)
    flips = 0
    try:

        async def flap() -> None:
            nonlocal flips, flappy
            until = time.monotonic() + FLAP_SECONDS
            while time.monotonic() < until:
                await asyncio.sleep(1.0)
                if flappy.server is not None:
                    # stop listening; connections already made finish their requests
                    flappy.server.close()
                    flappy.server = None
                else:
                    flappy.server = await asyncio.start_server(
                        flappy._serve, "127.0.0.1", flappy_port, reuse_address=True
                    )
                flips += 1

        results = await asyncio.gather(flap(), load(port, FLAP_SECONDS, workers=4, new_connection_every=1))
        result = results[1]
        assert daemon.alive()
    finally:
        await asyncio.to_thread(daemon.stop)
        await stable.stop()
        await flappy.stop()
    print(f"\n{flips} flips; {result.ok} ok, {result.failed} failed; flappy served {flappy.requests}")
    assert flips >= FLAP_SECONDS * 0.8
    assert result.failed == 0, result.errors[:10]
    assert flappy.requests > 0 and stable.requests > 0


@pytest.mark.asyncio
async def test_regression_reload_spares_a_new_connection_before_its_first_request() -> None:
    """Bug (fixed in ca8734b): `ClientConnection.retire()` closed every
    connection whose gate is empty and that has no request, which is also a connection
    accepted a moment ago whose first bytes are still on their way. Under SIGHUP every
    200 ms, ~27 of ~40,000 requests on fresh connections failed this way. Proposed: close only
    connections that are idle *between* requests:

        def retire(self) -> None:
            if self.idle and self.gate is not None and not self.gate and self.req is None:
                self._close()

    (a new connection is bounded by its header timer; `_next_cycle` closes it after its
    first response because `fe.retired`)."""
    backend = await RecordingBackend().start()
    try:
        async with Sekisho(proxy_config(backend.address)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            await asyncio.sleep(0.1)  # accepted, nothing sent yet
            p.frontend.retire()  # what a reload does to the old frontend
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 3)
            writer.transport.abort()
    finally:
        await backend.stop()
    assert answer.startswith(b"HTTP/1.1 200 "), answer


@pytest.mark.asyncio
async def test_regression_reload_answers_a_request_racing_the_idle_close() -> None:
    """Bug (fixed in ca8734b): on reload, kept-alive connections idle between requests were
    closed at once, so a request already on the wire meets a closed socket
    (ConnectionResetError / EOF): ~450 of ~40,000 requests under SIGHUP every 200 ms. HAProxy's
    answer is `idle-close-on-response`: keep the idle connection, answer its next request with
    `connection: close`, and close only after a grace. Proposed in `ClientConnection.retire()`:
    for an idle connection arm `_T_IDLE` for `min(self.deadline, now + 1.0)` instead of
    `_close()`, and when writing a response head while `self.fe.retired`, add
    `connection: close` (so the client does not reuse it). `drain(timeout)` already bounds it."""
    backend = await RecordingBackend().start()
    try:
        async with Sekisho(proxy_config(backend.address)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"ok"), 3)
            p.frontend.retire()
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # already in flight in real life
            try:
                second = await asyncio.wait_for(reader.read(), 3)
            except ConnectionResetError:
                second = b"<reset>"
            writer.transport.abort()
    finally:
        await backend.stop()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.startswith(b"HTTP/1.1 200 ") and b"connection: close" in second.lower(), second
