"""Issue 7, SMTP adversary: open relay, smuggling, STARTTLS injection, floods, hostile commands.

sekisho's SMTP front end runs in-process on 127.0.0.1:0 (a real Listener) in front
of one recording aiosmtpd per pool: alpha owns `example.com`, beta owns
`*.example.net`. Every test states what each backend must have received
(MAIL, RCPT, messages) and checks it exactly: refused input reaches nobody, and
accepted input arrives as predicted. One test puts a real Postfix behind sekisho
(with the client in Postfix's mynetworks, so Postfix itself would relay) to show
that nothing for a foreign domain ever gets queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from aiosmtpd.smtp import SMTP as AioSMTP  # noqa: N811

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.smtp import SmtpFrontend, SmtpStats
from proxy.smtp.frontend import SmtpSession
from tests.adversarial.smtp_attacks import (
    CLEAN_ENDS,
    HOSTILE,
    RELAY_FORMS,
    SENDERS,
    SMUGGLE_ENDS,
    SMUGGLED_SENDER,
    Hostile,
    smuggle_payload,
)
from tests.support import free_port, require_root, require_tool

pytestmark = pytest.mark.asyncio

ROUTES = (conf.SmtpRoute("example.com", "alpha"), conf.SmtpRoute("*.example.net", "beta"))
REPLY_TIMEOUT = 10.0


# ---------------------------------------------------------------- recording backends


@dataclass
class Message:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Recorder:
    """aiosmtpd handler: every MAIL and RCPT it was asked, every message it took."""

    name: str
    mails: list[str] = field(default_factory=list)
    rcpts: list[str] = field(default_factory=list)
    rcpt_lines: list[str] = field(default_factory=list)  # "TO:<...>" exactly as received
    messages: list[Message] = field(default_factory=list)
    sessions: int = 0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        self.mails.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        self.rcpts.append(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(Message(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued"

    def reset(self) -> None:
        self.mails.clear()
        self.rcpts.clear()
        self.rcpt_lines.clear()
        self.messages.clear()


class RecordingSMTP(AioSMTP):
    """Also keeps the raw argument of every RCPT, as sekisho wrote it."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder, hostname=f"{recorder.name}.internal", data_size_limit=64 << 20)
        self.recorder = recorder
        recorder.sessions += 1

    async def smtp_RCPT(self, arg: str) -> None:  # noqa: N802
        self.recorder.rcpt_lines.append(arg)
        await super().smtp_RCPT(arg)


@dataclass
class Edge:
    listener: Listener
    frontend: SmtpFrontend
    stats: SmtpStats
    port: int
    backends: dict[str, Recorder]
    servers: list[asyncio.Server]

    @property
    def alpha(self) -> Recorder:
        return self.backends["alpha"]

    @property
    def beta(self) -> Recorder:
        return self.backends["beta"]

    def nothing_relayed(self) -> None:
        for rec in self.backends.values():
            assert (rec.mails, rec.rcpt_lines, rec.messages) == ([], [], []), rec.name

    async def stop(self) -> None:
        await self.listener.stop_accepting()
        self.frontend.retire()
        await self.frontend.drain(2.0)
        for srv in self.servers:
            srv.close()


async def start_edge(tls: conf.TlsCert | None = None, **kw: Any) -> Edge:
    loop = asyncio.get_running_loop()
    backends = {name: Recorder(name) for name in ("alpha", "beta")}
    servers, pools = [], {}
    for name, rec in backends.items():
        srv = await loop.create_server(lambda rec=rec: RecordingSMTP(rec), "127.0.0.1", 0)  # type: ignore[misc]
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        pools[name] = conf.Pool(name, (conf.Server(conf.Address("127.0.0.1", port)),))
    config = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),),
        hostname="mx.example.com",
        routes=kw.pop("routes", ROUTES),
        tls=tls,
        timeouts=kw.pop("timeouts", conf.SmtpTimeouts(command=10.0, connect=2.0, data=10.0)),
        **kw,
    )
    stats = SmtpStats()
    frontend = SmtpFrontend(config, PoolSet(pools), stats)
    listener = Listener("smtp", config.listen[0], bind(config.listen[0]), frontend)
    listener.start()
    return Edge(listener, frontend, stats, listener.bound[1], backends, servers)


@pytest_asyncio.fixture
async def edge() -> AsyncIterator[Edge]:
    e = await start_edge()
    yield e
    await e.stop()


@pytest_asyncio.fixture
async def normalizing_edge() -> AsyncIterator[Edge]:
    e = await start_edge(bare_line_endings="normalize")
    yield e
    await e.stop()


# ---------------------------------------------------------------- raw client


