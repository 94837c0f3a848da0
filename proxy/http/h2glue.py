"""Where sekisho reaches inside h2 (and hpack): here and nowhere else.

A response's HEADERS and DATA frames are built by us (proxy/http/h2frames.py): h2's
`send_headers` and `send_data` make a frame object per frame and run hpack's general
encoder, most of what an HTTP/2 response cost. h2 still owns the state: the two
functions below make exactly the state changes `H2Connection.send_headers` and
`send_data` make for a server's response (the connection's and the stream's state
machines, the stream's `request_method`, both outbound flow-control windows, a
pending HPACK table size update) and return the frame bytes instead of queueing them.
The caller queues them after whatever h2 queued before (`data_to_send()`), so the
frames go out in the order they were made.

What they rely on, all of it inside h2 4.x / hpack 4.x: `H2Connection.state_machine`,
`.streams`, `.encoder`, `.outbound_flow_control_window`; `H2Stream.state_machine`,
`.request_method`, `.outbound_flow_control_window`; `ConnectionInputs`/`StreamInputs`;
`Encoder.table_size_changes`. `tests/unit/test_h2glue.py` drives one connection
through h2's own calls and a twin through these, and fails loudly when the two end in
different states or send different frames: pin h2 or adapt this module, nothing else.
The callers check the public limits first: `local_flow_control_window(sid)` and
`max_outbound_frame_size`.
"""

from __future__ import annotations

import h2.connection
import h2.exceptions
import h2.stream
from h2.connection import ConnectionInputs
from h2.stream import StreamInputs

from proxy.http.h2frames import (
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    TYPE_DATA,
    TYPE_HEADERS,
    encode_integer,
    frame_head,
)

_SEND_HEADERS = ConnectionInputs.SEND_HEADERS
_SEND_DATA = ConnectionInputs.SEND_DATA
_S_SEND_HEADERS = StreamInputs.SEND_HEADERS
_S_SEND_DATA = StreamInputs.SEND_DATA
_S_SEND_END = StreamInputs.SEND_END_STREAM


def _stream(conn: h2.connection.H2Connection, sid: int) -> h2.stream.H2Stream:
    stream = conn.streams.get(sid)
    if stream is None:  # (h2: a stream it forgot is closed)
        raise h2.exceptions.StreamClosedError(sid)
    return stream


def headers_frame(conn: h2.connection.H2Connection, sid: int, block: bytes, end_stream: bool) -> bytes:
    """A final (non-1xx) response's HEADERS frame carrying `block` (h2frames' encoding: no
    dynamic table), with h2's state moved as `conn.send_headers(sid, ..., end_stream)`
    moves it. The block must fit in one frame (`conn.max_outbound_frame_size`)."""
    conn.state_machine.process_input(_SEND_HEADERS)
    stream = _stream(conn, sid)
    stream.state_machine.process_input(_S_SEND_HEADERS)
    encoder = conn.encoder
    if encoder.table_size_changes:  # RFC 7541 4.2: the update opens the next block
        block = b"".join(encode_integer(size, 5, 0x20) for size in encoder.table_size_changes) + block
        encoder.table_size_changes = []
    flags = FLAG_END_HEADERS
    if end_stream:
        stream.state_machine.process_input(_S_SEND_END)
        flags |= FLAG_END_STREAM
    stream.request_method = None  # (h2 sets it from the block it sends: a response has no :method)
    return frame_head(len(block), TYPE_HEADERS, flags, sid) + block


def data_frame(conn: h2.connection.H2Connection, sid: int, data: bytes, end_stream: bool) -> bytes:
    """A DATA frame, with h2's state and windows moved as `conn.send_data(sid, data,
    end_stream)` moves them. `len(data)` must be within `conn.local_flow_control_window(sid)`
    and `conn.max_outbound_frame_size`."""
    conn.state_machine.process_input(_SEND_DATA)
    stream = _stream(conn, sid)
    stream.state_machine.process_input(_S_SEND_DATA)
    flags = 0
    if end_stream:
        stream.state_machine.process_input(_S_SEND_END)
        flags = FLAG_END_STREAM
    n = len(data)
    stream.outbound_flow_control_window -= n
    conn.outbound_flow_control_window -= n
    return frame_head(n, TYPE_DATA, flags, sid) + data
