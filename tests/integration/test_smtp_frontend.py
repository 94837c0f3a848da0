"""The SMTP edge on loopback: smtplib -> Listener + SmtpFrontend -> aiosmtpd / fake MTAs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import trustme
from aiosmtpd.smtp import SMTP as AioSMTP  # noqa: N811

import conf
from lb.pool import PoolSet
from lb.proxy_protocol import decode
from proxy.listener import Listener, bind
from proxy.process.metrics.smtp import families
from proxy.smtp import SmtpFrontend, SmtpStats
from tests.support import send_then_read

pytestmark = pytest.mark.asyncio


# ---------------------------------------------------------------- backends


class Sink:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(  # noqa: N802
        self,
        server: Any,
        session: Any,
        envelope: Any,
    ) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 Ok: queued"


S = TypeVar("S", bound=Sink)


async def aiosmtpd_server(name: str) -> tuple[asyncio.Server, Sink, int]:
    return await serve(Sink(), name)


async def serve(handler: S, name: str, smtp: type[AioSMTP] = AioSMTP) -> tuple[asyncio.Server, S, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: smtp(handler, hostname=name, data_size_limit=64 * 1024 * 1024), "127.0.0.1", 0
    )
    return server, handler, server.sockets[0].getsockname()[1]


class XclientSMTP(AioSMTP):
    """aiosmtpd taking Postfix's XCLIENT: the attributes are kept in the session, then a
    fresh 220 greeting (the client says EHLO again)."""

    async def smtp_XCLIENT(self, arg: str) -> None:  # noqa: N802
        assert self.session is not None
        self.session.xclient = dict(item.split("=", 1) for item in arg.split())  # type: ignore[attr-defined]
        self._set_rset_state()
        await self.push(f"220 {self.hostname} ESMTP")


class XclientSink(Sink):
    """Offers XCLIENT in its EHLO reply and keeps, per message, what XCLIENT told it."""

    def __init__(self) -> None:
        super().__init__()
        self.xclient: list[dict[str, str]] = []

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-XCLIENT NAME ADDR PORT PROTO HELO", responses[-1]]

    async def handle_DATA(  # noqa: N802
        self,
        server: Any,
        session: Any,
        envelope: Any,
    ) -> str:
        self.xclient.append(getattr(session, "xclient", {}))
        return await super().handle_DATA(server, session, envelope)


class MailWatch(Sink):
    """A plain aiosmtpd handler that also records every MAIL FROM it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.mails: list[str] = []

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mails.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


@dataclass
class FakeMta:
    """A raw SMTP server that can offer XCLIENT and records every line it reads."""

    xclient: bool = True
    xclient_attrs: bytes = b"NAME ADDR PORT PROTO HELO LOGIN"
    banner: bytes = b"220 fake.mta ESMTP\r\n"
    expect_proxy: bool = False
    proxy_headers: list[bytes] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    sessions: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        if self.expect_proxy:
            head = await reader.readexactly(16)
            self.proxy_headers.append(head + await reader.readexactly(int.from_bytes(head[14:16], "big")))
        writer.write(self.banner)
        try:
            while line := await reader.readline():
                self.lines.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    caps = b"250-fake.mta\r\n250-PIPELINING\r\n250-SIZE 99999999\r\n"
                    if self.xclient:
                        caps += b"250-XCLIENT " + self.xclient_attrs + b"\r\n"
                    writer.write(caps + b"250 8BITMIME\r\n")
                elif verb == b"XCLI":
                    writer.write(b"220 fake.mta ESMTP again\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.messages.append(body)
                    writer.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def commands(self, verb: bytes) -> list[bytes]:
        return [line.rstrip(b"\r\n") for line in self.lines if line.upper().startswith(verb)]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


# ---------------------------------------------------------------- sekisho


@dataclass
class Edge:
    listener: Listener
    frontend: SmtpFrontend
    stats: SmtpStats
    port: int

    async def stop(self) -> None:
        await self.listener.stop_accepting()
        self.frontend.retire()
        await self.frontend.drain(2.0)


async def start_edge(
    ports: dict[str, int],
    routes: tuple[conf.SmtpRoute, ...],
    proxy_protocol: Any = None,
    **kw: Any,
) -> Edge:
    pools = {
        name: conf.Pool(name, (conf.Server(conf.Address("127.0.0.1", port)),), proxy_protocol=proxy_protocol)
        for name, port in ports.items()
    }
    timeouts = kw.pop("timeouts", conf.SmtpTimeouts(command=10.0, connect=2.0, data=30.0))
    config = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),),
        hostname="mx.example.com",
        routes=routes,
        max_message_bytes=kw.pop("max_message_bytes", 32 * 1024 * 1024),
        timeouts=timeouts,
        **kw,
    )
    stats = SmtpStats()
    frontend = SmtpFrontend(config, PoolSet(pools), stats)
    sock = bind(config.listen[0])
    listener = Listener("smtp", config.listen[0], sock, frontend)
    listener.start()
    return Edge(listener, frontend, stats, listener.bound[1])


