"""Slow clients in their own process (so the load loop's process stays quiet).

    python -m tests.adversarial.attacker PORT SLOWLORIS SLOWPOST DURATION

Prints two JSON lines ("open" once every connection is established, then "done"): for each
slowloris connection (seconds from before connecting to close, got a 408, closed by the
peer, seconds from connected to close, when it connected, when it ended: monotonic clock);
for each slow-POST connection, whether it stayed open. The slow-POST connections are held
until every slowloris connection has ended (or DURATION is over), then closed.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

Loris = tuple[float, bool, bool, float, float, float]


class Opening:
    """Counts connections that are established (or failed to be); `all` once every one is."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.all = asyncio.Event()
        if not total:
            self.all.set()

    def one(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.all.set()


async def slowloris(port: int, until: float, out: list[Loris], opening: Opening) -> None:
    t0 = time.monotonic()  # before connecting: sekisho's clock starts later, never earlier
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        out.append((0.0, False, False, 0.0, 0.0, 0.0))
        opening.one()
        return
    t1 = time.monotonic()  # connected: sekisho may accept a little later, never earlier
    opening.one()
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
        out.append((now - t0, answer.startswith(b"HTTP/1.1 408"), True, now - t1, t1, now))
    except TimeoutError:
        now = time.monotonic()
        out.append((now - t0, False, False, now - t1, t1, now))
    except OSError:
        now = time.monotonic()
        out.append((now - t0, answer.startswith(b"HTTP/1.1 408"), True, now - t1, t1, now))
    finally:
        task.cancel()
        writer.transport.abort()


async def slow_post(
    port: int, until: float, out: list[bool], opening: Opening, loris_done: asyncio.Event
) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        out.append(False)
        opening.one()
        return
    opening.one()
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
    open_ = True
    try:
        while time.monotonic() < until and not loris_done.is_set():
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
    loris: list[Loris] = []
    posts: list[bool] = []
    opening = Opening(n_loris + n_post)
    loris_done = asyncio.Event()
    loris_tasks = []
    for i in range(n_loris):
        loris_tasks.append(asyncio.create_task(slowloris(port, until, loris, opening)))
        if i % 200 == 199:
            await asyncio.sleep(0.01)
    post_tasks = [
        asyncio.create_task(slow_post(port, until, posts, opening, loris_done)) for _ in range(n_post)
    ]
    try:
        await asyncio.wait_for(opening.all.wait(), max(0.1, until - time.monotonic()))
    except TimeoutError:
        pass
    print(json.dumps({"event": "open", "t": time.monotonic(), "pending": opening.left}), flush=True)
    await asyncio.gather(*loris_tasks)
    loris_done.set()
    await asyncio.gather(*post_tasks)
    print(json.dumps({"event": "done", "loris": loris, "posts": posts}), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
