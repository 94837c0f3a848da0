"""Built-in backends, each run as its own (pinned) process.

    python -m bench.servers echo 127.0.0.1:PORT   # TCP_RR / TCP_CRR: echoes what it reads
    python -m bench.servers sink 127.0.0.1:PORT   # TCP_STREAM / uploads: splices to /dev/null
    python -m bench.servers http 127.0.0.1:PORT   # /small, /1m, POST /upload (body discarded)

They exist so the bench works without nginx/iperf3 and so the uploads have a
backend that reads a body of any size without buffering it. The orchestrator
waits for the port to accept connections, then measures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from typing import cast

SMALL_BODY = b"x" * 128
ONE_MIB = 1 << 20
BIG_BODY = b"y" * ONE_MIB


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False


class HttpProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for a benchmark backend; requests come from the bench only."""

    def __init__(self) -> None:
        self.buf = b""
        self.discard = 0  # request body bytes still to swallow
        self.pending: tuple[str, bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.discard:
            if len(data) <= self.discard:
                self.discard -= len(data)
                if self.discard == 0:
                    self._respond()
                return
            data = data[self.discard :]
            self.discard = 0
            self._respond()
        self.buf += data
        while not self.transport.is_closing():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.transport.close()
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            length = 0
            close = len(parts) > 2 and parts[2] == "HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection":
                    close = value.strip().lower() == "close"
            self.pending = (path, close)
            if length <= len(self.buf):
                self.buf = self.buf[length:]
                self._respond()
            else:
                self.discard = length - len(self.buf)
                self.buf = b""
                return

    def _respond(self) -> None:
        assert self.pending is not None
        path, close = self.pending
        self.pending = None
        if path.startswith("/1m"):
            body = BIG_BODY
        elif path.startswith("/upload"):
            body = b"ok\n"
        else:
            body = SMALL_BODY
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: application/octet-stream\r\n"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
        )
        self.transport.writelines([head.encode("latin-1"), body])
        if close:
            self.transport.close()


def _serve_asyncio(kind: str, host: str, port: int) -> None:
    loop = _loop()
    asyncio.set_event_loop(loop)
    factory = EchoProtocol if kind == "echo" else HttpProtocol
    server = loop.run_until_complete(loop.create_server(factory, sock=_listen(host, port), backlog=4096))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


def _sink_one(conn: socket.socket) -> None:
    """Move everything from the socket into /dev/null through a pipe: no byte enters Python."""
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, ONE_MIB)  # F_SETPIPE_SZ
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    fd = conn.fileno()
    try:
        while True:
            try:
                n = os.splice(fd, w, ONE_MIB)
            except OSError:
                break
            if n == 0:
                break
            while n:
                n -= os.splice(r, devnull, n)
    finally:
        os.close(r)
        os.close(w)
        os.close(devnull)
        conn.close()


def _serve_sink(host: str, port: int) -> None:
    sock = _listen(host, port)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_sink_one, args=(conn,), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("echo", "sink", "http"):
        print("usage: python -m bench.servers echo|sink|http HOST:PORT", file=sys.stderr)
        return 2
    kind, addr = argv
    host, _, port = addr.rpartition(":")
    if kind == "sink":
        _serve_sink(host, int(port))
    else:
        _serve_asyncio(kind, host, int(port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