ROUTES = (conf.SmtpRoute("example.com", "alpha"), conf.SmtpRoute("*.example.net", "beta"))


@pytest_asyncio.fixture
async def two_backends() -> AsyncIterator[tuple[Edge, Sink, Sink]]:
    a_srv, a, a_port = await aiosmtpd_server("alpha.internal")
    b_srv, b, b_port = await aiosmtpd_server("beta.internal")
    edge = await start_edge({"alpha": a_port, "beta": b_port}, ROUTES)
    yield edge, a, b
    await edge.stop()
    for srv in (a_srv, b_srv):
        srv.close()


async def client(port: int, fn: Callable[[smtplib.SMTP], Any], source: str = "127.0.0.1") -> Any:
    def go() -> Any:
        with smtplib.SMTP(
            "127.0.0.1", port, local_hostname="client.example", timeout=30, source_address=(source, 0)
        ) as s:
            return fn(s)

    return await asyncio.to_thread(go)


def message(size: int, tag: str) -> bytes:
    """A CRLF message of about `size` bytes whose lines include dot-led ones."""
    head = f"From: a@sender.test\r\nTo: x\r\nSubject: {tag}\r\n\r\n".encode()
    line = b"." + hashlib.sha256(tag.encode()).hexdigest().encode() * 15 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line)) + b"end\r\n"


# ---------------------------------------------------------------- tests


async def test_greeting_and_ehlo(two_backends: tuple[Edge, Sink, Sink]) -> None:
    edge, _, _ = two_backends

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        return s.esmtp_features, s.ehlo_resp

    features, resp = await client(edge.port, go)
    assert set(features) == {"size", "pipelining", "8bitmime", "enhancedstatuscodes"}
    assert resp.startswith(b"mx.example.com")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    assert await reader.readline() == b"220 mx.example.com ESMTP\r\n"
    writer.close()