class Client:
    """A raw SMTP client: bytes out exactly as given, replies parsed strictly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting: tuple[int, str] = (0, "")

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 20
        )
        c = cls(reader, writer)
        c.greeting = await c.reply()
        assert c.greeting[0] == 220, c.greeting
        return c

    async def reply(self, timeout: float = REPLY_TIMEOUT) -> tuple[int, str]:
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionResetError(f"closed after {lines!r}")
                assert raw.endswith(b"\r\n") and raw[:3].isdigit() and raw[3:4] in (b" ", b"-"), raw
                lines.append(raw[4:-2].decode("ascii"))
                if raw[3:4] == b" ":
                    return int(raw[:3]), "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once sekisho closes (read EOF) with nothing more to say."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except (TimeoutError, ConnectionError):
            return False

    async def send_mail(self, sender: str, rcpts: list[str], body: bytes) -> tuple[int, str]:
        """One whole transaction (body already CRLF and dot-stuffed); the final reply."""
        assert (await self.cmd(f"MAIL FROM:<{sender}>"))[0] == 250
        for r in rcpts:
            assert (await self.cmd(f"RCPT TO:<{r}>"))[0] == 250, r
        assert (await self.cmd("DATA"))[0] == 354
        self.send(body + b".\r\n")
        return await self.reply()

    def close(self) -> None:
        self.writer.transport.abort()


@contextlib.asynccontextmanager
async def connect(port: int, ehlo: bool = True) -> AsyncIterator[Client]:
    c = await Client.open(port)
    try:
        if ehlo:
            assert (await c.cmd("EHLO client.example"))[0] == 250
        yield c
    finally:
        c.close()


async def settle(edge: Edge) -> None:
    """Let the sessions' backend legs finish (QUIT, close) before counting."""
    deadline = time.monotonic() + 5
    while edge.frontend.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def sessions_of(edge: Edge) -> list[SmtpSession]:
    return list(edge.frontend.sessions)


async def a_good_mail_still_goes_through(edge: Edge, tag: str) -> None:
    before = len(edge.alpha.messages)
    async with connect(edge.port) as c:
        body = f"Subject: {tag}\r\n\r\nfine\r\n".encode()
        assert (await c.send_mail("ok@sender.test", ["ok@example.com"], body))[0] == 250
    assert len(edge.alpha.messages) == before + 1
    assert edge.alpha.messages[-1].content == f"Subject: {tag}\r\n\r\nfine\r\n".encode()


def unstuff(body: bytes) -> bytes:
    """What an RFC 5321 4.5.2 receiver stores: a leading "." of each line removed."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


# ---------------------------------------------------------------- open relay


async def test_open_relay_table(edge: Edge) -> None:
    assert len(RELAY_FORMS) >= 30
    expected: dict[str, list[Message]] = {"alpha": [], "beta": []}
    wire: dict[str, list[str]] = {"alpha": [], "beta": []}
    mismatches = []
    for sender in SENDERS:
        async with connect(edge.port) as c:
            for form in RELAY_FORMS:
                assert (await c.cmd(f"MAIL FROM:<{sender}>"))[0] == 250
                code, text = await c.cmd(b"RCPT TO:" + form.arg.encode())
                if code != form.code:
                    mismatches.append((sender, form.name, code, text))
                if code == 250:
                    body = f"Subject: {form.name}\r\n\r\nfrom {sender!r}\r\n".encode()
                    assert (await c.cmd("DATA"))[0] == 354
                    c.send(body + b".\r\n")
                    assert (await c.reply())[0] == 250
                    assert form.pool is not None and form.forwarded is not None
                    # aiosmtpd hands its hook the local part dequoted; the wire line is checked below.
                    rcpt = form.forwarded.replace('"', "")
                    expected[form.pool].append(Message(f"{sender}" or "<>", [rcpt], body))
                    wire[form.pool].append(f"TO:<{form.forwarded}>")
                else:
                    assert 500 <= code < 600, (form.name, code)
                    assert (await c.cmd("RSET"))[0] == 250
    assert mismatches == []
    await settle(edge)
    routed = [f for f in RELAY_FORMS if f.code == 250]
    for pool in ("alpha", "beta"):
        rec = edge.backends[pool]
        # Exactly the predicted envelopes, and no RCPT for a refused form ever reached a server.
        assert rec.messages == expected[pool], pool
        assert rec.rcpt_lines == wire[pool], pool
        assert len(rec.mails) == len(expected[pool])
    assert len(expected["alpha"]) + len(expected["beta"]) == len(routed) * len(SENDERS)
    refused_550 = sum(f.code == 550 for f in RELAY_FORMS) * len(SENDERS)
    assert edge.stats.recipients_rejected["relay_denied"] == refused_550


@pytest.fixture(scope="module")
def postfix() -> Iterator[Any]:
    require_root()
    binary = require_tool("postfix")
    from tests.interop.postfix import Postfix

    base = Path(tempfile.mkdtemp(prefix="sekisho-smtp-adv-"))
    pf = Postfix(base, free_port(), binary)
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(base, ignore_errors=True)


def finals(log: str) -> list[str]:
    """Postfix's delivery-attempt lines (one per recipient try: sent, bounced, deferred)."""
    return [line for line in log.splitlines() if " to=<" in line and " status=" in line]


