"""Reloads that drop nothing and stops that finish what they started, through `sekisho run`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


async def _backend(name: str, delay: float = 0.0) -> asyncio.Server:
    """HTTP/1.1 keep-alive backend answering with its name (after `delay` for /slow)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b" /slow" in head.split(b"\r\n", 1)[0]:
                    await asyncio.sleep(delay)
                body = name.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _config(listen: int, metrics: int, pidfile: Path, backends: list[int], weight: int) -> str:
    servers = ", ".join(
        f'{{ address = "127.0.0.1:{p}", weight = {weight if i else 1} }}' for i, p in enumerate(backends)
    )
    return f"""
[global]
metrics = "127.0.0.1:{metrics}"
pidfile = "{pidfile}"
access_log = ""
drain_timeout = 5.0

[pool.site]
scheduler = "wrr"
servers = [{servers}]

[[http]]
listen = ["127.0.0.1:{listen}"]
  [[http.route]]
  path = "/"
  pool = "site"
"""


async def _request(port: int, path: str = "/", keepalive_for: int = 1) -> list[int]:
    """Send up to `keepalive_for` requests on one connection, as an HTTP/1.1 client
    does: a response with `Connection: close` ends the connection. Returns the statuses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for _ in range(keepalive_for):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
            await reader.readexactly(int(headers[b"content-length"]))
            statuses.append(status)
            if headers.get(b"connection", b"").strip() == b"close":
                break
    finally:
        writer.close()
    return statuses


async def _wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "daemon exited"
        try:
            await _request(port)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("daemon never answered")


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[subprocess.Popen[bytes], Path, int, int, list[int]]]:
    servers = [await _backend("one", delay=1.0), await _backend("two", delay=1.0)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    listen, metrics = free_port(), free_port()
    cfg = tmp_path / "sekisho.toml"
    cfg.write_text(_config(listen, metrics, tmp_path / "pid", ports, 1))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "run", "-c", str(cfg)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        await _wait_port(listen, proc)
        yield proc, cfg, listen, metrics, ports
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for s in servers:
            s.close()


@pytest.mark.asyncio
async def test_sighup_under_load_drops_nothing(
    site: tuple[subprocess.Popen[bytes], Path, int, int, list[int]], tmp_path: Path
) -> None:
    proc, cfg, listen, metrics, ports = site
    failures: list[BaseException] = []
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load() -> None:
        deadline = time.monotonic() + 20  # bounded in time and in count
        n = 0
        while not stop.is_set() and time.monotonic() < deadline and n < 5000:
            n += 1
            try:
                statuses.extend(await _request(listen, keepalive_for=1 + n % 4))
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                failures.append(exc)

    loaders = [asyncio.create_task(load()) for _ in range(8)]
    for i in range(5):
        await asyncio.sleep(0.3)
        cfg.write_text(_config(listen, metrics, tmp_path / "pid", ports, weight=2 + i))
        os.kill(proc.pid, signal.SIGHUP)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*loaders)

    assert proc.poll() is None
    assert failures == []
    assert len(statuses) > 100
    assert set(statuses) == {200}
    # With worker processes a reload lasts until the new workers listen (a second or so
    # here): the last SIGHUPs may still be queued behind the first ones.
    wanted = 'sekisho_config_reloads_total{result="success"} 5.0'
    deadline = time.monotonic() + 30
    exposition = ""
    while wanted not in exposition and time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", metrics)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        exposition = (await reader.read()).decode()
        writer.close()
        await asyncio.sleep(0.1)
    assert wanted in exposition


@pytest.mark.asyncio
async def test_sigterm_finishes_in_flight_requests(
    site: tuple[subprocess.Popen[bytes], Path, int, int, list[int]],
) -> None:
    proc, _, listen, _, _ = site
    slow = asyncio.create_task(_request(listen, path="/slow"))
    await asyncio.sleep(0.3)  # the request is at the backend now
    os.kill(proc.pid, signal.SIGTERM)
    assert await slow == [200]
    assert await asyncio.to_thread(proc.wait, 10) == 0
    with pytest.raises(OSError):
        await _request(listen)
