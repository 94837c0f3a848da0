"""HTTP/2 on the client side, end to end with real clients: curl, nghttp, h2load, and h2 itself.

TLS listeners negotiate h2 by ALPN; a plain listener with `h2c = true` takes HTTP/2 with
prior knowledge. Backends stay HTTP/1.1. The same routing, `/-/` rule, header policy and
metrics as HTTP/1.1; a malformed stream gets RST_STREAM(PROTOCOL_ERROR) and reaches no
backend; an abusive connection gets GOAWAY and is counted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import pytest_asyncio
import trustme
from h2.errors import ErrorCodes
from hpack import Decoder
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame, WindowUpdateFrame

from tests.integration.http_backends import HttpBackend, Proxy, config, ws_frame
from tests.support import require_tool

ROUTES = """
[[http.route]]
path = "/private/"
status = 403

[[http.route]]
path = "/"
pool = "alpha"
"""


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[HttpBackend]:
    b = await HttpBackend("a").start()
    yield b
    await b.stop()


def tls_config(tmp: Path) -> str:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert = ca.issue_cert("h2.example.test")
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    return f'tls = [{{ cert = "{tmp}/cert.pem", key = "{tmp}/key.pem" }}]'


async def run(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def curl_h2(port: int, path: str, tmp: Path, *extra: str) -> tuple[int, str, str]:
    """curl over TLS, HTTP/2 required: (status, body, the HTTP version curl used)."""
    exe = require_tool("curl")
    code, out, err = await run(
        exe, "-s", "--http2", "--max-time", "5", "--cacert", str(tmp / "ca.pem"),
        "--resolve", f"h2.example.test:{port}:127.0.0.1",
        "-w", "\n%{http_code} %{http_version}", *extra,
        f"https://h2.example.test:{port}{path}",
    )  # fmt: skip
    assert code == 0, err
    body, _, tail = out.rpartition("\n")
    status, version = tail.split()
    return int(status), body, version


@pytest.mark.asyncio
async def test_curl_negotiates_h2_over_tls(backend: HttpBackend, tmp_path: Path) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, tls_config(tmp_path))) as p:
        status, body, version = await curl_h2(p.port, "/echo/a/../b?x=1", tmp_path)
        assert (status, version) == (200, "2")
        seen = json.loads(body)
        assert seen["target"] == "/echo/b?x=1"  # normalised, as over HTTP/1.1
        headers = {n.lower(): v for n, v in seen["headers"]}
        assert headers["host"] == f"h2.example.test:{p.port}"
        assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-for"] == "127.0.0.1"
        for hidden in ("/-/secret", "//-/x", "/%2D/x"):
            status, _, version = await curl_h2(p.port, hidden, tmp_path)
            assert (status, version) == (404, "2"), hidden
        status, _, _ = await curl_h2(p.port, "/private/x", tmp_path)
        assert status == 403
        status, body, _ = await curl_h2(p.port, "/echo", tmp_path, "--data-binary", "hello")
        assert status == 200 and json.loads(body)["body_len"] == 5
        status, body, _ = await curl_h2(p.port, "/size/100000", tmp_path)
        assert status == 200 and len(body) == 100000
        assert len(backend.requests) == 3  # nothing hidden reached it
        labels = {key[2] for key in p.frontend.counters.requests}
        assert labels == {"h2"}


@pytest.mark.asyncio
async def test_http11_clients_still_get_http11_on_the_same_listener(
    backend: HttpBackend, tmp_path: Path
) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, tls_config(tmp_path))) as p:
        status, _, version = await curl_h2(p.port, "/echo", tmp_path, "--http1.1")
        assert (status, version) == (200, "1.1")


@pytest.mark.asyncio
async def test_h2c_prior_knowledge_with_nghttp(backend: HttpBackend) -> None:
    exe = require_tool("nghttp")
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        code, out, err = await run(exe, "-n", "-s", "-v", f"http://127.0.0.1:{p.port}/echo")
        assert code == 0, err + out
        assert ":status: 200" in out
        # Many streams on one connection, answered in any order.
        urls = [f"http://127.0.0.1:{p.port}/echo?{i}" for i in range(20)]
        code, out, err = await run(exe, "-n", "-s", *urls)
        assert code == 0, err + out
    assert len(backend.requests) == 21


@pytest.mark.asyncio
async def test_h2c_is_off_unless_asked(backend: HttpBackend) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        async with asyncio.timeout(5):
            answer = await reader.read(100)
        assert answer.startswith(b"HTTP/1.1 400 ")
        writer.close()


@pytest.mark.asyncio
async def test_h2load_many_streams_no_failures(backend: HttpBackend, tmp_path: Path) -> None:
    exe = require_tool("h2load")
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, tls_config(tmp_path))) as p:
        code, out, err = await run(
            exe, "-n", "400", "-c", "4", "-m", "16", f"https://127.0.0.1:{p.port}/echo", timeout=60
        )
        assert code == 0, err
        assert "400 succeeded, 0 failed, 0 errored" in out, out
        assert "h2" in out  # the application protocol h2load negotiated


# ---------------------------------------------------------------- malformed and abusive, with h2 as client


class H2Client:
    """A raw HTTP/2 client over h2c, its header checks off so it can send what it likes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def events(self, until: type, timeout: float = 5.0) -> list[h2.events.Event]:
        self.sock.settimeout(timeout)
        got: list[h2.events.Event] = []
        while not any(isinstance(e, until) for e in got):
            data = self.sock.recv(65536)
            if not data:
                break
            got += self.conn.receive_data(data)
            self.flush()
        return got

    def close(self) -> None:
        self.sock.close()