@pytest.mark.parametrize("size", [1 << 20, 20 << 20], ids=["1MB", "20MB"])
async def test_message_reaches_the_right_backend_intact(
    two_backends: tuple[Edge, Sink, Sink], size: int
) -> None:
    edge, alpha, beta = two_backends
    m1, m2 = message(size, "one"), message(size // 4, "two")

    def go(s: smtplib.SMTP) -> Any:
        r1 = s.sendmail("a@sender.test", ["bob@Example.COM"], m1)
        r2 = s.sendmail("", ["carol@mx.example.net"], m2)
        return r1, r2

    assert await client(edge.port, go) == ({}, {})
    assert [e.rcpt_tos for e in alpha.messages] == [["bob@Example.COM"]]
    assert [e.rcpt_tos for e in beta.messages] == [["carol@mx.example.net"]]
    assert alpha.messages[0].original_content == m1
    assert beta.messages[0].original_content == m2
    assert beta.messages[0].mail_from == "<>"
    assert edge.stats.transactions[("example.com", "relayed")] == 1
    assert edge.stats.transactions[("*.example.net", "relayed")] == 1
    assert edge.stats.bytes_relayed["example.com"] >= size


async def test_relay_denial_table() -> None:
    mta = FakeMta(xclient=False)
    port = await mta.start()
    edge = await start_edge({"alpha": port, "beta": port}, ROUTES)
    forms = {
        "relaytest@nmap.scanme.org": 550,
        "relaytest%nmap.scanme.org@[127.0.0.1]": 550,
        "relaytest%nmap.scanme.org@example.com": 550,
        '"relaytest@nmap.scanme.org"': 501,
        '"relaytest%nmap.scanme.org"': 501,
        "relaytest@nmap.scanme.org@[127.0.0.1]": 501,
        '"relaytest@nmap.scanme.org"@[127.0.0.1]': 550,
        '"relaytest@nmap.scanme.org"@example.com': 550,
        "relaytest@nmap.scanme.org@example.com": 501,
        "@[127.0.0.1]:relaytest@nmap.scanme.org": 550,
        "@example.com:relaytest@nmap.scanme.org": 550,
        "nmap.scanme.org!relaytest": 501,
        "nmap.scanme.org!relaytest@[127.0.0.1]": 550,
        "nmap.scanme.org!relaytest@example.com": 550,
        "relaytest@example.net": 550,
        "@nmap.scanme.org:routed@example.com": 250,
    }

    def go(s: smtplib.SMTP) -> dict[str, int]:
        got = {}
        for sender in ("", "antispam@example.com", "antispam@[127.0.0.1]"):
            s.ehlo()
            assert s.docmd(f"MAIL FROM:<{sender}>")[0] == 250
            for rcpt, _ in forms.items():
                # raw: smtplib.rcpt() would re-parse the address first
                got[f"{sender}->{rcpt}"] = s.docmd(f"RCPT TO:<{rcpt}>")[0]
            s.rset()
        return got

    try:
        got = await client(edge.port, go)
        for key, code in got.items():
            assert code == forms[key.split("->", 1)[1]], key
        # Only the routable form ever reached a server, canonicalised.
        assert mta.commands(b"RCPT") == [b"RCPT TO:<routed@example.com>"] * 3
        assert edge.stats.recipients_rejected["relay_denied"] == 3 * sum(c == 550 for c in forms.values())
    finally:
        await edge.stop()
        await mta.stop()


async def test_second_route_in_one_transaction_gets_452(two_backends: tuple[Edge, Sink, Sink]) -> None:
    edge, alpha, beta = two_backends

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        s.mail("a@sender.test")
        r = [s.rcpt("x@example.com"), s.rcpt("y@a.example.net"), s.rcpt("z@example.com")]
        s.data(b"Subject: t\r\n\r\nhi\r\n")
        return [c for c, _ in r], r[1][1]

    codes, text = await client(edge.port, go)
    assert codes == [250, 452, 250]
    assert text.startswith(b"4.5.3")
    assert [e.rcpt_tos for e in alpha.messages] == [["x@example.com", "z@example.com"]]
    assert beta.messages == []


async def test_xclient_seen_by_backend() -> None:
    mta = FakeMta(xclient=True)
    port = await mta.start()
    edge = await start_edge({"alpha": port}, (conf.SmtpRoute("example.com", "alpha", xclient=True),))

    def go(s: smtplib.SMTP) -> Any:
        s.sendmail("a@sender.test", ["x@example.com"], b"Subject: t\r\n\r\nhi\r\n")
        assert s.sock is not None
        return s.sock.getsockname()

    try:
        addr, cport = await client(edge.port, go)
        assert mta.commands(b"XCLIENT") == [
            f"XCLIENT NAME=[UNAVAILABLE] ADDR={addr} PORT={cport} PROTO=ESMTP HELO=client.example".encode()
        ]
        assert mta.commands(b"EHLO") == [b"EHLO client.example"] * 2
        order = [line[:4] for line in mta.lines]
        assert order[:5] == [b"EHLO", b"XCLI", b"EHLO", b"MAIL", b"RCPT"]
        assert mta.messages == [b"Subject: t\r\n\r\nhi\r\n.\r\n"]
    finally:
        await edge.stop()
        await mta.stop()


def pool_of(name: str, *ports: int, proxy_protocol: Any = None) -> dict[str, conf.Pool]:
    servers = tuple(conf.Server(conf.Address("127.0.0.1", p)) for p in ports)
    return {name: conf.Pool(name, servers, proxy_protocol=proxy_protocol)}


async def edge_for(pools: dict[str, conf.Pool], routes: tuple[conf.SmtpRoute, ...]) -> Edge:
    config = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),),
        hostname="mx.example.com",
        routes=routes,
        timeouts=conf.SmtpTimeouts(command=10.0, connect=2.0, data=30.0),
    )
    stats = SmtpStats()
    frontend = SmtpFrontend(config, PoolSet(pools), stats)
    listener = Listener("smtp", config.listen[0], bind(config.listen[0]), frontend)
    listener.start()
    return Edge(listener, frontend, stats, listener.bound[1])


