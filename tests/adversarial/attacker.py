"""Slow clients in their own process (so the load loop's process stays quiet).

    python -m tests.adversarial.attacker PORT SLOWLORIS SLOWPOST DURATION

Prints two JSON lines ("open" once every connection was started, then "done"): for each
slowloris connection (seconds from before connecting to close, got a 408, closed by the
peer, seconds from connected to close); for each slow-POST connection, whether it stayed open.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time


async def slowloris(port: int, until: float, out: list[tuple[float, bool, bool, float]]) -> None:
    t0 = time.monotonic()  # before connecting: sekisho's clock starts later, never earlier
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        out.append((0.0, False, False, 0.0))
        return
    t1 = time.monotonic()  # connected: sekisho may accept a little later, never earlier
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
    answer = bytearray()
    i = 0

    async def dribble() -> None:
        nonlocal i
        while time.monotonic() < until:
            await asyncio.sleep(1.0)
            i += 1
            try:
                writer.write(b"X-%d: a\r\n" % i)
            except Exception:
                return

    task = asyncio.create_task(dribble())
    try:
        async with asyncio.timeout(max(0.1, until - time.monotonic())):
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                answer += data
        now = time.monotonic()
        out.append((now - t0, answer.startswith(b"HTTP/1.1 408"), True, now - t1))
    except TimeoutError:
        now = time.monotonic()
        out.append((now - t0, False, False, now - t1))
    except OSError:
        now = time.monotonic()
        out.append((now - t0, answer.startswith(b"HTTP/1.1 408"), True, now - t1))
    finally:
        task.cancel()
        writer.transport.abort()


async def slow_post(port: int, until: float, out: list[bool]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        out.append(False)
        return
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
    open_ = True
    try:
        while time.monotonic() < until:
            await asyncio.sleep(1.0)
            writer.write(b"x")
            if reader.at_eof():
                open_ = False
                break
    finally:
        out.append(open_)
        writer.transport.abort()


async def main(port: int, n_loris: int, n_post: int, duration: float) -> None:
    until = time.monotonic() + duration
    loris: list[tuple[float, bool, bool, float]] = []
    posts: list[bool] = []
    tasks = []
    for i in range(n_loris):
        tasks.append(asyncio.create_task(slowloris(port, until, loris)))
        if i % 200 == 199:
            await asyncio.sleep(0.01)
    for _ in range(n_post):
        tasks.append(asyncio.create_task(slow_post(port, until, posts)))
    print(json.dumps({"event": "open", "t": time.monotonic()}), flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps({"event": "done", "loris": loris, "posts": posts}), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
