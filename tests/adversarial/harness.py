"""Shared pieces of the adversarial suite: a recording backend, sekisho in-process, raw clients.

The recording backend keeps every byte each connection delivered and answers each
complete request (judged by h11, which is strict about what sekisho sends) with a
small fixed response, so the suite can compare "what reached the backend" byte for
byte with what it predicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from dataclasses import dataclass, field
from typing import Any

import h11

OK_BODY = b"ok"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Recorded:
    raw: bytearray = field(default_factory=bytearray)
    requests: int = 0
    broken: str | None = None  # h11's complaint, if the backend could not parse what arrived


class RecordingBackend:
    """Records raw bytes per connection; answers 200 "ok" (or `response`) per complete request."""

    def __init__(self, response: bytes = OK_RESPONSE, answer: bool = True, close: bool = False) -> None:
        self.response = response
        self.answer = answer
        self.close = close  # close after each answer
        self.conns: list[Recorded] = []
        self.raw = bytearray()  # every byte, in arrival order, since the last reset
        self.requests = 0
        self.broken: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> RecordingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget what arrived so far (connections stay open)."""
        self.raw = bytearray()
        self.requests = 0
        self.broken = []

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):
                w.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rec = Recorded()
        self.conns.append(rec)
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        try:
            while True:
                data = await reader.read(1 << 16)
                rec.raw += data
                self.raw += data
                conn.receive_data(data)
                while True:
                    try:
                        ev = conn.next_event()
                    except h11.RemoteProtocolError as exc:
                        rec.broken = str(exc)
                        self.broken.append(str(exc))
                        writer.transport.abort()
                        return
                    if ev is h11.NEED_DATA:
                        break
                    if isinstance(ev, h11.EndOfMessage):
                        rec.requests += 1
                        self.requests += 1
                        if self.answer:
                            writer.write(self.response)
                        if (
                            self.close
                            or conn.our_state is h11.MUST_CLOSE
                            or conn.their_state is h11.MUST_CLOSE
                        ):
                            await writer.drain()
                            writer.close()
                            return
                        # h11 does not track our hand-written response: start a fresh cycle.
                        rest, closed = conn.trailing_data
                        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
                        if rest:
                            conn.receive_data(rest)
                        if closed:
                            conn.receive_data(b"")
                    elif isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                        writer.close()
                        return
                if not data:
                    writer.close()
                    return
        except (ConnectionError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            self._writers.discard(writer)


def proxy_config(backend: str, listener: str = "", forwarded: str = "[]") -> str:
    return (
        '[global]\naccess_log = ""\n'
        f'[pool.alpha]\nscheduler = "rr"\nservers = [{{ address = "{backend}" }}]\n'
        f'[[http]]\nlisten = ["127.0.0.1:1"]\nforwarded_headers = {forwarded}\n{listener}\n'
        '[[http.route]]\npath = "/"\npool = "alpha"\n'
    )


class Sekisho:
    """An HttpFrontend behind a real proxy.listener.Listener on 127.0.0.1:0."""

    def __init__(self, toml: str) -> None:
        import conf
        from lb.pool import PoolSet
        from proxy.http import HttpFrontend, HttpStats
        from proxy.listener import Listener, bind

        self.config = conf.load_text(toml)
        self.pools = PoolSet(self.config.pools)
        self.stats = HttpStats()
        self.frontend = HttpFrontend(self.config.http[0], self.pools, self.stats, None)
        address = conf.Address("127.0.0.1", 0)
        self.listener = Listener("http", address, bind(address, backlog=4096), self.frontend)
        self.port = 0

    async def __aenter__(self) -> Sekisho:
        self.listener.start()
        self.port = self.listener.bound[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop_accepting()
        self.frontend.retire()
        await self.frontend.drain(2.0)


async def exchange(port: int, raw: bytes, timeout: float = 3.0, half_close: bool = False) -> bytes:
    """Send raw bytes, read until the peer closes (or `timeout`); everything read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = bytearray()
    try:
        writer.write(raw)
        if half_close:
            try:
                writer.write_eof()
            except OSError:  # the peer already answered and reset
                pass
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                out += data
    except (TimeoutError, OSError):
        pass
    finally:
        writer.transport.abort()
    return bytes(out)


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1."):
        return None
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_kb(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fuzz_seconds(default: float) -> float:
    value = os.environ.get("SEKISHO_FUZZ_SECONDS")
    return float(value) if value else default


def _unused(_: Any) -> None:
    return None