async def test_open_relay_table_in_front_of_a_postfix_that_would_relay(postfix: Any) -> None:
    """Postfix trusts 127.0.0.0/8 (mynetworks) and the client comes from 127.0.0.2 via
    XCLIENT, so Postfix itself would relay the percent hack or a source route. Through
    sekisho, only mail for example.test is ever queued."""
    from tests.interop.postfix import DOMAIN

    pools = {"pf": conf.Pool("pf", (conf.Server(conf.Address("127.0.0.1", postfix.port)),))}
    config = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),),
        hostname="mx.example.com",
        routes=(conf.SmtpRoute(DOMAIN, "pf", xclient=True),),
        timeouts=conf.SmtpTimeouts(command=10.0, connect=5.0, data=10.0),
    )
    stats = SmtpStats()
    frontend = SmtpFrontend(config, PoolSet(pools), stats)
    listener = Listener("smtp", config.listen[0], bind(config.listen[0]), frontend)
    listener.start()
    before = len(finals(postfix.log()))
    accepted = 0
    try:
        c = await Client.open(listener.bound[1], source="127.0.0.2")
        try:
            assert (await c.cmd("EHLO client.example"))[0] == 250
            for form in RELAY_FORMS:
                arg = form.arg.replace("example.com", DOMAIN).replace("example.net", DOMAIN)
                # The null sender: Postfix bounces unknown local users, and a bounce must not
                # itself become mail for a foreign domain.
                assert (await c.cmd("MAIL FROM:<>"))[0] == 250
                code, _ = await c.cmd(b"RCPT TO:" + arg.encode())
                if code == 250:
                    assert (await c.cmd("DATA"))[0] == 354
                    c.send(f"Subject: pf {form.name}\r\n\r\nx\r\n.\r\n".encode())
                    assert (await c.reply())[0] == 250
                    accepted += 1
                else:
                    assert 500 <= code < 600, (form.name, code)
                    assert (await c.cmd("RSET"))[0] == 250
            assert (await c.cmd("QUIT"))[0] == 221
        finally:
            c.close()
        assert accepted >= 5
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if finals(postfix.log())[before:].__len__() >= accepted and postfix.queue_settled():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything relayed would be queued right behind
        done = finals(postfix.log())[before:]
        assert len(done) == accepted, postfix.log()[-3000:]
        # Every recipient Postfix ever handled is ours and went to local delivery
        # (sent, or bounced for an unknown user): nothing was relayed anywhere.
        for line in done:
            rcpt = line.split("to=<", 1)[1].split(">", 1)[0]
            assert rcpt.lower().endswith("@" + DOMAIN) and "relay=local" in line, line
    finally:
        await listener.stop_accepting()
        frontend.retire()
        await frontend.drain(5.0)


# ---------------------------------------------------------------- smuggling


def normalized_as_received(body: bytes) -> bytes:
    """What a receiver stores from a body sekisho normalized: each bare CR or LF became a
    line break, and a piece it starts with "." was stuffed by sekisho (the receiver takes
    that dot off again); the client's own CRLF lines are unstuffed as usual."""
    out = []
    for line in body.split(b"\r\n"):
        pieces = line.replace(b"\r", b"\n").split(b"\n")
        first = pieces[0]
        if first.startswith(b".") and not (first == b"." and len(pieces) > 1):
            first = first[1:]
        out.append(b"\r\n".join([first, *pieces[1:]]))
    return b"\r\n".join(out)


@pytest.mark.parametrize("mode", ["reject", "normalize"])
async def test_smuggling_variants_make_at_most_one_message(mode: str) -> None:
    edge = await start_edge(bare_line_endings=mode)
    sent = accepted = 0
    expected: list[bytes] = []
    try:
        for name, end in SMUGGLE_ENDS.items():
            payload = smuggle_payload(name, end, "victim@example.com")
            at = payload.index(end)
            # Whole, and split in two writes (with a pause) at every byte of the end sequence.
            splits: list[int | None] = [None, *range(at, at + len(end) + 1)]
            async with connect(edge.port) as c:
                for split in splits:
                    assert (await c.cmd("MAIL FROM:<alice@sender.test>"))[0] == 250
                    assert (await c.cmd("RCPT TO:<bob@example.com>"))[0] == 250
                    assert (await c.cmd("DATA"))[0] == 354
                    if split is None:
                        c.send(payload)
                    else:
                        c.send(payload[:split])
                        await c.writer.drain()
                        await asyncio.sleep(0.01)
                        c.send(payload[split:])
                    code, text = await c.reply()
                    sent += 1
                    clean = name in CLEAN_ENDS
                    if mode == "reject" and not clean:
                        assert (code, text[:5]) == (550, "5.5.2"), (name, split)
                    else:
                        assert code == 250, (name, split, code, text)
                        accepted += 1
                        body = payload[:-3]
                        expected.append(unstuff(body) if clean else normalized_as_received(body))
                    assert (await c.cmd("NOOP"))[0] == 250  # still in step with the client
        await settle(edge)
        assert edge.beta.messages == []
        assert SMUGGLED_SENDER not in " ".join(edge.alpha.mails)
        assert edge.alpha.rcpts == ["bob@example.com"] * sent  # the smuggled RCPT never reached it
        assert [m.content for m in edge.alpha.messages] == expected
        for m in edge.alpha.messages:
            assert m.mail_from == "alice@sender.test" and m.rcpt_tos == ["bob@example.com"]
            assert b"Subject: carrier" in m.content.split(b"\r\n\r\n", 1)[0]
        if mode == "normalize":
            assert accepted == sent
        else:
            assert accepted == sum(len(SMUGGLE_ENDS[n]) + 2 for n in CLEAN_ENDS)
    finally:
        await edge.stop()


