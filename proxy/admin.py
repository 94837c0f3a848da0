"""The admin listener (`global.metrics`): /metrics, /status, the admin API.

Never bound on a public listener. Not a hot path, so it uses asyncio streams
and h11 plainly. Handlers are registered by method and path pattern; a
pattern segment `{name}` captures one path segment (percent-decoded).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11

log = logging.getLogger("sekisho.admin")


@dataclass
class AdminRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    params: dict[str, str]
    body: bytes


@dataclass
class AdminResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> AdminResponse:
        return cls(status, json.dumps(data, indent=2).encode() + b"\n", "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> AdminResponse:
        return cls(status, text.encode())


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]
MAX_BODY = 1 << 20


class AdminServer:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: asyncio.Server | None = None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$"
        self._routes.append((method, re.compile(regex), handler))

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def dispatch(self, request: AdminRequest) -> AdminResponse:
        allowed = []
        for method, regex, handler in self._routes:
            m = regex.match(request.path)
            if m is None:
                continue
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                allowed.append(method)
                continue
            request.params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            try:
                return await handler(request)
            except Exception:
                log.exception("admin handler for %s %s failed", request.method, request.path)
                return AdminResponse.text("internal error\n", 500)
        if allowed:
            return AdminResponse(405, b"method not allowed\n", headers=[("Allow", ", ".join(allowed))])
        return AdminResponse.text("not found\n", 404)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                response = await self.dispatch(request)
                headers = [
                    ("Content-Type", response.content_type),
                    ("Content-Length", str(len(response.body))),
                    ("Cache-Control", "no-store"),
                    *response.headers,
                ]
                writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
                if request.method != "HEAD":
                    writer.write(conn.send(h11.Data(data=response.body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> AdminRequest | None:
        method = target = ""
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                async with asyncio.timeout(30):
                    data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                method, target = event.method.decode(), event.target.decode()
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                url = urllib.parse.urlsplit(target)
                return AdminRequest(method, url.path, urllib.parse.parse_qs(url.query), {}, bytes(body))
            else:  # ConnectionClosed, PAUSED
                return None
