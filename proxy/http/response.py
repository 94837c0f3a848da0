"""A strict reader of backend responses, and the request head we write to backends.

This is the backend side only: h11 stays the judge of what a *client* request
is. Towards backends we speak a narrow, strict dialect in h11's shape (feed
bytes with `receive_data`, pull events with `next_event`), refusing
everything h11 refuses and more: bare LF or CR anywhere in the framing,
obs-fold, any Content-Length that is not exactly one header of digits,
Content-Length with Transfer-Encoding, a Transfer-Encoding other than
`chunked`, chunk-size lines that are not hex digits with a short extension.
A refusal is a `ResponseError`; the proxy answers the client 502 (or aborts
it when the response had already started).

Events: a `Head` (1xx or final), `bytes` (body data, never empty), `END`, or
`NEED_DATA`. After END the reader pauses (NEED_DATA) until `start()` begins
the next exchange; bytes the backend sends after a complete response make
the connection unreusable (`reusable` is False) rather than being read as
the next response.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

Header = tuple[bytes, bytes]

MAX_HEAD = 16384  # h11's default for a whole response head
MAX_CHUNK_LINE = 1024  # chunk size plus extensions
MAX_TRAILERS = 16384

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A field line: `token ":" OWS value OWS CRLF`. Any run of VCHAR, obs-text, SP and HTAB
# splits into OWS value OWS, so the whole block is checked by this simpler pattern.
_FIELDS = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\r\n")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?\r\n")

# framing of a response body
NO_BODY: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2
CLOSE: Final = 3  # delimited by the backend closing the connection

# reader states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _END, _DONE, _SWITCHED = range(
    10
)


class ResponseError(Exception):
    """The backend's bytes are not a response we will relay."""


class MissingHost(ValueError):
    """An HTTP/1.0 request without Host cannot be forwarded as HTTP/1.1."""


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


END: Final = _Sentinel("END")
NEED_DATA: Final = _Sentinel("NEED_DATA")


# Response fields a client never sees (hop-by-hop, RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade")
)
# `Connection` options that name no other field to remove (hop-by-hop or protected ones).
_PLAIN_TOKENS = _HOP_BY_HOP | {b"close", b"content-length", b"host"}
# One field line `token ":" OWS value OWS CRLF` (from its LF before, to its CR): the
# (name, value) pairs, for `Head.headers` and for making a field block canonical.
_LINES = re.compile(
    rb"\n(" + _TOKEN + rb"):[ \t]*+((?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[ \t]*\r(?=\n)"
)
# A whole head whose field lines are already as a client gets them: `token ": " value CRLF`,
# one SP after the colon (even before an empty value) and no OWS after the value. What
# nginx and the common backends send; any other head is judged by `_STATUS` and `_FIELDS`
# and made canonical by `_LINES`, so this one match validates the common head.
_CANONICAL_HEAD = re.compile(
    _STATUS.pattern
    + rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]++: (?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*+(?<![ \t]))?\r\n)*+"
)
# The fields parse_head reads, found in the lower-cased head by one search: the framing and
# hop-by-hop ones (RFC 9110 7.6.1), and `close` (which `Connection: close` would remove). A
# match runs from the line's LF to its CR: cut out, it leaves the lines around it whole.
_NAMED = re.compile(
    rb"\n(content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|upgrade|close)"
    rb":([^\r]*+)\r"
)


