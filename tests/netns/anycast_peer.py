"""The backends and clients of the anycast netns tests, run inside the namespaces.

    python -m tests.netns.anycast_peer backend PORT NAME        # says NAME, then echoes lines
    python -m tests.netns.anycast_peer spread HOST PORT N       # N connections: who answered
    python -m tests.netns.anycast_peer load HOST PORT MAX SECONDS STOPFILE
    python -m tests.netns.anycast_peer hold HOST PORT K         # K open connections; "go" on stdin

Each client prints one JSON line with what it saw. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections import Counter

TIMEOUT = 3.0


async def backend(port: int, name: str) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"{name}\n".encode())
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def one(host: str, port: int) -> str:
    """Connect, read who answered, close: the node's name or raises OSError."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.settimeout(TIMEOUT)
        line = s.makefile("rb").readline()
        if not line.endswith(b"\n"):
            raise OSError(f"short answer {line!r}")
        return line.decode().strip()


def spread(host: str, port: int, n: int) -> dict[str, object]:
    counts: Counter[str] = Counter()
    errors: list[str] = []
    for _ in range(n):
        try:
            counts[one(host, port)] += 1
        except OSError as exc:
            errors.append(str(exc))
    return {"counts": dict(counts), "failures": len(errors), "errors": errors[:10]}


def load(host: str, port: int, most: int, seconds: float, stop_file: str) -> dict[str, object]:
    """New connections one after another until `stop_file` exists (or the bounds)."""
    counts: Counter[str] = Counter()
    errors: list[tuple[float, str]] = []
    start = time.monotonic()
    timeline: list[tuple[float, str]] = []
    for _ in range(most):
        if time.monotonic() - start > seconds or os.path.exists(stop_file):
            break
        at = time.monotonic() - start
        try:
            who = one(host, port)
            counts[who] += 1
            timeline.append((round(at, 3), who))
        except OSError as exc:
            errors.append((round(at, 3), str(exc)))
    return {
        "counts": dict(counts),
        "failures": len(errors),
        "errors": errors[:10],
        "timeline": timeline,
        "seconds": round(time.monotonic() - start, 3),
    }


def hold(host: str, port: int, k: int) -> None:
    """Open k connections, report who holds each, then on "go" use each once more and close."""
    socks: list[tuple[socket.socket, str]] = []
    for _ in range(k):
        s = socket.create_connection((host, port), timeout=TIMEOUT)
        s.settimeout(TIMEOUT)
        socks.append((s, s.makefile("rb").readline().decode().strip()))
    print(json.dumps({"ready": [who for _, who in socks]}), flush=True)
    sys.stdin.readline()
    results = []
    for s, who in socks:
        try:
            s.sendall(b"ping\n")
            echo = s.makefile("rb").readline()
            s.shutdown(socket.SHUT_WR)
            rest = s.recv(100)
            results.append({"node": who, "ok": echo == b"ping\n" and rest == b""})
        except OSError as exc:
            results.append({"node": who, "ok": False, "error": str(exc)})
        finally:
            s.close()
    print(json.dumps({"results": results}), flush=True)


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "backend":
        asyncio.run(backend(int(args[0]), args[1]))
    elif kind == "spread":
        print(json.dumps(spread(args[0], int(args[1]), int(args[2]))), flush=True)
    elif kind == "load":
        print(json.dumps(load(args[0], int(args[1]), int(args[2]), float(args[3]), args[4])), flush=True)
    elif kind == "hold":
        hold(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
