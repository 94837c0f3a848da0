"""No way around a rule (audit issue): normalised routing, the Upgrade allow-list, 414, 204.

Each test here failed on the build before the audit fixes:
- test_hidden_paths_stay_hidden_however_spelled: `/a/../-/secret`, `//-/secret` and
  `/%2e%2e/...` reached the backend, which (normalising as most servers do) served them;
- test_h2c_and_unlisted_upgrades_are_not_tunnelled: `Upgrade: h2c` opened a byte tunnel;
- test_request_line_over_the_limit_is_414: answered 431;
- test_204_reaches_the_client_without_content_length: the backend's Content-Length passed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import conf
from tests.integration.http_backends import HttpBackend, Proxy, config, read_response, request
from tests.unit.test_http_target import merging

ROUTES = """
[[http.route]]
path = "/private/"
status = 403

[[http.route]]
path = "/app/"
pool = "alpha"
strip_prefix = true

[[http.route]]
path = "/tunnel/"
pool = "switcher"
upgrade = ["websocket", "x-custom"]

[[http.route]]
path = "/"
pool = "switcher"
"""


class SwitchingBackend:
    """Answers any request carrying `Upgrade` with 101 and then a tunnel that answers every
    chunk of bytes with "TUNNELLED <bytes>"; other requests with 200 and the head it got."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.tunnelled: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> SwitchingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                lower = head.lower()
                if b"\r\nupgrade:" in lower:
                    proto = lower.split(b"\r\nupgrade:", 1)[1].split(b"\r\n", 1)[0].strip()
                    switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    writer.write(switch + b"Upgrade: %s\r\n\r\n" % proto)
                    while data := await reader.read(65536):
                        self.tunnelled.append(data)
                        writer.write(b"TUNNELLED " + data)
                    break
                body = head
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[tuple[HttpBackend, SwitchingBackend]]:
    a = await HttpBackend("a").start()
    s = await SwitchingBackend().start()
    yield a, s
    await a.stop()
    await s.stop()


def _config(a: HttpBackend, s: SwitchingBackend, listener: str = "") -> str:
    return config({"alpha": [a.address], "switcher": [f"127.0.0.1:{s.port}"]}, ROUTES, listener)


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: www.example.com\r\n{extra}\r\n".encode()


HIDDEN = [
    "/-/secret",
    "/a/../-/secret",
    "//-/secret",
    "/%2D/secret",
    "/%2d%2fsecret",
    "/x/%2e%2e/-/secret",
    "/./-/secret",
    "/private/../private/x",
    "//private/x",
    "/%70rivate/x",
    "/app/../private/x",
]


@pytest.mark.asyncio
@pytest.mark.parametrize("target", HIDDEN)
async def test_hidden_paths_stay_hidden_however_spelled(
    peers: tuple[HttpBackend, SwitchingBackend], target: str
) -> None:
    a, s = peers
    async with Proxy(_config(a, s)) as p:
        status, _, _ = await request(p.port, get(target))
        assert status in (400, 403, 404), target
        # Whatever did reach a backend, normalised as a server would, is not hidden.
        seen = [r["target"].encode() for r in a.requests] + [h.split(b" ")[1] for h in s.heads]
        for t in seen:
            path = merging(t.split(b"?")[0])
            assert not path.startswith((b"/-/", b"/private/")), (target, t)
        assert not a.requests and not s.heads, (target, seen)


@pytest.mark.asyncio
async def test_backend_gets_the_normal_form(peers: tuple[HttpBackend, SwitchingBackend]) -> None:
    a, s = peers
    async with Proxy(_config(a, s)) as p:
        status, _, body = await request(p.port, get("/app//x/./y/../%7euser?q=%2F..//"))
        assert status == 200
        assert json.loads(body)["target"] == "/x/~user?q=%2F..//"
        for bad in ("/a%2Fb", "/a\\b", "/..", "/a/..;/x", "/a%zz"):
            status, _, _ = await request(p.port, get(bad))
            assert status == 400, bad
        assert not s.heads