def xclient_samples(stats: SmtpStats) -> dict[tuple[str, str], float]:
    fams = {f.name: f for f in families({"127.0.0.1:25": stats})}
    return {
        (s.labels["pool"], s.labels["server"]): s.value
        for s in fams["sekisho_smtp_xclient_refused"].samples
        if s.name == "sekisho_smtp_xclient_refused_total"
    }


XROUTE = conf.SmtpRoute("example.com", "alpha", xclient=True)


async def test_xclient_route_fails_closed_without_xclient(caplog: pytest.LogCaptureFixture) -> None:
    """The route asks for XCLIENT, the only server does not offer it: 451 4.3.0, never a
    delivery with sekisho's address as the client's, logged once, counted every time."""
    srv, watch, port = await serve(MailWatch(), "plain.internal")
    edge = await edge_for(pool_of("alpha", port), (XROUTE,))

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        s.mail("a@sender.test")
        r = s.rcpt("x@example.com")
        d = s.docmd("DATA")
        return r, d

    try:
        with caplog.at_level(logging.WARNING, logger="sekisho.smtp"):
            for _ in range(2):
                (code, text), (dcode, _) = await client(edge.port, go)
                assert (code, text[:5]) == (451, b"4.3.0")
                assert dcode == 554  # no recipient accepted: no DATA
        assert watch.messages == [] and watch.mails == []  # not even a MAIL FROM reached it
        server = f"127.0.0.1:{port}"
        assert xclient_samples(edge.stats) == {("alpha", server): 2}
        assert edge.stats.transactions[("example.com", "temp_fail")] == 2
        # Not a connect failure and not held against the server's health: it is up, only
        # wrong for this route.
        assert edge.stats.backend_connect_failures["alpha"] == 0
        assert edge.frontend.pools["alpha"].backends[0].connect_failures == 0
        logged = [r.getMessage() for r in caplog.records if "XCLIENT" in r.getMessage()]
        assert len(logged) == 1 and server in logged[0] and "example.com" in logged[0]
    finally:
        await edge.stop()
        srv.close()


async def test_xclient_route_skips_to_the_server_that_offers_it() -> None:
    """Two servers, the first without XCLIENT: every message lands once, on the second,
    with the client's address; the first never sees a transaction."""
    plain_srv, plain, plain_port = await serve(MailWatch(), "plain.internal")
    x_srv, xsink, x_port = await serve(XclientSink(), "xclient.internal", XclientSMTP)
    edge = await edge_for(pool_of("alpha", plain_port, x_port), (XROUTE,))

    def go(s: smtplib.SMTP) -> Any:
        s.sendmail("a@sender.test", ["x@example.com"], b"Subject: t\r\n\r\nhi\r\n")
        assert s.sock is not None
        return s.sock.getsockname()

    try:
        sent = [await client(edge.port, go, source="127.0.0.2") for _ in range(3)]
        assert [m.original_content for m in xsink.messages] == [b"Subject: t\r\n\r\nhi\r\n"] * 3
        assert xsink.xclient == [
            {
                "NAME": "[UNAVAILABLE]",
                "ADDR": addr,
                "PORT": str(cport),
                "PROTO": "ESMTP",
                "HELO": "client.example",
            }
            for addr, cport in sent
        ]
        assert plain.mails == [] and plain.messages == []
        assert xclient_samples(edge.stats)[("alpha", f"127.0.0.1:{plain_port}")] >= 1
        assert edge.stats.transactions[("example.com", "relayed")] == 3
        assert edge.stats.backend_connect_failures["alpha"] == 0
    finally:
        await edge.stop()
        plain_srv.close()
        x_srv.close()


async def test_xclient_without_addr_is_not_xclient() -> None:
    """A server offering XCLIENT without ADDR would still take our address for the client's."""
    mta = FakeMta(xclient=True, xclient_attrs=b"NAME HELO")
    port = await mta.start()
    edge = await edge_for(pool_of("alpha", port), (XROUTE,))

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        s.mail("a@sender.test")
        return s.rcpt("x@example.com")

    try:
        code, text = await client(edge.port, go)
        assert (code, text[:5]) == (451, b"4.3.0")
        assert mta.commands(b"XCLIENT") == [] and mta.commands(b"MAIL") == []
        assert mta.commands(b"QUIT") == [b"QUIT"]  # told goodbye, not dropped
        assert edge.stats.xclient_refused[("alpha", f"127.0.0.1:{port}")] == 1
    finally:
        await edge.stop()
        await mta.stop()


