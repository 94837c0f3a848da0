"""sekisho in front of a real Postfix: XCLIENT identity and SMTP smuggling."""

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


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    require_root()
    binary = require_tool("postfix")
    # Not pytest's tmp_path: its parents are 0700 and Postfix's daemons run as `postfix`.
    base = Path(tempfile.mkdtemp(prefix="sekisho-postfix-"))
    pf = Postfix(base, free_port(), binary)
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(base, ignore_errors=True)


async def start_edge(pf: Postfix, mode: str = "reject") -> tuple[Listener, SmtpFrontend, SmtpStats]:
    pools = {"pf": conf.Pool("pf", (conf.Server(conf.Address("127.0.0.1", pf.port)),))}
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
