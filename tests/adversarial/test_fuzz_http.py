"""Issue 7, part 6: raw requests fuzzed through the real HTTP path for a bounded time.

~20 s in `make test`; SEKISHO_FUZZ_SECONDS (600 in `make fuzz`) for longer runs. sekisho
(HttpFrontend under a Listener) and the recording backend run on a loop in a thread; the
examples are sent from here with plain sockets and half-closed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.adversarial.harness import RecordingBackend, Sekisho, fuzz_seconds, proxy_config
from tests.adversarial.test_fuzz_cores import heads

BUDGET = fuzz_seconds(20.0)


class _Server:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.backend: RecordingBackend
        self.sekisho: Sekisho

    def __enter__(self) -> _Server:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.backend = await RecordingBackend().start()
        self.sekisho = Sekisho(proxy_config(self.backend.address, "max_header_bytes = 4096"))
        await self.sekisho.__aenter__()

    async def _stop(self) -> None:
        await self.sekisho.__aexit__(None, None, None)
        await self.backend.stop()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def send(self, raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.sekisho.port), timeout=3) as s:
            try:
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            out = bytearray()
            try:
                while data := s.recv(65536):
                    out += data
            except OSError:
                pass
            return bytes(out)


@pytest.fixture
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


def test_fuzz_raw_requests_through_sekisho(server: _Server) -> None:
    examples = 0
    until = time.monotonic() + BUDGET

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(heads)
    def one(raw: bytes) -> None:
        nonlocal examples
        examples += 1
        server.backend.reset()
        answer = server.send(raw)
        time.sleep(0.002)  # let forwarded bytes land
        # Whatever sekisho said is HTTP/1.1 from its first byte (or nothing at all)...
        assert answer == b"" or answer.startswith(b"HTTP/1.1 "), (raw, answer[:100])
        # ...and whatever reached the backend parsed cleanly: complete requests, or a body cut
        # short when the client gave up (streamed, then closed: never a complete request).
        broken = [b for b in server.backend.broken if not b.startswith("peer closed connection without")]
        assert broken == [], (raw, broken, bytes(server.backend.raw[-300:]))

    while time.monotonic() < until:
        one()
    # Still healthy afterwards: a plain request is served, nothing leaked.
    assert server.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    time.sleep(0.2)
    assert server.sekisho.frontend.stats()["open_connections"] == 0
    print(f"\n{examples} fuzzed requests in {BUDGET:.0f} s")
    assert examples >= 100