async def test_xclient_route_with_a_proxy_protocol_pool_needs_no_xclient() -> None:
    """The PROXY header already carries the client's address: no XCLIENT needed."""
    mta = FakeMta(xclient=False, expect_proxy=True)
    port = await mta.start()
    edge = await edge_for(pool_of("alpha", port, proxy_protocol="v2"), (XROUTE,))
    try:
        await client(edge.port, lambda s: s.sendmail("a@sender.test", ["x@example.com"], b"hi\r\n"))
        assert mta.messages == [b"hi\r\n.\r\n"] and len(mta.proxy_headers) == 1
        assert edge.stats.xclient_refused == {}
    finally:
        await edge.stop()
        await mta.stop()


async def test_bare_postmaster_reaches_the_postmaster_route() -> None:
    """RCPT TO:<Postmaster> without a domain (RFC 5321 4.5.1) goes to the route marked
    `postmaster`, forwarded as written."""
    a_srv, alpha, a_port = await aiosmtpd_server("alpha.internal")
    b_srv, beta, b_port = await aiosmtpd_server("beta.internal")
    routes = (ROUTES[0], conf.SmtpRoute("*.example.net", "beta", postmaster=True))
    edge = await start_edge({"alpha": a_port, "beta": b_port}, routes)

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        s.mail("a@sender.test")
        r = s.docmd("RCPT TO:<Postmaster>")  # exactly this on the wire
        d = s.data(b"Subject: to the postmaster\r\n\r\nhello\r\n")
        return r[0], d[0]

    try:
        assert await client(edge.port, go) == (250, 250)
        assert alpha.messages == []
        assert [(e.rcpt_tos, e.original_content) for e in beta.messages] == [
            (["Postmaster"], b"Subject: to the postmaster\r\n\r\nhello\r\n")
        ]
        assert edge.stats.transactions[("*.example.net", "relayed")] == 1
    finally:
        await edge.stop()
        a_srv.close()
        b_srv.close()


async def test_proxy_v2_header_when_the_pool_asks() -> None:
    mta = FakeMta(xclient=False, expect_proxy=True)
    port = await mta.start()
    edge = await start_edge({"alpha": port}, (ROUTES[0],), proxy_protocol="v2")

    def go(s: smtplib.SMTP) -> Any:
        s.sendmail("a@sender.test", ["x@example.com"], b"Subject: t\r\n\r\nhi\r\n")
        assert s.sock is not None
        return s.sock.getsockname()

    try:
        addr, cport = await client(edge.port, go)
        header = decode(mta.proxy_headers[0])
        assert header is not None and header.version == 2
        assert header.src == (addr, cport) and header.dst == ("127.0.0.1", edge.port)
        assert mta.messages == [b"Subject: t\r\n\r\nhi\r\n.\r\n"]
    finally:
        await edge.stop()
        await mta.stop()


