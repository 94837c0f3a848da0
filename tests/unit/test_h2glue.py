"""proxy.http.h2glue and proxy.http.h2frames: response frames built by us, h2's state kept.

The glue reaches inside h2 (state machines, windows, the encoder's pending table size
update). These tests drive twin server connections with the same client bytes: one
answers through h2's own `send_headers`/`send_data`, the other through the glue. They
must end in the same states and windows, and a real h2 client must read the same
response from both. If an h2 or hpack release changes what the glue relies on, these
fail (pin h2 or adapt proxy/http/h2glue.py).
"""

from __future__ import annotations

import inspect

import h2.connection
import h2.exceptions
import hpack
import hyperframe.frame
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, ResponseReceived, StreamEnded
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
from proxy.http.h2glue import (
    CachingDecoder,
    data_frame,
    headers_frame,
    install_decode_cache,
    quiet_frame_repr,
)
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


def _twins(client: H2Connection, streams: int) -> tuple[H2Connection, H2Connection]:
    """Two servers that heard the same requests (streams 1, 3, ...), settings exchanged."""
    for i in range(streams):
        client.send_headers(1 + 2 * i, GET, end_stream=True)
    hello = client.data_to_send()
    servers = []
    for _ in range(2):
        server = H2Connection(SERVER)
        server.initiate_connection()
        server.receive_data(hello)
        servers.append(server)
    # the client's ACK of the servers' SETTINGS (identical for both)
    client.receive_data(servers[0].data_to_send())
    servers[1].clear_outbound_data_buffer()
    ack = client.data_to_send()
    for server in servers:
        server.receive_data(ack)
    return servers[0], servers[1]


def _state(server: H2Connection, sids: list[int]) -> tuple[object, ...]:
    per_stream: list[object] = []
    for sid in sids:
        stream = server.streams.get(sid)
        if stream is None:
            per_stream.append(None)
            continue
        per_stream.append(
            (
                stream.state_machine.state,
                stream.closed,
                stream.outbound_flow_control_window,
                stream.request_method,
                server.local_flow_control_window(sid),
            )
        )
    return (
        server.state_machine.state,
        server.outbound_flow_control_window,
        server.open_inbound_streams,
        server.encoder.table_size_changes,
        tuple(per_stream),
    )


def _read(data: bytes, streams: int, table_size: int | None = None) -> list[tuple[object, ...]]:
    """What a fresh client that sent the same requests reads from a server's bytes."""
    client = _client(table_size)
    for i in range(streams):
        client.send_headers(1 + 2 * i, GET, end_stream=True)
    out: list[tuple[object, ...]] = []
    for ev in client.receive_data(data):
        if isinstance(ev, ResponseReceived):
            out.append(("headers", ev.stream_id, ev.headers))
        elif isinstance(ev, DataReceived):
            out.append(("data", ev.stream_id, ev.data))
        elif isinstance(ev, StreamEnded):
            out.append(("end", ev.stream_id))
    return out


@pytest.mark.parametrize("table_size", [None, 256, 0])
@pytest.mark.parametrize("body", [b"", b"hello", b"x" * 16384])
def test_glue_matches_h2_state_and_wire(table_size: int | None, body: bytes) -> None:
    client = _client(table_size)
    ours, theirs = _twins(client, 3)
    head = parse_head(NGINX % len(body))
    headers = response_headers(head.status, head.headers)
    block = status_field(head.status) + fields_block(head.fields or b"")
    sids = [1, 3, 5]
    wire_ours = ours.data_to_send()
    wire_theirs = theirs.data_to_send()
    for sid in sids:
        theirs.send_headers(sid, headers, end_stream=False)
        wire_ours += headers_frame(ours, sid, block, False)
        assert _state(ours, sids) == _state(theirs, sids)
        theirs.send_data(sid, body, end_stream=True)
        wire_ours += data_frame(ours, sid, body, True)
        assert _state(ours, sids) == _state(theirs, sids)
    wire_theirs += theirs.data_to_send()
    assert ours.data_to_send() == b""  # the glue queues nothing in h2
    got = _read(wire_ours, 3, table_size)
    assert got == _read(wire_theirs, 3, table_size)
    assert [e[0] for e in got] == ["headers", "data", "end"] * 3 if body else ["headers", "end"] * 3
    # h2 counts them closed alike, and both go on to take new streams
    assert ours.open_inbound_streams == theirs.open_inbound_streams == 0


