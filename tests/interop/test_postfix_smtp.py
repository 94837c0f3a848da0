"""sekisho in front of a real Postfix: XCLIENT identity (and failing closed without it),
and SMTP smuggling."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.smtp import SmtpFrontend, SmtpStats
from tests.interop.postfix import Postfix
from tests.support import free_port, require_root, require_tool

CLIENT_ADDR = "127.0.0.2"  # not 127.0.0.1: proves the address Postfix logs came from XCLIENT

# hannob/smtpsmug's malformed end-of-data sequences.
SMUGGLE_ENDS = {
    "lflf": b"\n.\n",
    "crcr": b"\r.\r",
    "crlf": b"\r.\n",
    "lfcr": b"\n.\r",
    "lfcrlf": b"\n.\r\n",
    "crlflf": b"\r\n.\n",
    "crcrlf": b"\r.\r\n",
    "crlfcr": b"\r\n.\r",
    "nullbefore": b"\r\n\x00.\r\n",
    "nullafter": b"\r\n.\x00\r\n",
}


def running_postfix(xclient: bool) -> Iterator[Postfix]:
    require_root()
    binary = require_tool("postfix")
    # Not pytest's tmp_path: its parents are 0700 and Postfix's daemons run as `postfix`.
    base = Path(tempfile.mkdtemp(prefix="sekisho-postfix-"))
    pf = Postfix(base, free_port(), binary, xclient=xclient)
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    yield from running_postfix(xclient=True)


@pytest.fixture(scope="module")
def postfix_no_xclient() -> Iterator[Postfix]:
    """The usual setup gone wrong: trusts 127.0.0.0/8 (mynetworks), so sekisho's address,
    but lists no `smtpd_authorized_xclient_hosts`, so it does not offer XCLIENT."""
    yield from running_postfix(xclient=False)


async def start_edge(
    pf: Postfix, mode: str = "reject", others: tuple[Postfix, ...] = ()
) -> tuple[Listener, SmtpFrontend, SmtpStats]:
    servers = tuple(conf.Server(conf.Address("127.0.0.1", p.port)) for p in (*others, pf))
    pools = {"pf": conf.Pool("pf", servers)}
    config = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),),
        hostname="mx.example.com",
        routes=(conf.SmtpRoute("example.test", "pf", xclient=True),),
        bare_line_endings=mode,  # type: ignore[arg-type]
        timeouts=conf.SmtpTimeouts(command=10.0, connect=5.0, data=10.0),
    )
    stats = SmtpStats()
    frontend = SmtpFrontend(config, PoolSet(pools), stats)
    listener = Listener("smtp", config.listen[0], bind(config.listen[0]), frontend)
    listener.start()
    return listener, frontend, stats


async def stop_edge(listener: Listener, frontend: SmtpFrontend) -> None:
    await listener.stop_accepting()
    frontend.retire()
    await frontend.drain(5.0)


def wait_settled(pf: Postfix, count: int) -> None:
    pf.wait_delivered(count)
    time.sleep(0.5)  # a smuggled second message would be queued right behind the first


@pytest.mark.asyncio
async def test_message_lands_with_the_clients_address(postfix: Postfix) -> None:
    listener, frontend, stats = await start_edge(postfix)
    before = postfix.delivered()
    body = b"Subject: through sekisho\r\n\r\n" + b"..a dot-led line\r\n" + b"x" * 900 + b"\r\n"

    def go() -> Any:
        with smtplib.SMTP(
            "127.0.0.1", listener.bound[1], local_hostname="client.example", source_address=(CLIENT_ADDR, 0)
        ) as s:
            return s.sendmail("alice@sender.test", ["nobody@example.test"], body)

    try:
        assert await asyncio.to_thread(go) == {}
        await asyncio.to_thread(wait_settled, postfix, before + 1)
        msg = [m for m in postfix.messages() if b"Subject: through sekisho" in m]
        assert len(msg) == 1
        assert b"Received: from client.example (unknown [127.0.0.2])" in msg[0]
        # smtplib stuffed the dot-led line, Postfix unstuffed it (we never touch it);
        # local delivery writes LF line ends.
        assert msg[0].endswith(b"\n\n..a dot-led line\n" + b"x" * 900 + b"\n\n")
        assert "client=unknown[127.0.0.2]" in postfix.log()
        assert stats.transactions[("example.test", "relayed")] == 1
    finally:
        await stop_edge(listener, frontend)


def sessions(pf: Postfix) -> list[str]:
    """Postfix's summary line per SMTP session ("disconnect from ... ehlo=1 quit=1 commands=2"),
    but for sessions without a command (the readiness probe of `Postfix.start`)."""
    return [
        line
        for line in pf.log().splitlines()
        if "postfix/smtpd" in line and " disconnect from " in line and "commands=0/0" not in line
    ]


async def new_sessions(pf: Postfix, before: int, count: int) -> list[str]:
    """The session lines after the first `before`, once there are `count` (Postfix logs
    the disconnect a moment after the client's QUIT)."""
    deadline = time.monotonic() + 10
    while len(sessions(pf)) < before + count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return sessions(pf)[before:]


@pytest.mark.asyncio
async def test_postfix_without_xclient_is_never_given_the_mail(postfix_no_xclient: Postfix) -> None:
    """Fail closed: delivered, the message would carry sekisho's 127.0.0.1 as the client,
    which this Postfix trusts (mynetworks). The client gets 451 4.3.0 instead, and Postfix
    sees EHLO and QUIT, never a MAIL."""
    pf = postfix_no_xclient
    listener, frontend, stats = await start_edge(pf)
    before_sessions, before_delivered = len(sessions(pf)), pf.delivered()

    def go() -> Any:
        with smtplib.SMTP(
            "127.0.0.1", listener.bound[1], local_hostname="client.example", source_address=(CLIENT_ADDR, 0)
        ) as s:
            s.ehlo()
            s.mail("alice@sender.test")
            return s.rcpt("nobody@example.test")

    try:
        code, text = await asyncio.to_thread(go)
        assert (code, text[:5]) == (451, b"4.3.0")
        new = await new_sessions(pf, before_sessions, 1)
        assert len(new) == 1 and "ehlo=1 quit=1 commands=2" in new[0], new
        assert pf.delivered() == before_delivered
        assert stats.xclient_refused == {("pf", f"127.0.0.1:{pf.port}"): 1}
    finally:
        await stop_edge(listener, frontend)


@pytest.mark.asyncio
async def test_mail_goes_to_the_postfix_that_takes_xclient(
    postfix: Postfix, postfix_no_xclient: Postfix
) -> None:
    """One pool, the Postfix without XCLIENT first: every message lands once, on the one
    with XCLIENT, with the client's address; the other never sees a MAIL."""
    listener, frontend, stats = await start_edge(postfix, others=(postfix_no_xclient,))
    before_plain, before = len(sessions(postfix_no_xclient)), postfix.delivered()

    def go(i: int) -> Any:
        with smtplib.SMTP(
            "127.0.0.1", listener.bound[1], local_hostname="client.example", source_address=(CLIENT_ADDR, 0)
        ) as s:
            return s.sendmail(
                "alice@sender.test", ["nobody@example.test"], f"Subject: failover {i}\r\n\r\nx\r\n"
            )

    try:
        for i in range(3):
            assert await asyncio.to_thread(go, i) == {}
        await asyncio.to_thread(wait_settled, postfix, before + 3)
        assert postfix.delivered() == before + 3
        for i in range(3):
            msg = [m for m in postfix.messages() if f"Subject: failover {i}\n".encode() in m]
            assert len(msg) == 1
            assert b"Received: from client.example (unknown [127.0.0.2])" in msg[0]
        skipped = stats.xclient_refused[("pf", f"127.0.0.1:{postfix_no_xclient.port}")]
        assert skipped >= 1  # it was tried, and passed over
        plain = await new_sessions(postfix_no_xclient, before_plain, skipped)
        assert len(plain) == skipped and all("ehlo=1 quit=1 commands=2" in line for line in plain), plain
        assert stats.transactions[("example.test", "relayed")] == 3
    finally:
        await stop_edge(listener, frontend)


def send_smuggled(port: int, name: str, end: bytes) -> tuple[int, bytes]:
    """smtpsmug's test: a message ending in `end`, a second transaction, then a real end."""
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="client.example", source_address=(CLIENT_ADDR, 0), timeout=20
    ) as s:
        s.ehlo()
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("nobody@example.test")[0] == 250
        s.putcmd("DATA")
        assert s.getreply()[0] == 354
        s.send(
            f"Subject: carrier {name}\r\n\r\nThis is a test mail with a {name} ending.".encode()
            + end
            + b"MAIL FROM:<mallory@sender.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n"
            + f"Subject: SMUGGLED {name}\r\n\r\nsmuggled\r\n".encode()
            + b"\r\n.\r\n"
        )
        code, text = s.getreply()
        assert s.noop()[0] == 250  # the session is still in step with us
        return code, text


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["reject", "normalize"])
async def test_smuggling_variants_make_at_most_one_message(postfix: Postfix, mode: str) -> None:
    listener, frontend, stats = await start_edge(postfix, mode)
    before_delivered = postfix.delivered()
    before = len(postfix.messages())
    accepted: list[str] = []
    try:
        for name, end in SMUGGLE_ENDS.items():
            code, text = await asyncio.to_thread(send_smuggled, listener.bound[1], name, end)
            if code == 250:
                accepted.append(name)
            else:
                assert (code, text[:5]) == (550, b"5.5.2"), name
                assert mode == "reject" and b"\x00" not in end, name
        if mode == "normalize":
            assert accepted == list(SMUGGLE_ENDS)
        else:
            assert accepted == ["nullbefore", "nullafter"]
        await asyncio.to_thread(wait_settled, postfix, before_delivered + len(accepted))
        new = postfix.messages()[before:]
        assert len(new) == len(accepted), new
        assert postfix.delivered() == before_delivered + len(accepted)
        for msg in new:
            header = msg.split(b"\n\n", 1)[0]
            assert b"Subject: carrier" in header and b"SMUGGLED" not in header
        assert stats.transactions[("example.test", "relayed")] == len(accepted)
    finally:
        await stop_edge(listener, frontend)


def test_postfix_helper_cleans_up(tmp_path: Path) -> None:
    require_root()
    binary = require_tool("postfix")
    pf = Postfix(tmp_path, free_port(), binary)
    pf.stop()  # stopping an instance that never started is harmless
    assert not pf.started