async def test_client_xclient_and_proxy_refused(two_backends: tuple[Edge, Sink, Sink]) -> None:
    edge, _, _ = two_backends
    for attack in (
        b"XCLIENT ADDR=10.0.0.1\r\n",
        b"XFORWARD ADDR=10.0.0.1\r\n",
        b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        await reader.readline()
        writer.write(b"EHLO c\r\n" + attack)
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.endswith(b"550 5.7.1 Command not permitted\r\n")
        writer.close()


async def test_starttls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.example.com", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "mx.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "mx.key"))
    srv, sink, port = await aiosmtpd_server("alpha.internal")
    edge = await start_edge(
        {"alpha": port}, (ROUTES[0],), tls=conf.TlsCert(str(tmp_path / "mx.pem"), str(tmp_path / "mx.key"))
    )
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("a@sender.test", ["x@example.com"], b"Subject: tls\r\n\r\nsecret\r\n")
        assert isinstance(s.sock, ssl.SSLSocket)
        return s.sock.version()

    try:
        assert (await client(edge.port, go)).startswith("TLS")
        assert sink.messages[0].original_content == b"Subject: tls\r\n\r\nsecret\r\n"
        assert edge.stats.starttls == 1
        # Commands pipelined behind STARTTLS are discarded, never executed.
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        await reader.readline()
        writer.write(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<x@example.com>\r\n")
        data = b""
        while not data.endswith(b"220 2.0.0 Ready to start TLS\r\n"):
            data += await asyncio.wait_for(reader.read(4096), 5)
        await writer.start_tls(ctx, server_hostname="mx.example.com")
        writer.write(b"RCPT TO:<x@example.com>\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"503")
        writer.close()
    finally:
        await edge.stop()
        srv.close()


async def test_a_server_that_will_not_talk_is_skipped() -> None:
    grumpy = FakeMta(xclient=False, banner=b"554 5.3.2 go away\r\n")
    grumpy_port = await grumpy.start()
    srv, sink, good_port = await aiosmtpd_server("alpha2.internal")
    pools = {
        "alpha": conf.Pool(
            "alpha",
            tuple(conf.Server(conf.Address("127.0.0.1", p)) for p in (grumpy_port, good_port)),
        )
    }
    config = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),), hostname="mx.example.com", routes=(ROUTES[0],)
    )
    stats = SmtpStats()
    frontend = SmtpFrontend(config, PoolSet(pools), stats)
    listener = Listener("smtp", config.listen[0], bind(config.listen[0]), frontend)
    listener.start()
    edge = Edge(listener, frontend, stats, listener.bound[1])
    try:
        await client(edge.port, lambda s: s.sendmail("a@s.test", ["x@example.com"], b"hi\r\n"))
        assert [m.original_content for m in sink.messages] == [b"hi\r\n"]
        assert grumpy.sessions == 1
        assert stats.backend_connect_failures["alpha"] == 1
        assert frontend.pools["alpha"].backends[0].connect_failures == 1
    finally:
        await edge.stop()
        await grumpy.stop()
        srv.close()


async def test_all_servers_down_is_a_temporary_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    edge = await start_edge({"alpha": dead}, (ROUTES[0],))

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        s.mail("a@sender.test")
        r = s.rcpt("x@example.com")
        d = s.docmd("DATA")
        return r, d

    try:
        (code, text), (dcode, _) = await client(edge.port, go)
        assert (code, text[:5]) == (451, b"4.4.1")
        assert dcode == 554  # no recipient accepted, so no DATA: nothing accepted we cannot hand on
        assert edge.stats.transactions[("example.com", "temp_fail")] == 1
        assert edge.stats.backend_connect_failures["alpha"] == 1
    finally:
        await edge.stop()


@pytest.mark.parametrize("mode", ["reject", "normalize"])
async def test_bare_lf_never_reaches_the_backend(mode: str) -> None:
    mta = FakeMta(xclient=False)
    port = await mta.start()
    edge = await start_edge({"alpha": port}, (ROUTES[0],), bare_line_endings=mode)
    smuggled = (
        b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<x@y.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nsecond\r\n"
    )

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        s.mail("a@sender.test")
        s.rcpt("x@example.com")
        s.putcmd("DATA")
        assert s.getreply()[0] == 354
        s.send(smuggled + b".\r\n")
        first = s.getreply()
        return first, s.noop()

    try:
        (code, text), (ncode, _) = await client(edge.port, go)
        assert ncode == 250
        await asyncio.sleep(0.1)
        if mode == "reject":
            assert (code, text[:5]) == (550, b"5.5.2")
            assert mta.messages == []
            assert edge.stats.transactions[("example.com", "error")] == 1
        else:
            assert code == 250
            assert mta.messages == [smuggled.replace(b"\n.\n", b"\r\n..\r\n") + b".\r\n"]
        assert len(mta.commands(b"MAIL")) == 1
    finally:
        await edge.stop()
        await mta.stop()


