"""Mail paths (RFC 5321 4.1.2) and recipient routing.

The relay question is decided here, on the address exactly as a backend MTA
would read it: a source route (`<@a,@b:user@c>`) is dropped, as RFC 5321 C
and Postfix do; the percent hack (`user%other@ours`), bang paths
(`other!user@ours`) and quoted local parts hiding another address
(`"user@other"@ours`) are refused outright, because some MTA somewhere turns
each of them into mail for `other`; address literals (`user@[192.0.2.1]`)
never match a route. What is forwarded is the canonical `<local@domain>`.

One path has no domain: `<Postmaster>` (RFC 5321 4.1.1.3 and 4.5.1, the local
part case-insensitive), which every SMTP server must accept as a recipient.
It is forwarded as written and goes to the listener's postmaster route
(`RouteTable.postmaster`): the route marked `postmaster = true`, else the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import conf
from proxy.smtp.errors import SmtpError

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]\Z")
# Characters that make some MTA read a local part as a route to another host.
_ROUTING_CHARS = frozenset("@%!")
MAX_PATH = 256  # RFC 5321 4.5.3.1.3
MAX_LOCAL = 64
POSTMASTER = "postmaster"  # RFC 5321 4.5.1: the one recipient that may come without a domain


class AddressError(SmtpError):
    """A syntactically bad path; `.enhanced` is the status code to answer with."""

    def __init__(self, message: str, enhanced: str = "5.1.3") -> None:
        super().__init__(message)
        self.enhanced = enhanced


@dataclass(frozen=True)
class Mailbox:
    local: str  # as received: a dot-string or a quoted string
    domain: str  # as received (case kept); an address literal keeps its brackets; "" only for <Postmaster>

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def dequoted_local(self) -> str:
        if self.local.startswith('"'):
            return re.sub(r"\\(.)", r"\1", self.local[1:-1])
        return self.local

    @property
    def is_bare_postmaster(self) -> bool:
        """RCPT TO:<Postmaster>, with no domain."""
        return not self.domain

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local


@dataclass(frozen=True)
class Path:
    mailbox: Mailbox | None  # None: the null path <>
    source_route: tuple[str, ...] = ()

    def forward(self) -> str:
        """The path as we send it on: canonical, the source route dropped."""
        return "<>" if self.mailbox is None else f"<{self.mailbox}>"


def split_path(arg: str) -> tuple[str, str]:
    """`<path> params` -> (path text including brackets, params text)."""
    arg = arg.lstrip(" ")
    if not arg.startswith("<"):
        raise AddressError("path must be enclosed in <>", "5.5.4")
    quoted = False
    i = 1
    while i < len(arg):
        c = arg[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return arg[: i + 1], arg[i + 1 :]
        i += 1
    raise AddressError("unterminated path", "5.5.4")


def _domain_ok(domain: str) -> bool:
    if _LITERAL.match(domain):
        return True
    if not domain or len(domain) > 255:
        return False
    return all(_LABEL.match(label) for label in domain.split("."))


def parse_mailbox(text: str) -> Mailbox:
    if text.startswith('"'):
        end = _quoted_end(text)
        local, rest = text[:end], text[end:]
        if not _QUOTED.match(local) or not rest.startswith("@"):
            raise AddressError(f"bad mailbox {text!r}")
        domain = rest[1:]
    else:
        local, at, domain = text.rpartition("@")
        if not at:
            raise AddressError(f"no domain in {text!r}")
        if not _DOT_STRING.match(local):
            raise AddressError(f"bad local part in {text!r}")
    if len(local) > MAX_LOCAL + 2:
        raise AddressError("local part too long")
    if not _domain_ok(domain):
        raise AddressError(f"bad domain in {text!r}", "5.1.2")
    return Mailbox(local, domain)


def _quoted_end(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise AddressError("unterminated quoted local part")


def parse_path(text: str, allow_null: bool, allow_postmaster: bool = False) -> Path:
    """`<...>` as written by the client; raises AddressError.

    `allow_postmaster` (recipients only): `<Postmaster>` without a domain is a
    path, its Mailbox's domain empty; any other domainless form is still an error."""
    if len(text) > MAX_PATH + 2:
        raise AddressError("path too long", "5.5.4")
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressError("path must be enclosed in <>", "5.5.4")
    inner = text[1:-1]
    if inner == "":
        if allow_null:
            return Path(None)
        raise AddressError("null path not allowed here", "5.1.3")
    if allow_postmaster and inner.lower() == POSTMASTER:
        return Path(Mailbox(inner, ""))
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        head, colon, inner = inner.partition(":")
        if not colon:
            raise AddressError("bad source route", "5.1.3")
        hops = tuple(h[1:] for h in head.split(","))
        if any(not h.startswith("@") for h in head.split(",")) or not all(_domain_ok(h) for h in hops):
            raise AddressError("bad source route", "5.1.3")
        route = hops
    return Path(parse_mailbox(inner), route)


def relay_concern(mailbox: Mailbox) -> str | None:
    """Why a recipient might be read as mail for another host, or None."""
    if mailbox.is_literal:
        return "address literal"
    local = mailbox.dequoted_local
    for c in sorted(_ROUTING_CHARS):
        if c in local:
            return {"@": "address inside the local part", "%": "percent hack", "!": "bang path"}[c]
    return None


class RouteTable:
    """Recipient domain -> route: exact names first, then the longest `*.suffix`.

    `postmaster` is where `<Postmaster>` without a domain goes: the route marked
    `postmaster = true`, else the first route (None only for an empty table)."""

    def __init__(self, routes: Iterable[conf.SmtpRoute]) -> None:
        self.exact: dict[str, conf.SmtpRoute] = {}
        self.wild: list[tuple[str, conf.SmtpRoute]] = []
        self.postmaster: conf.SmtpRoute | None = None
        for r in routes:
            if self.postmaster is None or (r.postmaster and not self.postmaster.postmaster):
                self.postmaster = r
            d = r.domain.lower()
            if d.startswith("*."):
                self.wild.append((d[1:], r))  # ".example.com"
            else:
                self.exact.setdefault(d, r)
        self.wild.sort(key=lambda item: -len(item[0]))

    def route_for(self, mailbox: Mailbox) -> conf.SmtpRoute | None:
        """The route for a recipient, `<Postmaster>` included."""
        return self.postmaster if mailbox.is_bare_postmaster else self.lookup(mailbox.domain)

    def lookup(self, domain: str) -> conf.SmtpRoute | None:
        d = domain.lower()
        if d.startswith("[") or d.endswith("."):
            return None
        route = self.exact.get(d)
        if route is not None:
            return route
        for suffix, r in self.wild:
            if d.endswith(suffix) and len(d) > len(suffix):
                return r
        return None
