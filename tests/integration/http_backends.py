"""Test backends for the HTTP proxy: small asyncio servers with behaviours chosen by path.

/echo...      200, JSON of what arrived (method, target, headers, body length)
/size/N       200 with N bytes (Content-Length), streamed from a fixed buffer
/chunked/N    200 with N bytes, chunked
/close/N      200 with N bytes, close-delimited (HTTP/1.0 style)
/sink         reads the body without keeping it, answers its length
/slow/S       waits S seconds before answering
/ws           101 Switching Protocols, then echoes bytes
/die          reads the request, then resets the connection
/raw          writes `backend.raw_response` as is, then closes
/continue     answers 100 Continue before reading the body
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
from typing import Any

import h11

CHUNK = b"x" * (1 << 20)


class HttpBackend:
    def __init__(self, name: str = "b") -> None:
        self.name = name
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.raw_bytes = 0  # every byte received
        self.raw_response = b""
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> HttpBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        try:
            while True:
                event = await self._next(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                info: dict[str, Any] = {
                    "backend": self.name,
                    "method": event.method.decode(),
                    "target": event.target.decode(),
                    "headers": [[n.decode(), v.decode()] for n, v in event.headers],
                }
                path = event.target.decode()
                if path.startswith("/continue"):
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                if path.startswith("/die"):
                    self.requests.append(info)
                    writer.transport.abort()
                    return
                if path.startswith("/raw"):
                    self.requests.append(info)
                    writer.write(self.raw_response)
                    await writer.drain()
                    writer.close()
                    return
                body_len = 0
                while True:
                    ev = await self._next(conn, reader)
                    if isinstance(ev, h11.Data):
                        body_len += len(ev.data)
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    else:
                        return
                info["body_len"] = body_len
                self.requests.append(info)
                if path.startswith("/slow/"):
                    await asyncio.sleep(float(path.split("/")[2]))
                if path.startswith("/ws"):
                    await self._websocket(conn, event, reader, writer)
                    return
                await self._respond(conn, writer, event, path, info)
                if conn.our_state is h11.MUST_CLOSE:
                    writer.close()
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            writer.transport.abort()
        except asyncio.CancelledError:  # the test is over
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await reader.read(1 << 18)
            self.raw_bytes += len(data)
            conn.receive_data(data)

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, req: h11.Request, path: str, info: Any
    ) -> None:
        parts = path.split("?", maxsplit=1)[0].split("/")
        if parts[1] in ("size", "chunked", "close"):
            n = int(parts[2])
            headers = [("x-backend", self.name)]
            if parts[1] == "size":
                headers.append(("content-length", str(n)))
            elif parts[1] == "close":
                headers.append(("connection", "close"))
            if parts[1] == "close":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nx-backend: %s\r\nconnection: close\r\n\r\n" % self.name.encode()
                )
            else:
                writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
            if parts[1] == "close":
                # h11 would pick chunked for a 1.1 client; write a close-delimited body by hand.
                sent = 0
                while sent < n:
                    piece = CHUNK[: min(len(CHUNK), n - sent)]
                    writer.transport.write(piece)
                    sent += len(piece)
                    await writer.drain()
                writer.transport.close()
                return
            sent = 0
            while sent < n and req.method != b"HEAD":
                piece = CHUNK[: min(len(CHUNK), n - sent)]
                writer.write(conn.send(h11.Data(data=piece)))
                sent += len(piece)
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return
        body = json.dumps(info).encode()
        headers = [("content-type", "application/json"), ("x-backend", self.name)]
        headers.append(("content-length", str(len(body))))
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        if req.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _websocket(
        self,
        conn: h11.Connection,
        req: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        key = dict(req.headers).get(b"sec-websocket-key", b"")
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(
            conn.send(
                h11.InformationalResponse(
                    status_code=101,
                    headers=[
                        ("upgrade", "websocket"),
                        ("connection", "Upgrade"),
                        ("sec-websocket-accept", accept),
                    ],
                )
            )
        )
        rest, _ = conn.trailing_data
        buf = bytearray(rest)
        while True:
            # Echo each client frame back unmasked (server frames are not masked).
            while len(buf) >= 2:
                n = buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n = struct.unpack("!H", buf[2:4])[0]
                    off = 4
                masked = buf[1] & 0x80
                need = off + (4 if masked else 0) + n
                if len(buf) < need:
                    break
                mask = buf[off : off + 4] if masked else b"\0\0\0\0"
                start = off + (4 if masked else 0)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[start:need]))
                head = bytes([buf[0], n]) if n < 126 else bytes([buf[0], 126]) + struct.pack("!H", n)
                writer.write(head + payload)
                del buf[:need]
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            buf += data


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (payload < 126 bytes)."""
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x80 | opcode, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """An HttpFrontend behind a real Listener on 127.0.0.1:0, built from TOML text."""

    def __init__(self, toml: str, access_log: Any = None) -> None:
        import conf
        from lb.pool import PoolSet
        from proxy.http import HttpFrontend, HttpStats
        from proxy.listener import Listener, bind

        self.config = conf.load_text(toml)
        self.pools = PoolSet(self.config.pools)
        self.stats = HttpStats()
        self.frontend = HttpFrontend(self.config.http[0], self.pools, self.stats, access_log)
        address = conf.Address("127.0.0.1", 0)
        self.listener = Listener("http", address, bind(address), self.frontend)
        self.port = 0

    async def __aenter__(self) -> Proxy:
        self.listener.start()
        self.port = self.listener.bound[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop_accepting()
        self.frontend.retire()
        await self.frontend.drain(2.0)


def config(
    servers: dict[str, list[str]],
    routes: str,
    listener: str = "",
    pools_extra: str = "",
) -> str:
    """TOML for one [[http]] listener; `servers` maps pool names to addresses."""
    out = ['[global]\naccess_log = ""\n']
    for name, addresses in servers.items():
        s = ", ".join(f'{{ address = "{a}" }}' for a in addresses)
        out.append(f'[pool.{name}]\nscheduler = "rr"\nservers = [{s}]\n{pools_extra}\n')
    out.append(f'[[http]]\nlisten = ["127.0.0.1:1"]\n{listener}\n')
    out.append(routes)
    return "\n".join(out)


async def request(
    port: int, raw: bytes, read_timeout: float = 5.0, until_close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one response (Content-Length or until close); (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await read_response(reader, read_timeout, until_close)
    finally:
        writer.close()


async def read_response(
    reader: asyncio.StreamReader, read_timeout: float = 5.0, until_close: bool = False, head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(read_timeout):
        while True:
            status_line = await reader.readuntil(b"\r\n")
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if status >= 200 or status == 101:
                break
        if head or status in (101, 204, 304):
            return status, headers, b""
        if until_close or ("content-length" not in headers and "transfer-encoding" not in headers):
            return status, headers, await reader.read()
        if headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return status, headers, bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        return status, headers, await reader.readexactly(int(headers["content-length"]))
