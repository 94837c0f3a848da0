"""Issue 7, part 4: out of file descriptors, and max_connections, against `sekisho run`."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.adversarial.daemon import daemon_config, start_daemon
from tests.adversarial.harness import RecordingBackend, fd_count, raise_nofile
from tests.adversarial.load import GET, _read_one, load

NOFILE = 256
HOGS = 400  # well past NOFILE: the rest wait in the kernel backlog


async def _request(port: int, timeout: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(GET)
        async with asyncio.timeout(timeout):
            status, _ = await _read_one(reader)
            return status
    finally:
        writer.transport.abort()


def _hogs(port: int, n: int, partial: bool = True) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if partial:
            s.sendall(b"GET / HTTP/1.1\r\n")  # a head in progress: held until timeouts.header
        out.append(s)
    return out


@pytest.mark.asyncio
async def test_out_of_file_descriptors_logs_keeps_running_and_recovers(tmp_path: Path) -> None:
    raise_nofile(4096)
    backend = await RecordingBackend().start()
    toml, port = daemon_config([backend.address], header=60.0)
    daemon = await asyncio.to_thread(start_daemon, tmp_path, toml, port, NOFILE)
    hogs: list[socket.socket] = []
    try:
        assert await _request(port, 5) == 200
        hogs = await asyncio.to_thread(_hogs, port, HOGS)
        await asyncio.sleep(1.0)
        assert fd_count(daemon.pid) >= NOFILE - 2  # sekisho really is at its limit
        # A legitimate client now waits in the backlog instead of being refused...
        waiting = asyncio.create_task(_request(port, 30))
        await asyncio.sleep(3.0)
        assert daemon.alive()
        assert not waiting.done()
        logged = [line for line in daemon.log if "cannot accept" in line]
        # ...the condition is logged, once for these ~4 s (at most every 10 s)...
        assert len(logged) == 1, daemon.log[-5:]
        assert "backing off" in logged[0]
        # ...and once the hogs leave, it is served and the daemon is back to normal.
        for s in hogs:
            s.close()
        hogs = []
        assert await asyncio.wait_for(waiting, 20) == 200
        result = await load(port, 1.0, workers=4)
        assert result.failed == 0 and result.ok > 50, result.errors[:5]
        assert daemon.alive()
    finally:
        for s in hogs:
            s.close()
        await asyncio.to_thread(daemon.stop)
        await backend.stop()


@pytest.mark.asyncio
async def test_max_connections_holds_new_connections_in_the_backlog(tmp_path: Path) -> None:
    backend = await RecordingBackend().start()
    toml, port = daemon_config([backend.address], header=60.0, max_connections=10)
    daemon = await asyncio.to_thread(start_daemon, tmp_path, toml, port)
    hogs: list[socket.socket] = []
    try:
        hogs = await asyncio.to_thread(_hogs, port, 10)
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        waiting = asyncio.create_task(_request(port, 30))
        await asyncio.sleep(1.5)
        assert not waiting.done()  # connected (kernel backlog), not accepted, not refused
        hogs.pop().close()
        assert await asyncio.wait_for(waiting, 5) == 200
        assert time.monotonic() - t0 >= 1.5
        assert daemon.alive()
    finally:
        for s in hogs:
            s.close()
        await asyncio.to_thread(daemon.stop)
        await backend.stop()
