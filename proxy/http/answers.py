"""Answers sekisho writes itself: error statuses, fixed-status and redirect routes.

Pure functions over bytes. Every generated status line carries its reason phrase
(RFC 9110 section 15): "HTTP/1.1 301 Moved Permanently", never "HTTP/1.1 301 ".
"""

from __future__ import annotations

from http import HTTPStatus

from proxy.http.routing import Route

Header = tuple[bytes, bytes]

REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
# RFC 9110's names where Python still has the RFC 7231 ones.
REASONS |= {
    413: b"Content Too Large",
    416: b"Range Not Satisfiable",
    418: b"I'm a teapot",
    422: b"Unprocessable Content",
}
_BY_CLASS = {
    1: b"Informational",
    2: b"Success",
    3: b"Redirection",
    4: b"Client Error",
    5: b"Server Error",
}
_TEXT = b"content-type: text/plain; charset=utf-8\r\n"


def reason(status: int) -> bytes:
    """The reason phrase for a status we generate: the registered one, else its class's."""
    phrase = REASONS.get(status)
    if phrase is None:
        phrase = _BY_CLASS.get(status // 100, b"Unknown")
    return phrase


def head_bytes(status: int, phrase: bytes, headers: list[Header]) -> bytes:
    """A response head for the client; every name and value was validated on its way in."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    for name, value in headers:
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def plain(status: int, body: bytes | None = None, extra: bytes = b"", close: bool = True) -> bytes:
    """A complete text/plain answer (an error, as a rule: it closes the connection)."""
    phrase = reason(status)
    if body is None:
        body = phrase + b"\n"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, phrase),
            _TEXT,
            b"content-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


def route_answer(route: Route, target: bytes, with_body: bool, close: bool) -> bytes:
    """The answer of a fixed-status or redirect route (`with_body`: not a HEAD request)."""
    status = route.status
    phrase = reason(status)
    if route.kind == "redirect":
        body = b""
        fields = b"location: %s\r\ncontent-length: 0\r\n" % route.location(target).encode("latin-1")
    else:
        body = phrase + b"\n"
        fields = _TEXT + b"content-length: %d\r\n" % len(body)
    return b"HTTP/1.1 %d %s\r\n%s%s\r\n%s" % (
        status,
        phrase,
        fields,
        b"connection: close\r\n" if close else b"",
        body if with_body else b"",
    )
