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

On the receiving side, `install_decode_cache` gives the connection an hpack decoder
that remembers the header lists of blocks which did not change the dynamic table:
a client repeats its request blocks byte for byte once their fields are indexed
(h2load, browsers), and hpack's pure-Python decoding was a tenth of the CPU. A hit
is valid only at the same table generation (every insertion and resize counts) and
the same limits; h2 still does everything else with the list it gets.

`quiet_frame_repr` stops h2 from formatting a log line nobody reads for each frame
it receives (see there).

What they rely on, all of it inside h2 4.x / hpack 4.x: `H2Connection.state_machine`,
`.streams`, `.encoder`, `.decoder`, `.outbound_flow_control_window`;
`H2Stream.state_machine`, `.request_method`, `.outbound_flow_control_window`;
`ConnectionInputs`/`StreamInputs`; `Encoder.table_size_changes`; `Decoder.header_table`
and `HeaderTable.add`/`maxsize` (the only ways hpack changes a table).
`tests/unit/test_h2glue.py` drives one connection through h2's own calls and a twin
through these, and fails loudly when the two end in different states, send different
frames or read different headers: pin h2 or adapt this module, nothing else.
The callers check the public limits first: `local_flow_control_window(sid)` and
`max_outbound_frame_size`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.connection
import h2.exceptions
import h2.stream
import hpack
from h2.connection import ConnectionInputs
from h2.stream import StreamInputs
from hpack.table import HeaderTable

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


# ---------------------------------------------------------------- receiving

# Per connection, so bounded tightly (a client chooses what is remembered): at most 16 blocks
# of at most 2 KiB and 64 fields each, some tens of KiB per connection at worst.
_DECODE_CACHE_MAX = 16
_DECODE_BLOCK_MAX = 2048
_DECODE_FIELDS_MAX = 64
_TABLE_MAXSIZE: Any = HeaderTable.__dict__["maxsize"]  # hpack's property, extended below


class _CountedTable(HeaderTable):
    """hpack's dynamic table, counting its changes: a decoded list is only reused at
    the generation it was decoded at."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return int(_TABLE_MAXSIZE.fget(self))

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        _TABLE_MAXSIZE.fset(self, newmax)


class CachingDecoder(hpack.Decoder):
    """hpack's decoder, remembering what blocks that leave the table alone decode to."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size=max_header_list_size)
        self.header_table = _CountedTable()
        self._cache: dict[bytes, tuple[int, int, tuple[hpack.HeaderTuple, ...]]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[hpack.HeaderTuple]:
        if not raw:
            return super().decode(data, raw)
        table = self.header_table
        assert isinstance(table, _CountedTable)
        hit = self._cache.get(data)
        if (
            hit is not None
            and hit[0] == table.generation
            and hit[1] == self.max_header_list_size
            and table.maxsize <= self.max_allowed_table_size
        ):
            return hit[2]  # (h2 copies it into the event: `H2Stream._process_received_headers`)
        generation = table.generation
        headers = tuple(super().decode(data, raw=True))
        if (
            table.generation == generation
            and len(data) <= _DECODE_BLOCK_MAX
            and len(headers) <= _DECODE_FIELDS_MAX
        ):
            cache = self._cache
            if len(cache) >= _DECODE_CACHE_MAX:
                cache.clear()
            cache[bytes(data)] = (generation, self.max_header_list_size, headers)
        return headers


def install_decode_cache(conn: h2.connection.H2Connection) -> None:
    """Give a new connection (nothing received yet) the caching decoder, same limits."""
    old = conn.decoder
    new = CachingDecoder(old.max_header_list_size)
    new.max_allowed_table_size = old.max_allowed_table_size
    new.header_table.maxsize = old.header_table.maxsize
    conn.decoder = new


# ---------------------------------------------------------------- h2's frame log line


def _frame_name(frame: object) -> str:
    return type(frame).__name__


def quiet_frame_repr() -> None:
    """h2 formats `repr(frame)` for a trace log line on every frame it receives
    (`H2Connection._receive_frame`), even when its logger is the no-op `DummyLogger`:
    ~3-6 us per HEADERS frame, a twentieth of a request. Inside h2.connection only,
    `repr` becomes the frame's class name (the one use there; with a real logger, which
    sekisho never gives h2, that line would name the frame's type only)."""
    h2.connection.repr = _frame_name  # type: ignore[attr-defined]


quiet_frame_repr()