LONG = (b"x" * 900 + b"\n") * 75  # 67 KB without a CRLF (lines the backend takes once normalized)


async def _long_line_then_dot(edge: Edge, ending: bytes) -> tuple[int, str]:
    """64 KiB+ without a CRLF, ending in a bare `ending`, a pause, then ".<CRLF>" and a
    smuggled transaction: the scanner must not lose track of where a line starts."""
    async with connect(edge.port) as c:
        assert (await c.cmd("MAIL FROM:<alice@sender.test>"))[0] == 250
        assert (await c.cmd("RCPT TO:<bob@example.com>"))[0] == 250
        assert (await c.cmd("DATA"))[0] == 354
        c.send(b"Subject: long\r\n\r\n" + LONG[:-1] + ending)
        await c.writer.drain()
        await asyncio.sleep(0.05)
        c.send(
            f".\r\nMAIL FROM:<{SMUGGLED_SENDER}>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n".encode()
            + b"Subject: SMUGGLED\r\n\r\nsmuggled\r\n.\r\n"
        )
        reply = await c.reply()
        assert (await c.cmd("NOOP"))[0] == 250
    await settle(edge)
    return reply


@pytest.mark.parametrize("ending", [b"\n", b"\r"], ids=["lf", "cr"])
async def test_regression_normalize_bare_lf_at_a_flush_boundary_is_not_an_end(
    normalizing_edge: Edge, ending: bytes
) -> None:
    edge = normalizing_edge
    code, _ = await _long_line_then_dot(edge, ending)
    assert code == 250
    assert edge.alpha.mails == ["alice@sender.test"] and edge.alpha.rcpts == ["bob@example.com"]
    assert len(edge.alpha.messages) == 1
    content = edge.alpha.messages[0].content
    long = LONG.replace(b"\n", b"\r\n")
    assert content.startswith(b"Subject: long\r\n\r\n" + long + b".\r\nMAIL FROM:<mallory")
    assert content.endswith(b"smuggled\r\n")


async def test_long_line_with_bare_lf_rejected(edge: Edge) -> None:
    code, text = await _long_line_then_dot(edge, b"\n")
    assert (code, text[:5]) == (550, "5.5.2")
    assert edge.alpha.messages == [] and SMUGGLED_SENDER not in edge.alpha.mails


# ---------------------------------------------------------------- pipelining across STARTTLS


@dataclass
class Tls:
    edge: Edge
    ctx: ssl.SSLContext


@pytest_asyncio.fixture
async def tls_edge(tmp_path: Path) -> AsyncIterator[Tls]:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.example.com", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "mx.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "mx.key"))
    e = await start_edge(tls=conf.TlsCert(str(tmp_path / "mx.pem"), str(tmp_path / "mx.key")))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    yield Tls(e, ctx)
    await e.stop()


INJECTED = (
    b"MAIL FROM:<injected@evil.test>\r\nRCPT TO:<injected@example.com>\r\n"
    b"RCPT TO:<injected@x.example.net>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n"
)


async def _upgrade(c: Client, ctx: ssl.SSLContext) -> None:
    """Wait for 220, check nothing else came in clear, then handshake."""
    code, text = await c.reply()
    assert (code, text) == (220, "2.0.0 Ready to start TLS")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await c.reader.read(1)  # a reply to an injected command would show here
    await c.writer.start_tls(ctx, server_hostname="mx.example.com")


