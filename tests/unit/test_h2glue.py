"""proxy.http.h2glue (the decode cache, our one reach inside hpack) and proxy.http.h2frames.

The blocks we encode are read back by hpack's decoder and by a real h2 client (the
connection itself is tested in tests/unit/test_h2server.py). The decode cache is driven
beside a plain `hpack.Decoder` with the same blocks, table insertions, evictions and
size updates among them: the two must read the same headers. If an hpack release
changes what the cache relies on, these fail (pin hpack or adapt proxy/http/h2glue.py).

(Until the HTTP/2 connection was ours, this file also checked twin h2 connections, one
answering through h2's calls and one through the glue that moved h2's state; that glue
is gone with h2 from the connection.)
"""

from __future__ import annotations

import hpack
import hyperframe.frame
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived
from h2.settings import SettingCodes
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.h2frames import (
    STATIC_NAMES,
    encode_block,
    encode_integer,
    fields_block,
    frame_head,
    literal,
    status_field,
)
from proxy.http.h2glue import CachingDecoder
from proxy.http.h2request import response_headers
from proxy.http.response import ResponseError, parse_head

Header = tuple[bytes, bytes]

SERVER = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/")]
NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 02:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\nLast-Modified: Sun, 06 Dec 2026 01:00:00 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6750-5"\r\nAccept-Ranges: bytes\r\n'
)


def _client(table_size: int | None = None) -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    if table_size is not None:
        client.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
    return client


@given(st.integers(min_value=0, max_value=1 << 30), st.sampled_from([4, 5, 6, 7]))
@settings(max_examples=300)
def test_encode_integer_matches_hpack(value: int, bits: int) -> None:
    assert encode_integer(value, bits) == bytes(hpack.hpack.encode_integer(value, bits))


_name = st.one_of(
    st.sampled_from(sorted(STATIC_NAMES)), st.from_regex(rb"[a-z0-9!#$%&'*+.^_`|~-]{1,40}", fullmatch=True)
)
_value = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c not in b"\r\n\0"))


@given(st.integers(min_value=100, max_value=599), st.lists(st.tuples(_name, _value), max_size=20))
@settings(max_examples=300)
def test_blocks_decode_to_what_was_encoded_and_touch_no_table(status: int, fields: list[Header]) -> None:
    headers = [(b":status", b"%d" % status), *[(n, v) for n, v in fields if not n.startswith(b":")]]
    decoder = hpack.Decoder()
    assert decoder.decode(encode_block(headers), raw=True) == headers
    assert len(decoder.header_table.dynamic_entries) == 0


def test_status_and_literal_bytes() -> None:
    assert status_field(200) == b"\x88"
    assert status_field(404) == b"\x8d"
    assert status_field(302) == b"\x08\x03302"
    assert literal(b"server", b"nginx") == b"\x0f\x27\x05nginx"  # name index 54 = 15 + 39
    assert literal(b"x-a", b"") == b"\x00\x03x-a\x00"


_NAMES = [b"Server", b"Date", b"Content-Type", b"X-Thing", b"Keep-Alive", b"TE", b"HTTP2-Settings"]
_NAMES += [b"Upgrade", b"Content-Length", b"Set-Cookie", b"Connection", b"Vary", b"Proxy-Connection", b"ETag"]
_field_line = st.tuples(
    st.sampled_from(_NAMES),
    st.sampled_from([b"", b"a", b"close", b"keep-alive", b"x, y", b"12", b"v\tw", b"upgrade"]),
)


@given(st.sampled_from([200, 201, 206, 302, 304, 404, 500]), st.lists(_field_line, max_size=12))
@settings(max_examples=400)
def test_fields_block_is_response_headers(status: int, lines: list[Header]) -> None:
    """The cached block from Head.fields decodes to what response_headers gives."""
    head_bytes = b"HTTP/1.1 %d X\r\n" % status + b"".join(n + b": " + v + b"\r\n" for n, v in lines)
    try:
        head = parse_head(head_bytes)
    except ResponseError:  # (a head the reader refuses never gets here)
        return
    if head.fields is None:
        return
    block = status_field(status) + fields_block(head.fields)
    assert hpack.Decoder().decode(block, raw=True) == response_headers(status, head.headers)


# -- the decode cache ---------------------------------------------------------------


