"""Header policy: strict pre-checks where h11 is lax, hop-by-hop removal, client address headers.

Pure functions over bytes and h11 header lists; no I/O. h11 stays the judge of
what a request is: these checks only add refusals, never acceptances.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from proxy.http.response import request_head

Header = tuple[bytes, bytes]

# Hop-by-hop (RFC 9110 7.6.1) plus the legacy Proxy-Connection.
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade")
)
# A `Connection:` option can never remove message framing or the Host.
PROTECTED = frozenset((b"host", b"content-length", b"transfer-encoding"))
FORWARDED_FAMILY = frozenset(
    (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded")
)

_CL_RAW = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Control characters other than HTAB (CR and LF are judged as line endings; NUL apart).
_CTL = re.compile(rb"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Only HTTP/1.0 and HTTP/1.1 requests are proxied (h11 parses any "HTTP/d.d").
_VERSION = re.compile(rb"[^\r\n]* HTTP/1\.[01]\r\n")
# Names that CGI-style backends (HTTP_TRANSFER_ENCODING) read as framing headers.
_FRAMING_ALIAS = re.compile(rb"\r\n(?:transfer_encoding|content_length)[ \t]*:", re.IGNORECASE)
_HOST_RAW = re.compile(rb"\r\nhost[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.IGNORECASE)
# RFC 3986 host (IP-literal or reg-name) with an optional port; empty is allowed (RFC 9112 3.2).
_HOST_VALUE = re.compile(rb"(?:\[[0-9A-Fa-f:.vV]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def head_end(buf: bytes | bytearray) -> int:
    """Offset just past the CRLFCRLF ending a head; -1 if incomplete; -2 if it ends with a bare LF."""
    i = buf.find(b"\r\n\r\n")
    if i >= 0:
        j = buf.find(b"\n\n", 0, i)
        return -2 if j >= 0 else i + 4
    if b"\n\n" in buf or b"\n\r\n" in buf:
        return -2
    return -1


# What a well-formed head keeps after `bytes.translate(None, _PLAIN)`: only its CRLFs.
_PLAIN = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
_VERSIONS = (b" HTTP/1.1", b" HTTP/1.0")
# obs-fold, an underscore-spelled framing name, a Host value that is not a host: one search.
_SUSPECT = re.compile(
    rb"\r\n(?:[ \t]|(?:transfer_encoding|content_length)[ \t]*:|host[ \t]*+:[ \t]*+(?!"
    + _HOST_VALUE.pattern
    + rb"[ \t]*\r\n))",
    re.IGNORECASE,
)


def precheck_head(head: bytes | bytearray) -> str | None:
    """Refusals h11 does not make on a complete head (ending with CRLFCRLF); None if fine.

    The common case is three C-speed passes: no byte but CRLF pairs survives deleting
    the printable ones (no NUL, control character, bare CR or LF), the request line ends
    with HTTP/1.0 or 1.1, and one search finds nothing suspect. Anything else is judged
    by `_precheck_reason`, which names the problem.
    """
    if (
        len(head.translate(None, _PLAIN)) == 2 * head.count(b"\r\n")
        and head.endswith(_VERSIONS, 0, head.find(b"\r\n"))
        and _SUSPECT.search(head) is None
    ):
        return None
    return _precheck_reason(head)


def _precheck_reason(head: bytes | bytearray) -> str | None:
    if b"\x00" in head:
        return "NUL in request head"
    lf = head.count(b"\n")
    if lf != head.count(b"\r\n") or head.count(b"\r") != lf:
        return "bare CR or LF in request head"
    if b"\n " in head or b"\n\t" in head:
        return "obsolete line folding"
    if _CTL.search(head) is not None:
        return "control character in request head"
    if _VERSION.match(head) is None:
        return "unsupported HTTP version"
    if _FRAMING_ALIAS.search(head) is not None:
        return "framing header spelled with an underscore"
    for value in _HOST_RAW.findall(head):
        if _HOST_VALUE.fullmatch(value) is None:
            return "malformed Host"
    return None


def check_content_length(head: bytes | bytearray) -> str | None:
    """At most one Content-Length header whose value is only digits (h11 merges "5, 5").

    A head without Content-Length passes (the response path calls this on any head
    that mentions "ontent-", Content-Type included). A list ("5, 5") counts as a
    duplicate: it is one in disguise, and h11 would quietly merge it.
    """
    values = _CL_RAW.findall(head)
    if not values:
        return None
    if len(values) != 1 or b"," in values[0]:
        return "duplicate Content-Length"
    if _DIGITS.fullmatch(values[0].rstrip(b" \t")) is None:
        return "malformed Content-Length"
    return None


# Request fields the one-pass path does not copy as they are ("close": `Connection: close`
# would remove a field of that name, which the general path does).
_SPECIAL = HOP_BY_HOP | FORWARDED_FAMILY | {b"host", b"close"}


def connection_tokens(headers: Iterable[Header]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip() for t in value.lower().split(b","))
    tokens.discard(b"")
    return tokens


def _strip(headers: Iterable[Header], drop_family: bool) -> tuple[list[Header], set[bytes]]:
    """Headers minus hop-by-hop and the ones `Connection` names; returns (kept, connection tokens)."""
    items = list(headers)
    tokens: set[bytes] = set()
    for name, value in items:
        if name == b"connection":
            tokens.update(t.strip() for t in value.lower().split(b","))
    drop = HOP_BY_HOP | (tokens - PROTECTED) if tokens else HOP_BY_HOP
    if drop_family:
        drop = drop | FORWARDED_FAMILY
    return [h for h in items if h[0] not in drop], tokens


def _forwarded_node(peer: str, proto: bytes, host: bytes | None) -> bytes:
    """One RFC 7239 element for this hop."""
    node = b"for=" + _forwarded_for(peer) + b";proto=" + proto
    return node + b";host=" + _quote(host) if host else node


def _forwarded_for(ip: str) -> bytes:
    return (f'"[{ip}]"' if ":" in ip else ip).encode()


def _quote(value: bytes) -> bytes:
    if re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class RequestPolicy:
    """What one listener does to request headers on their way to a backend."""

    def __init__(self, forwarded_headers: Iterable[str]) -> None:
        names = {h.lower() for h in forwarded_headers}
        self.xff = "x-forwarded-for" in names
        self.xfp = "x-forwarded-proto" in names
        self.xfh = "x-forwarded-host" in names
        self.real_ip = "x-real-ip" in names
        self.forwarded = "forwarded" in names

    def apply(
        self,
        headers: Sequence[Header],
        *,
        peer: str,
        proto: bytes,
        trusted: bool,
        chunked: bool,
        upgrade: bytes | None = None,
    ) -> list[Header]:
        """The header list for the backend request.

        From an untrusted peer every X-Forwarded-*/X-Real-IP/Forwarded header is
        dropped, so a client cannot forge its address; the configured ones are
        then set from what this connection saw. From a trusted proxy, the
        address chain is extended and the others are kept when present.
        """
        out, _ = _strip(headers, drop_family=not trusted)
        if not any(name == b"host" for name, _ in out):
            # An HTTP/1.0 request without Host becomes HTTP/1.1, which must carry one:
            # empty when the target has no authority (RFC 9112 3.2).
            out.insert(0, (b"host", b""))
        te_trailers = False
        for name, value in headers:
            if name == b"te" and b"trailers" in value.lower():
                te_trailers = True
        if chunked:
            out.append((b"transfer-encoding", b"chunked"))
        if te_trailers:
            out.append((b"te", b"trailers"))
        if upgrade is not None:
            out.append((b"connection", b"upgrade"))
            out.append((b"upgrade", upgrade))
        ip = peer.encode()
        if self.xff or self.xfp or self.xfh or self.real_ip or self.forwarded:
            existing: dict[bytes, bytes] = {}
            host = b""
            for name, value in out:
                if name == b"host":
                    host = value
                elif trusted and name in FORWARDED_FAMILY:
                    prev = existing.get(name)
                    existing[name] = value if prev is None else prev + b", " + value
            if trusted and existing:
                out = [h for h in out if h[0] not in FORWARDED_FAMILY or not self._sets(h[0])]
            if self.xff:
                prev = existing.get(b"x-forwarded-for")
                out.append((b"x-forwarded-for", ip if prev is None else prev + b", " + ip))
            if self.xfp:
                out.append((b"x-forwarded-proto", existing.get(b"x-forwarded-proto", proto)))
            if self.xfh and (host or b"x-forwarded-host" in existing):
                out.append((b"x-forwarded-host", existing.get(b"x-forwarded-host", host)))
            if self.real_ip:
                out.append((b"x-real-ip", existing.get(b"x-real-ip", ip)))
            if self.forwarded:
                node = _forwarded_node(peer, proto, host)
                prev = existing.get(b"forwarded")
                out.append((b"forwarded", node if prev is None else prev + b", " + node))
        return out

    def request_head(
        self,
        method: bytes,
        target: bytes,
        items: Sequence[tuple[bytes, bytes, bytes]],
        *,
        peer: str,
        proto: bytes,
        trusted: bool,
        chunked: bool,
        upgrade: bytes | None = None,
    ) -> bytes:
        """The backend request head: `request_head(method, target, self.apply(...))` in one pass.

        `items` are h11's (raw name, lower-case name, value) triples. A trusted peer, or a
        `Connection` header naming other fields, takes the general path through `apply`.
        """
        if trusted:
            return self._general(method, target, items, peer, proto, trusted, chunked, upgrade)
        host: list[bytes] = []
        lines: list[bytes] = []
        te_trailers = False
        host_value = b""
        for _, name, value in items:
            if name not in _SPECIAL:
                lines.append(name + b": " + value + b"\r\n")
            elif name == b"host":
                host.append(b"host: " + value + b"\r\n")
                host_value = value
            elif name == b"connection":
                for raw_token in value.lower().split(b","):
                    token = raw_token.strip()
                    if token and token != b"close" and token not in HOP_BY_HOP and token not in PROTECTED:
                        return self._general(method, target, items, peer, proto, trusted, chunked, upgrade)
            elif name == b"te":
                if b"trailers" in value.lower():
                    te_trailers = True
            elif name == b"close":
                return self._general(method, target, items, peer, proto, trusted, chunked, upgrade)
        if not host:
            host.append(b"host: \r\n")
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        if te_trailers:
            lines.append(b"te: trailers\r\n")
        if upgrade is not None:
            lines.append(b"connection: upgrade\r\n")
            lines.append(b"upgrade: " + upgrade + b"\r\n")
        before, after = self._address_lines(peer, proto)
        if before:
            lines.append(before)
        if self.xfh and host_value:
            lines.append(b"x-forwarded-host: " + host_value + b"\r\n")
        if after:
            lines.append(after)
        if self.forwarded:
            lines.append(b"forwarded: " + _forwarded_node(peer, proto, host_value) + b"\r\n")
        return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method, target, b"".join(host), b"".join(lines))

    def _address_lines(self, peer: str, proto: bytes) -> tuple[bytes, bytes]:
        """The address lines an untrusted peer gets that do not depend on the request."""
        ip = peer.encode()
        before = b""
        if self.xff:
            before += b"x-forwarded-for: " + ip + b"\r\n"
        if self.xfp:
            before += b"x-forwarded-proto: " + proto + b"\r\n"
        after = b"x-real-ip: " + ip + b"\r\n" if self.real_ip else b""
        return before, after

    def _general(  # noqa: PLR0917
        self,
        method: bytes,
        target: bytes,
        items: Sequence[tuple[bytes, bytes, bytes]],
        peer: str,
        proto: bytes,
        trusted: bool,
        chunked: bool,
        upgrade: bytes | None,
    ) -> bytes:
        headers = self.apply(
            [(n, v) for _, n, v in items],
            peer=peer,
            proto=proto,
            trusted=trusted,
            chunked=chunked,
            upgrade=upgrade,
        )
        return request_head(method, target, headers)

    def _sets(self, name: bytes) -> bool:
        return {
            b"x-forwarded-for": self.xff,
            b"x-forwarded-proto": self.xfp,
            b"x-forwarded-host": self.xfh,
            b"x-real-ip": self.real_ip,
            b"forwarded": self.forwarded,
        }[name]


def response_headers(headers: Sequence[Header], upgrade: bool = False) -> list[Header]:
    """Response headers for the client: hop-by-hop removed (kept for a 101 switch)."""
    if upgrade:
        out, _ = _strip(
            ((n, v) for n, v in headers if n not in (b"connection", b"upgrade")), drop_family=False
        )
        for name, value in headers:
            if name in (b"connection", b"upgrade"):
                out.append((name, value))
        return out
    out, _ = _strip(headers, drop_family=False)
    return out