def test_glue_split_body_and_windows() -> None:
    """HEADERS without END_STREAM, then DATA in pieces: the windows move as h2 moves them."""
    client = _client()
    ours, theirs = _twins(client, 1)
    block = encode_block([(b":status", b"200")])
    theirs.send_headers(1, [(b":status", b"200")])
    headers_frame(ours, 1, block, False)
    for piece, end in ((b"a" * 1000, False), (b"b" * 10, False), (b"", True)):
        theirs.send_data(1, piece, end_stream=end)
        data_frame(ours, 1, piece, end)
        assert _state(ours, [1]) == _state(theirs, [1])


def test_glue_refuses_what_h2_refuses() -> None:
    client = _client()
    ours, theirs = _twins(client, 1)
    block = encode_block([(b":status", b"200")])
    headers_frame(ours, 1, block, True)
    theirs.send_headers(1, [(b":status", b"200")], end_stream=True)
    with pytest.raises(h2.exceptions.StreamClosedError):
        theirs.send_data(1, b"late")
    with pytest.raises(h2.exceptions.StreamClosedError):
        data_frame(ours, 1, b"late", False)
    with pytest.raises(h2.exceptions.StreamClosedError):
        headers_frame(ours, 7, block, False)  # (never opened: h2 would not open it either)


def test_a_pending_table_size_update_opens_our_block() -> None:
    client = _client(table_size=100)
    ours, _ = _twins(client, 1)
    assert ours.encoder.table_size_changes == [100]
    frame = headers_frame(ours, 1, encode_block([(b":status", b"200")]), True)
    assert frame[9:] == encode_integer(100, 5, 0x20) + b"\x88"
    assert ours.encoder.table_size_changes == []


# -- the encoder --------------------------------------------------------------------


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
        extra = [(b"x-n", b"%d" % (i % 3))] if vary else []
        client.send_headers(1 + 2 * i, [*GET, (b"user-agent", b"t"), *extra], end_stream=True)
    return client.data_to_send()


@pytest.mark.parametrize("table_size", [None, 64, 0])
@pytest.mark.parametrize("vary", [False, True])
def test_h2_with_the_decode_cache_reads_what_h2_reads(table_size: int | None, vary: bool) -> None:
    plain = H2Connection(SERVER)
    cached = H2Connection(SERVER)
    install_decode_cache(cached)
    assert isinstance(cached.decoder, CachingDecoder)
    client = _client()
    for server in (plain, cached):
        server.initiate_connection()
        if table_size is not None:
            server.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
    client.receive_data(plain.data_to_send())
    cached.clear_outbound_data_buffer()
    wire = client.data_to_send() + _requests(client, 40, vary)

    def heard(server: H2Connection) -> list[object]:
        out: list[object] = []
        for i in range(0, len(wire), 97):  # (cut anywhere, as reads do)
            for ev in server.receive_data(wire[i : i + 97]):
                if isinstance(ev, RequestReceived):
                    out.append((ev.stream_id, list(ev.headers or ())))
        return out

    got = heard(cached)
    assert got == heard(plain)
    assert len(got) == 40


# -- h2's frame log line ----------------------------------------------------------------


def test_h2_formats_frames_only_for_its_trace_line() -> None:
    """If h2 uses `repr` elsewhere in h2.connection, or no longer for this line, look again."""
    source = inspect.getsource(h2.connection)
    assert source.count("repr(") == 1
    assert 'self.config.logger.trace("Received frame: %s", repr(frame))' in source


def test_received_frames_are_not_formatted(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet_frame_repr()

    def refuse(self: object) -> str:
        raise AssertionError("a frame was formatted")

    monkeypatch.setattr(hyperframe.frame.Frame, "__repr__", refuse)
    server = H2Connection(SERVER)
    server.initiate_connection()
    client = _client()
    events = server.receive_data(client.data_to_send() + _requests(client, 2, vary=False))
    assert sum(isinstance(e, RequestReceived) for e in events) == 2


@given(st.integers(min_value=0, max_value=(1 << 24) - 1), st.integers(min_value=0, max_value=(1 << 31) - 1))
@settings(max_examples=200)
def test_frame_head_is_hyperframes(length: int, sid: int) -> None:
    assert frame_head(length, 0, 1, sid) == length.to_bytes(3, "big") + b"\x00\x01" + sid.to_bytes(4, "big")
    frame = hyperframe.frame.DataFrame(sid or 1, data=b"x" * min(length, 300))
    frame.flags.add("END_STREAM")
    wire = frame.serialize()
    assert frame_head(len(frame.data), 0, 1, sid or 1) == wire[:9]
