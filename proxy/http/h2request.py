"""HTTP/2 streams as HTTP/1.1 requests: the header checks of the downgrade, in one pass.

Backends speak HTTP/1.1, so every HTTP/2 request is rewritten as an HTTP/1.1 head.
That rewrite is where HTTP/2 request smuggling lives: a value with CR/LF becomes a
second header line, a `transfer-encoding` or a second `content-length` reframes the
body, a `:path` with a space or a `Host` that disagrees with `:authority` splits the
request line or the routing. So the translation refuses, per RFC 9113 8.2 and 8.3,
everything malformed; `StreamError` is its one exception.

`h2` (python-hyper) checks received header blocks itself, in generator passes that
cost about a third of its per-request time. The passes this module replaces, so that
the connection can run with `H2Configuration(validate_inbound_headers=False,
normalize_inbound_headers=False, validate_outbound_headers=False,
normalize_outbound_headers=False)`:

- `validate_inbound_headers` (`h2.utilities.validate_headers`: illegal characters,
  empty names, `te`, connection-specific fields, pseudo-header order, duplicates and
  the set required, `:authority`/`Host`, empty `:path`) on requests is replaced by
  `translate_request`, and on trailers by `check_trailers`. A test feeds malformed
  blocks through an h2 server with the validation on and through these functions:
  every block h2 rejects, these reject too (tests/unit/test_h2request.py).
- `normalize_inbound_headers` (joining `cookie` crumbs) is done by `translate_request`.
- `validate_outbound_headers` and `normalize_outbound_headers` on what we send are
  replaced by `response_headers` and `response_trailers`; a test checks their output
  passes h2's outbound validation and is left unchanged by its normalisation.

Not replaceable, and not replaced: h2 always checks `content-length` against the
DATA it receives (`H2Stream._track_content_length`, not behind a setting) and raises
a connection error; `check_body_length` is the same rule for the code that forwards
the body, which must call it before writing each DATA chunk to the backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.http.errors import HttpProxyError

Header = tuple[bytes, bytes]

# Connection-specific fields (RFC 9113 8.2.2), refused in requests and removed from responses.
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# The only protocol accepted in an extended CONNECT (RFC 8441).
EXTENDED_CONNECT_PROTOCOLS = frozenset((b"websocket",))

_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-z]+")  # a token, lower case (RFC 9113 8.2.1)
_METHOD = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# A field value: visible characters and obs-text, SP/HTAB only inside (RFC 9110 5.5,
# RFC 9113 8.2.1); no CTL at all, which is what the HTTP/1.1 side accepts too.
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?")
# The same, for the one pass: delete the bytes a value may hold, and check its ends.
_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_WS = (0x20, 0x09)
_SCHEME = re.compile(rb"[a-zA-Z][a-zA-Z0-9+.-]*")
# :path in origin-form is "/" and VCHAR: the request line takes no SP, CTL or obs-text.
_VCHAR = bytes(range(0x21, 0x7F))
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"))
_SCHEMES = frozenset((b"http", b"https"))
# host [":" port]: IP-literal or reg-name (RFC 3986 3.2.2), no userinfo, not empty.
_AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{1,5})?")
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Request field names common enough to skip the token match (tests check they are tokens).
COMMON_NAMES = frozenset(
    (
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"authorization",
        b"cache-control",
        b"content-length",
        b"content-type",
        b"cookie",
        b"if-modified-since",
        b"if-none-match",
        b"origin",
        b"priority",
        b"referer",
        b"sec-ch-ua",
        b"sec-ch-ua-mobile",
        b"sec-ch-ua-platform",
        b"sec-fetch-dest",
        b"sec-fetch-mode",
        b"sec-fetch-site",
        b"sec-fetch-user",
        b"te",
        b"upgrade-insecure-requests",
        b"user-agent",
        b"x-forwarded-for",
        b"x-requested-with",
    )
)
_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
# Fields that never belong in trailers (RFC 9110 6.5.1): framing, routing, controls,
# authentication, content processing. Dropped, not forwarded.
_NOT_IN_TRAILERS = frozenset(
    (
        b"authorization",
        b"cache-control",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-type",
        b"cookie",
        b"expect",
        b"host",
        b"max-forwards",
        b"proxy-authorization",
        b"range",
        b"set-cookie",
        b"te",
        b"trailer",
    )
)
# What a `Connection` option can never remove from a response (as in proxy.http.headers).
_PROTECTED = frozenset((b"content-length",))
# Fields a response on HTTP/2 never carries (also proxy/http/h2frames.py).
RESPONSE_DROP = CONNECTION_SPECIFIC | {b"te", b"http2-settings"}
_RESPONSE_DROP = RESPONSE_DROP


class StreamError(HttpProxyError):
    """A request the stream cannot carry to a backend.

    `status` None: the request is malformed (RFC 9113 8.1.1); reset the stream with
    PROTOCOL_ERROR. `status` set: the request is well-formed but refused; answer it with
    that status and END_STREAM (405 for CONNECT, 501 for an extended CONNECT protocol
    we do not carry, as RFC 9220 3 advises).
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class H2Request:
    """One HTTP/2 request, checked, in the terms of the HTTP/1.1 request it becomes.

    Read-only by convention: `frozen=True` would cost 1.8 us per request (an
    `object.__setattr__` per field), about a quarter of the translation.

    `headers` hold no pseudo-header and no Host (`authority` is the Host); names are
    lower case; `cookie` crumbs are one field. `content_length` is the one declared
    value, if any; `has_body` is whether DATA may follow the HEADERS.
    """

    method: bytes
    target: bytes
    authority: bytes
    scheme: bytes
    protocol: bytes | None
    headers: list[Header]
    content_length: int | None
    has_body: bool

    @property
    def chunked(self) -> bool:
        """The HTTP/1.1 body needs chunked framing: a body of unknown length (not a tunnel)."""
        return self.has_body and self.content_length is None and self.protocol is None

    @property
    def h1_method(self) -> bytes:
        """The HTTP/1.1 method: an extended CONNECT becomes a GET with Upgrade (RFC 8441 5)."""
        return b"GET" if self.protocol is not None else self.method

    def h1_headers(self) -> list[Header]:
        """Host first, then the fields: what `RequestPolicy.apply` takes."""
        return [(b"host", self.authority), *self.headers]


