"""Traffic for the VRRP failover test, run inside namespaces with `ip netns exec`.

python -m tests.adversarial.vrrp_traffic serve PORT NAME
    a line echo backend on 127.0.0.1:PORT answering "NAME <line>"; prints "ready"
python -m tests.adversarial.vrrp_traffic client HOST PORT --duration S [--timeout S]
        [--response-timeout S] [--pause S]
    a bounded loop of fresh TCP connections (connect timeout 250 ms: on a LAN a
    SYN left unanswered that long is lost), one request/response each (2 s: the
    proxy and the backend are two Python processes on a shared machine); prints
    "ready", then one JSON line per attempt: start and end (time.monotonic(),
    CLOCK_MONOTONIC, comparable across processes and namespaces), ok, the
    backend's name or the error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
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


def attempt(n: int, host: str, port: int, timeout: float, response_timeout: float) -> Attempt:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(response_timeout)
            s.sendall(f"ping {n}\n".encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed after {data!r}")
                data += chunk
        name, _, echo = data.decode().strip().partition(" ")
        if echo != f"ping {n}":
            return Attempt(n, start, time.monotonic(), False, f"bad answer {data!r}")
        return Attempt(n, start, time.monotonic(), True, name)
    except (OSError, ConnectionError) as exc:
        return Attempt(n, start, time.monotonic(), False, f"{type(exc).__name__}: {exc}")


def client(
    host: str, port: int, *, duration: float, timeout: float, response_timeout: float, pause: float
) -> None:
    print("ready", flush=True)
    end = time.monotonic() + duration
    n = 0
    while time.monotonic() < end:
        n += 1
        print(json.dumps(asdict(attempt(n, host, port, timeout, response_timeout))), flush=True)
        time.sleep(pause)


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
        client(
            a.host,
            a.port,
            duration=a.duration,
            timeout=a.timeout,
            response_timeout=a.response_timeout,
            pause=a.pause,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
