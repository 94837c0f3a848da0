"""The sans-IO envelope machine, fed byte streams (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

import conf
from proxy.smtp.address import RouteTable
from proxy.smtp.envelope import (
    NEED_DATA,
    PAUSED,
    AbortData,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    Envelope,
    Policy,
    Quit,
    Recipient,
    Respond,
    StartTls,
    State,
)
from proxy.smtp.replies import Reply

ROUTES = (
    conf.SmtpRoute("example.com", "alpha", xclient=True),
    conf.SmtpRoute("example.net", "beta"),
    conf.SmtpRoute("*.example.org", "beta"),
)
POLICY = Policy(
    hostname="mx.example.com",
    routes=RouteTable(ROUTES),
    max_message_bytes=100_000,
    max_recipients=3,
    max_unknown_commands=3,
)


@dataclass
class Run:
    out: bytearray = field(default_factory=bytearray)
    forwarded: list[tuple[str, str]] = field(default_factory=list)  # (route, path)
    message: bytearray = field(default_factory=bytearray)
    messages: list[bytes] = field(default_factory=list)
    aborted: list[Reply] = field(default_factory=list)
    closed: bool = False
    tls: int = 0


def pump(env: Envelope, run: Run, backend_rcpt: int = 250) -> None:
    while not run.closed:
        ev = env.next_event()
        if ev is NEED_DATA:
            return
        assert ev is not PAUSED
        if isinstance(ev, ConnectionClosed):
            run.closed = True
        elif isinstance(ev, Respond):
            run.out += ev.reply.encode()
            run.closed = ev.close
        elif isinstance(ev, Recipient):
            run.forwarded.append((ev.route.domain, ev.path.forward()))
            assert env.next_event() is PAUSED
            run.out += env.answer(Reply.of(backend_rcpt, "2.1.5 Ok" if backend_rcpt < 300 else "5.1.1 No"))
        elif isinstance(ev, DataStart):
            run.out += env.answer(Reply.of(354, "End data with <CR><LF>.<CR><LF>"))
        elif isinstance(ev, DataChunk):
            run.message += ev.data
        elif isinstance(ev, DataEnd):
            run.message += ev.data
            run.messages.append(bytes(run.message))
            run.message.clear()
            run.out += env.answer(Reply.of(250, "2.0.0 queued"))
        elif isinstance(ev, AbortData):
            run.aborted.append(ev.reply)
            run.message.clear()
            run.out += ev.reply.encode()
        elif isinstance(ev, StartTls):
            run.out += ev.reply.encode()
            env.tls_started()
            run.tls += 1
        elif isinstance(ev, Quit):
            run.out += ev.reply.encode()
            run.closed = True


def feed(chunks: list[bytes], policy: Policy = POLICY, backend_rcpt: int = 250) -> Run:
    env = Envelope(policy)
    run = Run()
    for c in chunks:
        env.receive_data(c)
        pump(env, run, backend_rcpt)
    return run


def codes(run: Run) -> list[str]:
    return [line[:3].decode() for line in bytes(run.out).split(b"\r\n") if line[3:4] == b" "]


SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<alice@sender.test> SIZE=100 BODY=8BITMIME\r\n"
    b"RCPT TO:<bob@example.com>\r\n"
    b"RCPT TO:<carol@Example.COM>\r\n"
    b"RCPT TO:<dave@example.net>\r\n"
    b"RCPT TO:<eve@elsewhere.test>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<x@a.example.org>\r\nDATA\r\nsecond\r\n.\r\n"
    b"QUIT\r\n"
)
EXPECTED_CODES = ["250", "250", "250", "250", "452", "550", "354", "250", "250", "250", "354", "250", "221"]


def test_greeting_has_no_software_name() -> None:
    assert Envelope(POLICY).greeting() == b"220 mx.example.com ESMTP\r\n"


def test_whole_pipelined_session() -> None:
    run = feed([SESSION])
    assert codes(run) == EXPECTED_CODES
    assert run.forwarded == [
        ("example.com", "<bob@example.com>"),
        ("example.com", "<carol@Example.COM>"),
        ("*.example.org", "<x@a.example.org>"),
    ]
    assert run.messages == [b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n", b"second\r\n.\r\n"]
    assert run.closed


def test_pipelined_session_split_at_every_byte_boundary() -> None:
    whole = feed([SESSION])
    for i in range(1, len(SESSION)):
        run = feed([SESSION[:i], SESSION[i:]])
        assert run.out == whole.out, i
        assert run.forwarded == whole.forwarded, i
        assert run.messages == whole.messages, i


def test_pipelined_session_byte_by_byte() -> None:
    whole = feed([SESSION])
    run = feed([bytes([b]) for b in SESSION])
    assert (run.out, run.forwarded, run.messages) == (whole.out, whole.forwarded, whole.messages)


def test_ehlo_capabilities() -> None:
    run = feed([b"EHLO c\r\n"])
    assert run.out == (
        b"250-mx.example.com\r\n250-SIZE 100000\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
        b"250 ENHANCEDSTATUSCODES\r\n"
    )
    tls = feed([b"EHLO c\r\n"], replace(POLICY, tls_offered=True))
    assert tls.out.endswith(b"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
    assert feed([b"HELO c\r\n"]).out == b"250 mx.example.com\r\n"
    assert codes(feed([b"EHLO\r\n"])) == ["501"]


def test_sequence_errors() -> None:
    run = feed([b"MAIL FROM:<a@b.c>\r\nEHLO c\r\nRCPT TO:<x@example.com>\r\nDATA\r\n"])
    assert codes(run) == ["503", "250", "503", "503"]
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n"])
    assert codes(run) == ["250", "250", "503", "554"]


# nmap smtp-open-relay's address forms (SERVER = example.com, IP = 127.0.0.1),
# plus a few of our own: each is refused or routed as a backend MTA reads it.
RELAY_TABLE = [
    ("<relaytest@nmap.scanme.org>", "550", None),
    ("<relaytest%nmap.scanme.org@[127.0.0.1]>", "550", None),
    ("<relaytest%nmap.scanme.org@example.com>", "550", None),
    ('<"relaytest@nmap.scanme.org">', "501", None),
    ('<"relaytest%nmap.scanme.org">', "501", None),
    ("<relaytest@nmap.scanme.org@[127.0.0.1]>", "501", None),
    ('<"relaytest@nmap.scanme.org"@[127.0.0.1]>', "550", None),
    ('<"relaytest@nmap.scanme.org"@example.com>', "550", None),
    ("<relaytest@nmap.scanme.org@example.com>", "501", None),
    ("<@[127.0.0.1]:relaytest@nmap.scanme.org>", "550", None),
    ("<@example.com:relaytest@nmap.scanme.org>", "550", None),
    ("<nmap.scanme.org!relaytest>", "501", None),
    ("<nmap.scanme.org!relaytest@[127.0.0.1]>", "550", None),
    ("<nmap.scanme.org!relaytest@example.com>", "550", None),
    ("<relaytest@[127.0.0.1]>", "550", None),
    ("<user@[IPv6:::1]>", "550", None),
    ('<"a!b"@example.com>', "550", None),
    ("<postmaster>", "250", "<postmaster>"),  # RFC 5321 4.5.1: the one path without a domain
    ("<PostMaster>", "250", "<PostMaster>"),
    ('<"postmaster">', "501", None),
    ("<@a.test:postmaster>", "501", None),
    ("<postmasters>", "501", None),
    ("<post.master>", "501", None),
    ("<>", "501", None),
    ("relaytest@example.com", "501", None),
    ("<user@example.com.>", "501", None),
    ("<user@example.org>", "550", None),
    ("<user@evil-example.com>", "550", None),
    ("<user@example.com.evil.test>", "550", None),
    ("<user@example.com>", "250", "<user@example.com>"),
    ("<USER@EXAMPLE.COM>", "250", "<USER@EXAMPLE.COM>"),
    (" <user@example.com>", "250", "<user@example.com>"),
    ("<@nmap.scanme.org:user@example.com>", "250", "<user@example.com>"),
    ("<@a.test,@b.test:user@example.net>", "250", "<user@example.net>"),
    ('<"john doe"@example.com>', "250", '<"john doe"@example.com>'),
    ("<x@deep.sub.example.org>", "250", "<x@deep.sub.example.org>"),
]


@pytest.mark.parametrize("sender", ["<>", "<antispam@example.com>", "<antispam@[127.0.0.1]>"])
@pytest.mark.parametrize(("rcpt", "code", "forwarded"), RELAY_TABLE)
def test_relay_table(sender: str, rcpt: str, code: str, forwarded: str | None) -> None:
    run = feed([f"EHLO c\r\nMAIL FROM:{sender}\r\nRCPT TO:{rcpt}\r\n".encode()])
    assert codes(run) == ["250", "250", code]
    if code == "550":
        assert b"5.7.1" in run.out
    assert run.forwarded == ([] if forwarded is None else [(run.forwarded[0][0], forwarded)])


def test_bare_postmaster_goes_to_the_first_route_by_default() -> None:
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nhi\r\n.\r\n"])
    assert codes(run) == ["250", "250", "250", "354", "250"]
    assert run.forwarded == [("example.com", "<Postmaster>")]
    assert run.messages == [b"hi\r\n.\r\n"]


def test_bare_postmaster_goes_to_the_route_marked_postmaster() -> None:
    routes = (ROUTES[0], replace(ROUTES[1], postmaster=True), ROUTES[2])
    policy = replace(POLICY, routes=RouteTable(routes))
    run = feed([b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<POSTMASTER>\r\nRCPT TO:<u@example.net>\r\n"], policy)
    assert codes(run) == ["250", "250", "250", "250"]
    assert run.forwarded == [("example.net", "<POSTMASTER>"), ("example.net", "<u@example.net>")]


def test_bare_postmaster_is_a_recipient_only() -> None:
    # MAIL FROM keeps needing a domain (RFC 5321 4.1.1.2: only RCPT has the <Postmaster> form).
    run = feed([b"EHLO c\r\nMAIL FROM:<postmaster>\r\n"])
    assert codes(run) == ["250", "501"]


def test_bare_postmaster_in_a_transaction_for_another_route() -> None:
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u@example.net>\r\nRCPT TO:<postmaster>\r\n"])
    assert codes(run) == ["250", "250", "250", "452"]
    assert run.forwarded == [("example.net", "<u@example.net>")]


def test_backend_refusing_first_recipient_frees_the_route() -> None:
    run = feed(
        [b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.net>\r\n"],
        backend_rcpt=550,
    )
    assert codes(run) == ["250", "250", "550", "550"]
    assert [r for r, _ in run.forwarded] == ["example.com", "example.net"]


def test_line_length_limit() -> None:
    ok = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(ok) == 512
    assert codes(feed([b"EHLO c\r\n", ok])) == ["250", "250"]
    long = b"NOOP " + b"x" * (512 - 6) + b"\r\n"
    assert codes(feed([b"EHLO c\r\n" + long + b"NOOP\r\n"])) == ["250", "500", "250"]
    huge = b"MAIL FROM:<" + b"a" * 5000 + b"@b.c>\r\nNOOP\r\n"
    run = feed([b"EHLO c\r\n"] + [huge[i : i + 700] for i in range(0, len(huge), 700)])
    assert codes(run) == ["250", "500", "250"]


def test_bad_characters_in_commands_count_toward_the_error_limit() -> None:
    # limit 3: two junk lines get 500, the third closes (Postfix's smtpd_hard_error_limit)
    run = feed([b"EHLO c\r\nNOOP\nQUIT\r\nNOOP\x00\r\nNOOP \xff\r\n"])
    assert codes(run) == ["250", "500", "500", "421"]
    assert run.closed


def test_junk_lines_and_unknown_verbs_share_the_error_limit() -> None:
    run = feed([b"EHLO c\r\nFOO\r\n" + b"x" * 600 + b"\r\nNOOP\r\nBAR\r\nNOOP\r\n"])
    assert codes(run) == ["250", "500", "500", "250", "421"]
    assert run.closed


def test_too_many_recipients() -> None:
    rcpts = b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i for i in range(5))
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts])
    assert codes(run) == ["250", "250", "250", "250", "250", "452", "452"]
    assert len(run.forwarded) == 3


def test_unknown_commands_then_close() -> None:
    run = feed([b"EHLO c\r\nFOO\r\nAUTH PLAIN x\r\nBAR\r\nNOOP\r\n"])
    assert codes(run) == ["250", "500", "502", "421"]
    assert run.closed


@pytest.mark.parametrize(
    "line",
    [
        b"XCLIENT ADDR=1.2.3.4\r\n",
        b"xforward ADDR=1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12),
    ],
)
def test_client_identity_commands_refused(line: bytes) -> None:
    for chunks in ([line], [bytes([b]) for b in line]):
        run = feed(chunks)
        assert codes(run) == ["550"]
        assert run.closed
        run = feed([b"EHLO c\r\n", *chunks]) if not line.startswith(b"\r\n") else run
        assert run.closed


def test_size_parameter_and_stream_limit() -> None:
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=100001\r\nMAIL FROM:<a@b.c> FOO=1\r\n"])
    assert codes(run) == ["250", "552", "555"]
    big = (b"x" * 998 + b"\r\n") * 101
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n", big, b".\r\nNOOP\r\n"])
    assert codes(run) == ["250", "250", "250", "354", "552", "250"]
    assert run.messages == []
    assert b"5.3.4" in run.out


def test_starttls_discards_pipelined_commands() -> None:
    policy = replace(POLICY, tls_offered=True)
    env = Envelope(policy)
    run = Run()
    env.receive_data(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<u@example.com>\r\n")
    ev = env.next_event()
    assert isinstance(ev, Respond)
    ev = env.next_event()
    assert isinstance(ev, StartTls)
    assert env.next_event() is PAUSED
    env.receive_data(b"RSET\r\n")  # cleartext arriving before the handshake: dropped
    env.tls_started()
    assert env.state is State.INIT and env.tls_active and env.helo is None
    env.receive_data(b"MAIL FROM:<a@b.c>\r\nEHLO c\r\nSTARTTLS\r\n")
    pump(env, run)
    assert codes(run) == ["503", "250", "503"]
    assert b"STARTTLS" not in run.out
    assert codes(feed([b"EHLO c\r\nSTARTTLS\r\n"])) == ["250", "502"]


def test_starttls_in_transaction_refused() -> None:
    run = feed([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nSTARTTLS\r\n"], replace(POLICY, tls_offered=True))
    assert codes(run) == ["250", "250", "503"]


def test_eof_closes() -> None:
    env = Envelope(POLICY)
    env.receive_data(b"EHLO c\r\nNOOP")
    env.receive_data(b"")
    assert isinstance(env.next_event(), Respond)
    assert isinstance(env.next_event(), ConnectionClosed)


def test_rset_and_helo_reset_the_transaction() -> None:
    run = feed(
        [
            b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u@example.com>\r\nRSET\r\nRCPT TO:<u@example.com>\r\n"
            b"MAIL FROM:<a@b.c>\r\nRCPT TO:<u@example.net>\r\nEHLO d\r\nDATA\r\n"
        ]
    )
    assert codes(run) == ["250", "250", "250", "250", "503", "250", "250", "250", "503"]
