"""proxy.http.h2server: the server side of an HTTP/2 connection, sans-IO.

The peer is a real HTTP/2 client (python-hyper's h2, client side) where the frames are
well formed, and hand-built frames (hyperframe) where they are not. No sockets, no loop.
The property tests cut the client's bytes at arbitrary points and check that what the
server reads is what h2's own server reads from the same bytes, and that arbitrary
frames end in events or a connection error with GOAWAY, never another exception.
"""

from __future__ import annotations

import struct

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http import h2frames, h2server
from proxy.http.h2frames import PREFACE, REFUSED_STREAM, encode_block
from proxy.http.h2server import (
    ABORTED,
    DATA_RECEIVED,
    ENDED,
    MAX_WINDOW,
    REQUEST,
    RESET,
    TERMINATED,
    TRAILERS,
    WINDOW,
    H2ConnectionError,
    HeaderListTooLarge,
    ServerConnection,
    StreamClosedError,
)

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/")]
POST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/up")]
BLOCK = Encoder().encode(GET)


def _client(**settings: int) -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    if settings:
        client.update_settings({getattr(SettingCodes, k): v for k, v in settings.items()})
    return client


def _pair(**limits: int) -> tuple[ServerConnection, H2Connection]:
    """A server that has read the client's preface and SETTINGS, and a client that has read ours."""
    server = ServerConnection(**limits)  # type: ignore[arg-type]
    server.initiate()
    client = _client()
    assert server.receive(client.data_to_send()) == []
    client.receive_data(server.data_to_send())
    server.receive(client.data_to_send())  # (the client's ACK of our SETTINGS)
    return server, client


def _opened() -> ServerConnection:
    """A server past the preface, with the client's (empty) SETTINGS read."""
    server = ServerConnection()
    server.initiate()
    server.receive(PREFACE + SettingsFrame(0).serialize())
    server.data_to_send()
    return server


def _frames(data: bytes) -> list[Frame]:
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def _error(server: ServerConnection, wire: bytes) -> tuple[int, H2ConnectionError]:
    with pytest.raises(H2ConnectionError) as info:
        server.receive(wire)
    assert server.closed
    goaway = _frames(server.data_to_send())[-1]
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.error_code == info.value.code
    assert server.receive(BLOCK) == []  # nothing more is read
    return info.value.code, info.value


# -- a real client ------------------------------------------------------------------------


def test_settings_the_client_reads() -> None:
    server = ServerConnection(max_concurrent_streams=7, max_header_list_size=1000, extended_connect=True)
    server.initiate()
    client = _client()
    client.receive_data(server.data_to_send())
    remote = client.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.max_header_list_size == 1000
    assert remote.enable_connect_protocol == 1
    assert remote.enable_push == 0


def test_a_request_and_its_response_both_ways() -> None:
    server, client = _pair()
    client.send_headers(1, GET, end_stream=True)
    events = server.receive(client.data_to_send())
    assert events == [(REQUEST, 1, tuple(GET), True)]  # (decoded blocks are tuples: cached)
    server.send_headers(1, encode_block([(b":status", b"200"), (b"content-type", b"text/plain")]), False)
    server.send_data(1, b"hello", True)
    assert 1 not in server.streams  # both sides ended: closed, not counted
    got = client.receive_data(server.data_to_send())
    response = next(e for e in got if isinstance(e, ResponseReceived))
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert [e.data for e in got if isinstance(e, DataReceived)] == [b"hello"]
    assert any(isinstance(e, StreamEnded) for e in got)