Fields = list[tuple[bytes, bytes]]


async def _first_reset(client: H2Client) -> h2.events.StreamReset:
    """The first RST_STREAM the client reads from now on (it waits for one)."""
    events = await asyncio.to_thread(client.events, h2.events.StreamReset)
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets, events
    return resets[0]


def _headers(path: bytes = b"/echo", extra: Fields | None = None) -> Fields:
    pseudo = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.test"), (b":path", path)]
    return [*pseudo, *(extra or [])]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [
        [(b"transfer-encoding", b"chunked")],
        [(b"connection", b"close")],
        [(b"te", b"gzip")],
        [(b"x-a", b"b\r\nx-injected: 1")],
        [(b"X-Upper", b"b")],
        [(b":path", b"/again")],
        [(b"content-length", b"1"), (b"content-length", b"1")],
    ],
)
async def test_malformed_stream_is_reset_and_reaches_no_backend(
    backend: HttpBackend, bad: list[tuple[bytes, bytes]]
) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            # (Without END_STREAM: h2 itself calls a content-length on an ended stream a
            # connection error, before our checks see it.)
            client.conn.send_headers(1, _headers(extra=bad), end_stream=False)
            client.flush()
            assert (await _first_reset(client)).error_code == ErrorCodes.PROTOCOL_ERROR
            # The connection goes on: a good request on stream 3 is answered.
            client.conn.send_headers(3, _headers(), end_stream=True)
            client.flush()
            events = await asyncio.to_thread(client.events, h2.events.StreamEnded)
            assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
        finally:
            client.close()
    assert len(backend.requests) == 1


@pytest.mark.asyncio
async def test_conflicting_content_lengths_reset_the_stream(backend: HttpBackend) -> None:
    """Conflicting content-lengths make the request malformed: RST_STREAM(PROTOCOL_ERROR)
    (RFC 9113 8.1.1), and nothing reaches a backend. (Until the connection was ours, h2
    called it a connection error before our checks saw the stream.)"""
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            cl = [(b"content-length", b"1"), (b"content-length", b"2")]
            client.conn.send_headers(1, _headers(extra=cl), end_stream=False)
            client.flush()
            assert (await _first_reset(client)).error_code == ErrorCodes.PROTOCOL_ERROR
        finally:
            client.close()
    assert not backend.requests


