"""Response HEADERS blocks and frame headers, built by us for the hot path.

Every response block is encoded here, as HAProxy's HPACK encoder does (hpack-enc.c):
`:status` from the static table, every other field a literal *without indexing*, its
name from the static table when it is there, no Huffman coding. Such a block never
reads or changes the dynamic table, so there is no per-connection compression state to
keep in step with the client's decoder (hpack's general encoder, a dynamic-table search
and insert per field and Huffman coding, was about a fifth of an HTTP/2 request's CPU).
A few bytes more on the wire per field. The module also holds the wire's constants.

`fields_block` caches the encoded fields per backend field block (`Head.fields`):
nginx and most backends repeat their response fields byte for byte, except `Date`,
once a second.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from proxy.http.h2request import RESPONSE_DROP

Header = tuple[bytes, bytes]

# RFC 7541 Appendix A: the first static index of each name.
STATIC_NAMES: dict[bytes, int] = {
    b":authority": 1,
    b":method": 2,
    b":path": 4,
    b":scheme": 6,
    b":status": 8,
    b"accept-charset": 15,
    b"accept-encoding": 16,
    b"accept-language": 17,
    b"accept-ranges": 18,
    b"accept": 19,
    b"access-control-allow-origin": 20,
    b"age": 21,
    b"allow": 22,
    b"authorization": 23,
    b"cache-control": 24,
    b"content-disposition": 25,
    b"content-encoding": 26,
    b"content-language": 27,
    b"content-length": 28,
    b"content-location": 29,
    b"content-range": 30,
    b"content-type": 31,
    b"cookie": 32,
    b"date": 33,
    b"etag": 34,
    b"expect": 35,
    b"expires": 36,
    b"from": 37,
    b"host": 38,
    b"if-match": 39,
    b"if-modified-since": 40,
    b"if-none-match": 41,
    b"if-range": 42,
    b"if-unmodified-since": 43,
    b"last-modified": 44,
    b"link": 45,
    b"location": 46,
    b"max-forwards": 47,
    b"proxy-authenticate": 48,
    b"proxy-authorization": 49,
    b"range": 50,
    b"referer": 51,
    b"refresh": 52,
    b"retry-after": 53,
    b"server": 54,
    b"set-cookie": 55,
    b"strict-transport-security": 56,
    b"transfer-encoding": 57,
    b"user-agent": 58,
    b"vary": 59,
    b"via": 60,
    b"www-authenticate": 61,
}
# `:status` values with a static entry of their own (RFC 7541 Appendix A, 8-14).
_STATUS_INDEXED = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}

# ---- the wire's constants, one set for h2server, h2guard and h2.py (RFC 9113)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEAD = struct.Struct("!BHBBL")  # 4.1: 24-bit length (high byte, low 16), type, flags, R + id

# Frame types and flags (6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# Error codes (7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# Settings (6.5.2, RFC 8441 3).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

_CACHE_MAX = 512  # field blocks remembered (a backend's Date makes one a second)
_fields_cache: dict[bytes, bytes] = {}


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 5.1: `value` with an N-bit prefix; `first` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """RFC 7541 6.2.2: a literal field without indexing (name indexed when it can be), no Huffman."""
    index = STATIC_NAMES.get(name)
    if index is None:
        return b"\x00" + encode_integer(len(name), 7) + name + encode_integer(len(value), 7) + value
    return encode_integer(index, 4) + encode_integer(len(value), 7) + value


def status_field(status: int) -> bytes:
    index = _STATUS_INDEXED.get(status)
    if index is not None:
        return bytes((0x80 | index,))  # RFC 7541 6.1: indexed
    return literal(b":status", b"%d" % status)


def encode_block(headers: Iterable[Header]) -> bytes:
    """A header block (names lower case, `:status` first as `response_headers` gives it)."""
    out = []
    for name, value in headers:
        if name == b":status":
            out.append(status_field(int(value)))
        else:
            out.append(literal(name, value))
    return b"".join(out)


def fields_block(fields: bytes) -> bytes:
    """The encoded fields of a backend response whose field block is `fields`
    (`proxy.http.response.Head.fields`: `Name: value` CRLF lines, hop-by-hop ones cut),
    for a status of 200 or more other than 204: names lower case, the fields HTTP/2
    forbids left out, as `proxy.http.h2request.response_headers` does."""
    block = _fields_cache.get(fields)
    if block is None:
        out = []
        for line in fields.split(b"\r\n"):
            if not line:
                continue
            name, _, value = line.partition(b":")
            name = name.lower()
            if name not in RESPONSE_DROP:
                out.append(literal(name, value[1:]))  # (one SP after the colon: canonical)
        block = b"".join(out)
        if len(_fields_cache) >= _CACHE_MAX:
            _fields_cache.clear()
        _fields_cache[fields] = block
    return block


_FRAME_HEAD = struct.Struct("!BHBBL")


def frame_head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """RFC 9113 4.1: the 9-byte frame header (a 24-bit length, type, flags, stream id)."""
    return _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id)
