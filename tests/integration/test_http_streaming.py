"""200 MB up and down through the proxy with bounded memory (backpressure both ways)."""

from __future__ import annotations

import asyncio
import json

import psutil
import pytest

from tests.integration.http_backends import HttpBackend, Proxy, config, read_response

SIZE = 200 * 1024 * 1024
ROUTES = '[[http.route]]\npath = "/"\npool = "alpha"\n'
RSS_SLACK = 64 * 1024 * 1024


@pytest.mark.asyncio
async def test_200mb_upload_and_download_with_bounded_rss() -> None:
    backend = await HttpBackend("a").start()
    me = psutil.Process()
    try:
        async with Proxy(config({"alpha": [backend.address]}, ROUTES)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            rss0 = me.memory_info().rss
            peak = rss0
            writer.write(b"PUT /sink HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % SIZE)
            block = b"u" * (1 << 20)
            async with asyncio.timeout(60):
                for i in range(SIZE // len(block)):
                    writer.write(block)
                    await writer.drain()
                    if i % 16 == 0:
                        peak = max(peak, me.memory_info().rss)
                status, _, body = await read_response(reader, read_timeout=30)
            assert status == 200 and json.loads(body)["body_len"] == SIZE

            writer.write(b"GET /size/%d HTTP/1.1\r\nHost: a\r\n\r\n" % SIZE)
            async with asyncio.timeout(60):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % SIZE in head.lower()
                got = 0
                n = 0
                while got < SIZE:
                    data = await reader.read(1 << 20)
                    assert data
                    got += len(data)
                    n += 1
                    if n % 64 == 0:
                        peak = max(peak, me.memory_info().rss)
            assert got == SIZE
            writer.close()
            assert peak - rss0 < RSS_SLACK, f"RSS grew by {(peak - rss0) >> 20} MB"
            assert p.stats.bytes_in > SIZE and p.stats.bytes_out > SIZE
    finally:
        await backend.stop()
