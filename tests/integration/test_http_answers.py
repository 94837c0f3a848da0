"""Answers on the wire: every status sekisho generates has its reason phrase."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.http_backends import HttpBackend, Proxy, config

ROUTES = """
[[http.route]]
host = "old.example.com"
redirect = "https://www.example.com/"

[[http.route]]
path = "/teapot/"
status = 418

[[http.route]]
path = "/"
pool = "alpha"
"""


async def raw_head(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_generated_statuses_have_reason_phrases() -> None:
    backend = await HttpBackend("a").start()
    try:
        async with Proxy(config({"alpha": [backend.address]}, ROUTES)) as p:
            head = await raw_head(p.port, b"GET /a HTTP/1.1\r\nHost: old.example.com\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 301 Moved Permanently\r\n"), head
            assert b"\r\nlocation: https://www.example.com/a\r\n" in head
            head = await raw_head(p.port, b"HEAD /teapot/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 418 I'm a teapot\r\n"), head
            head = await raw_head(p.port, b"GET /-/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404 Not Found\r\n"), head
            head = await raw_head(p.port, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
    finally:
        await backend.stop()