H2C = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("target", "extra"),
    [
        ("/x", H2C),
        ("/tunnel/x", H2C),  # even where the route lists other protocols
        ("/x", "Connection: Upgrade\r\nUpgrade: x-custom\r\n"),  # not listed on this route
        ("/x", "Connection: Upgrade\r\nUpgrade: h2c, x-other\r\n"),
    ],
)
async def test_h2c_and_unlisted_upgrades_are_not_tunnelled(
    peers: tuple[HttpBackend, SwitchingBackend], target: str, extra: str
) -> None:
    a, s = peers
    async with Proxy(_config(a, s)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(get(target, extra))
        status, _, body = await read_response(reader)
        assert status == 200  # answered as plain HTTP/1.1, as nginx does
        head = body.lower()
        assert b"upgrade" not in head and b"http2-settings" not in head, body
        # The connection is still HTTP/1.1 to sekisho: the next request is routed (and the
        # hidden path refused), not tunnelled.
        writer.write(get("/-/secret"))
        status, _, _ = await read_response(reader)
        assert status == 404
        writer.close()
        assert not s.tunnelled and len(s.heads) == 1


@pytest.mark.asyncio
async def test_listed_upgrade_is_tunnelled(peers: tuple[HttpBackend, SwitchingBackend]) -> None:
    a, s = peers
    async with Proxy(_config(a, s)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(get("/tunnel/x", "Connection: Upgrade\r\nUpgrade: h2c, X-Custom\r\n"))
        status, headers, _ = await read_response(reader)
        assert status == 101 and headers["upgrade"] == "x-custom"
        assert b"upgrade: X-Custom\r\n" in s.heads[0]  # h2c taken out of the offer
        writer.write(b"ping")
        async with asyncio.timeout(5):
            assert await reader.readexactly(14) == b"TUNNELLED ping"
        writer.close()


def test_h2c_in_config_is_an_error() -> None:
    toml = config({"p": ["127.0.0.1:1"]}, '[[http.route]]\npool = "p"\nupgrade = ["websocket", "h2c"]\n')
    message = r"http\[0\]\.route\[0\]\.upgrade\[1\]: h2c is never tunnelled"
    with pytest.raises(conf.ConfigError, match=message):
        conf.load_text(toml)


@pytest.mark.asyncio
async def test_request_line_over_the_limit_is_414(peers: tuple[HttpBackend, SwitchingBackend]) -> None:
    a, s = peers
    async with Proxy(_config(a, s, "max_header_bytes = 2048")) as p:
        status, _, _ = await request(p.port, get("/x?" + "q" * 3000))
        assert status == 414
        status, _, _ = await request(p.port, b"GET /" + b"q" * 3000)  # not even a full line yet
        assert status == 414
        status, _, _ = await request(p.port, get("/x", f"X-Big: {'a' * 3000}\r\n"))
        assert status == 431
        assert not s.heads


@pytest.mark.asyncio
async def test_204_reaches_the_client_without_content_length(
    peers: tuple[HttpBackend, SwitchingBackend],
) -> None:
    a, s = peers
    a.raw_response = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Kept: yes\r\n\r\n"
    async with Proxy(_config(a, s)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(get("/app/raw"))
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 204 ")
        assert b"x-kept: yes" in head.lower()
        assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
        writer.close()


@pytest.mark.asyncio
async def test_hundreds_of_pipelined_local_answers_in_one_read(
    peers: tuple[HttpBackend, SwitchingBackend],
) -> None:
    """Requests answered at once (a 403 route) pipelined in one read: each is answered, in
    order, and the connection stays up (each answer once re-entered the next one: a
    RecursionError around 200 deep, and uvloop closed the connection)."""
    a, s = peers
    n = 400
    one = b"GET /private/x HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    async with Proxy(_config(a, s)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(one * n + b"GET /private/last HTTP/1.1\r\nHost: h\r\n\r\n")
        for _ in range(n + 1):
            status, _, _ = await read_response(reader)
            assert status == 403
        writer.close()
    assert not s.heads and not a.requests
