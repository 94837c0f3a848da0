"""A bounded load loop of legitimate keep-alive requests (count and time both capped)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

GET = b"GET /legit HTTP/1.1\r\nHost: a\r\n\r\n"


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # failures of a request sent on a kept-alive connection that closed before answering
    # (the keep-alive close race: RFC 9112 9.3.1 lets clients retry those if idempotent)
    reused_unanswered: int = 0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def _read_one(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server said `Connection: close`), as an HTTP/1.1 client reads it."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    await reader.readexactly(length)
    return status, close


async def load(  # noqa: PLR0917
    port: int,
    seconds: float,
    workers: int = 4,
    max_requests: int = 200_000,
    new_connection_every: int = 0,
    request: bytes = GET,
) -> LoadResult:
    """`workers` clients loop GETs for `seconds`; a failure is any non-200 or broken connection."""
    result = LoadResult()
    t0 = time.monotonic()
    until = t0 + seconds

    async def worker() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        n = 0
        on_conn = 0  # requests answered on the current connection
        while time.monotonic() < until and result.ok + result.failed < max_requests:
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                    on_conn = 0
                reader, writer = conn
                writer.write(request)
                async with asyncio.timeout(10):
                    status, server_closes = await _read_one(reader)
                if status == 200:
                    result.ok += 1
                else:
                    result.failed += 1
                    result.errors.append(f"status {status}")
                n += 1
                on_conn += 1
                if server_closes or (new_connection_every and n % new_connection_every == 0):
                    writer.close()
                    conn = None
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                result.failed += 1
                result.errors.append(repr(exc))
                if on_conn > 0 and isinstance(exc, (ConnectionResetError, asyncio.IncompleteReadError)):
                    result.reused_unanswered += 1
                if conn is not None:
                    conn[1].transport.abort()
                conn = None
        if conn is not None:
            conn[1].transport.abort()

    await asyncio.gather(*(worker() for _ in range(workers)))
    result.seconds = time.monotonic() - t0
    return result
