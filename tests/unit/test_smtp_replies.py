"""Reply encoding and the backend reply parser."""

from __future__ import annotations

import pytest

from proxy.smtp.backend import ClientInfo, proxy_header, xclient_line, xtext
from proxy.smtp.errors import SmtpProtocolError
from proxy.smtp.replies import Reply, ReplyParser, ehlo_keywords


def test_encode_multiline_and_sanitise() -> None:
    assert Reply.of(250, "a", "b c").encode() == b"250-a\r\n250 b c\r\n"
    assert Reply.of(550, "bad\r\ninjected").encode() == b"550 bad??injected\r\n"


def test_parser_split_everywhere() -> None:
    wire = b"250-mx\r\n250-XCLIENT NAME ADDR\r\n250 SIZE 10\r\n220 hi\r\n"
    for i in range(len(wire)):
        p = ReplyParser()
        p.feed(wire[:i])
        got = []
        while (r := p.next_reply()) is not None:
            got.append(r)
        p.feed(wire[i:])
        while (r := p.next_reply()) is not None:
            got.append(r)
        assert got == [Reply(250, ("mx", "XCLIENT NAME ADDR", "SIZE 10")), Reply(220, ("hi",))]
    assert ehlo_keywords(got[0]) == {"XCLIENT": "NAME ADDR", "SIZE": "10"}


@pytest.mark.parametrize("bad", [b"hello\r\n", b"25\r\n", b"250-a\r\n251 b\r\n", b"250x\r\n"])
def test_parser_rejects_garbage(bad: bytes) -> None:
    p = ReplyParser()
    p.feed(bad)
    with pytest.raises(SmtpProtocolError):
        while p.next_reply() is not None:
            pass


def test_xclient_line() -> None:
    c = ClientInfo("2001:db8::1", 4242, "he+lo=x", True)
    assert xtext("a b+c=") == "a+20b+2Bc+3D"
    assert xclient_line(c, "NAME ADDR PORT PROTO HELO LOGIN") == (
        "XCLIENT NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::1 PORT=4242 PROTO=ESMTP HELO=he+2Blo+3Dx"
    )
    assert xclient_line(c, "ADDR") == "XCLIENT ADDR=IPV6:2001:db8::1"


def test_proxy_header_describes_the_client_connection() -> None:
    c = ClientInfo("192.0.2.1", 1234, "h", True, "192.0.2.2", 25)
    assert proxy_header("v1", c) == b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 25\r\n"
    h = proxy_header("v2", c)
    assert h[:12] == b"\r\n\r\n\x00\r\nQUIT\n" and h[12:14] == b"\x21\x11" and len(h) == 16 + 12