@pytest.mark.asyncio
async def test_body_longer_than_content_length_never_reaches_the_backend(backend: HttpBackend) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/echo"),
                    (b"content-length", b"3")]  # fmt: skip
            client.conn.send_headers(1, post)
            client.conn.send_data(1, b"abcdef", end_stream=True)
            client.flush()
            await asyncio.to_thread(client.events, h2.events.StreamReset)
        except (ConnectionError, TimeoutError, OSError):
            pass  # (h2 itself may call it a connection error: GOAWAY)
        finally:
            client.close()
        await asyncio.sleep(0.2)
    assert all(r.get("body_len", 0) <= 3 for r in backend.requests)
    assert not any(r.get("body_len") == 6 for r in backend.requests)


@pytest.mark.asyncio
async def test_rapid_reset_gets_goaway_and_is_counted(backend: HttpBackend) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            sid = 1
            for _ in range(300):  # open and cancel at once: CVE-2023-44487
                client.conn.send_headers(sid, _headers(b"/slow/1"))
                client.conn.reset_stream(sid, ErrorCodes.CANCEL)
                sid += 2
            client.flush()
            events = await asyncio.to_thread(client.events, h2.events.ConnectionTerminated)
            ends = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
            assert ends and ends[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
        finally:
            client.close()
        assert p.frontend.counters.h2_abuse.get("rapid_reset") == 1


def read_frames(sock: socket.socket, until_stream_end: int, timeout: float = 5.0) -> list[Frame]:
    """Frames as they come, parsed by hand (h2's client calls GOAWAY the end of everything,
    so it cannot show a stream that finishes after one)."""
    sock.settimeout(timeout)
    buf = b""
    frames: list[Frame] = []
    while True:
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            frames.append(frame)
            if frame.stream_id == until_stream_end and "END_STREAM" in frame.flags:
                return frames
        data = sock.recv(65536)
        if not data:
            return frames
        buf += data


@pytest.mark.asyncio
async def test_data_after_the_clients_reset_is_stream_closed_and_the_connection_goes_on(
    backend: HttpBackend,
) -> None:
    """h2spec http2/5.1/8: DATA on a stream the client reset gets RST_STREAM(STREAM_CLOSED)
    (it was silently dropped); the connection and its other streams go on."""
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/echo")]
            client.conn.send_headers(1, post)
            client.conn.reset_stream(1, ErrorCodes.CANCEL)
            client.flush()
            client.sock.sendall(DataFrame(1, data=b"late", flags=("END_STREAM",)).serialize())
            client.conn.send_headers(3, _headers(), end_stream=True)
            client.flush()
            frames = await asyncio.to_thread(read_frames, client.sock, 3)
        finally:
            client.close()
    resets = [f for f in frames if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, ErrorCodes.STREAM_CLOSED)]
    headers = next(f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 3)
    assert dict(Decoder().decode(headers.data, raw=True))[b":status"] == b"200"
    assert not any(isinstance(f, GoAwayFrame) for f in frames)


@pytest.mark.asyncio
async def test_a_connection_window_overflow_is_a_flow_control_error_not_a_flood(backend: HttpBackend) -> None:
    """h2spec http2/6.9.1/2: two WINDOW_UPDATEs of 2^31-1 on the connection in one read.
    The first overflows the window: GOAWAY(FLOW_CONTROL_ERROR). (The abuse guard, which
    scans a read before the connection does, called the second a WINDOW_UPDATE flood.)"""
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            client.sock.sendall(WindowUpdateFrame(0, window_increment=(1 << 31) - 1).serialize() * 2)
            frames = await asyncio.to_thread(read_frames, client.sock, -1)
        finally:
            client.close()
        assert not p.frontend.counters.h2_abuse
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaways] == [ErrorCodes.FLOW_CONTROL_ERROR]