async def test_allow_list_and_limits() -> None:
    import ipaddress

    mta = FakeMta(xclient=False)
    port = await mta.start()
    edge = await start_edge({"alpha": port}, (ROUTES[0],), allow=(ipaddress.IPv4Network("127.0.0.2/32"),))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        assert await asyncio.wait_for(reader.read(), 5) == b"554 5.7.1 Access denied\r\n"
        writer.close()
        assert edge.stats.refused_connections == 1
    finally:
        await edge.stop()
    edge = await start_edge(
        {"alpha": port},
        (ROUTES[0],),
        max_message_bytes=2048,
        max_recipients=2,
        timeouts=conf.SmtpTimeouts(command=0.3, connect=1.0, data=1.0),
    )

    def go(s: smtplib.SMTP) -> Any:
        s.ehlo()
        big = s.mail("a@sender.test", ["SIZE=4096"])
        s.mail("a@sender.test")
        rc = [s.rcpt(f"u{i}@example.com")[0] for i in range(3)]
        d = s.data(b"x" * 3000 + b"\r\n")[0]
        long = s.docmd("NOOP " + "x" * 600)
        return big[0], rc, d, long[0]

    try:
        assert await client(edge.port, go) == (552, [250, 250, 452], 552, 500)
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        data = await asyncio.wait_for(reader.read(), 5)  # idle: the command timeout closes it
        assert data.endswith(b"421 4.4.2 Timeout; closing connection\r\n")
        writer.close()
        assert mta.messages == []
    finally:
        await edge.stop()
        await mta.stop()


async def test_retire_closes_idle_sessions(two_backends: tuple[Edge, Sink, Sink]) -> None:
    edge, _, _ = two_backends
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    await reader.readline()
    writer.write(b"EHLO c\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    edge.frontend.retire()
    assert (
        await asyncio.wait_for(reader.read(), 5) == b"421 4.3.2 Service shutting down; closing connection\r\n"
    )
    await edge.frontend.drain(2.0)
    assert edge.frontend.stats()["active"] == 0
    writer.close()


async def test_metrics_families(two_backends: tuple[Edge, Sink, Sink]) -> None:
    edge, _, _ = two_backends
    await client(edge.port, lambda s: s.sendmail("a@s.test", ["x@example.com"], b"hi\r\n"))
    fams = {f.name: f for f in families({"127.0.0.1:25": edge.stats})}
    assert {"sekisho_smtp_connections", "sekisho_smtp_transactions", "sekisho_smtp_bytes_relayed"} <= set(
        fams
    )
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    key = (
        "sekisho_smtp_transactions_total",
        (("listener", "127.0.0.1:25"), ("outcome", "relayed"), ("route", "example.com")),
    )
    assert samples[key] == 1
    assert samples[("sekisho_smtp_connections_total", (("listener", "127.0.0.1:25"),))] == 1


async def test_daemon_wiring_builds_our_frontend() -> None:
    from proxy.process.frontends import Section, StatsBook, build_frontend
    from proxy.process.metrics import Exposition

    config = conf.load_text(
        """
[pool.mail]
servers = [{ address = "127.0.0.1:2525" }]

[[smtp]]
listen = ["127.0.0.1:2500"]
hostname = "mx.example.com"
  [[smtp.route]]
  domain = "example.com"
  pool = "mail"
  xclient = true
"""
    )
    book = StatsBook()
    section = Section("smtp", 0, config.smtp[0])
    frontend = build_frontend(section, PoolSet(config.pools), book, None)
    assert isinstance(frontend, SmtpFrontend)
    assert book.get(section) is frontend.stats_
    ex = Exposition()
    ex.add_source("smtp", lambda: families(book.by_kind["smtp"]))
    assert b'sekisho_smtp_connections_total{listener="127.0.0.1:2500"} 0.0' in ex.render()


async def test_the_closing_error_reply_is_not_reset_away(two_backends: tuple[Edge, Sink, Sink]) -> None:
    """Lingering close (proxy.linger): the client still sending after the reply that ends
    the session reads that reply and a FIN, not a reset."""
    edge, _, _ = two_backends
    loop = asyncio.get_running_loop()
    forbidden = b"XCLIENT ADDR=192.0.2.1\r\n" + b"z" * (64 << 20)  # 550 and close; the rest is never read
    sent, got, end = await loop.run_in_executor(None, send_then_read, edge.port, forbidden)
    assert sent == "sent" and end == "fin"
    assert got.startswith(b"220 ") and got.endswith(b"550 5.7.1 Command not permitted\r\n")
    await asyncio.sleep(0.05)
    assert not edge.frontend.sessions  # the client closed, so did the edge: nothing lingers on
