"""The server side of one HTTP/2 connection, sans-IO: bytes in, events and frames out.

This replaces the `h2` package (python-hyper) on the hot path. h2 is general (client and
server, push, priorities, every frame as an object, one state machine per stream driven
by enums, a stream table scanned once per new stream to count the open ones); a proxy
server needs a small part of it, and h2's receive path alone cost ~28 us of a ~100 us
HTTP/2 request here. What is kept from RFC 9113, checked where the frame is read:

- framing: the client preface, SETTINGS first, frame sizes (our SETTINGS_MAX_FRAME_SIZE),
  the fixed payload sizes of RST_STREAM, SETTINGS, PING, PRIORITY, WINDOW_UPDATE,
  padding shorter than the payload, header blocks (HEADERS, then CONTINUATION on the
  same stream only, until END_HEADERS), no PUSH_PROMISE from a client;
- stream ids: client streams odd and increasing; DATA, WINDOW_UPDATE, RST_STREAM on a
  stream never opened is a connection error;
- closed streams (RFC 9113 5.1), a late frame read by how the stream closed: on one of
  the last `RECENTLY_RESET` streams we reset, everything is ignored (the client may have
  sent it before our RST_STREAM arrived; DATA's connection window is given back, HEADERS
  still decoded); after the client's own RST_STREAM, DATA or HEADERS is a stream error
  STREAM_CLOSED; after both sides ended it (what a closed stream that is not a recent
  reset is taken for), HEADERS is a connection error STREAM_CLOSED (the client knows it
  sent END_STREAM) and DATA a stream error STREAM_CLOSED (as Go's server); HEADERS on an
  id the client skipped (never opened, below the last: the last `RECENTLY_RESET` gaps
  are kept) is a connection error PROTOCOL_ERROR (5.1.1; nginx and Go call every HEADERS
  below the last id that); WINDOW_UPDATE, RST_STREAM, PRIORITY on a closed stream are
  ignored. Normal ends cost nothing here: only resets and gaps are kept;
- stream states: a stream is open, half-closed (remote) after the client's END_STREAM,
  half-closed (local) after ours, closed after both or a reset; DATA or HEADERS after
  the client's END_STREAM is a stream error (STREAM_CLOSED); a second HEADERS
  (trailers) must end the stream;
- flow control: both receive windows (the client may not send past them:
  FLOW_CONTROL_ERROR), both send windows (WINDOW_UPDATE of 0, or past 2^31-1, is an
  error), SETTINGS_INITIAL_WINDOW_SIZE applied to every open stream;
- max_concurrent_streams: a stream past it is refused (RST_STREAM REFUSED_STREAM, as
  nginx does), reported as ABORTED with that code so the abuse guard can count it;
- HPACK: received blocks are decoded with hpack's `Decoder` (public API), every block,
  also those of streams we ignore (the table must stay in step); a decoding error is
  a COMPRESSION_ERROR, a list over SETTINGS_MAX_HEADER_LIST_SIZE is `HeaderListTooLarge`
  (the HPACK bomb); blocks we send never use the dynamic table (h2frames.py), so the
  only encoder state is a pending table size update after the client's
  SETTINGS_HEADER_TABLE_SIZE changes.

The header fields themselves are checked by proxy/http/h2request.py; the abuse rules
(rapid reset, floods, CONTINUATION, slow reads) by proxy/http/h2guard.py, which reads
the frame headers before this module does. A connection error queues GOAWAY with its
code and raises `H2ConnectionError`; the caller writes what is queued and closes.

Events are tuples, kind first (see the constants), in the order the frames came.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import NoReturn

from hpack.exceptions import HPACKError, OversizedHeaderListError

from proxy.http.h2frames import (  # the wire's constants (RFC 9113)
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    ENABLE_CONNECT_PROTOCOL,
    ENABLE_PUSH,
    ENHANCE_YOUR_CALM,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    FLOW_CONTROL_ERROR,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    encode_integer,
    frame_head,
)
from proxy.http.h2glue import CachingDecoder

_SELF_DEPENDENT = 0x100  # not a wire flag: a HEADERS whose priority names its own stream

# Events: (REQUEST, sid, headers, end_stream), (DATA_RECEIVED, sid, data, flow_controlled_length),
# (ENDED, sid) after DATA or trailers with END_STREAM (not after a REQUEST that ended:
# its end_stream says so), (TRAILERS, sid, headers), (RESET, sid, code): the client reset
# it, (ABORTED, sid, code): we reset it for a stream error of the client's (already
# queued; REFUSED_STREAM: past max_concurrent_streams),
# (WINDOW, sid): a send window grew (0: the connection's, or every stream's),
# (TERMINATED, code, last_sid): the client's GOAWAY.
REQUEST, DATA_RECEIVED, ENDED, TRAILERS, RESET, ABORTED, WINDOW, TERMINATED = range(8)

# Who reset a stream, kept for the last RECENTLY_RESET resets (a late frame on a closed
# stream is read by how it closed: see the module docstring); as many gaps in the ids.
RESET_BY_US, RESET_BY_CLIENT = range(2)
RECENTLY_RESET = 256

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
DEFAULT_TABLE_SIZE = 4096

_U32 = struct.Struct("!L")
_SETTING = struct.Struct("!HL")
_PRIORITY = struct.Struct("!LB")

Event = tuple[object, ...]
Header = tuple[bytes, bytes]


class H2ConnectionError(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with `code` is queued."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HeaderListTooLarge(H2ConnectionError):
    """A header block decoded past SETTINGS_MAX_HEADER_LIST_SIZE (an HPACK bomb)."""


class StreamClosedError(Exception):
    """A frame for a stream that is closed (or closed on our side) was asked for."""


class _Stream:
    """What the connection knows of one open stream."""

    __slots__ = ("local_open", "recv_window", "remote_open", "send_window", "unacked")

    def __init__(self, recv_window: int, send_window: int, remote_open: bool) -> None:
        self.remote_open = remote_open  # the client may still send (no END_STREAM yet)
        self.local_open = True  # we may still send
        self.recv_window = recv_window  # what the client may still send on the stream
        self.send_window = send_window  # what we may still send on the stream
        self.unacked = 0  # bytes processed but not yet given back in a WINDOW_UPDATE


class ServerConnection:
    """The protocol state of one server-side HTTP/2 connection."""

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 65536,
        max_frame_size: int = DEFAULT_FRAME_SIZE,
        extended_connect: bool = False,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_list_size = max_header_list_size
        self.max_frame_size = max_frame_size
        self.extended_connect = extended_connect
        self.decoder = CachingDecoder(max_header_list_size)
        self.streams: dict[int, _Stream] = {}
        self.recently_reset: OrderedDict[int, int] = OrderedDict()  # sid -> RESET_BY_US/_CLIENT
        self.skipped: deque[tuple[int, int]] = deque(maxlen=RECENTLY_RESET)  # ids never opened
        self.last_sid = 0  # the highest stream id the client opened
        self.out = bytearray()  # frames queued for the transport
        self.closed = False  # GOAWAY for an error was queued: nothing more is read
        # Received bytes not yet a whole frame, kept in pieces until `_need` of them are here
        # (a frame trickling in a byte per read is joined once, not once per read).
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0
        self._preface = len(PREFACE)  # preface bytes still expected
        self._settings_seen = False  # the client's first frame (SETTINGS) arrived
        self._block: tuple[int, int, list[bytes]] | None = None  # (sid, flags, fragments) open
        self._block_bytes = 0
        self.recv_window = DEFAULT_WINDOW  # what the client may still send on the connection
        self._conn_unacked = 0
        self.send_window = DEFAULT_WINDOW  # what we may still send on the connection
        self.local_initial_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self._table_size_update: int | None = None  # to open our next header block
        self._encoder_table_size = DEFAULT_TABLE_SIZE

    # ------------------------------------------------------------------ starting, output

    def initiate(self) -> None:
        """Queue our SETTINGS (the server preface)."""
        settings = [
            (MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (MAX_HEADER_LIST_SIZE, self.max_header_list_size),
            (MAX_FRAME_SIZE, self.max_frame_size),
            (ENABLE_PUSH, 0),
        ]
        if self.extended_connect:
            settings.append((ENABLE_CONNECT_PROTOCOL, 1))
        payload = b"".join(_SETTING.pack(k, v) for k, v in settings)
        self.out += frame_head(len(payload), SETTINGS, 0, 0) + payload

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes) -> list[Event]:
        """Take received bytes; return the events of every whole frame in them."""
        if self.closed:
            return []
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._parts)
            self._parts = []
        else:
            buf = data
        if self._preface:
            buf = self._take_preface(buf)
            if self._preface:
                return []
        events: list[Event] = []
        i = 0
        n = len(buf)
        unpack = FRAME_HEAD.unpack_from
        limit = self.max_frame_size
        try:
            while n - i >= 9:
                high, low, kind, flags, sid = unpack(buf, i)
                length = high << 16 | low
                end = i + 9 + length
                if length > limit:
                    self._fail(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end > n:
                    break
                payload = buf[i + 9 : end]
                i = end
                sid &= 0x7FFFFFFF
                if self._block is not None and kind != CONTINUATION:
                    self._fail(PROTOCOL_ERROR, "frame inside a header block")
                if not self._settings_seen:
                    if kind != SETTINGS or flags & FLAG_ACK:
                        self._fail(PROTOCOL_ERROR, "the client's preface is not followed by SETTINGS")
                    self._settings_seen = True
                if kind == HEADERS:
                    self._headers(sid, flags, payload, events)
                elif kind == DATA:
                    self._data(sid, flags, payload, events)
                elif kind == WINDOW_UPDATE:
                    self._window_update(sid, payload, events)
                elif kind == CONTINUATION:
                    self._continuation(sid, flags, payload, events)
                elif kind == RST_STREAM:
                    self._rst_stream(sid, payload, events)
                elif kind == SETTINGS:
                    self._settings(sid, flags, payload, events)
                elif kind == PING:
                    self._ping(sid, flags, payload)
                elif kind == PRIORITY:
                    self._priority(sid, payload, events)
                elif kind == GOAWAY:
                    if sid:
                        self._fail(PROTOCOL_ERROR, "GOAWAY on a stream")
                    if len(payload) < 8:
                        self._fail(FRAME_SIZE_ERROR, "short GOAWAY")
                    last, code = struct.unpack_from("!LL", payload)
                    events.append((TERMINATED, code, last & 0x7FFFFFFF))
                elif kind == PUSH_PROMISE:
                    self._fail(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # other types: ignored (RFC 9113 5.5)
        except H2ConnectionError:
            self._parts = []
            raise
        if i < n:
            rest = buf[i:]
            self._parts = [rest]
            self._have = n - i
            self._need = 9 + (rest[0] << 16 | rest[1] << 8 | rest[2]) if n - i >= 9 else 9
        return events

    def _take_preface(self, buf: bytes) -> bytes:
        done = len(PREFACE) - self._preface
        k = min(self._preface, len(buf))
        if buf[:k] != PREFACE[done : done + k]:
            self._fail(PROTOCOL_ERROR, "not the HTTP/2 client preface")
        self._preface -= k
        return buf[k:]

    def _fail(self, code: int, reason: str, kind: type[H2ConnectionError] = H2ConnectionError) -> NoReturn:
        """A connection error: GOAWAY, nothing more is read."""
        self.close(code)
        raise kind(code, reason)

    def _strip_padding(self, flags: int, payload: bytes) -> bytes:
        if flags & FLAG_PADDED:
            if not payload:
                self._fail(FRAME_SIZE_ERROR, "padded frame without its pad length")
            pad = payload[0]
            if pad >= len(payload):
                self._fail(PROTOCOL_ERROR, "padding as long as the frame")
            return payload[1 : len(payload) - pad]
        return payload

    def _data(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            self._fail(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)  # (padding counts against the windows: RFC 9113 6.1)
        if size > self.recv_window:
            self._fail(FLOW_CONTROL_ERROR, "DATA past the connection's window")
        self.recv_window -= size
        data = self._strip_padding(flags, payload) if flags & FLAG_PADDED else payload
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid or not sid & 1:
                self._fail(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self._give_back(size)  # a closed stream: its window is nobody's now
            if self.recently_reset.get(sid) != RESET_BY_US:  # (our reset: in flight, ignored)
                self._stream_error(sid, STREAM_CLOSED, events, report=True)
            return
        if not st.remote_open:
            self._give_back(size)
            self._stream_error(sid, STREAM_CLOSED, events)
            return
        if size > st.recv_window:
            self._give_back(size)
            self._stream_error(sid, FLOW_CONTROL_ERROR, events)
            return
        st.recv_window -= size
        if data or size:
            events.append((DATA_RECEIVED, sid, data, size))
        if flags & FLAG_END_STREAM:
            st.remote_open = False
            events.append((ENDED, sid))
            if not st.local_open:
                del self.streams[sid]

    def _headers(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            self._fail(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._strip_padding(flags, payload) if flags & FLAG_PADDED else payload
        if flags & FLAG_PRIORITY:
            if len(block) < 5:
                self._fail(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            dependency = _U32.unpack_from(block)[0] & 0x7FFFFFFF
            block = block[5:]
            if dependency == sid:
                flags |= _SELF_DEPENDENT  # (a stream error, once the block is decoded)
        if flags & FLAG_END_HEADERS:
            self._block_done(sid, flags, block, events)
        else:
            self._block = (sid, flags, [block])
            self._block_bytes = len(block)

    def _continuation(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        pending = self._block
        if pending is None or pending[0] != sid:
            self._fail(PROTOCOL_ERROR, "CONTINUATION outside a header block")
        pending[2].append(payload)
        self._block_bytes += len(payload)
        if self._block_bytes > 2 * self.max_header_list_size:
            # (the abuse guard closes such a block first; this bounds the buffer without it)
            self._fail(ENHANCE_YOUR_CALM, "header block over twice SETTINGS_MAX_HEADER_LIST_SIZE")
        if flags & FLAG_END_HEADERS:
            self._block = None
            self._block_done(sid, pending[1], b"".join(pending[2]), events)

    def _block_done(self, sid: int, flags: int, block: bytes, events: list[Event]) -> None:
        try:
            headers: Sequence[Header] = self.decoder.decode(block, raw=True)  # type: ignore[assignment]
        except OversizedHeaderListError:
            self._fail(
                ENHANCE_YOUR_CALM, "header list over SETTINGS_MAX_HEADER_LIST_SIZE", HeaderListTooLarge
            )
        except HPACKError as exc:
            self._fail(COMPRESSION_ERROR, f"HPACK: {exc}")
        end_stream = bool(flags & FLAG_END_STREAM)
        st = self.streams.get(sid)
        if st is None:
            if not sid & 1:
                self._fail(PROTOCOL_ERROR, f"HEADERS on even stream {sid}")
            if sid <= self.last_sid:
                self._late_headers(sid, events)
                return
            if sid > self.last_sid + 2:  # (ids skipped: closed, never opened)
                self.skipped.append((self.last_sid + 2 if self.last_sid else 1, sid - 2))
            self.last_sid = sid
            if flags & _SELF_DEPENDENT:
                self._stream_error(sid, PROTOCOL_ERROR, events, report=True)
                return
            if len(self.streams) >= self.max_concurrent_streams:
                self._stream_error(sid, REFUSED_STREAM, events, report=True)
                return
            self.streams[sid] = _Stream(self.local_initial_window, self.peer_initial_window, not end_stream)
            events.append((REQUEST, sid, headers, end_stream))
            return
        if not st.remote_open:
            self._stream_error(sid, STREAM_CLOSED, events)
            return
        if not end_stream or flags & _SELF_DEPENDENT:  # trailers end the stream (RFC 9113 8.1)
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        events.append((TRAILERS, sid, headers))
        st.remote_open = False
        events.append((ENDED, sid))
        if not st.local_open:
            del self.streams[sid]

    def _late_headers(self, sid: int, events: list[Event]) -> None:
        """HEADERS (decoded: the table is in step) on a closed stream, or on an id below the
        last one that was never opened."""
        how = self.recently_reset.get(sid)
        if how == RESET_BY_US:
            return  # (trailers sent before our RST_STREAM arrived, say)
        if how == RESET_BY_CLIENT:
            self._stream_error(sid, STREAM_CLOSED, events, report=True)
        elif any(low <= sid <= high for low, high in self.skipped):
            self._fail(PROTOCOL_ERROR, f"HEADERS on stream {sid}, not above stream {self.last_sid}")
        else:
            self._fail(STREAM_CLOSED, f"HEADERS on stream {sid} after its END_STREAM")

    def _rst_stream(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if not sid:
            self._fail(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if self.streams.pop(sid, None) is None:
            if sid > self.last_sid:
                self._fail(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        self._remember(sid, RESET_BY_CLIENT)
        events.append((RESET, sid, _U32.unpack(payload)[0]))

    def _settings(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if sid:
            self._fail(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                self._fail(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self._fail(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        grew = False
        for off in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, off)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._fail(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > MAX_WINDOW:
                        self._fail(FLOW_CONTROL_ERROR, "a stream's window over 2^31-1")
                grew = grew or delta > 0
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= (1 << 24) - 1:
                    self._fail(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_outbound_frame_size = value
            elif key == HEADER_TABLE_SIZE:
                size = min(value, DEFAULT_TABLE_SIZE)  # (we never use more than the default)
                if size != self._encoder_table_size:
                    self._encoder_table_size = size
                    self._table_size_update = size
            elif key in (ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL) and value > 1:
                self._fail(PROTOCOL_ERROR, f"setting {key} neither 0 nor 1")
            # MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE: bound what we push and send
            # (nothing, and responses a backend made); unknown settings are ignored.
        self.out += frame_head(0, SETTINGS, FLAG_ACK, 0)
        if grew:
            events.append((WINDOW, 0))

    def _ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            self._fail(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            self._fail(FRAME_SIZE_ERROR, "PING not 8 bytes")
        if not flags & FLAG_ACK:
            self.out += frame_head(8, PING, FLAG_ACK, 0) + payload

    def _priority(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            self._fail(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            self._stream_error(sid, FRAME_SIZE_ERROR, events)
            return
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            self._stream_error(sid, PROTOCOL_ERROR, events)

    def _window_update(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not increment:
                self._fail(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                self._fail(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            events.append((WINDOW, 0))
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid:
                self._fail(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if not increment:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        st.send_window += increment
        if st.send_window > MAX_WINDOW:
            self._stream_error(sid, FLOW_CONTROL_ERROR, events)
            return
        events.append((WINDOW, sid))

    def _stream_error(self, sid: int, code: int, events: list[Event], report: bool = False) -> None:
        """RFC 9113 5.4.2: RST_STREAM with `code`; the stream is closed. Reported as ABORTED
        (the abuse guard counts each RST_STREAM we send) when it was open, or when `report`
        says so: a stream just opened, or DATA/HEADERS on one closed other than by our
        reset (STREAM_CLOSED, RFC 9113 5.1)."""
        known = self.streams.pop(sid, None) is not None
        self.out += _rst(sid, code)
        if known or report:
            self._remember(sid, RESET_BY_US)
            events.append((ABORTED, sid, code))

    def _remember(self, sid: int, how: int) -> None:
        recent = self.recently_reset
        recent[sid] = how
        if len(recent) > RECENTLY_RESET:
            recent.popitem(last=False)

    def _give_back(self, size: int) -> None:
        """Return connection window for DATA nobody will acknowledge."""
        self.ack_data(0, size)

    # ------------------------------------------------------------------ sending

    def send_window_of(self, sid: int) -> int:
        """What may be sent on `sid` now (its window and the connection's)."""
        st = self.streams.get(sid)
        if st is None or not st.local_open:
            raise StreamClosedError(sid)
        return min(st.send_window, self.send_window)

    def stream_window(self, sid: int) -> int:
        """The stream's own send window (0 for a stream closed on our side)."""
        st = self.streams.get(sid)
        return st.send_window if st is not None and st.local_open else 0

    def send_headers(self, sid: int, block: bytes, end_stream: bool) -> None:
        """A response's HEADERS (+ CONTINUATION) for an encoded `block` (no dynamic table);
        the stream's state moved. Informational responses too (end_stream False)."""
        st = self.streams.get(sid)
        if st is None or not st.local_open:
            raise StreamClosedError(sid)
        if self._table_size_update is not None:  # RFC 7541 4.2: opens the next block
            block = encode_integer(self._table_size_update, 5, 0x20) + block
            self._table_size_update = None
        flags = FLAG_END_STREAM if end_stream else 0
        if end_stream:
            self._local_end(sid, st)
        size = self.max_outbound_frame_size
        out = self.out
        if len(block) <= size:
            out += frame_head(len(block), HEADERS, flags | FLAG_END_HEADERS, sid)
            out += block
            return
        out += frame_head(size, HEADERS, flags, sid)
        out += block[:size]
        for off in range(size, len(block), size):
            chunk = block[off : off + size]
            out += frame_head(
                len(chunk), CONTINUATION, FLAG_END_HEADERS if off + size >= len(block) else 0, sid
            )
            out += chunk

    def send_data(self, sid: int, data: bytes | bytearray, end_stream: bool) -> None:
        """One DATA frame; `len(data)` within `send_window_of(sid)` and the frame size."""
        st = self.streams.get(sid)
        if st is None or not st.local_open:
            raise StreamClosedError(sid)
        n = len(data)
        st.send_window -= n
        self.send_window -= n
        if end_stream:
            self._local_end(sid, st)
        self.out += frame_head(n, DATA, FLAG_END_STREAM if end_stream else 0, sid)
        self.out += data

    def _local_end(self, sid: int, st: _Stream) -> None:
        st.local_open = False
        if not st.remote_open:
            del self.streams[sid]

    def reset_stream(self, sid: int, code: int) -> None:
        """RST_STREAM for an open stream (nothing for one already closed)."""
        if self.streams.pop(sid, None) is not None:
            self.out += _rst(sid, code)
            self._remember(sid, RESET_BY_US)

    def ack_data(self, sid: int, size: int) -> None:
        """`size` flow-controlled bytes of `sid` were consumed: give the window back once
        half of it is due (stream 0, or a closed stream: the connection's only)."""
        if size <= 0:
            return
        half = DEFAULT_WINDOW // 2
        self._conn_unacked += size
        if self._conn_unacked >= half:
            n = self._conn_unacked
            self._conn_unacked = 0
            self.recv_window += n
            self.out += frame_head(4, WINDOW_UPDATE, 0, 0) + _U32.pack(n)
        st = self.streams.get(sid) if sid else None
        if st is not None and st.remote_open:
            st.unacked += size
            if st.unacked >= self.local_initial_window // 2:
                n = st.unacked
                st.unacked = 0
                st.recv_window += n
                self.out += frame_head(4, WINDOW_UPDATE, 0, sid) + _U32.pack(n)

    def close(self, code: int = NO_ERROR, last_sid: int | None = None) -> None:
        """The connection ends: GOAWAY with `code` (once), and nothing more is read."""
        if not self.closed:
            self.goaway(code, last_sid)
            self.closed = True

    def goaway(self, code: int = NO_ERROR, last_sid: int | None = None) -> None:
        last = self.last_sid if last_sid is None else last_sid
        self.out += frame_head(8, GOAWAY, 0, 0) + struct.pack("!LL", last, code)


def _rst(sid: int, code: int) -> bytes:
    return frame_head(4, RST_STREAM, 0, sid) + _U32.pack(code)
