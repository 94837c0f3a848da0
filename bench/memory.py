"""sekisho's memory: RSS idle, holding N idle keep-alive connections, and during 1 GiB uploads.

The client side runs in the bench process (pinned to the load CPUs); the RSS is
read from /proc for the proxy's whole process tree.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any

from bench.procs import Proc, raise_nofile

Addr = tuple[str, int]
CHUNK = 4 << 20


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


async def _hold(addr: Addr, count: int, proc: Proc, settle: float) -> dict[str, Any]:
    req = f"GET /small HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUser-Agent: sekisho-bench\r\n\r\n".encode()
    sem = asyncio.Semaphore(200)
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []
    before = proc.rss_kib()
    t0 = time.monotonic()
    deadline = t0 + 120

    async def one() -> None:
        async with sem:
            if time.monotonic() > deadline:
                errors.append("deadline")
                return
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr, limit=1 << 16), 5)
            except (OSError, TimeoutError) as exc:
                errors.append(f"connect: {exc}")
                return
            try:
                writer.write(req)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await asyncio.wait_for(reader.readexactly(length), 5)
                if not head.startswith(b"HTTP/1.1 2"):
                    raise OSError(head.split(b"\r\n", 1)[0].decode("latin-1"))
                writers.append(writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"request: {type(exc).__name__}: {exc}")
                writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    opened = time.monotonic() - t0
    await asyncio.sleep(settle)
    samples = [proc.rss_kib()]
    for _ in range(3):
        await asyncio.sleep(0.2)
        samples.append(proc.rss_kib())
    held = max(samples)
    # still open? (a proxy that dropped them would make the figure meaningless)
    alive = sum(1 for w in writers if not w.is_closing())
    for w in writers:
        w.close()
    await asyncio.sleep(0.5)
    after = proc.rss_kib()
    n = len(writers)
    return {
        "requested": count,
        "connections": n,
        "still_open_at_measure": alive,
        "errors": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "open_seconds": round(opened, 2),
        "rss_before_kib": before,
        "rss_kib": held,
        "rss_after_close_kib": after,
        "per_conn_kib": round((held - before) / n, 2) if n else None,
    }


def idle_connections(addr: Addr, count: int, proc: Proc, settle: float = 1.0) -> dict[str, Any]:
    raise_nofile(max(count * 2 + 1024, 65536))
    loop = _loop()
    try:
        return loop.run_until_complete(_hold(addr, count, proc, settle))
    finally:
        loop.close()


def upload(
    addr: Addr, total: int, proc: Proc, http_path: str | None, timeout: float = 120.0
) -> dict[str, Any]:
    """Stream `total` bytes to addr (an HTTP POST when http_path is set, raw TCP otherwise)
    while sampling the proxy's RSS; the sender uses sendfile from a memfd."""
    fd = os.memfd_create("bench-upload")
    os.write(fd, b"u" * CHUNK)
    sock = socket.create_connection(addr, timeout=10)
    sock.settimeout(None)
    state: dict[str, Any] = {"sent": 0, "error": "", "status": ""}

    def send() -> None:
        try:
            if http_path is not None:
                head = (
                    f"POST {http_path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
                    f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
                )
                sock.sendall(head.encode())
            left = total
            while left:
                n = os.sendfile(sock.fileno(), fd, 0, min(CHUNK, left))
                if n <= 0:
                    raise OSError("sendfile returned 0")
                left -= n
                state["sent"] = total - left
            if http_path is not None:
                buf = b""
                while b"\r\n" not in buf:
                    data = sock.recv(4096)
                    if not data:
                        raise OSError("closed before the response")
                    buf += data
                state["status"] = buf.split(b"\r\n", 1)[0].decode("latin-1")
            else:
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
        except OSError as exc:
            state["error"] = str(exc)

    before = proc.rss_kib()
    peak = before
    t0 = time.monotonic()
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.02)
        peak = max(peak, proc.rss_kib())
        if time.monotonic() - t0 > timeout:
            state["error"] = f"not done after {timeout:.0f} s"
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            thread.join(5)
            break
    elapsed = time.monotonic() - t0
    sock.close()
    os.close(fd)
    return {
        "bytes": total,
        "sent": state["sent"],
        "seconds": round(elapsed, 3),
        "gbps": round(state["sent"] * 8 / elapsed / 1e9, 3) if elapsed else None,
        "status": state["status"],
        "error": state["error"],
        "rss_before_kib": before,
        "peak_rss_kib": peak,
        "growth_kib": peak - before,
    }