class Head:
    """A response head: status line and fields, and how the body is framed.

    `fields` are the field lines a client may see, each `name: value` CRLF: names as the
    backend sent them (RFC 9110 5.1: case-insensitive; nginx relays them so too), values
    without OWS; the hop-by-hop ones (RFC 9110 7.6.1) left out, and Content-Length on a
    204. None when `Connection` names other fields to remove (then
    `proxy.http.headers.response_headers` decides, over `headers`).
    """

    __slots__ = (
        "_headers",
        "chunked",
        "close",
        "content_length",
        "fields",
        "framing",
        "http11",
        "length",
        "raw",
        "reason",
        "start",
        "status",
    )

    def __init__(  # noqa: PLR0917
        self,
        status: int,
        reason: bytes,
        http11: bool,
        raw: bytes,
        start: int,
        chunked: bool,
        content_length: bool,
        length: int,
        close: bool,
        fields: bytes | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.http11 = http11
        self.raw = raw  # the head as read (OWS made canonical), without the blank line
        self.start = start  # where its field lines begin
        self._headers: list[Header] | None = None
        self.chunked = chunked  # Transfer-Encoding: chunked was sent
        self.content_length = content_length  # a Content-Length was sent
        self.length = length
        self.close = close  # the backend will not keep the connection (HTTP/1.0 or Connection: close)
        self.fields = fields
        self.framing = NO_BODY

    @property
    def headers(self) -> list[Header]:
        """(lower-case name, value) pairs, in order."""
        headers = self._headers
        if headers is None:
            headers = self._headers = [(n.lower(), v) for n, v in _LINES.findall(self.raw, self.start - 1)]
        return headers


_PARSED_MAX = 256  # response heads remembered (a backend's Date makes a new one a second)
_parsed: dict[bytes, tuple[int, bytes, bool, bytes, int, bool, bool, int, bool, bytes | None]] = {}


def parse_head(head: bytes) -> Head:
    """A complete head (status line through the blank line's CRLF excluded) -> Head, or ResponseError.

    A backend repeats its heads byte for byte (nginx's change with `Date`, once a
    second), so what a head parses to is remembered, and each call gets a new `Head`
    (the reader sets its framing): a dict lookup instead of the passes below.
    Only heads that parse are remembered; a refused one is judged every time.
    """
    args = _parsed.get(head)
    if args is None:
        args = _parse_head(head)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[head] = args
    return Head(*args)


def _parse_head(head: bytes) -> tuple[int, bytes, bool, bytes, int, bool, bool, int, bool, bytes | None]:
    """parse_head's work: the arguments of the Head, or ResponseError.

    A few C passes over the head, whatever its number of fields: one match validates it
    (`_CANONICAL_HEAD`), one search over a lower-cased copy finds the few fields that
    matter (`_NAMED`), and the client's field block is the backend's with the hop-by-hop
    lines cut out at those matches. Names keep the backend's case.
    """
    m = _CANONICAL_HEAD.fullmatch(head)
    if m is None:
        m = _STATUS.match(head)
        if m is None:
            line = head[: head.find(b"\r\n")][:60]
            raise ResponseError(f"bad status line {line!r}")
        # Every line a well-formed field line: no bare CR or LF, no obs-fold, no NUL, a colon.
        if _FIELDS.fullmatch(head, m.end()) is None:
            raise ResponseError("malformed header field (bare CR/LF, obs-fold, NUL, missing colon)")
        head = _LINES.sub(rb"\n\1: \2\r", head)  # OWS as the client gets it
        m = _CANONICAL_HEAD.fullmatch(head)
        if m is None:  # pragma: no cover - `_LINES` makes every valid block canonical
            raise ResponseError("malformed header field")
    version, code, reason = m.groups()
    start = head.index(b"\n") + 1
    status = int(code)
    cl: bytes | None = None  # values as in the lower-cased canonical head: one SP first
    te: bytes | None = None
    close = False
    foreign = False  # `Connection` names a field to remove
    named_close = False  # a field named "close"
    cuts: list[tuple[int, int]] = []  # the lines the client does not get (`_NAMED` spans)
    for f in _NAMED.finditer(head.lower(), start - 1):
        name, value = f.groups()
        if name == b"content-length":
            if cl is not None:
                raise ResponseError("duplicate Content-Length")
            cl = value
            if status == 204:  # RFC 9110 8.6: never a Content-Length on a 204
                cuts.append(f.span())
        elif name == b"connection":
            cuts.append(f.span())
            if value != b" keep-alive":
                for raw_token in value.split(b","):
                    token = raw_token.strip()
                    if token == b"close":
                        close = True
                    elif token and token not in _PLAIN_TOKENS:
                        foreign = True
        elif name == b"transfer-encoding":
            if te is not None:
                raise ResponseError("duplicate Transfer-Encoding")
            te = value
            cuts.append(f.span())
        elif name == b"close":
            named_close = True
        else:
            cuts.append(f.span())
    http11 = version == b"1"
    length = 0
    if te is not None:
        if cl is not None:
            raise ResponseError("both Content-Length and Transfer-Encoding")
        if te != b" chunked":
            raise ResponseError("unsupported Transfer-Encoding")
        if not http11:
            raise ResponseError("Transfer-Encoding in an HTTP/1.0 response")
    elif cl is not None:
        if _DIGITS.fullmatch(cl, 1) is None:
            raise ResponseError("malformed Content-Length")
        length = int(cl)
    fields: bytes | None
    if foreign or (close and named_close):  # `Connection: close` also removes a field "close"
        fields = None
    elif not cuts:
        fields = head[start:]
    elif len(cuts) == 1:  # (a cut runs from the LF before the line to its CR)
        i, j = cuts[0]
        fields = head[start : i + 1] + head[j + 1 :]
    else:
        pieces = []
        i = start
        for cut, j in cuts:
            pieces.append(head[i : cut + 1])
            i = j + 1
        pieces.append(head[i:])
        fields = b"".join(pieces)
    return (
        status,
        reason or b"",
        http11,
        head,
        start,
        te is not None,
        cl is not None,
        length,
        close or not http11,
        fields,
    )


class ResponseReader:
    """One backend connection's responses, one exchange at a time."""

    __slots__ = ("_buf", "_left", "_state", "closed", "extra", "head_only", "keep", "max_head", "upgrade")

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self._buf = b""
        self._state = _DONE
        self._left = 0
        self.head_only = False
        self.upgrade = False
        self.closed = False  # the backend sent EOF
        self.extra = False  # bytes arrived after a complete response
        self.keep = True  # the last response let the connection live (HTTP/1.1, no `close`)

    def start(self, method: bytes, upgrade: bool = False) -> None:
        """Expect the response to a request with this method (HEAD: no body)."""
        self._state = _HEAD
        self.head_only = method == b"HEAD"
        self.upgrade = upgrade
        self.keep = True

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def reusable(self) -> bool:
        """A complete response and nothing after it: the connection may carry another request."""
        return self._state == _DONE and self.keep and not self.extra and not self.closed and not self._buf

    @property
    def trailing(self) -> bytes:
        """Bytes received past the last event (after a 101: the first tunnelled bytes)."""
        return self._buf

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.closed = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    def next_event(self) -> Head | bytes | _Sentinel:
        state = self._state
        buf = self._buf
        if state == _BODY:
            if not buf:
                if self.closed:
                    raise ResponseError("backend closed the connection mid-body")
                return NEED_DATA
            left = self._left
            if len(buf) < left:
                self._left = left - len(buf)
                self._buf = b""
                return buf
            self._buf = buf[left:]
            self._state = _END
            return buf[:left] if left < len(buf) else buf
        if state == _HEAD:
            return self._head(buf)
        if state == _END:
            self._state = _DONE
            self.extra = bool(buf)
            return END
        if state in {_DONE, _SWITCHED}:
            if buf and state == _DONE:
                self.extra = True
            return NEED_DATA
        if state == _UNTIL_CLOSE:
            if buf:
                self._buf = b""
                return buf
            if self.closed:
                self._state = _DONE
                return END
            return NEED_DATA
        return self._chunked(buf)

    def _head(self, buf: bytes) -> Head | _Sentinel:
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            if buf[:7] != b"HTTP/1."[: len(buf)]:
                raise ResponseError("not an HTTP/1 response")
            if len(buf) > self.max_head:
                raise ResponseError("response head too large")
            if b"\n\n" in buf or b"\n\r\n" in buf:
                raise ResponseError("bare LF in response head")
            if self.closed:
                raise ResponseError(
                    "backend closed the connection" if not buf else "incomplete response head"
                )
            return NEED_DATA
        if i + 4 > self.max_head:
            raise ResponseError("response head too large")
        head = parse_head(buf[: i + 2])
        self._buf = buf[i + 4 :]
        status = head.status
        if status < 200:
            if status == 101:
                if not self.upgrade:
                    raise ResponseError("backend switched protocols unasked")
                self._state = _SWITCHED
            elif status < 100:
                raise ResponseError(f"bad status {status}")
            return head  # 1xx: another head follows
        if head.close:
            self.keep = False
        if self.head_only or status in {204, 304}:
            self._state = _END
        elif head.chunked:
            head.framing = CHUNKED
            self._state = _CHUNK_SIZE
        elif head.content_length:
            head.framing = LENGTH
            if head.length:
                self._left = head.length
                self._state = _BODY
            else:
                self._state = _END
        else:
            head.framing = CLOSE
            self._state = _UNTIL_CLOSE
        return head

    def _chunked(self, buf: bytes) -> bytes | _Sentinel:
        while True:
            state = self._state
            if state == _CHUNK_DATA:
                if not buf:
                    break
                left = self._left
                if len(buf) <= left:
                    self._left = left - len(buf)
                    self._buf = b""
                    if self._left == 0:
                        self._state = _CHUNK_END
                    return buf
                self._buf = buf[left:]
                self._state = _CHUNK_END
                return buf[:left]
            if state == _CHUNK_SIZE:
                j = buf.find(b"\r\n")
                if j < 0:
                    if len(buf) > MAX_CHUNK_LINE or b"\n" in buf or b"\r" in buf[:-1]:
                        raise ResponseError("bad chunk size line")
                    break
                m = _CHUNK.fullmatch(buf, 0, j + 2) if j < MAX_CHUNK_LINE else None
                if m is None:
                    raise ResponseError("bad chunk size line")
                size = int(m.group(1), 16)
                buf = self._buf = buf[j + 2 :]
                if size:
                    self._left = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILERS
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    if buf and buf != b"\r":
                        raise ResponseError("chunk data not followed by CRLF")
                    break
                if buf[:2] != b"\r\n":
                    raise ResponseError("chunk data not followed by CRLF")
                buf = self._buf = buf[2:]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS: fields we read and drop, then the final CRLF
                if buf[:2] == b"\r\n":
                    end = 2
                else:
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        if len(buf) > MAX_TRAILERS or b"\n\n" in buf or b"\n\r\n" in buf:
                            raise ResponseError("bad trailer section")
                        break
                    if i > MAX_TRAILERS or _FIELDS.fullmatch(buf, 0, i + 2) is None:
                        raise ResponseError("bad trailer section")
                    end = i + 4
                self._buf = buf[end:]
                self._state = _DONE
                self.extra = bool(self._buf)
                return END
        if self.closed:
            raise ResponseError("backend closed the connection mid-body")
        return NEED_DATA


def request_head(method: bytes, target: bytes, headers: Sequence[Header]) -> bytes:
    """The request head for a backend, Host first (as h11 writes it).

    Every name and value here came through h11's validation of the client's
    request or was made by the header policy, so nothing is re-validated.
    """
    host = b""
    rest: list[bytes] = []
    for name, value in headers:
        if name == b"host":
            host += b"host: " + value + b"\r\n"
        else:
            rest.append(name + b": " + value + b"\r\n")
    if not host:
        raise MissingHost("request has no Host")
    return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method, target, host, b"".join(rest))
