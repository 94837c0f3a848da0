"""Lingering close (proxy/linger.py): an answer given before the whole request was
read reaches the client, followed by a FIN, not destroyed by a reset."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy import linger
from tests.integration.http_backends import HttpBackend, Proxy, config
from tests.integration.test_http_proxy import ROUTES, curl
from tests.integration.test_tcp_failover import run
from tests.support import send_then_read

LOOPS = ["asyncio", "uvloop"]
LIMITS = "max_body_bytes = 1000"
UPLOAD = 64 << 20  # more than both kernels' socket buffers take without a reader


def _upload_over_the_limit(port: int) -> tuple[str, bytes, str]:
    head = b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: %d\r\n\r\n" % UPLOAD
    return send_then_read(port, head + bytes(UPLOAD))


async def _refused_upload() -> tuple[str, bytes, str, int]:
    a = await HttpBackend("a").start()
    try:
        async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, LIMITS)) as p:
            loop = asyncio.get_running_loop()
            sent, answer, end = await loop.run_in_executor(None, _upload_over_the_limit, p.port)
            await asyncio.sleep(0.05)
            return sent, answer, end, len(p.frontend.connections)
    finally:
        await a.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_upload_gets_its_413_and_a_fin(loop: str) -> None:
    sent, answer, end, still_open = run(_refused_upload(), loop)
    # Without lingering the proxy closes with the body unread: the client's send and
    # then its read end in a reset.
    assert sent == "sent"
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert end == "fin"
    assert still_open == 0  # the client closed, so did the proxy: nothing lingers on


def _bad_head_then_more(port: int) -> tuple[bytes, str]:
    """A malformed request with more bytes behind it that the proxy never reads."""
    bad = b"GET / HTTP/1.1\r\nHost: www.example.com\r\nBad Header: x\r\n\r\n" + b"z" * 200_000
    _, answer, end = send_then_read(port, bad, pause=0.2)  # by then the answer and its FIN or RST are here
    return answer, end


async def _bad_head() -> tuple[bytes, str]:
    async with Proxy(config({"alpha": ["127.0.0.1:9"], "beta": ["127.0.0.1:9"]}, ROUTES)) as p:
        return await asyncio.get_running_loop().run_in_executor(None, _bad_head_then_more, p.port)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_400_with_unread_input_behind_it_ends_in_a_fin(loop: str) -> None:
    answer, end = run(_bad_head(), loop)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer.lower()
    assert end == "fin"


def _pipelined_behind_close(port: int) -> tuple[str, bytes, str]:
    """A request that says `Connection: close`, and a big upload pipelined behind it."""
    first = b"GET /echo HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n"
    second = b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: %d\r\n\r\n" % UPLOAD
    return send_then_read(port, first + second + bytes(UPLOAD))


async def _pipelined() -> tuple[str, bytes, str]:
    a = await HttpBackend("a").start()
    try:
        async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES)) as p:
            return await asyncio.get_running_loop().run_in_executor(None, _pipelined_behind_close, p.port)
    finally:
        await a.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_input_pipelined_behind_a_closing_response_ends_in_a_fin(loop: str) -> None:
    sent, answer, end = run(_pipelined(), loop)
    assert sent == "sent"
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1
    assert end == "fin"


async def _silent_client(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, float, int]:
    """After the 413 the client neither sends nor closes: the proxy gives up after LINGER_QUIET."""
    monkeypatch.setattr(linger, "LINGER_QUIET", 0.3)
    a = await HttpBackend("a").start()
    try:
        async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, LIMITS)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5000\r\n\r\n")
            writer.write(b"y" * 2000)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            async with asyncio.timeout(5):
                answer = await reader.read()  # up to our FIN: the proxy lingers from here
                while p.frontend.connections:
                    await asyncio.sleep(0.02)
            waited = loop.time() - t0
            open_after = len(p.frontend.connections)
            writer.close()
            return answer, waited, open_after
    finally:
        await a.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_lingering_ends_after_a_quiet_spell(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    answer, waited, open_after = run(_silent_client(monkeypatch), loop)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert open_after == 0
    assert 0.25 < waited < 2.0


@pytest.mark.asyncio
async def test_curl_upload_over_the_limit_sees_413(tmp_path: Path) -> None:
    """curl without `Expect: 100-continue` sends its whole body; it must still read the 413."""
    body = tmp_path / "body"
    body.write_bytes(bytes(UPLOAD))
    a = await HttpBackend("a").start()
    try:
        async with Proxy(config({"alpha": [a.address], "beta": [a.address]}, ROUTES, LIMITS)) as p:
            code, _ = await curl(
                "-H", "Host: www.example.com", "-H", "Expect:", "--data-binary", f"@{body}",
                f"http://127.0.0.1:{p.port}/echo",
            )  # fmt: skip
            assert code == 413
    finally:
        await a.stop()