def test_a_body_its_end_trailers_and_window_updates() -> None:
    server, client = _pair()
    client.send_headers(1, POST)
    for _ in range(4):
        client.send_data(1, b"x" * 10000)
    events = server.receive(client.data_to_send())
    assert events[0][:2] == (REQUEST, 1) and events[0][3] is False
    data = [e for e in events if e[0] == DATA_RECEIVED]
    assert sum(len(e[2]) for e in data) == 40000
    assert server.streams[1].recv_window == 65535 - 40000
    server.ack_data(1, 40000)  # over half of each window: both given back
    updates = [f for f in _frames(server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert sorted((f.stream_id, f.window_increment) for f in updates) == [(0, 40000), (1, 40000)]
    client.receive_data(b"".join(f.serialize() for f in updates))
    client.send_headers(1, [(b"x-trailer", b"1")], end_stream=True)
    events = server.receive(client.data_to_send())
    assert events == [(TRAILERS, 1, ((b"x-trailer", b"1"),)), (ENDED, 1)]
    assert not server.streams[1].remote_open


def test_small_acks_wait_until_half_a_window_is_due() -> None:
    server, client = _pair()
    client.send_headers(1, POST)
    client.send_data(1, b"x" * 1000)
    server.receive(client.data_to_send())
    server.ack_data(1, 1000)
    assert server.data_to_send() == b""


def test_send_windows_follow_the_client() -> None:
    server, client = _pair()
    client.send_headers(1, GET, end_stream=True)
    server.receive(client.data_to_send())
    assert server.send_window_of(1) == 65535
    server.send_headers(1, encode_block([(b":status", b"200")]), False)
    for _ in range(3):
        server.send_data(1, b"y" * 16384, False)
    server.send_data(1, b"y" * 16383, False)
    assert server.send_window_of(1) == 0 and server.stream_window(1) == 0
    client.receive_data(server.data_to_send())
    client.increment_flow_control_window(100, stream_id=1)
    client.increment_flow_control_window(50)
    events = server.receive(client.data_to_send())
    assert events == [(WINDOW, 1), (WINDOW, 0)]
    assert server.send_window_of(1) == 50
    assert server.stream_window(1) == 100


def test_a_larger_initial_window_grows_open_streams() -> None:
    server, client = _pair()
    client.send_headers(1, GET, end_stream=True)
    server.receive(client.data_to_send())
    client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100000})
    events = server.receive(client.data_to_send())
    assert (WINDOW, 0) in events
    assert server.stream_window(1) == 100000


def test_large_response_headers_go_out_as_continuations() -> None:
    server, client = _pair()
    client.send_headers(1, GET, end_stream=True)
    server.receive(client.data_to_send())
    fields = [(b":status", b"200"), *[(b"x-%d" % i, b"v" * 1000) for i in range(40)]]
    server.send_headers(1, encode_block(fields), True)
    wire = server.data_to_send()
    kinds = [type(f).__name__ for f in _frames(wire)]
    assert kinds[0] == "HeadersFrame" and kinds[1:] == ["ContinuationFrame"] * (len(kinds) - 1)
    got = client.receive_data(wire)
    response = next(e for e in got if isinstance(e, ResponseReceived))
    assert response.headers == fields


@pytest.mark.parametrize("table_size", [0, 256])
def test_a_smaller_table_from_the_client_opens_our_next_block(table_size: int) -> None:
    """RFC 7541 4.2: the client lowered SETTINGS_HEADER_TABLE_SIZE; our next block says so
    (h2's decoder, like nghttp2's, refuses a block without it)."""
    server, client = _pair()
    client.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
    client.send_headers(1, GET, end_stream=True)
    client.send_headers(3, GET, end_stream=True)
    server.receive(client.data_to_send())
    for sid in (1, 3):
        server.send_headers(sid, encode_block([(b":status", b"204")]), True)
    wire = server.data_to_send()
    frames = [f for f in _frames(wire) if isinstance(f, HeadersFrame)]
    assert frames[0].data[0] & 0xE0 == 0x20 and frames[1].data[0] & 0xE0 != 0x20
    got = client.receive_data(wire)
    assert sum(isinstance(e, ResponseReceived) for e in got) == 2


def test_the_client_resets_a_stream() -> None:
    server, client = _pair()
    client.send_headers(1, GET, end_stream=True)
    server.receive(client.data_to_send())
    client.reset_stream(1, ErrorCodes.CANCEL)
    assert server.receive(client.data_to_send()) == [(RESET, 1, ErrorCodes.CANCEL)]
    assert 1 not in server.streams
    with pytest.raises(StreamClosedError):
        server.send_headers(1, encode_block([(b":status", b"200")]), True)
    server.reset_stream(1, ErrorCodes.CANCEL)  # (nothing to reset: no frame)
    assert server.data_to_send() == b""


