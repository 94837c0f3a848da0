"""The request fast path: the common HTTP/1.x request head judged in one pass, without h11.

ARCHITECTURE.md allows "a stricter fast path, never a laxer parser". `recognise` accepts
only heads that h11 (with proxy/http/h11glue.py's strict chunk reader) and sekisho's own
gate (`head_end`, `precheck_head`, `check_content_length` in proxy/http/headers.py) accept
as well, and only bodiless ones; for anything else it returns None and the caller hands
the bytes, untouched, to the gate and h11. What it accepts, exactly:

- the request line `METHOD SP TARGET SP HTTP/1.1` or `HTTP/1.0` and CRLF: METHOD a
  token other than CONNECT, TARGET in origin form (`/` then visible ASCII, h11's
  target charset); single spaces;
- at most `MAX_FIELDS` field lines `name:OWS value OWS CRLF`: name a token, value empty
  or visible ASCII with single-line SP/HTAB runs inside (h11's field-content without
  obs-text; no obs-fold, no control character, no NUL, no bare CR or LF);
- then the empty line: the head is the prefix of the buffer up to the first CRLFCRLF;
- HTTP/1.1 with exactly one Host field, HTTP/1.0 with at most one, its value a host
  (`_HOST_VALUE`, precheck_head's grammar);
- no Transfer-Encoding, no Upgrade, no field spelled `transfer_encoding` or
  `content_length`;
- no Content-Length, or exactly one whose value is 1 to 18 digits and equals 0: the
  request has no body (RFC 9112 6.3, and h11's framing), so what follows its head
  in the buffer is the next request.

Requests with a body keep the h11 path: their framing (Data and EndOfMessage events,
the early body read before a backend is attached, the 400 on an early EOF) is h11's.
tests/unit/test_http_fastpath.py proves the subset relation with hypothesis: whatever
`recognise` accepts, the gate and h11 accept with the same method, target, version,
fields (names, values, order), keep-alive and framing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.http.headers import _HOST_VALUE

Triple = tuple[bytes, bytes, bytes]  # (name as sent, lower-case name, value)

MAX_FIELDS = 64  # more field lines than this: h11 judges the request

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
# h11's field-content (`[^\x00\s]+(?:[ \t]+[^\x00\s]+)*`) without obs-text and controls.
_VALUE = rb"(?:[!-~]++(?:[ \t]++[!-~]++)*+)?+"
_FIELD = _TOKEN + rb":[ \t]*+" + _VALUE + rb"[ \t]*+\r\n"
# The whole head, anchored at the buffer's start: (method, target, minor version, field block).
# It ends at the first CRLFCRLF: no field line holds a CR or LF but its last two bytes.
_HEAD = re.compile(rb"(%b) (/[!-~]*+) HTTP/1\.([01])\r\n((?:%b){0,%d}+)\r\n" % (_TOKEN, _FIELD, MAX_FIELDS))
# One field line of a block `_HEAD` matched: (name, value without OWS).
_PAIR = re.compile(rb"(" + _TOKEN + rb"):[ \t]*+(" + _VALUE + rb")[ \t]*+\r\n")
_CL_VALUE = re.compile(rb"[0-9]{1,18}")
_host_ok = _HOST_VALUE.fullmatch
_cl_ok = _CL_VALUE.fullmatch

# Field names the fast path looks at; the ones mapped to True make it decline.
_INTAKE = {
    b"host": False,
    b"content-length": False,
    b"connection": False,
    b"transfer-encoding": True,
    b"upgrade": True,
    b"transfer_encoding": True,
    b"content_length": True,
}


class RequestHead:
    """A request head as the exchange takes it, from the fast path or from h11."""

    __slots__ = ("content_length", "end", "host", "http_version", "items", "keep_alive", "method", "target")

    def __init__(  # noqa: PLR0917
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        items: Sequence[Triple],
        host: bytes,
        content_length: int | None,
        keep_alive: bool,
        end: int,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version  # b"1.1" or b"1.0"
        self.items = items  # every field, in order, as h11 would give them
        self.host = host  # the Host value, b"" when there is none
        self.content_length = content_length  # None, or 0 (the fast path takes no body)
        self.keep_alive = keep_alive  # HTTP/1.1 and no `close` in Connection
        self.end = end  # the head's length: offset of the next request in the buffer


def recognise(buf: bytes) -> RequestHead | None:
    """The request head at the start of `buf` when it has the common shape (see the
    module's docstring), else None: incomplete, anything unusual, a body. Never a refusal.

    What a head judges to depends on its bytes alone, and clients send the same head
    again and again (a benchmark always, a browser's requests for one page's assets
    nearly), so short heads are remembered: a RequestHead is never changed after it is
    made (its items are a tuple), so one can serve every request that sent those bytes."""
    # The head ends at the first CRLFCRLF (the grammar has no empty line inside), so it is
    # found and looked up before the regex runs: a head seen before costs a find and a get.
    end = buf.find(b"\r\n\r\n") + 4
    if end == 3:
        return None  # incomplete
    if end > _MEMO_HEAD or type(buf) is not bytes:
        return _recognise(buf)
    key = buf if end == len(buf) else buf[:end]
    known = _seen.get(key, _UNSEEN)
    if known is _UNSEEN:
        if len(_seen) >= _MEMO_SIZE:
            _seen.clear()  # (varied heads, cookies: start again rather than keep order)
        known = _seen[key] = _recognise(key)
    return known  # type: ignore[return-value]


def _recognise(buf: bytes) -> RequestHead | None:
    m = _HEAD.match(buf)
    return None if m is None else _judge(m)


def _judge(m: re.Match[bytes]) -> RequestHead | None:
    method, target, minor, block = m.groups()
    if method == b"CONNECT":
        return None
    http11 = minor == b"1"
    items = tuple([(name, name.lower(), value) for name, value in _PAIR.findall(block)])
    host = b""
    hosts = 0
    content_length = None
    keep_alive = http11
    intake = _INTAKE
    for item in items:
        name = item[1]
        if name in intake:
            if intake[name]:
                return None
            value = item[2]
            if name == b"host":
                hosts += 1
                host = value
            elif name == b"content-length":
                if content_length is not None or _cl_ok(value) is None or int(value):
                    return None
                content_length = 0
            else:  # connection (the h11 path's `_on_request` reads it the same way)
                tokens = value.lower()
                if b"close" in tokens and any(t.strip() == b"close" for t in tokens.split(b",")):
                    keep_alive = False
    if hosts != 1 and (hosts or http11):
        return None
    if hosts and _host_ok(host) is None:
        return None
    return RequestHead(
        method, target, b"1.1" if http11 else b"1.0", items, host, content_length, keep_alive, m.end()
    )


_MEMO_HEAD = 1024  # longer heads are judged each time
_MEMO_SIZE = 512
_UNSEEN = object()
_seen: dict[bytes, object] = {}