@pytest.mark.parametrize("how", ["same-packet", "separate-write", "after-ehlo-in-one-packet"])
async def test_commands_pipelined_after_starttls_are_discarded(tls_edge: Tls, how: str) -> None:
    edge = tls_edge.edge
    c = await Client.open(edge.port)
    try:
        if how == "same-packet":
            assert (await c.cmd("EHLO c"))[0] == 250
            c.send(b"STARTTLS\r\n" + INJECTED)
        elif how == "separate-write":
            assert (await c.cmd("EHLO c"))[0] == 250
            c.send(b"STARTTLS\r\n")
            await c.writer.drain()
            c.send(INJECTED)  # before the 220 has been read: still cleartext, still discarded
        else:
            c.send(b"EHLO c\r\nSTARTTLS\r\n" + INJECTED)
            assert (await c.reply())[0] == 250
        await _upgrade(c, tls_ctx := tls_edge.ctx)
        assert tls_ctx is not None
        # The dialogue starts over inside TLS: no HELO, no transaction survived.
        assert (await c.cmd("RCPT TO:<x@example.com>"))[0] == 503
        assert (await c.cmd("DATA"))[0] == 503
        code, text = await c.cmd("EHLO c")
        assert code == 250 and "STARTTLS" not in text
        assert (await c.cmd("RCPT TO:<x@example.com>"))[0] == 503  # still no MAIL
        body = b"Subject: after tls\r\n\r\nreal\r\n"
        assert (await c.send_mail("real@sender.test", ["real@example.com"], body))[0] == 250
        assert (await c.cmd("QUIT"))[0] == 221
    finally:
        c.close()
    await settle(edge)
    assert edge.alpha.mails == ["real@sender.test"]
    assert edge.alpha.rcpts == ["real@example.com"]
    assert edge.alpha.messages == [Message("real@sender.test", ["real@example.com"], body)]
    assert (edge.beta.mails, edge.beta.rcpts, edge.beta.messages) == ([], [], [])
    assert edge.stats.starttls == 1


async def test_cleartext_injected_between_220_and_the_handshake(tls_edge: Tls) -> None:
    edge = tls_edge.edge
    async with connect(edge.port) as c:
        assert (await c.cmd("STARTTLS"))[0] == 220
        c.send(INJECTED)  # a MITM's bytes where the ClientHello should be
        assert await c.closed()  # handshake fails: the connection goes, nothing runs
    await settle(edge)
    edge.nothing_relayed()
    assert edge.stats.starttls_failures == 1
    await a_good_mail_still_goes_through(edge, "after-bad-handshake")


async def test_starttls_misuse(tls_edge: Tls) -> None:
    edge = tls_edge.edge
    async with connect(edge.port) as c:
        assert (await c.cmd("STARTTLS now"))[0] == 501
        assert (await c.cmd("MAIL FROM:<a@b.test>"))[0] == 250
        assert (await c.cmd("STARTTLS"))[0] == 503  # not inside a transaction
        assert (await c.cmd("RSET"))[0] == 250
        c.send(b"STARTTLS\r\n")
        await _upgrade(c, tls_edge.ctx)
        assert (await c.cmd("EHLO c"))[0] == 250
        assert (await c.cmd("STARTTLS"))[0] == 503  # already active
        c.send(b"EHLO c\r\nMAIL FROM:<p@sender.test>\r\nRCPT TO:<p@example.com>\r\nNOOP\r\n")
        assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 250, 250]  # pipelining inside TLS works
    await settle(edge)
    assert edge.alpha.rcpts == ["p@example.com"] and edge.alpha.messages == []


# ---------------------------------------------------------------- 10,000 recipients