def test_we_reset_a_stream_and_ignore_what_follows_on_it() -> None:
    server, client = _pair()
    client.send_headers(1, POST)
    server.receive(client.data_to_send())
    server.reset_stream(1, h2frames.CANCEL)
    got = client.receive_data(server.data_to_send())
    assert any(isinstance(e, StreamReset) and e.error_code == ErrorCodes.CANCEL for e in got)
    wire = b"".join(
        DataFrame(1, data=b"z" * 10000).serialize() for _ in range(4)
    )  # in flight before our reset
    wire += _trailers(1)
    assert server.receive(wire) == []
    assert server.recv_window == 65535 - 40000 + 40000  # its window given back


def _trailers(sid: int) -> bytes:
    return HeadersFrame(
        sid, data=Encoder().encode([(b"x-t", b"1")]), flags=("END_HEADERS", "END_STREAM")
    ).serialize()


def test_ping_and_settings_are_acknowledged() -> None:
    server = _opened()
    events = server.receive(PingFrame(0, opaque_data=b"12345678").serialize() + SettingsFrame(0).serialize())
    assert events == []
    frames = _frames(server.data_to_send())
    assert (
        isinstance(frames[0], PingFrame) and "ACK" in frames[0].flags and frames[0].opaque_data == b"12345678"
    )
    assert isinstance(frames[1], SettingsFrame) and "ACK" in frames[1].flags
    server.receive(PingFrame(0, opaque_data=b"12345678", flags=("ACK",)).serialize())
    assert server.data_to_send() == b""  # (an ACK is not answered)


def test_goaway_from_the_client() -> None:
    server = _opened()
    assert server.receive(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize()) == [(TERMINATED, 0, 0)]


def test_our_goaway_names_the_last_stream() -> None:
    server, client = _pair()
    client.send_headers(1, GET, end_stream=True)
    client.send_headers(5, GET, end_stream=True)
    server.receive(client.data_to_send())
    server.goaway()
    goaway = _frames(server.data_to_send())[-1]
    assert isinstance(goaway, GoAwayFrame) and goaway.last_stream_id == 5 and goaway.error_code == 0


