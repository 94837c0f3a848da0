"""PROXY protocol towards HTTP backends: the backend decodes the header and sees the real client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import pytest

from lb import proxy_protocol
from lb.errors import ProxyProtocolError
from tests.integration.http_backends import Proxy, config, read_response

ROUTES = '[[http.route]]\npath = "/"\npool = "pp"\n'


class ProxyProtocolBackend:
    """Decodes the PROXY header that opens each connection, then answers HTTP with what it saw."""

    def __init__(self) -> None:
        self.headers: list[proxy_protocol.ProxyHeader] = []
        self.errors: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> ProxyProtocolBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            header = None
            while header is None:
                data = await reader.read(4096)
                if not data:
                    self.errors.append("closed before a PROXY header")
                    return
                buf += data
                header = proxy_protocol.decode(buf)
            self.headers.append(header)
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(buf[header.length :])
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await reader.read(4096)
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.Request):
                    seen: dict[str, Any] = {
                        "src": list(header.src) if header.src else None,
                        "dst": list(header.dst) if header.dst else None,
                        "version": header.version,
                        "xff": dict(ev.headers).get(b"x-forwarded-for", b"").decode(),
                    }
                    body = json.dumps(seen).encode()
                    writer.write(
                        conn.send(h11.Response(status_code=200, headers=[("content-length", str(len(body)))]))
                        or b""
                    )
                    writer.write(conn.send(h11.Data(data=body)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                elif isinstance(ev, h11.EndOfMessage):
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                    else:
                        return
                else:  # ConnectionClosed, PAUSED
                    return
        except (h11.ProtocolError, ProxyProtocolError, ConnectionError) as exc:
            self.errors.append(repr(exc))
        finally:
            writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_backend_sees_the_real_client_address(version: str) -> None:
    backend = await ProxyProtocolBackend().start()
    toml = config({"pp": [f"127.0.0.1:{backend.port}"]}, ROUTES, pools_extra=f'proxy_protocol = "{version}"')
    try:
        async with Proxy(toml) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            client = writer.get_extra_info("sockname")
            try:
                # Two requests on one kept-alive client connection: each backend connection
                # opens with exactly one header naming this client.
                for _ in range(2):
                    writer.write(b"GET /who HTTP/1.1\r\nHost: pp.example\r\n\r\n")
                    status, _, body = await read_response(reader)
                    assert status == 200
                    seen = json.loads(body)
                    assert seen["version"] == int(version[1])
                    assert seen["src"] == [client[0], client[1]]
                    assert seen["dst"] == ["127.0.0.1", p.port]
                    assert seen["xff"] == client[0]
            finally:
                writer.close()
            # PROXY-protocol connections carry one client each: never pooled for another.
            assert p.stats.upstream_reused == 0
            assert len(backend.headers) == 2
    finally:
        await backend.stop()
    assert backend.errors == []
    assert all(h.command == "PROXY" and h.family == "TCP4" for h in backend.headers)