class Sampler:
    """Watches every session's unprocessed input and unsent output while a test runs."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.max_input = 0
        self.max_output = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for s in sessions_of(self.edge):
                self.max_input = max(self.max_input, s.env.buffered)
                if s.transport is not None:
                    self.max_output = max(self.max_output, s.transport.get_write_buffer_size())
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> Sampler:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_ten_thousand_recipients_in_one_pipelined_transaction(edge: Edge) -> None:
    n = 10_000
    limit = edge.frontend.policy.max_recipients
    assert limit == 100  # the config default (RFC 5321 4.5.3.1.8's minimum)

    def rcpt(i: int) -> str:  # ours (alpha), the other route (beta), and foreign, interleaved
        return ("u{}@example.com", "u{}@x.example.net", "u{}@evil.test")[i % 3].format(i)

    expected: list[int] = [250]  # MAIL
    accepted: list[str] = []
    for i in range(n):
        if rcpt(i).endswith("@evil.test"):
            expected.append(550)
        elif len(accepted) >= limit or rcpt(i).endswith("example.net"):
            expected.append(452)
        else:
            expected.append(250)
            accepted.append(rcpt(i))
    expected.append(354)
    wire = b"MAIL FROM:<bulk@sender.test>\r\n"
    wire += b"".join(f"RCPT TO:<{rcpt(i)}>\r\n".encode() for i in range(n)) + b"DATA\r\n"
    body = b"Subject: bulk\r\n\r\n" + b"line\r\n" * 100
    t0 = time.monotonic()
    async with Sampler(edge) as sampler, connect(edge.port) as c:
        c.send(wire)  # all 10,002 commands in one write (RFC 2920: DATA may end the group)
        got = [await c.reply() for _ in range(n + 2)]
        assert [code for code, _ in got] == expected
        assert all(text.startswith("4.5.3") for code, text in got if code == 452)
        c.send(body + b".\r\n")
        assert (await c.reply())[0] == 250
        assert (await c.cmd("QUIT"))[0] == 221
    elapsed = time.monotonic() - t0
    await settle(edge)
    assert len(accepted) == limit
    assert edge.alpha.messages == [Message("bulk@sender.test", accepted, body)]  # nothing lost
    assert edge.alpha.rcpts == accepted
    assert (edge.beta.rcpts, edge.beta.messages) == ([], [])
    assert edge.stats.recipients_rejected["too_many"] + edge.stats.recipients_rejected["other_route"] == (
        expected.count(452)
    )
    # Memory stays bounded: the commands wait in at most the read high-water mark.
    assert sampler.max_input <= (1 << 20) + (1 << 16)
    assert elapsed < 20


# ---------------------------------------------------------------- 1 MB command lines


MB = 1 << 20


async def test_megabyte_command_line_is_refused_and_the_session_resyncs(edge: Edge) -> None:
    async with Sampler(edge) as sampler:
        other = asyncio.get_running_loop().create_task(a_good_mail_still_goes_through(edge, "during-1mb"))
        async with connect(edge.port) as c:
            c.send(b"NOOP " + b"x" * MB + b"\r\nNOOP\r\n")
            assert await c.reply() == (500, "5.5.6 Line too long")
            assert (await c.reply())[0] == 250  # one 500 for the whole line, then in step again
            assert (await c.cmd("MAIL FROM:<" + "a" * MB + "@sender.test>"))[:1] == (500,)
            assert (await c.cmd("RCPT TO:<x@example.com>"))[0] == 503  # the long MAIL did not count
            assert (await c.cmd("MAIL FROM:<s@sender.test>"))[0] == 250
            assert (await c.cmd(b"RCPT TO:<" + b"v" * MB + b"@example.com>"))[0] == 500
            assert (await c.cmd("RCPT TO:<ok@example.com>"))[0] == 250
            assert (await c.cmd("DATA"))[0] == 354
            c.send(b"Subject: after 1mb\r\n\r\nok\r\n.\r\n")
            assert (await c.reply())[0] == 250
        await other
    await settle(edge)
    got = sorted((m.mail_from, tuple(m.rcpt_tos)) for m in edge.alpha.messages)
    assert got == [("ok@sender.test", ("ok@example.com",)), ("s@sender.test", ("ok@example.com",))]
    assert sorted(edge.alpha.rcpts) == ["ok@example.com", "ok@example.com"]
    assert sampler.max_input <= MB + (1 << 16)


async def test_megabyte_without_crlf(edge: Edge) -> None:
    async with connect(edge.port) as c:
        c.send(b"RCPT TO:<" + b"x" * MB)
        assert await c.reply() == (500, "5.5.6 Line too long")  # answered before any CRLF
        c.send(b"y" * MB)  # still the same line: silently discarded
        c.send(b"\r\nNOOP\r\n")
        assert (await c.reply())[0] == 250
    async with connect(edge.port) as c:
        c.send(b"z" * MB)
        assert (await c.reply())[0] == 500
        c.writer.write_eof()
        assert await c.closed()  # EOF mid-line: sekisho closes too
    await settle(edge)
    assert not edge.frontend.sessions
    edge.nothing_relayed()


async def test_slow_drip_of_a_long_line(edge: Edge) -> None:
    async with connect(edge.port) as c:
        c.send(b"MAIL FROM:<")
        for _ in range(30):  # 600 bytes, 20 at a time
            c.send(b"d" * 20)
            await c.writer.drain()
            await asyncio.sleep(0.003)
        assert await c.reply() == (500, "5.5.6 Line too long")
        for _ in range(50):  # keeps dripping: nothing more is said, nothing piles up
            c.send(b"d" * 20)
            await c.writer.drain()
            await asyncio.sleep(0.002)
        assert max(s.env.buffered for s in sessions_of(edge)) < 512
        for b in b"\r\nNOOP\r\n":  # the CRLF one byte at a time
            c.send(bytes([b]))
            await c.writer.drain()
            await asyncio.sleep(0.002)
        assert (await c.reply())[0] == 250
        await a_good_mail_still_goes_through(edge, "during-drip")
    await settle(edge)
    assert edge.alpha.mails == ["ok@sender.test"]


# ---------------------------------------------------------------- hostile commands


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
async def test_hostile_command(edge: Edge, case: Hostile) -> None:
    c = await Client.open(edge.port)
    try:
        c.send(b"".join(line + b"\r\n" for line in case.lines))
        codes = [(await c.reply())[0] for _ in case.codes]
        assert codes == list(case.codes)
        if case.closes:
            assert await c.closed()
        else:
            assert (await c.cmd("NOOP"))[0] == 250  # still in step
    finally:
        c.close()
    await settle(edge)
    edge.nothing_relayed()


@pytest.mark.parametrize("verb", [b"FOO", b"AUTH PLAIN x", b"BDAT 1 LAST"], ids=["unknown", "auth", "bdat"])
async def test_too_many_unknown_commands_close_the_connection(edge: Edge, verb: bytes) -> None:
    limit = edge.frontend.policy.max_unknown_commands
    c = await Client.open(edge.port)
    try:
        c.send((verb + b"\r\n") * (limit + 50))
        codes = [(await c.reply())[0] for _ in range(limit)]
        assert codes[:-1] == [codes[0]] * (limit - 1) and codes[0] in (500, 502)
        assert codes[-1] == 421
        assert await c.closed()  # and the 50 after the limit were never answered
    finally:
        c.close()
    await settle(edge)
    assert edge.stats.rejected_commands["unknown"] == limit
    edge.nothing_relayed()


@pytest.mark.parametrize(
    "junk",
    [b"\x00", b"NOOP\x00", b"x" * 600, b"x" * (64 << 10), "\u00dcBER".encode(), b"NOOP\nNOOP"],
    ids=["nul", "nul-in-noop", "600-bytes", "64k", "8bit", "bare-lf"],
)
async def test_junk_lines_flood_counts_toward_the_error_limit(edge: Edge, junk: bytes) -> None:
    """Lines that are no command at all get 500 each and count toward the error limit
    (as in Postfix's smtpd_hard_error_limit): a flood ends with 421 and a close, and the
    rest of it is never answered; other clients are served meanwhile. Regression: with
    600-byte and 64 KiB lines the close came with unread input, the kernel sent RST and
    the client lost the 421; the session now closes lingering."""
    limit = edge.frontend.policy.max_unknown_commands
    count = 200
    async with Sampler(edge) as sampler, connect(edge.port) as c:
        c.send((junk + b"\r\n") * count + b"NOOP\r\n")
        codes = [(await c.reply())[0] for _ in range(limit)]
        assert codes == [500] * (limit - 1) + [421]
        assert await c.closed()
        await a_good_mail_still_goes_through(edge, "during-junk")
    assert sampler.max_input <= MB + (1 << 16)
    await settle(edge)
    assert edge.alpha.mails == ["ok@sender.test"]


async def test_good_commands_do_not_count_toward_the_limit(edge: Edge) -> None:
    limit = edge.frontend.policy.max_unknown_commands
    async with connect(edge.port) as c:
        for _ in range(limit - 1):
            assert (await c.cmd("FOO"))[0] == 500
        for _ in range(3 * limit):
            assert (await c.cmd("NOOP"))[0] == 250
        assert (await c.cmd("FOO"))[0] == 421
        assert await c.closed()


async def test_regression_a_lone_blank_line_is_answered(edge: Edge) -> None:
    """A blank line sent on its own (the client then waits) gets its 500 at once: only the
    very first bytes of a connection may be the start of a PROXY v2 signature."""
    async with connect(edge.port) as c:
        c.send(b"\r\n")
        assert (await c.reply(timeout=2.0))[0] == 500
        c.send(b"\r\n\r\n")
        assert [(await c.reply(timeout=2.0))[0] for _ in range(2)] == [500, 500]
        c.send(b"\r\n\r\n\x00\r\nQUIT\n")  # the signature, late: just bad lines now
        assert [(await c.reply(timeout=2.0))[0] for _ in range(3)] == [500, 500, 500]
        c.send(b"\r\n")
        assert (await c.reply(timeout=2.0))[0] == 500  # "QUIT<LF><CR><LF>": a bare LF inside
        assert (await c.cmd("NOOP"))[0] == 250
    edge.nothing_relayed()


async def test_blank_first_line_waits_for_a_possible_proxy_header(edge: Edge) -> None:
    """The one place a blank line is not answered at once: as the connection's first
    bytes it may be a PROXY v2 signature, so it is judged when more arrives."""
    async with connect(edge.port, ehlo=False) as c:
        c.send(b"\r\n")
        with pytest.raises(TimeoutError):
            await c.reply(timeout=0.2)
        c.send(b"NOOP\r\n")
        assert [(await c.reply())[0] for _ in range(2)] == [500, 250]


async def test_proxy_v2_signature_still_refused(edge: Edge) -> None:
    c = await Client.open(edge.port)
    try:
        c.send(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12))
        assert (await c.reply())[:1] == (550,)
        assert await c.closed()
    finally:
        c.close()


async def test_regression_replies_to_a_client_that_never_reads_stay_bounded(edge: Edge) -> None:
    """Pipelined NOOPs from a client that never reads its replies: sekisho must stop
    reading (not buffer replies without limit) once the client's socket is full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", edge.port))
    while not sessions_of(edge):
        await asyncio.sleep(0.001)
    # A small kernel send buffer on sekisho's side too (a slow link), so the test sees
    # sekisho's own buffering within a second instead of after the kernel's megabytes.
    server_sock = sessions_of(edge)[0].transport.get_extra_info("socket")  # type: ignore[union-attr]
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"NOOP\r\n" * 10_000  # 60 KB of commands, 140 KB of replies
    sent = 0
    try:
        async with Sampler(edge) as sampler:
            deadline = time.monotonic() + 1.5
            blocked_since = None
            while time.monotonic() < deadline:
                try:
                    sent += sock.send(chunk)
                    blocked_since = None
                except BlockingIOError:
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > 0.5:
                        break  # sekisho stopped reading us: what we wanted
                    await asyncio.sleep(0.01)
                    continue
                await asyncio.sleep(0)
        # Unfixed, the replies grew by ~1 MB/s for as long as the client kept sending.
        assert sampler.max_output <= 256 << 10, (sampler.max_output, sent)
        assert sent > (256 << 10)  # the client did send far more than that
        assert sampler.max_input <= MB + (1 << 16)
    finally:
        sock.close()
    await a_good_mail_still_goes_through(edge, "after-flood")
    await settle(edge)
    assert not edge.frontend.sessions


# ---------------------------------------------------------------- abandoned messages, a mixed storm


async def test_refused_message_then_pipelined_transaction(edge: Edge) -> None:
    """A message refused for a bare LF, with the next transaction pipelined right behind
    its end: the refused one is abandoned at the backend, the next arrives once."""
    async with connect(edge.port) as c:
        assert (await c.cmd("MAIL FROM:<a@sender.test>"))[0] == 250
        assert (await c.cmd("RCPT TO:<one@example.com>"))[0] == 250
        assert (await c.cmd("DATA"))[0] == 354
        c.send(
            b"Subject: bad\r\n\r\nbare\nlf\r\n.\r\n"
            b"MAIL FROM:<b@sender.test>\r\nRCPT TO:<two@example.com>\r\nDATA\r\n"
        )
        assert [(await c.reply())[0] for _ in range(4)] == [550, 250, 250, 354]
        c.send(b"Subject: good\r\n\r\nok\r\n.\r\n")
        assert (await c.reply())[0] == 250
    await settle(edge)
    assert edge.alpha.messages == [
        Message("b@sender.test", ["two@example.com"], b"Subject: good\r\n\r\nok\r\n")
    ]


async def test_oversized_message_is_abandoned_not_truncated() -> None:
    edge = await start_edge(max_message_bytes=4096)
    try:
        async with connect(edge.port) as c:
            assert (await c.cmd("MAIL FROM:<a@sender.test>"))[0] == 250
            assert (await c.cmd("RCPT TO:<big@example.com>"))[0] == 250
            assert (await c.cmd("DATA"))[0] == 354
            c.send(
                b"Subject: big\r\n\r\n" + b"y" * 900 + b"\r\n" * 1 + (b"z" * 998 + b"\r\n") * 10 + b".\r\n"
            )
            assert (await c.reply())[:1] == (552,)
            body = b"Subject: small\r\n\r\nok\r\n"
            assert (await c.send_mail("a@sender.test", ["small@example.com"], body))[0] == 250
        await settle(edge)
        assert edge.alpha.messages == [Message("a@sender.test", ["small@example.com"], body)]
    finally:
        await edge.stop()


async def test_mixed_storm_keeps_serving_good_clients(edge: Edge) -> None:
    """60 hostile sessions (each HOSTILE case, relay probes, long lines, smuggling) at once
    with 20 good senders: every good message arrives once, nothing else does."""

    async def hostile(case: Hostile) -> None:
        c = await Client.open(edge.port)
        try:
            c.send(b"".join(line + b"\r\n" for line in case.lines))
            assert [(await c.reply())[0] for _ in case.codes] == list(case.codes)
        finally:
            c.close()

    async def prober(i: int) -> None:
        async with connect(edge.port) as c:
            assert (await c.cmd("MAIL FROM:<>"))[0] == 250
            for form in RELAY_FORMS:
                if form.code != 250:
                    assert (await c.cmd(b"RCPT TO:" + form.arg.encode()))[0] == form.code
            c.send(b"NOOP " + b"q" * MB + b"\r\n")
            assert (await c.reply())[0] == 500

    async def smuggler(i: int) -> None:
        async with connect(edge.port) as c:
            assert (await c.cmd("MAIL FROM:<s@sender.test>"))[0] == 250
            assert (await c.cmd("RCPT TO:<s@example.com>"))[0] == 250
            assert (await c.cmd("DATA"))[0] == 354
            c.send(smuggle_payload("storm", b"\n.\n", "victim@example.com"))
            assert (await c.reply())[0] == 550

    async def good(i: int) -> None:
        async with connect(edge.port) as c:
            body = f"Subject: good {i}\r\n\r\nok\r\n".encode()
            assert (await c.send_mail(f"g{i}@sender.test", [f"g{i}@example.com"], body))[0] == 250

    jobs = [hostile(h) for h in HOSTILE] + [prober(i) for i in range(8)] + [smuggler(i) for i in range(8)]
    jobs += [good(i) for i in range(20)]
    async with asyncio.timeout(30):
        await asyncio.gather(*jobs)
    await settle(edge)
    got = sorted(m.mail_from for m in edge.alpha.messages)
    assert got == sorted(f"g{i}@sender.test" for i in range(20))
    assert SMUGGLED_SENDER not in edge.alpha.mails and edge.beta.rcpt_lines == []