def translate_request(
    headers: Sequence[Header], *, end_stream: bool, extended_connect: bool = True
) -> H2Request:
    """Check a received request header block and translate it; raise StreamError.

    `headers` are as h2 hands them to a server with `header_encoding=None` and its own
    validation off: bytes, in order, cookie crumbs apart. `end_stream` is the END_STREAM
    flag of the HEADERS frame. `extended_connect` is whether we advertised
    SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 3); without it `:protocol` is malformed.
    """
    method = scheme = path = authority = protocol = host = None
    out: list[Header] = []
    values: list[bytes] = []
    cookies: list[bytes] | None = None
    cookie_at = 0
    content_length: int | None = None
    te = regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise StreamError("pseudo-header field after a regular field")
            if name not in _PSEUDO:
                raise StreamError(f"unknown pseudo-header field {name!r}")
            if name == b":method":
                if method is not None:
                    raise StreamError("duplicate :method")
                if value not in _METHODS and _METHOD.fullmatch(value) is None:
                    raise StreamError("malformed :method")
                method = value
            elif name == b":path":
                if path is not None:
                    raise StreamError("duplicate :path")
                path = value
            elif name == b":scheme":
                if scheme is not None:
                    raise StreamError("duplicate :scheme")
                if value not in _SCHEMES and _SCHEME.fullmatch(value) is None:
                    raise StreamError("malformed :scheme")
                scheme = value
            elif name == b":authority":
                if authority is not None:
                    raise StreamError("duplicate :authority")
                if _AUTHORITY.fullmatch(value) is None:
                    raise StreamError("malformed :authority")
                authority = value
            else:
                if protocol is not None:
                    raise StreamError("duplicate :protocol")
                if not extended_connect:
                    raise StreamError(":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL")
                if _METHOD.fullmatch(value) is None:
                    raise StreamError("malformed :protocol")
                protocol = value
            continue
        regular = True
        if name not in COMMON_NAMES and _NAME.fullmatch(name) is None:
            raise StreamError(f"malformed field name {name!r}")
        if value:
            if value[0] in _WS or value[-1] in _WS:
                raise StreamError(f"whitespace around the value of {name.decode()}")
            values.append(value)
        if name in CONNECTION_SPECIFIC:
            raise StreamError(f"connection-specific field {name.decode()}")
        if name == b"cookie":
            if cookies is None:
                cookies = []
                cookie_at = len(out)
                out.append((b"cookie", b""))  # its place, filled in below
            cookies.append(value)
        elif name == b"host":
            if host is not None:
                raise StreamError("duplicate Host")
            if _AUTHORITY.fullmatch(value) is None:
                raise StreamError("malformed Host")
            host = value
        elif name == b"content-length":
            if content_length is not None:
                raise StreamError("duplicate content-length")
            if _DIGITS.fullmatch(value) is None:
                raise StreamError("malformed content-length")
            content_length = int(value)
            out.append((b"content-length", b"%d" % content_length))
        elif name == b"te":
            if value != b"trailers" or te:
                raise StreamError("te other than one 'trailers'")
            te = True
            out.append((name, value))
        else:
            out.append((name, value))

    if b"".join(values).translate(None, _VALUE_BYTES):
        raise StreamError("CR, LF, NUL or another control character in a field value")
    if method is None:
        raise StreamError("missing :method")
    if method == b"CONNECT":
        if protocol is None:
            if scheme is not None or path is not None or authority is None:
                raise StreamError("CONNECT takes :authority and no :scheme or :path")
            raise StreamError("CONNECT is not supported", status=405)
        if scheme is None or path is None:  # :authority as usual (RFC 8441 4)
            raise StreamError("extended CONNECT without :scheme or :path")
    elif protocol is not None:
        raise StreamError(":protocol on a request other than CONNECT")
    elif scheme is None or path is None:
        raise StreamError("missing :scheme or :path")
    if not path:
        raise StreamError("empty :path")
    if (path[0] != 0x2F or path.translate(None, _VCHAR)) and not (path == b"*" and method == b"OPTIONS"):
        raise StreamError("malformed :path")
    if authority is None:
        if host is None:
            raise StreamError("neither :authority nor Host")
        authority = host
    elif host is not None and host != authority:
        raise StreamError("Host disagrees with :authority")
    if end_stream and content_length:
        raise StreamError("content-length on a request without DATA")
    if protocol is not None and protocol not in EXTENDED_CONNECT_PROTOCOLS:
        raise StreamError(f"extended CONNECT for {protocol!r} is not supported", status=501)
    if cookies is not None:
        if len(cookies) > 1 and b"" in cookies:
            # "a=1; " would end in whitespace (h2 refuses the joined value too).
            raise StreamError("empty cookie crumb")
        out[cookie_at] = (b"cookie", b"; ".join(cookies))
    return H2Request(method, path, authority, scheme, protocol, out, content_length, not end_stream)