def test_a_cached_block_is_decoded_again_once_the_table_changed() -> None:
    """The same bytes (an indexed field, 62: the newest entry) mean what the table says now."""
    decoder = CachingDecoder(65536)
    encoder = hpack.Encoder()
    first = encoder.encode([(b"x-a", b"1")])  # literal with incremental indexing
    assert first[0] & 0xC0 == 0x40
    assert list(decoder.decode(first, raw=True)) == [(b"x-a", b"1")]
    assert list(decoder.decode(b"\xbe", raw=True)) == [(b"x-a", b"1")]
    assert list(decoder.decode(b"\xbe", raw=True)) == [(b"x-a", b"1")]  # (from the cache)
    decoder.decode(encoder.encode([(b"x-a", b"2")]), raw=True)
    assert list(decoder.decode(b"\xbe", raw=True)) == [(b"x-a", b"2")]
    decoder.decode(b"\x20", raw=True)  # a table size update to 0: the table empties
    with pytest.raises(hpack.HPACKDecodingError):
        decoder.decode(b"\xbe", raw=True)
    decoder.max_header_list_size = 10  # a lower limit: what was cached is judged again
    with pytest.raises(hpack.OversizedHeaderListError):
        decoder.decode(b"\x82\x86\x84", raw=True)


def test_the_decode_cache_keeps_little_per_connection() -> None:
    """A client chooses what is remembered: long blocks, many fields, many blocks are not."""
    decoder = CachingDecoder(1 << 20)
    many = b"\x82" * 65  # 65 fields, no table change
    decoder.decode(many, raw=True)
    decoder.decode(b"\x00\x01a" + encode_integer(2200, 7) + b"v" * 2200, raw=True)  # a 2 KiB+ literal
    assert not decoder._cache
    for i in range(40):
        decoder.decode(b"\x00\x01a\x02%02d" % i, raw=True)
    assert 0 < len(decoder._cache) <= 16


def _requests(client: H2Connection, n: int, vary: bool) -> bytes:
    for i in range(n):
        extra = [(b"x-n", b"%d" % (i % 3)), (b"x-v", b"v" * (i * 37 % 300))] if vary else []
        client.send_headers(1 + 2 * i, [*GET, (b"user-agent", b"t"), *extra], end_stream=True)
    return client.data_to_send()


def _blocks(wire: bytes) -> list[bytes]:
    """The header blocks in a client's bytes (one HEADERS frame each here)."""
    out = []
    while wire:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(wire[:9]))
        frame.parse_body(memoryview(wire[9 : 9 + length]))
        wire = wire[9 + length :]
        if isinstance(frame, hyperframe.frame.HeadersFrame):
            out.append(frame.data)
    return out


@pytest.mark.parametrize("table_size", [None, 64, 0])
@pytest.mark.parametrize("vary", [False, True])
def test_the_decode_cache_reads_what_hpack_reads(table_size: int | None, vary: bool) -> None:
    """A real client's request blocks (its table filling, evicting, resized): the caching
    decoder reads what a plain hpack decoder reads, block by block, and hits its cache."""
    client = _client()
    server = H2Connection(SERVER)  # (only to give the client settings to encode under)
    server.initiate_connection()
    if table_size is not None:
        server.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
    client.receive_data(server.data_to_send())
    client.data_to_send()
    plain = hpack.Decoder(65536)
    cached = CachingDecoder(65536)
    if table_size is not None:
        for decoder in (plain, cached):
            decoder.max_allowed_table_size = table_size
    blocks = _blocks(_requests(client, 40, vary))
    assert len(blocks) == 40
    for block in blocks:
        assert list(cached.decode(block, raw=True)) == list(plain.decode(block, raw=True))
    if not vary and table_size is None:  # (with a small table every block inserts and evicts)
        assert cached._cache  # the repeated block was remembered


def test_an_h2_server_reads_the_same_blocks() -> None:
    """The reference the connection tests lean on: h2's server reads the blocks hpack reads."""
    client = _client()
    hello = client.data_to_send()
    requests = _requests(client, 5, vary=True)
    server = H2Connection(SERVER)
    server.initiate_connection()
    events = server.receive_data(hello + requests)
    heard = [list(e.headers or ()) for e in events if isinstance(e, RequestReceived)]
    plain = hpack.Decoder(65536)
    assert len(heard) == 5
    assert heard == [list(plain.decode(b, raw=True)) for b in _blocks(requests)]


@given(st.integers(min_value=0, max_value=(1 << 24) - 1), st.integers(min_value=0, max_value=(1 << 31) - 1))
@settings(max_examples=200)
def test_frame_head_is_hyperframes(length: int, sid: int) -> None:
    assert frame_head(length, 0, 1, sid) == length.to_bytes(3, "big") + b"\x00\x01" + sid.to_bytes(4, "big")
    frame = hyperframe.frame.DataFrame(sid or 1, data=b"x" * min(length, 300))
    frame.flags.add("END_STREAM")
    wire = frame.serialize()
    assert frame_head(len(frame.data), 0, 1, sid or 1) == wire[:9]