def test_streams_past_the_limit_are_refused() -> None:
    server, _ = _pair(max_concurrent_streams=2)
    wire = b"".join(
        HeadersFrame(sid, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize() for sid in (1, 3, 5)
    )
    events = server.receive(wire)
    assert [e[:2] for e in events] == [(REQUEST, 1), (REQUEST, 3), (ABORTED, 5)]
    assert events[-1] == (ABORTED, 5, REFUSED_STREAM)
    rst = _frames(server.data_to_send())[-1]
    assert (
        isinstance(rst, RstStreamFrame) and rst.stream_id == 5 and rst.error_code == ErrorCodes.REFUSED_STREAM
    )
    server.send_headers(1, encode_block([(b":status", b"204")]), True)  # one closes: room again
    events = server.receive(HeadersFrame(7, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    assert [e[:2] for e in events] == [(REQUEST, 7)]


def test_a_header_block_in_continuations() -> None:
    server, _ = _pair()
    block = Encoder().encode([*GET, (b"x-big", b"v" * 40000)])
    wire = HeadersFrame(1, data=block[:16384], flags=("END_STREAM",)).serialize()
    wire += ContinuationFrame(1, data=block[16384:32768]).serialize()
    wire += ContinuationFrame(1, data=block[32768:], flags=("END_HEADERS",)).serialize()
    events = server.receive(wire)
    assert len(events) == 1 and events[0][0] == REQUEST
    assert list(events[0][2])[-1] == (b"x-big", b"v" * 40000)


def test_padding_and_priority_are_taken_off() -> None:
    server = _opened()
    headers = HeadersFrame(
        1,
        data=BLOCK,
        pad_length=7,
        flags=("END_HEADERS", "PADDED", "PRIORITY"),
        depends_on=0,
        stream_weight=5,
    )
    data = DataFrame(1, data=b"abc", pad_length=4, flags=("PADDED", "END_STREAM"))
    events = server.receive(headers.serialize() + data.serialize())
    assert events[0][:2] == (REQUEST, 1) and list(events[0][2]) == GET
    assert events[1] == (DATA_RECEIVED, 1, b"abc", 8)  # (the padding counts against the window)
    assert events[2] == (ENDED, 1)


# -- stream errors: RST_STREAM, the connection goes on ------------------------------------


def _rst(server: ServerConnection) -> RstStreamFrame:
    frame = _frames(server.data_to_send())[-1]
    assert isinstance(frame, RstStreamFrame)
    return frame


def test_data_after_the_clients_end_stream_is_stream_closed() -> None:
    server = _opened()
    events = server.receive(HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    events = server.receive(DataFrame(1, data=b"late").serialize())
    assert events == [(ABORTED, 1, h2frames.STREAM_CLOSED)]
    assert _rst(server).error_code == ErrorCodes.STREAM_CLOSED
    assert server.receive(HeadersFrame(3, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())[0][
        :2
    ] == (
        REQUEST,
        3,
    )


def test_trailers_that_do_not_end_the_stream_are_a_stream_error() -> None:
    server = _opened()
    server.receive(HeadersFrame(1, data=BLOCK, flags=("END_HEADERS",)).serialize())
    trailers = HeadersFrame(1, data=Encoder().encode([(b"x-t", b"1")]), flags=("END_HEADERS",))
    assert server.receive(trailers.serialize()) == [(ABORTED, 1, h2frames.PROTOCOL_ERROR)]
    assert _rst(server).error_code == ErrorCodes.PROTOCOL_ERROR


def test_a_stream_depending_on_itself_is_a_stream_error() -> None:
    server = _opened()
    frame = HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "PRIORITY"), depends_on=1)
    assert server.receive(frame.serialize()) == [(ABORTED, 1, h2frames.PROTOCOL_ERROR)]
    assert server.receive(PriorityFrame(3, depends_on=3).serialize()) == []
    assert _rst(server).stream_id == 3


def test_data_past_the_streams_window_is_a_stream_error() -> None:
    server = _opened()
    server.receive(
        HeadersFrame(1, data=BLOCK, flags=("END_HEADERS",)).serialize()
        + WindowUpdateFrame(0, window_increment=100000).serialize()
    )
    server.local_initial_window = 100  # (as if we had advertised a small window)
    server.streams[1].recv_window = 100
    assert server.receive(DataFrame(1, data=b"x" * 101).serialize()) == [
        (ABORTED, 1, h2frames.FLOW_CONTROL_ERROR)
    ]


def test_window_update_of_zero_on_a_stream_is_a_stream_error() -> None:
    server = _opened()
    server.receive(HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    assert server.receive(WindowUpdateFrame(1, window_increment=0).serialize()) == [
        (ABORTED, 1, h2frames.PROTOCOL_ERROR)
    ]


def test_a_stream_window_past_the_maximum_is_a_stream_error() -> None:
    server = _opened()
    server.receive(HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    events = server.receive(WindowUpdateFrame(1, window_increment=MAX_WINDOW).serialize())
    assert events == [(ABORTED, 1, h2frames.FLOW_CONTROL_ERROR)]


# -- frames on closed streams (RFC 9113 5.1; h2spec http2/5.1/8-12, 5.1.1/2) ----------------


def _request(server: ServerConnection, sid: int, end_stream: bool) -> None:
    flags = ("END_HEADERS", "END_STREAM") if end_stream else ("END_HEADERS",)
    assert server.receive(HeadersFrame(sid, data=BLOCK, flags=flags).serialize())[0][:2] == (REQUEST, sid)


def test_data_after_the_clients_reset_is_stream_closed_once() -> None:
    server = _opened()
    _request(server, 1, end_stream=False)
    assert server.receive(RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize()) == [
        (RESET, 1, ErrorCodes.CANCEL)
    ]
    events = server.receive(b"".join(DataFrame(1, data=b"x" * 10000).serialize() for _ in range(4)))
    assert events == [(ABORTED, 1, h2frames.STREAM_CLOSED)]  # one RST_STREAM for the stream
    rst, update = _frames(server.data_to_send())
    assert isinstance(rst, RstStreamFrame) and rst.error_code == ErrorCodes.STREAM_CLOSED
    assert isinstance(update, WindowUpdateFrame) and update.stream_id == 0
    assert server.recv_window == 65535  # (the connection's window given back)


def test_headers_after_the_clients_reset_are_stream_closed() -> None:
    server = _opened()
    _request(server, 1, end_stream=False)
    server.receive(RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize())
    late = HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize()
    assert server.receive(late) == [(ABORTED, 1, h2frames.STREAM_CLOSED)]
    assert _rst(server).error_code == ErrorCodes.STREAM_CLOSED
    _request(server, 3, end_stream=True)  # the connection goes on, its HPACK table in step


def test_data_after_both_sides_ended_is_stream_closed() -> None:
    server = _opened()
    _request(server, 1, end_stream=True)
    server.send_headers(1, encode_block([(b":status", b"204")]), True)
    server.data_to_send()
    assert server.receive(DataFrame(1, data=b"late", flags=("END_STREAM",)).serialize()) == [
        (ABORTED, 1, h2frames.STREAM_CLOSED)
    ]
    assert _rst(server).error_code == ErrorCodes.STREAM_CLOSED


def test_headers_after_both_sides_ended_are_a_connection_error() -> None:
    server = _opened()
    _request(server, 1, end_stream=True)
    server.send_headers(1, encode_block([(b":status", b"204")]), True)
    server.data_to_send()
    code, _ = _error(server, HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    assert code == ErrorCodes.STREAM_CLOSED


def test_headers_on_a_lower_id_never_opened_are_a_connection_error() -> None:
    server = _opened()
    _request(server, 5, end_stream=True)
    code, _ = _error(server, HeadersFrame(3, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    assert code == ErrorCodes.PROTOCOL_ERROR


def test_what_follows_a_refused_stream_is_ignored() -> None:
    server, _ = _pair(max_concurrent_streams=1)
    _request(server, 1, end_stream=False)
    assert server.receive(HeadersFrame(3, data=BLOCK, flags=("END_HEADERS",)).serialize()) == [
        (ABORTED, 3, REFUSED_STREAM)
    ]
    server.data_to_send()
    assert server.receive(DataFrame(3, data=b"x" * 100).serialize() + _trailers(3)) == []
    assert server.data_to_send() == b""  # (100 bytes: no WINDOW_UPDATE due yet, and no RST_STREAM)


def test_resets_are_remembered_within_a_bound() -> None:
    server, _ = _pair()
    last = 2 * h2server.RECENTLY_RESET + 41  # (odd: a client stream)
    for sid in range(1, last + 1, 2):
        _request(server, sid, end_stream=False)
        server.reset_stream(sid, h2frames.CANCEL)
    assert len(server.recently_reset) == h2server.RECENTLY_RESET
    server.data_to_send()
    assert server.receive(_trailers(last)) == []  # a recent reset of ours: ignored
    code, _ = _error(server, _trailers(1))
    assert code == ErrorCodes.STREAM_CLOSED  # forgotten: taken for a stream that ended


def test_gaps_in_the_stream_ids_are_remembered() -> None:
    server = _opened()
    for sid in (1, 9, 11, 21):
        _request(server, sid, end_stream=True)
    assert list(server.skipped) == [(3, 7), (13, 19)]
    code, _ = _error(server, HeadersFrame(15, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize())
    assert code == ErrorCodes.PROTOCOL_ERROR


# -- connection errors: GOAWAY, nothing more read -------------------------------------------


def _settings(*pairs: tuple[int, int]) -> bytes:
    payload = b"".join(struct.pack("!HL", k, v) for k, v in pairs)
    return len(payload).to_bytes(3, "big") + b"\x04\x00" + b"\x00\x00\x00\x00" + payload


CONNECTION_ERRORS = {
    "even stream": (
        HeadersFrame(2, data=BLOCK, flags=("END_HEADERS",)).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "DATA on an idle stream": (DataFrame(1, data=b"x").serialize(), ErrorCodes.PROTOCOL_ERROR),
    "DATA on stream 0": (b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x", ErrorCodes.PROTOCOL_ERROR),
    "RST_STREAM on an idle stream": (RstStreamFrame(5).serialize(), ErrorCodes.PROTOCOL_ERROR),
    "WINDOW_UPDATE on an idle stream": (
        WindowUpdateFrame(5, window_increment=1).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "WINDOW_UPDATE of 0": (WindowUpdateFrame(0, window_increment=0).serialize(), ErrorCodes.PROTOCOL_ERROR),
    "connection window overflow": (
        WindowUpdateFrame(0, window_increment=MAX_WINDOW).serialize(),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
    "SETTINGS on a stream": (b"\x00\x00\x00\x04\x00\x00\x00\x00\x01", ErrorCodes.PROTOCOL_ERROR),
    "SETTINGS of 5 bytes": (
        b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x00" * 5,
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "SETTINGS ACK with a payload": (
        b"\x00\x00\x06\x04\x01\x00\x00\x00\x00" + b"\x00" * 6,
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "ENABLE_PUSH 2": (_settings((2, 2)), ErrorCodes.PROTOCOL_ERROR),
    "INITIAL_WINDOW_SIZE over 2^31-1": (_settings((4, 1 << 31)), ErrorCodes.FLOW_CONTROL_ERROR),
    "MAX_FRAME_SIZE too small": (_settings((5, 100)), ErrorCodes.PROTOCOL_ERROR),
    "PING of 7 bytes": (b"\x00\x00\x07\x06\x00\x00\x00\x00\x00" + b"\x00" * 7, ErrorCodes.FRAME_SIZE_ERROR),
    "PING on a stream": (b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"\x00" * 8, ErrorCodes.PROTOCOL_ERROR),
    "RST_STREAM of 3 bytes": (
        b"\x00\x00\x03\x03\x00\x00\x00\x00\x01" + b"\x00" * 3,
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "GOAWAY on a stream": (b"\x00\x00\x08\x07\x00\x00\x00\x00\x01" + b"\x00" * 8, ErrorCodes.PROTOCOL_ERROR),
    "PUSH_PROMISE": (
        PushPromiseFrame(1, promised_stream_id=2, data=BLOCK, flags=("END_HEADERS",)).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "CONTINUATION alone": (
        ContinuationFrame(1, data=BLOCK, flags=("END_HEADERS",)).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "a frame inside a header block": (
        HeadersFrame(1, data=BLOCK[:2]).serialize() + PingFrame(0).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "CONTINUATION of another stream": (
        HeadersFrame(1, data=BLOCK[:2]).serialize()
        + ContinuationFrame(3, data=BLOCK[2:], flags=("END_HEADERS",)).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "padding as long as the frame": (
        b"\x00\x00\x03\x00\x08\x00\x00\x00\x01\x05ab",
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "a frame over SETTINGS_MAX_FRAME_SIZE": (
        DataFrame(1, data=b"x" * 16385).serialize(),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "an HPACK index past the table": (
        HeadersFrame(1, data=b"\xff\x7f", flags=("END_HEADERS",)).serialize(),
        ErrorCodes.COMPRESSION_ERROR,
    ),
}


@pytest.mark.parametrize("name", sorted(CONNECTION_ERRORS))
def test_connection_errors(name: str) -> None:
    wire, code = CONNECTION_ERRORS[name]
    if name == "padding as long as the frame":
        _opened_with_stream = _opened()
        _opened_with_stream.receive(HeadersFrame(1, data=BLOCK, flags=("END_HEADERS",)).serialize())
        got, _ = _error(_opened_with_stream, wire)
    else:
        got, _ = _error(_opened(), wire)
    assert got == code


def test_the_preface_must_be_the_http2_one() -> None:
    server = ServerConnection()
    server.initiate()
    server.data_to_send()
    code, _ = _error(server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert code == ErrorCodes.PROTOCOL_ERROR


def test_the_preface_must_be_followed_by_settings() -> None:
    server = ServerConnection()
    server.initiate()
    server.data_to_send()
    code, _ = _error(server, PREFACE + PingFrame(0).serialize())
    assert code == ErrorCodes.PROTOCOL_ERROR


def test_the_preface_may_come_a_byte_at_a_time() -> None:
    server = ServerConnection()
    wire = (
        PREFACE
        + SettingsFrame(0).serialize()
        + HeadersFrame(1, data=BLOCK, flags=("END_HEADERS", "END_STREAM")).serialize()
    )
    events = []
    for i in range(len(wire)):
        events += server.receive(wire[i : i + 1])
    assert [e[:2] for e in events] == [(REQUEST, 1)]


def test_a_header_block_is_bounded_without_the_guard() -> None:
    """The abuse guard closes a long CONTINUATION chain first; the connection bounds it too."""
    server = _opened()
    wire = HeadersFrame(1, data=b"\x00" * 16384).serialize()
    wire += b"".join(ContinuationFrame(1, data=b"\x00" * 16384).serialize() for _ in range(8))
    code, _ = _error(server, wire)
    assert code == ErrorCodes.ENHANCE_YOUR_CALM


def test_an_hpack_bomb_is_a_header_list_too_large() -> None:
    """A 4 KB field in the dynamic table, referenced 20 times: 80 KB decoded from 4 KB sent."""
    block = Encoder().encode([*GET, *[(b"x-bomb", b"b" * 4000)] * 20])
    assert len(block) < 4200
    server = _opened()
    code, exc = _error(server, HeadersFrame(1, data=block, flags=("END_HEADERS", "END_STREAM")).serialize())
    assert isinstance(exc, HeaderListTooLarge) and code == ErrorCodes.ENHANCE_YOUR_CALM


# -- properties -------------------------------------------------------------------------------

_name = st.sampled_from([b"accept", b"user-agent", b"x-a", b"x-b", b"cookie"])
_value = st.binary(min_size=0, max_size=40).map(lambda b: bytes(c % 26 + 97 for c in b))
_action = st.one_of(
    st.tuples(st.just("open"), st.lists(st.tuples(_name, _value), max_size=4), st.booleans()),
    st.tuples(st.just("data"), st.integers(0, 9), st.integers(0, 3000), st.booleans()),
    st.tuples(st.just("reset"), st.integers(0, 9)),
    st.tuples(st.just("window"), st.integers(0, 9), st.integers(1, 100000)),
    st.tuples(st.just("ping"), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just("settings"), st.integers(0, 4096), st.integers(0, 200000)),
    st.tuples(st.just("trailers"), st.integers(0, 9)),
)


def _h2_server() -> H2Connection:
    server = H2Connection(
        H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
    )
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_HEADER_LIST_SIZE: 65536})
    return server


def _theirs(events: list[object]) -> list[tuple[object, ...]]:
    """h2's events in our shape (a StreamEnded after a RequestReceived that ended is implied
    by the request's end_stream; an empty DATA frame that does not end the stream is none)."""
    out: list[tuple[object, ...]] = []
    ended_with_request: set[int] = set()
    for e in events:
        if isinstance(e, RequestReceived):
            out.append((REQUEST, e.stream_id, list(e.headers or ()), e.stream_ended is not None))
            if e.stream_ended is not None:
                ended_with_request.add(e.stream_id)
        elif isinstance(e, DataReceived):
            if not e.data and not e.flow_controlled_length:
                continue  # (an empty DATA frame without END_STREAM: we report nothing)
            out.append((DATA_RECEIVED, e.stream_id, e.data, e.flow_controlled_length))
        elif isinstance(e, StreamEnded) and e.stream_id not in ended_with_request:
            out.append((ENDED, e.stream_id))
        elif isinstance(e, TrailersReceived):
            out.append((TRAILERS, e.stream_id, list(e.headers or ())))
        elif isinstance(e, StreamReset):
            out.append((RESET, e.stream_id, int(e.error_code)))
        elif isinstance(e, WindowUpdated):
            out.append((WINDOW, e.stream_id))
        elif isinstance(e, RemoteSettingsChanged):
            change = e.changed_settings.get(SettingCodes.INITIAL_WINDOW_SIZE)
            before = 65535 if change is None or change.original_value is None else change.original_value
            if change is not None and change.new_value > before:
                out.append((WINDOW, 0))  # (every stream's window grew)
        elif isinstance(e, ConnectionTerminated):
            out.append((TERMINATED, int(e.error_code or 0), e.last_stream_id))
    return out


def _ours(events: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [
        (e[0], e[1], list(e[2]), e[3])
        if e[0] == REQUEST
        else (e[0], e[1], list(e[2]))
        if e[0] == TRAILERS
        else e
        for e in events
    ]


@given(st.lists(_action, max_size=25), st.lists(st.integers(1, 200), min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_what_we_read_is_what_h2_reads(actions: list[tuple[object, ...]], cuts: list[int]) -> None:
    """A real client's frames (requests, bodies, resets, windows, pings, table and window
    settings), cut anywhere: our events are h2's own server's, stream by stream, and the
    client reads our answers to them (SETTINGS and PING ACKs)."""
    client = _client()
    ours = ServerConnection()
    ours.initiate()
    theirs = _h2_server()
    client.receive_data(ours.data_to_send())
    wire = bytearray(client.data_to_send())
    sid = 1
    opened: list[int] = []
    for action in actions:
        kind = action[0]
        live = [s for s in opened if client.streams.get(s) is not None and client.streams[s].open]
        try:
            if kind == "open":
                client.send_headers(sid, [*GET, *action[1]], end_stream=bool(action[2]))  # type: ignore[misc]
                opened.append(sid)
                sid += 2
            elif kind == "data" and live:
                s = live[int(action[1]) % len(live)]  # type: ignore[call-overload]
                n = min(int(action[2]), client.local_flow_control_window(s))  # type: ignore[call-overload]
                client.send_data(s, b"d" * n, end_stream=bool(action[3]))
            elif kind == "reset" and live:
                client.reset_stream(live[int(action[1]) % len(live)], ErrorCodes.CANCEL)  # type: ignore[call-overload]
            elif kind == "window":
                target = opened[int(action[1]) % len(opened)] if opened and int(action[1]) % 2 else 0  # type: ignore[call-overload]
                if target == 0 or (
                    client.streams.get(target) is not None and not client.streams[target].closed
                ):
                    client.increment_flow_control_window(int(action[2]), stream_id=target or None)  # type: ignore[call-overload]
            elif kind == "ping":
                client.ping(action[1])  # type: ignore[arg-type]
            elif kind == "settings":
                client.update_settings(
                    {
                        SettingCodes.HEADER_TABLE_SIZE: int(action[1]),
                        SettingCodes.INITIAL_WINDOW_SIZE: int(action[2]),
                    }  # type: ignore[call-overload]
                )
            elif kind == "trailers" and live:
                client.send_headers(live[int(action[1]) % len(live)], [(b"x-t", b"1")], end_stream=True)  # type: ignore[call-overload]
        except Exception:
            continue
        wire += client.data_to_send()
    data = bytes(wire)
    got: list[tuple[object, ...]] = []
    at = 0
    for cut in cuts * (len(data) // sum(cuts) + 1):
        if at >= len(data):
            break
        got += ours.receive(data[at : at + cut])
        at += cut
    expected = _theirs(theirs.receive_data(data))
    assert _ours(got) == expected
    for event in got:  # the body consumed: windows given back
        if event[0] == DATA_RECEIVED:
            ours.ack_data(event[1], event[3])  # type: ignore[arg-type]
    client.receive_data(ours.data_to_send())  # our ACKs and WINDOW_UPDATEs are well formed
    for sid_, stream in ours.streams.items():  # both ends agree on every window
        if sid_ not in client.streams:
            continue  # (h2's client forgets a stream an action it refused was about)
        if stream.remote_open:
            assert client.local_flow_control_window(sid_) == min(stream.recv_window, ours.recv_window)
        if stream.local_open:
            assert client.remote_flow_control_window(sid_) == ours.send_window_of(sid_)


_frame_kind = st.integers(0, 10)


@given(
    st.lists(
        st.tuples(_frame_kind, st.integers(0, 255), st.integers(0, 9), st.binary(max_size=40)),
        max_size=30,
    )
)
@settings(max_examples=300, deadline=None)
def test_any_frames_end_in_events_or_a_connection_error(frames: list[tuple[int, int, int, bytes]]) -> None:
    """Arbitrary frames after a proper preface: events, or H2ConnectionError with GOAWAY
    queued; never another exception; the stream table within its bounds."""
    server = ServerConnection(max_concurrent_streams=3)
    server.initiate()
    wire = PREFACE + SettingsFrame(0).serialize()
    for kind, flags, sid, payload in frames:
        wire += len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload
    try:
        server.receive(wire)
    except H2ConnectionError:
        assert server.closed
        assert isinstance(_frames(server.data_to_send())[-1], GoAwayFrame)
        return
    assert len(server.streams) <= 3
    assert all(s % 2 == 1 and s <= server.last_sid for s in server.streams)
    assert all(st_.send_window <= MAX_WINDOW and st_.recv_window >= 0 for st_ in server.streams.values())
    assert 0 <= server.recv_window <= 65535