def check_body_length(declared: int | None, received: int, end: bool) -> None:
    """Raise StreamError if `received` DATA bytes contradict the declared content-length.

    Call it with the running total before forwarding each DATA chunk (so no byte beyond
    the declared length reaches the backend) and with `end` True at END_STREAM.
    """
    if declared is None:
        return
    if received > declared:
        raise StreamError(f"DATA exceeds content-length {declared}")
    if end and received != declared:
        raise StreamError(f"DATA ends short of content-length {declared}")


def check_trailers(headers: Sequence[Header]) -> list[Header]:
    """Check a received trailer block; return the fields to forward; raise StreamError.

    Malformed as in a request (no pseudo-header at all, RFC 9113 8.1); the fields that
    never belong in trailers (RFC 9110 6.5.1) are dropped.
    """
    out: list[Header] = []
    for name, value in headers:
        if _NAME.fullmatch(name) is None:
            raise StreamError(f"malformed trailer field name {name!r}")
        if value and _VALUE.fullmatch(value) is None:
            raise StreamError(f"malformed value of trailer {name.decode()}")
        if name in CONNECTION_SPECIFIC:
            raise StreamError(f"connection-specific trailer {name.decode()}")
        if name == b"te" and value != b"trailers":
            raise StreamError("te other than 'trailers'")
        if name not in _NOT_IN_TRAILERS:
            out.append((name, value))
    return out


def response_headers(status: int, headers: Sequence[Header]) -> list[Header]:
    """The HEADERS block for a backend response: `:status` first, no connection-specific field.

    `headers` are as `proxy.http.response.Head` reads them (token names, values without
    CR/LF/NUL or surrounding whitespace). Removed: the connection-specific fields,
    `te`, `http2-settings`, those the `Connection` field names (RFC 9113 8.2.2), and Content-Length on
    1xx and 204 (RFC 9110 8.6) or beside Transfer-Encoding (RFC 9112 6.3). A 304 keeps
    its Content-Length: it describes the selected representation (RFC 9110 8.6).
    There is no 101 in HTTP/2 (RFC 9113 8.6): for an extended CONNECT the caller
    answers 200 instead; 101 or a status outside 100-599 raises ValueError.
    """
    if not 100 <= status <= 599 or status == 101:
        raise ValueError(f"status {status} cannot be sent on HTTP/2")
    drop = _RESPONSE_DROP
    no_length = status < 200 or status == 204
    for name, value in headers:
        lname = name.lower()
        if lname == b"connection":
            drop = drop | ({t.strip() for t in value.lower().split(b",")} - _PROTECTED)
        elif lname == b"transfer-encoding":
            no_length = True
    out = [(b":status", b"%d" % status)]
    for name, value in headers:
        lname = name.lower()
        if lname in drop or (no_length and lname == b"content-length"):
            continue
        out.append((lname, value))
    return out


def response_trailers(headers: Sequence[Header]) -> list[Header]:
    """A backend's trailer fields for the client: no connection-specific or framing field."""
    out: list[Header] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in CONNECTION_SPECIFIC and lname not in _NOT_IN_TRAILERS:
            out.append((lname, value))
    return out
