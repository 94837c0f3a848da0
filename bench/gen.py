"""Built-in load generators, each run as its own (pinned) process printing one JSON object.

    python -m bench.gen stream HOST:PORT --streams 1 --duration 3
    python -m bench.gen rr     HOST:PORT --conns 1 --size 1 --duration 3
    python -m bench.gen crr    HOST:PORT --conns 8 --size 1 --duration 3
    python -m bench.gen crr    HOST:PORT --rate 1000 --duration 3
    python -m bench.gen http   http://HOST:PORT/small --conns 32 [--close] --duration 3
    python -m bench.gen http   http://HOST:PORT/small --rate 2000 --duration 3

`stream` moves bytes with sendfile(2) from a memfd, so the sender never copies
through Python; `direct` in TCP_STREAM is this generator against the splice
sink alone, the ceiling everything else is measured under. `http --rate` and
`crr --rate` are open-loop generators: request (or connection) i is due at start + i/rate and its latency is
counted from that due time, so a slow target cannot hide queueing
(no coordinated omission); a pacing thread hands each request to the loop at
its due time (the loop's own timers round to 1 ms, which sent bursts). Every loop stops at its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import cast
from urllib.parse import urlsplit

from bench.stats import latency_summary_us

CHUNK = 4 << 20


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------- TCP_STREAM


def run_stream(addr: tuple[str, int], streams: int, duration: float) -> dict[str, float]:
    fd = os.memfd_create("bench-stream")
    os.write(fd, b"\0" * CHUNK)
    totals = [0] * streams
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + duration

    def one(i: int) -> None:
        try:
            with socket.create_connection(addr, timeout=10) as s:
                s.settimeout(None)
                sent = 0
                while time.perf_counter() < deadline:
                    n = os.sendfile(s.fileno(), fd, 0, CHUNK)
                    if n <= 0:
                        break
                    sent += n
                totals[i] = sent
                s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 30)
    elapsed = time.perf_counter() - start
    os.close(fd)
    if errors and not any(totals):
        raise OSError("; ".join(errors[:3]))
    total = sum(totals)
    return {"bytes": total, "elapsed": elapsed, "gbps": total * 8 / elapsed / 1e9, "errors": len(errors)}


# ---------------------------------------------------------------- TCP_RR


class _RRClient(asyncio.Protocol):
    def __init__(self, msg: bytes, deadline_ns: int, samples: list[int], done: asyncio.Future[None]) -> None:
        self.msg = msg
        self.deadline_ns = deadline_ns
        self.samples = samples
        self.done = done
        self.got = 0
        self.t0 = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.msg)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got < len(self.msg):
            return
        self.got -= len(self.msg)
        now = time.perf_counter_ns()
        self.samples.append(now - self.t0)
        if now < self.deadline_ns:
            self.t0 = now
            self.transport.write(self.msg)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _rr(addr: tuple[str, int], conns: int, size: int, duration: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    samples: list[int] = []
    msg = b"r" * size
    start = time.perf_counter_ns()
    deadline = start + int(duration * 1e9)
    dones: list[asyncio.Future[None]] = []
    for _ in range(conns):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        await asyncio.wait_for(
            loop.create_connection(functools.partial(_RRClient, msg, deadline, samples, done), *addr), 10
        )
    await asyncio.wait_for(asyncio.gather(*dones), duration + 30)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    if not samples:
        raise OSError("no transaction completed")
    return {"transactions": len(samples), "elapsed": elapsed, "rate": len(samples) / elapsed} | (
        latency_summary_us(samples)
    )


# ---------------------------------------------------------------- TCP_CRR


async def _crr(
    addr: tuple[str, int], conns: int, size: int, duration: float, rate: float
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    samples: list[int] = []
    counts = {"errors": 0}
    msg = b"c" * size
    start = time.perf_counter_ns()
    last_error = ""

    async def one(t0: int) -> None:
        nonlocal last_error
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            async with asyncio.timeout(30):  # (one deadline, no task: wait_for made two per connection)
                await loop.sock_connect(s, addr)
                await loop.sock_sendall(s, msg)
                got = 0
                while got < size:
                    data = await loop.sock_recv(s, 65536)
                    if not data:
                        raise OSError("closed before the response")
                    got += len(data)
            samples.append(time.perf_counter_ns() - t0)
        except (OSError, TimeoutError) as exc:
            counts["errors"] += 1
            last_error = str(exc) or type(exc).__name__
        finally:
            s.close()

    await _drive(one, start, duration, counts, rate=rate, conns=conns)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    if not samples:
        raise OSError(f"no connection completed ({counts['errors']} errors: {last_error})")
    return {
        "connections": len(samples),
        "elapsed": elapsed,
        "rate": len(samples) / elapsed,
        "errors": counts["errors"],
    } | latency_summary_us(samples)


# ---------------------------------------------------------------- HTTP


class _HttpClient(asyncio.Protocol):
    """One HTTP/1.1 connection: `request()` resolves to (status, body bytes) when the response ends."""

    def __init__(self, request: bytes) -> None:
        self.request_bytes = request
        self.buf = b""
        self.remaining = -1
        self.status = 0
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.body = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self) -> asyncio.Future[tuple[int, int]]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.remaining = -1
        self.body = 0
        self.transport.write(self.request_bytes)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split(" ", 2)[1])
            self.remaining = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.remaining = int(value.strip())
            data = self.buf[end + 4 :]
            self.buf = b""
        self.remaining -= len(data)
        self.body += len(data)
        if self.remaining <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, self.body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(OSError("connection closed before the response ended"))


def _http_request(url: str, close: bool) -> tuple[tuple[str, int], bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    conn = "Connection: close\r\n" if close else ""
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: sekisho-bench\r\n{conn}\r\n"
    return (host, port), req.encode("latin-1")


async def _http(url: str, conns: int, close: bool, duration: float, rate: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    addr, req = _http_request(url, close)
    samples: list[int] = []
    counts = {"errors": 0, "non2xx": 0, "bytes": 0, "connections": 0}
    start = time.perf_counter_ns()

    async def connect() -> _HttpClient:
        counts["connections"] += 1
        _, proto = await asyncio.wait_for(loop.create_connection(lambda: _HttpClient(req), *addr), 10)
        return proto

    def account(status: int, body: int, t0: int) -> None:
        samples.append(time.perf_counter_ns() - t0)
        counts["bytes"] += body
        if not 200 <= status < 400:
            counts["non2xx"] += 1

    idle: list[_HttpClient] = []

    async def one(t0: int) -> None:
        client = idle.pop() if idle else await connect()
        try:
            status, body = await asyncio.wait_for(client.request(), 30)
            account(status, body, t0)
        except (OSError, TimeoutError):
            counts["errors"] += 1
            client.transport.abort()
            return
        if close or client.closed:
            client.transport.close()
        else:
            idle.append(client)

    await _drive(one, start, duration, counts, rate=rate, conns=conns)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    for client in idle:
        client.transport.close()
    if not samples:
        raise OSError(f"no request completed ({counts['errors']} errors)")
    return {"requests": len(samples), "elapsed": elapsed, "rate": len(samples) / elapsed} | (
        counts | latency_summary_us(samples)
    )


async def _drive(
    one: Callable[[int], Coroutine[None, None, None]],
    start: int,
    duration: float,
    counts: dict[str, int],
    *,
    rate: float,
    conns: int,
) -> None:
    """Run `one(t0)` until the deadline: paced at `rate` (open loop), else back to back on
    `conns` concurrent workers (closed loop), which stop early after 1,000 errors."""
    if rate > 0:
        await _open_loop(one, start, rate, duration, counts)
        return
    deadline = start + int(duration * 1e9)

    async def worker() -> None:
        while time.perf_counter_ns() < deadline and counts["errors"] < 1000:
            await one(time.perf_counter_ns())

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conns))), duration + 35)


async def _open_loop(
    one: Callable[[int], Coroutine[None, None, None]],
    start: int,
    rate: float,
    duration: float,
    counts: dict[str, int],
) -> None:
    """Open loop: `one(due)` is started for i < duration*rate at due = start + i/rate (ns),
    whether or not the earlier ones have finished; latency counts from the due time, so a
    slow target cannot hide queueing. The loop's timers have millisecond resolution (libuv),
    which sent 2000/s as bursts of 2-3 every ~1.3 ms; a thread sleeping with the kernel's
    high-resolution timer paces them (`_pace`), and the loop runs each one."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    finished = loop.create_future()

    def launch(due: int, last: bool) -> None:
        if len(tasks) > 4096:  # the target has stopped answering: do not pile up forever
            counts["errors"] += 1
        else:
            task = loop.create_task(one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if last and not finished.done():
            finished.set_result(None)

    total = int(duration * rate)
    if total == 0:
        finished.set_result(None)
    # The pacer waits for the GIL whenever the loop runs Python: let it in within 0.2 ms.
    sys.setswitchinterval(0.0002)
    pacer = threading.Thread(target=_pace, args=(loop, launch, start, rate, total), daemon=True)
    pacer.start()
    await asyncio.wait_for(finished, duration + 30)
    pacer.join(5)
    if tasks:
        await asyncio.wait(tasks, timeout=35)


def _pace(
    loop: asyncio.AbstractEventLoop, launch: Callable[[int, bool], None], start: int, rate: float, total: int
) -> None:
    """Hand the loop request i at start + i/rate (ns), i < total: `time.sleep` is
    clock_nanosleep, good to tens of µs, where the loop's own timers round to 1 ms."""
    interval = 1e9 / rate
    for i in range(total):
        due = start + int(i * interval)
        delay = due - time.perf_counter_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        loop.call_soon_threadsafe(launch, due, i == total - 1)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gen")
    p.add_argument("kind", choices=["stream", "rr", "crr", "http"])
    p.add_argument("target", help="HOST:PORT, or a URL for http")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--size", type=int, default=1)
    p.add_argument("--close", action="store_true")
    p.add_argument("--rate", type=float, default=0.0)
    a = p.parse_args(argv)
    duration = max(0.1, min(a.duration, 600.0))
    try:
        if a.kind == "stream":
            result = run_stream(_addr(a.target), a.streams, duration)
        else:
            loop = _loop()
            if a.kind == "rr":
                coro = _rr(_addr(a.target), a.conns, a.size, duration)
            elif a.kind == "crr":
                coro = _crr(_addr(a.target), a.conns, a.size, duration, a.rate)
            else:
                coro = _http(a.target, a.conns, a.close, duration, a.rate)
            result = loop.run_until_complete(coro)
            loop.close()
    except (OSError, TimeoutError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
