"""Python work per proxied L4 connection, counted instead of timed.

    python -m bench.opcount [N]

Runs a `[[tcp]]` service in this process (uvloop) in front of a tiny HTTP
backend thread, makes N sequential `Connection: close` requests from another
thread, and counts with `sys.settrace` the bytecodes and calls that run on the
event loop's thread per connection. Unlike req/s on a shared, noisy machine
the count is exact, so it shows what a change to the L4 path saves; `python -m
bench` says what that is worth in throughput. Sequential connections mean no
batching: the per-wakeup parts (Poller._dispatch, the listener) count fully.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
import threading
from types import FrameType
from typing import Any

import uvloop

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.tcp import TcpFrontend

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 128\r\nConnection: close\r\n\r\n" + b"x" * 128


def backend() -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while b"\r\n\r\n" not in conn.recv(4096):
                    pass
                conn.sendall(ANSWER)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def clients(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(REQUEST)
            while s.recv(65536):
                pass


async def count(n: int) -> tuple[collections.Counter[str], collections.Counter[str]]:
    srv, _ = backend()
    port = srv.getsockname()[1]
    pool = conf.Pool(
        "p", (conf.Server(conf.Address("127.0.0.1", port)),), health=conf.HealthCheck("none", interval=60.0)
    )
    service = conf.TcpService(listen=(conf.Address("127.0.0.1", 0),), pool="p")
    pools = PoolSet({"p": pool})
    address = service.listen[0]
    listener = Listener("tcp", address, bind(address), TcpFrontend(service, pools))
    listener.start()
    loop = asyncio.get_running_loop()
    ops: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}"
        if event == "call":
            calls[key] += 1
        elif event == "opcode":
            ops[key] += 1
        return tracer

    try:
        await loop.run_in_executor(None, clients, listener.bound[1], 20)  # warm up
        sys.settrace(tracer)  # this thread only: the loop's callbacks
        try:
            await loop.run_in_executor(None, clients, listener.bound[1], n)
        finally:
            sys.settrace(None)
    finally:
        await listener.stop_accepting()
        srv.close()
    harness = ("opcount.py", "futures.py", "base_events.py", "threading.py")  # awaiting the client thread
    for key in [k for k in ops if k.startswith(harness)]:
        del ops[key]
    return ops, calls


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    ops, calls = uvloop.run(count(n))
    print(f"{sum(ops.values()) / n:.0f} bytecodes per connection ({n} sequential connections)")
    for key, v in ops.most_common(25):
        print(f"{v / n:8.1f} bytecodes {calls[key] / n:5.2f} calls  {key}")


if __name__ == "__main__":
    main()
