"""Traffic for the VRRP failover test, run inside namespaces with `ip netns exec`.

python -m tests.adversarial.vrrp_traffic serve PORT NAME
    a line echo backend on 127.0.0.1:PORT answering "NAME <line>"; prints "ready"
python -m tests.adversarial.vrrp_traffic client HOST PORT --duration S [--timeout S]
        [--response-timeout S] [--pause S]
    a bounded run of fresh TCP connections, a new one every 20 ms whatever the
    earlier ones still wait for (connect timeout 250 ms: on a LAN a SYN left
    unanswered that long is lost), one request/response each (2 s: the proxy and
    the backend are two Python processes on a shared machine); prints
    "ready", then one JSON line per attempt: start and end (time.monotonic(),
    CLOCK_MONOTONIC, comparable across processes and namespaces), ok, the
    backend's name or the error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass


@dataclass
class Attempt:
    n: int
    start: float
    end: float
    ok: bool
    by: str  # the backend's name, or the error

    @classmethod
    def parse(cls, line: str) -> Attempt:
        return cls(**json.loads(line))


async def _serve(port: int, name: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            writer.write(f"{name} ".encode() + line)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def attempt(n: int, host: str, port: int, timeout: float, response_timeout: float) -> Attempt:
    start = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        reader, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer = w
        w.write(f"ping {n}\n".encode())
        data = await asyncio.wait_for(reader.readline(), response_timeout)
        if not data.endswith(b"\n"):
            raise ConnectionError(f"closed after {data!r}")
        name, _, echo = data.decode().strip().partition(" ")
        if echo != f"ping {n}":
            return Attempt(n, start, time.monotonic(), False, f"bad answer {data!r}")
        return Attempt(n, start, time.monotonic(), True, name)
    except OSError as exc:  # TimeoutError and ConnectionError included
        return Attempt(n, start, time.monotonic(), False, f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()


async def client(
    host: str, port: int, *, duration: float, timeout: float, response_timeout: float, pause: float
) -> None:
    """A new connection every `pause` seconds, whatever the earlier ones are still waiting for:
    one request stuck on a dead master must not hide the moment the VIP answers again."""

    async def one(n: int) -> None:
        print(json.dumps(asdict(await attempt(n, host, port, timeout, response_timeout))), flush=True)

    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    tasks: set[asyncio.Task[None]] = set()
    n = 0
    while loop.time() < end:
        n += 1
        task = loop.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(pause)
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.adversarial.vrrp_traffic", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("name")
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--timeout", type=float, default=0.25, help="connect timeout")
    c.add_argument("--response-timeout", type=float, default=2.0)
    c.add_argument("--pause", type=float, default=0.02)
    a = p.parse_args(argv)
    if a.cmd == "serve":
        asyncio.run(_serve(a.port, a.name))
    else:
        asyncio.run(
            client(
                a.host,
                a.port,
                duration=a.duration,
                timeout=a.timeout,
                response_timeout=a.response_timeout,
                pause=a.pause,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