@pytest.mark.asyncio
async def test_refused_uploads_give_the_connection_window_back(backend: HttpBackend) -> None:
    """Bytes the client sent on a stream answered 413 were never acknowledged, so after 64 KiB
    refused the connection's window stayed closed and every later upload on it stalled."""
    routes = '[[http.route]]\npath = "/"\npool = "alpha"\n'
    async with Proxy(config({"alpha": [backend.address]}, routes, "h2c = true\nmax_body_bytes = 20000")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/echo")]
            for sid in (1, 3):  # 32,000 bytes each, over the limit: 413
                client.conn.send_headers(sid, post)
                client.conn.send_data(sid, b"x" * 16000)
                client.conn.send_data(sid, b"x" * 16000)
                client.flush()
                events = await asyncio.to_thread(client.events, h2.events.StreamEnded)
                answers = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
                assert [dict(e.headers)[b":status"] for e in answers] == [b"413"], events
            client.conn.ping(b"12345678")  # answered after the WINDOW_UPDATEs queued before it
            client.flush()
            await asyncio.to_thread(client.events, h2.events.PingAckReceived)
            # The connection's window is open again (it was 1,535 of 65,535 before the fix).
            assert client.conn.outbound_flow_control_window >= 65535 - 32767
        finally:
            client.close()


@pytest.mark.asyncio
async def test_goaway_on_retire_lets_the_stream_in_flight_finish(backend: HttpBackend) -> None:
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            client.sock.settimeout(5)
            await asyncio.to_thread(client.sock.recv, 65536)  # the server's SETTINGS
            client.conn.send_headers(1, _headers(b"/slow/0.5"), end_stream=True)
            client.flush()
            await asyncio.sleep(0.2)
            p.frontend.retire()
            frames = await asyncio.to_thread(read_frames, client.sock, 1)
        finally:
            client.close()
    kinds = [type(f).__name__ for f in frames]
    assert "GoAwayFrame" in kinds, kinds
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert goaway.last_stream_id == 1 and goaway.error_code == 0
    after = kinds[kinds.index("GoAwayFrame") :]
    assert "HeadersFrame" in after and after[-1] in ("DataFrame", "HeadersFrame")  # ... then it finished
    headers = next(f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 1)
    assert dict(Decoder().decode(headers.data, raw=True))[b":status"] == b"200"


def test_alpn_offers_h2_then_http11(tmp_path: Path) -> None:
    import conf
    from proxy.http.tls import build_server_context

    cfg = conf.load_text(config({"alpha": ["127.0.0.1:1"]}, ROUTES, tls_config(tmp_path)))
    ctx = build_server_context(cfg.http[0].tls, ("h2", "http/1.1"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert isinstance(ctx, ssl.SSLContext) and isinstance(server, ssl.SSLContext)


@pytest.mark.asyncio
async def test_chromium_negotiates_h2_by_itself(backend: HttpBackend, tmp_path: Path) -> None:
    from tests.integration.test_ops_status_page import chromium

    require_tool("chromium")
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, tls_config(tmp_path))) as p:
        url = f"https://h2.example.test:{p.port}/echo/page"
        extra = ["--ignore-certificate-errors", "--host-resolver-rules=MAP h2.example.test 127.0.0.1"]
        dom = await asyncio.to_thread(chromium, url, tmp_path, None, extra)
        assert "/echo/page" in dom  # the backend's JSON, rendered
        protocols = {key[2] for key in p.frontend.counters.requests}
        assert "h2" in protocols and "http/1.1" not in protocols


# ---------------------------------------------------------------- WebSocket over HTTP/2 (RFC 8441)


def _ws_connect(path: bytes = b"/ws") -> Fields:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":authority", b"a.test"),
        (b":path", path),
        (b"sec-websocket-version", b"13"),
    ]


