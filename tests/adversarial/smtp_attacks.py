"""The SMTP adversary's tables: relay forms, smuggling ends, hostile commands.

Routes in every test: `example.com` -> pool alpha, `*.example.net` -> pool beta.
Anything else (nmap.scanme.org, evil.test, address literals) has no route, so
a recipient there must be refused before a backend hears of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RelayForm:
    name: str
    arg: str  # what follows "RCPT TO:" on the wire, byte for byte (UTF-8)
    code: int  # the reply code sekisho must give
    forwarded: str | None = None  # accepted: the address the backend records
    pool: str | None = None  # accepted: which backend gets it


def _refused(name: str, arg: str, code: int) -> RelayForm:
    return RelayForm(name, arg, code)


def _routed(name: str, arg: str, forwarded: str, pool: str) -> RelayForm:
    return RelayForm(name, arg, 250, forwarded, pool)


# nmap's smtp-open-relay.nse forms (relaytest / antispam / nmap.scanme.org) first,
# then the other tricks MTAs have fallen for. 550 = relay denied (parsed, no
# route or a routing character in the local part); 501 = not a valid path;
# 500 = not a valid command line at all (8-bit bytes without SMTPUTF8);
# 555 = parameters we do not take.
RELAY_FORMS: tuple[RelayForm, ...] = (
    # -- nmap smtp-open-relay
    _refused("nmap-plain", "<relaytest@nmap.scanme.org>", 550),
    _refused("nmap-percent-literal", "<relaytest%nmap.scanme.org@[127.0.0.1]>", 550),
    _refused("nmap-percent-local", "<relaytest%nmap.scanme.org@example.com>", 550),
    _refused("nmap-quoted-at", '<"relaytest@nmap.scanme.org">', 501),
    _refused("nmap-quoted-percent", '<"relaytest%nmap.scanme.org">', 501),
    _refused("nmap-double-at-literal", "<relaytest@nmap.scanme.org@[127.0.0.1]>", 501),
    _refused("nmap-quoted-at-literal", '<"relaytest@nmap.scanme.org"@[127.0.0.1]>', 550),
    _refused("nmap-quoted-at-local", '<"relaytest@nmap.scanme.org"@example.com>', 550),
    _refused("nmap-double-at-local", "<relaytest@nmap.scanme.org@example.com>", 501),
    _refused("nmap-source-route-literal", "<@[127.0.0.1]:relaytest@nmap.scanme.org>", 550),
    _refused("nmap-source-route-local", "<@example.com:relaytest@nmap.scanme.org>", 550),
    _refused("nmap-bang", "<nmap.scanme.org!relaytest>", 501),
    _refused("nmap-bang-literal", "<nmap.scanme.org!relaytest@[127.0.0.1]>", 550),
    _refused("nmap-bang-local", "<nmap.scanme.org!relaytest@example.com>", 550),
    # -- percent hack and bang paths, nested
    _refused("percent-double", "<user%evil.test%example.com@example.com>", 550),
    _refused("bang-then-percent", "<evil.test!user%example.com@example.com>", 550),
    _refused("bang-chain", "<a.test!b.test!user@x.example.net>", 550),
    # -- quoted local parts hiding an address
    _refused("quoted-escaped-at", '<"user\\@evil.test"@example.com>', 550),
    _refused("quoted-escaped-quote", '<"us\\"er@evil.test"@example.com>', 550),
    _refused("quoted-bang", '<"evil.test!user"@example.com>', 550),
    _refused("quoted-unterminated", '<"user@example.com>', 501),
    # -- double @ and nesting
    _refused("at-after-local", "<user@example.com@evil.test>", 501),
    _refused("angle-nested", "<<user@example.com>>", 501),
    _refused("unterminated", "<user@example.com", 501),
    # -- address literals and raw IPs
    _refused("literal-v4", "<user@[127.0.0.1]>", 550),
    _refused("literal-v6", "<user@[IPv6:::1]>", 550),
    _refused("bare-ip", "<user@127.0.0.1>", 550),
    _refused("postmaster-literal", "<postmaster@[127.0.0.1]>", 550),
    # -- domains that look like ours
    _refused("trailing-dot", "<user@example.com.>", 501),
    _refused("leading-dot", "<user@.example.net>", 501),
    _refused("double-dot", "<user@a..example.net>", 501),
    _refused("suffix-not-label", "<user@evilexample.net>", 550),
    _refused("apex-of-wildcard", "<user@example.net>", 550),
    _refused("ours-as-prefix", "<user@example.com.evil.test>", 550),
    _refused("subdomain-of-exact", "<user@evil.example.com>", 550),
    _refused("our-hostname", "<user@mx.example.com>", 550),
    _refused("localhost", "<user@localhost>", 550),
    # -- unicode / IDN (no SMTPUTF8 offered)
    _refused("idn-utf8-domain", "<user@exämple.com>", 500),
    _refused("utf8-local", "<üser@example.com>", 500),
    _refused("idn-punycode-unrouted", "<user@xn--exmple-cua.com>", 550),
    # -- empty, brackets, spaces, comments, junk
    _refused("null-path", "<>", 501),
    _refused("no-brackets-local", "user@example.com", 501),
    _refused("no-brackets-foreign", "relaytest@nmap.scanme.org", 501),
    _refused("postmaster-quoted-no-domain", '<"postmaster">', 501),
    _refused("space-in-local", "<user @example.com>", 501),
    _refused("comment-in-local", "<user(comment)@example.com>", 501),
    _refused("comment-after-domain", "<user@example.com(comment)>", 501),
    _refused("comment-before-path", "(comment)<user@example.com>", 501),
    _refused("tab-parameter", "<user@example.com>\t", 555),
    _refused("notify-parameter", "<user@example.com> NOTIFY=NEVER", 555),
    _refused("empty", "", 501),
    # -- routed: accepted only because the domain is ours, forwarded canonically
    _routed("plain-local", "<user@example.com>", "user@example.com", "alpha"),
    _routed("uppercase-domain", "<user@EXAMPLE.COM>", "user@EXAMPLE.COM", "alpha"),
    _routed("mixed-case-wildcard", "<User@Sub.Example.NET>", "User@Sub.Example.NET", "beta"),
    _routed("source-route-dropped", "<@nmap.scanme.org:routed@example.com>", "routed@example.com", "alpha"),
    _routed(
        "source-route-multi-dropped",
        "<@a.test,@b.test:routed@x.example.net>",
        "routed@x.example.net",
        "beta",
    ),
    _routed("space-before-path", " <spaced@example.com>", "spaced@example.com", "alpha"),
    _routed("space-after-path", "<trail@example.com> ", "trail@example.com", "alpha"),
    _routed("quoted-plain", '<"quoted"@example.com>', '"quoted"@example.com', "alpha"),
    # RFC 5321 4.5.1: <Postmaster> needs no domain; it goes to the first route unless one is marked.
    _routed("postmaster-no-domain", "<Postmaster>", "Postmaster", "alpha"),
    _routed(
        "dotted-local", "<first.last+tag@deep.sub.example.net>", "first.last+tag@deep.sub.example.net", "beta"
    ),
)

# nmap's senders, plus two that an MTA might treat as "trusted" or "local".
SENDERS: tuple[str, ...] = (
    "",
    "antispam@example.com",
    "antispam@[127.0.0.1]",
    "relaytest%nmap.scanme.org@example.com",
)


# hannob/smtpsmug's malformed ends of data (and a few more of the same family).
SMUGGLE_ENDS: dict[str, bytes] = {
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
    "lfcrlf-crlf": b"\n.\r\n\r\n",
    "crlf-lf-crlf": b"\r\n\n.\r\n",
    "space-dot": b"\r\n .\r\n",
    "dot-space": b"\r\n. \r\n",
    "crcrlf-lf": b"\r\r\n.\n",
}
# Ends the reject mode lets through: nothing bare in them (the NUL or space makes
# the "." line an ordinary body line, which every MTA reads the same way).
CLEAN_ENDS = frozenset({"nullbefore", "nullafter", "space-dot", "dot-space"})

SMUGGLED_SENDER = "mallory@evil.test"


def smuggle_payload(name: str, end: bytes, victim: str) -> bytes:
    """A message ending in `end`, a whole second transaction, and then the real end."""
    return (
        f"Subject: carrier {name}\r\n\r\nThis is a test mail with a {name} ending.".encode()
        + end
        + f"MAIL FROM:<{SMUGGLED_SENDER}>\r\nRCPT TO:<{victim}>\r\nDATA\r\n".encode()
        + f"Subject: SMUGGLED {name}\r\n\r\nsmuggled\r\n".encode()
        + b"\r\n.\r\n"
    )


@dataclass(frozen=True)
class Hostile:
    name: str
    lines: tuple[bytes, ...]  # sent in one write, after the greeting
    codes: tuple[int, ...]  # the reply code for each line, in order
    closes: bool = False  # sekisho closes after the last reply


HOSTILE: tuple[Hostile, ...] = (
    Hostile("unknown-verb", (b"FOO bar",), (500,)),
    Hostile("empty-line", (b"", b"NOOP"), (500, 250)),
    Hostile("blank-line-after-ehlo", (b"EHLO c", b"", b"NOOP"), (250, 500, 250)),
    Hostile("spaces-only", (b"   ",), (500,)),
    Hostile("auth-not-offered", (b"EHLO c", b"AUTH PLAIN AGFkbWluAGFkbWlu"), (250, 502)),
    Hostile("auth-login", (b"EHLO c", b"AUTH LOGIN"), (250, 502)),
    Hostile("bdat-not-offered", (b"EHLO c", b"MAIL FROM:<a@b.test>", b"BDAT 5 LAST"), (250, 250, 502)),
    Hostile("vrfy", (b"VRFY root",), (252,)),
    Hostile("vrfy-ours", (b"VRFY user@example.com",), (252,)),
    Hostile("expn", (b"EXPN staff",), (502,)),
    Hostile("etrn", (b"EHLO c", b"ETRN example.com"), (250, 502)),
    Hostile("turn", (b"TURN",), (502,)),
    Hostile("helo-empty", (b"HELO",), (501,)),
    Hostile("ehlo-empty", (b"EHLO ",), (501,)),
    Hostile("helo-control-char", (b"HELO a\x01b",), (501,)),
    Hostile("helo-too-long", (b"EHLO " + b"a" * 300,), (501,)),
    Hostile("helo-junk-then-mail", (b"HELO \x7f", b"MAIL FROM:<a@b.test>"), (501, 503)),
    Hostile("helo-8bit", ("HELO ünï".encode(),), (500,)),
    Hostile("helo-extra-words", (b"EHLO a b c",), (250,)),
    Hostile("mail-before-helo", (b"MAIL FROM:<a@b.test>",), (503,)),
    Hostile("rcpt-before-helo", (b"RCPT TO:<x@example.com>",), (503,)),
    Hostile("rcpt-before-mail", (b"EHLO c", b"RCPT TO:<x@example.com>"), (250, 503)),
    Hostile("data-before-mail", (b"EHLO c", b"DATA"), (250, 503)),
    Hostile("data-before-rcpt", (b"EHLO c", b"MAIL FROM:<a@b.test>", b"DATA"), (250, 250, 554)),
    Hostile("data-with-arg", (b"EHLO c", b"MAIL FROM:<a@b.test>", b"DATA now"), (250, 250, 501)),
    Hostile("nested-mail", (b"EHLO c", b"MAIL FROM:<a@b.test>", b"MAIL FROM:<c@d.test>"), (250, 250, 503)),
    Hostile("mail-no-colon", (b"EHLO c", b"MAIL FROM <a@b.test>"), (250, 501)),
    Hostile("mail-size-huge", (b"EHLO c", b"MAIL FROM:<a@b.test> SIZE=99999999999"), (250, 552)),
    Hostile("mail-size-junk", (b"EHLO c", b"MAIL FROM:<a@b.test> SIZE=-1"), (250, 501)),
    Hostile("mail-binarymime", (b"EHLO c", b"MAIL FROM:<a@b.test> BODY=BINARYMIME"), (250, 501)),
    Hostile("mail-smtputf8", (b"EHLO c", b"MAIL FROM:<a@b.test> SMTPUTF8"), (250, 555)),
    Hostile("mail-auth-param", (b"EHLO c", b"MAIL FROM:<a@b.test> AUTH=<>"), (250, 555)),
    Hostile("nul-alone", (b"\x00",), (500,)),
    Hostile("nul-in-verb", (b"NO\x00OP",), (500,)),
    Hostile(
        "nul-then-command",
        (b"EHLO c", b"MAIL FROM:<a@b.test>\x00RCPT TO:<x@example.com>", b"RCPT TO:<x@example.com>"),
        (250, 500, 503),
    ),
    Hostile("bare-lf-command", (b"EHLO c\nMAIL FROM:<a@b.test>", b"MAIL FROM:<a@b.test>"), (500, 503)),
    Hostile("bare-cr-command", (b"EHLO c\rMAIL FROM:<a@b.test>", b"NOOP"), (500, 250)),
    Hostile("starttls-not-offered", (b"EHLO c", b"STARTTLS", b"NOOP"), (250, 502, 250)),
    Hostile("xclient", (b"EHLO c", b"XCLIENT ADDR=10.0.0.1"), (250, 550), closes=True),
    Hostile("xforward", (b"EHLO c", b"XFORWARD ADDR=10.0.0.1"), (250, 550), closes=True),
    Hostile("proxy-v1", (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2",), (550,), closes=True),
    Hostile("quit", (b"QUIT", b"NOOP"), (221,), closes=True),
    Hostile("lowercase-verbs", (b"ehlo c", b"mail from:<a@b.test>", b"rset"), (250, 250, 250)),
)
