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
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP as AioSMTP  # noqa: N811

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.smtp import SmtpFrontend, SmtpStats
from proxy.smtp.frontend import SmtpSession
from tests.adversarial.smtp_attacks import (
    CLEAN_ENDS,
    RELAY_FORMS,
    SENDERS,
    SMUGGLE_ENDS,
    SMUGGLED_SENDER,
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