async def _ws_status(port: int, path: bytes) -> bytes:
    """The :status an extended CONNECT for a WebSocket at `path` is answered with."""
    client = await asyncio.to_thread(H2Client, port)
    try:
        client.conn.send_headers(1, _ws_connect(path), end_stream=False)
        client.flush()
        events = await asyncio.to_thread(client.events, h2.events.StreamEnded)
        (resp,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        return dict(resp.headers or [])[b":status"]
    finally:
        client.close()


def _server_frame(payload: bytes) -> bytes:
    """An unmasked (server) text frame, as the backend echoes it (payload < 126 bytes)."""
    return bytes([0x81, len(payload)]) + payload


@pytest.mark.asyncio
async def test_websocket_over_h2_reaches_a_websocket_backend(backend: HttpBackend) -> None:
    """Extended CONNECT (RFC 8441): the setting is advertised, the backend gets an HTTP/1.1
    Upgrade with a key of ours and answers 101, the client gets 200 and a byte tunnel
    both ways, each way ends with END_STREAM."""
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            await asyncio.to_thread(client.events, h2.events.RemoteSettingsChanged)
            assert client.conn.remote_settings.enable_connect_protocol == 1
            client.conn.send_headers(1, _ws_connect(), end_stream=False)
            client.flush()
            events = await asyncio.to_thread(client.events, h2.events.ResponseReceived)
            (resp,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
            got = dict(resp.headers or [])
            assert got[b":status"] == b"200"
            assert b"sec-websocket-accept" not in got and b"upgrade" not in got
            echoed = b""
            for msg in (b"hello", b"over h2", b"x" * 100):
                client.conn.send_data(1, ws_frame(msg))
                client.flush()
                want = _server_frame(msg)
                while len(echoed) < len(want):
                    events = await asyncio.to_thread(client.events, h2.events.DataReceived)
                    for e in events:
                        if isinstance(e, h2.events.DataReceived):
                            echoed += e.data or b""
                            client.conn.acknowledge_received_data(e.flow_controlled_length or 0, 1)
                assert echoed[: len(want)] == want
                echoed = echoed[len(want) :]
            client.conn.end_stream(1)  # the backend sees EOF, closes: END_STREAM back
            client.flush()
            events = await asyncio.to_thread(client.events, h2.events.StreamEnded)
            assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events)
        finally:
            client.close()
    (req,) = backend.requests
    assert req["method"] == "GET" and req["target"] == "/ws"
    fields = dict(req["headers"])
    assert fields["upgrade"] == "websocket"
    assert "upgrade" in fields["connection"].lower()
    assert len(base64.b64decode(fields["sec-websocket-key"])) == 16
    assert fields["sec-websocket-version"] == "13"


@pytest.mark.asyncio
async def test_an_idle_websocket_over_h2_is_reset_after_the_response_timeout(backend: HttpBackend) -> None:
    """A tunnel with no bytes either way for `timeouts.response` gets RST_STREAM(CANCEL), as
    nginx closes one after proxy_read_timeout; traffic keeps it open, and the connection
    (and its other streams) goes on."""
    listener = "h2c = true\ntimeouts = { header = 5.0, idle = 5.0, connect = 1.0, response = 0.6 }"
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, listener)) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            await asyncio.to_thread(client.events, h2.events.RemoteSettingsChanged)
            client.conn.send_headers(1, _ws_connect(), end_stream=False)
            client.flush()
            await asyncio.to_thread(client.events, h2.events.ResponseReceived)
            for _ in range(4):  # 4 x 0.3 s: longer than the timeout, but never 0.6 s quiet
                await asyncio.sleep(0.3)
                client.conn.send_data(1, ws_frame(b"ping"))
                client.flush()
                events = await asyncio.to_thread(client.events, h2.events.DataReceived)
                assert not any(isinstance(e, h2.events.StreamReset) for e in events)
                for e in events:
                    if isinstance(e, h2.events.DataReceived):
                        client.conn.acknowledge_received_data(e.flow_controlled_length or 0, 1)
            t0 = asyncio.get_running_loop().time()
            reset = await _first_reset(client)
            waited = asyncio.get_running_loop().time() - t0
            assert reset.stream_id == 1 and reset.error_code == ErrorCodes.CANCEL
            assert 0.3 < waited < 4.0  # (about 0.6 s; generous: the machine is shared)
            client.conn.send_headers(3, _headers(), end_stream=True)  # the connection goes on
            client.flush()
            events = await asyncio.to_thread(client.events, h2.events.StreamEnded)
            assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
        finally:
            client.close()


@pytest.mark.asyncio
async def test_websocket_over_h2_needs_the_route_to_allow_it(backend: HttpBackend) -> None:
    routes = '[[http.route]]\npath = "/"\npool = "alpha"\nupgrade = []\n'
    async with Proxy(config({"alpha": [backend.address]}, routes, "h2c = true")) as p:
        client = await asyncio.to_thread(H2Client, p.port)
        try:
            await asyncio.to_thread(client.events, h2.events.RemoteSettingsChanged)
            # No route tunnels websocket: the setting is not advertised, and a :protocol is
            # malformed without it (RFC 8441 3).
            assert client.conn.remote_settings.enable_connect_protocol == 0
            client.conn.send_headers(1, _ws_connect(), end_stream=False)
            client.flush()
            assert (await _first_reset(client)).error_code == ErrorCodes.PROTOCOL_ERROR
        finally:
            client.close()
    assert not backend.requests


@pytest.mark.asyncio
async def test_websocket_over_h2_refused_on_a_route_without_it(backend: HttpBackend) -> None:
    """One route tunnels websocket (the setting is on), another does not: 501 there."""
    routes = (
        '[[http.route]]\npath = "/ws"\npool = "alpha"\n\n'
        '[[http.route]]\npath = "/"\npool = "alpha"\nupgrade = []\n'
    )
    async with Proxy(config({"alpha": [backend.address]}, routes, "h2c = true")) as p:
        assert await _ws_status(p.port, b"/other") == b"501"
    assert not backend.requests


# The image (answered after 2 s) holds the load event, after which --dump-dom reads the page.
_WS_PAGE = """<html><body><p id="out">waiting</p><img src="/slow/2"><script>
const ws = new WebSocket("wss://h2.example.test:PORT/ws");
ws.onopen = () => ws.send("ping over h2");
ws.onmessage = (e) => { document.getElementById("out").textContent = "echo:" + e.data; ws.close(); };
ws.onerror = () => { document.getElementById("out").textContent = "error"; };
</script></body></html>"""


@pytest.mark.asyncio
async def test_chromium_websocket_over_h2(backend: HttpBackend, tmp_path: Path) -> None:
    """A browser's own WebSocket: Chromium opens it on its HTTP/2 connection (it saw
    SETTINGS_ENABLE_CONNECT_PROTOCOL), the echo comes back through the tunnel."""
    from tests.integration.test_ops_status_page import chromium

    require_tool("chromium")
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, tls_config(tmp_path))) as p:
        page = _WS_PAGE.replace("PORT", str(p.port)).encode()
        backend.raw_response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page) + page
        )
        url = f"https://h2.example.test:{p.port}/raw/page"
        extra = [
            "--ignore-certificate-errors",
            "--host-resolver-rules=MAP h2.example.test 127.0.0.1",
            "--virtual-time-budget=10000",
        ]
        dom = await asyncio.to_thread(chromium, url, tmp_path, None, extra)
        assert "echo:ping over h2" in dom
        protocols = {key[2] for key in p.frontend.counters.requests}
        assert protocols == {"h2"}  # the page and the WebSocket: no HTTP/1.1 connection at all
    ws = [r for r in backend.requests if r["target"] == "/ws"]
    assert len(ws) == 1 and dict(ws[0]["headers"])["upgrade"] == "websocket"
    assert len(base64.b64decode(dict(ws[0]["headers"])["sec-websocket-key"])) == 16


@pytest.mark.asyncio
async def test_websocket_over_h2_backend_that_does_not_switch_is_a_502(backend: HttpBackend) -> None:
    """A backend that answers the Upgrade with a 2xx opened no tunnel: the client must not
    take it for one (RFC 8441 5: a 2xx means the tunnel is up)."""
    async with Proxy(config({"alpha": [backend.address]}, ROUTES, "h2c = true")) as p:
        assert await _ws_status(p.port, b"/echo") == b"502"
