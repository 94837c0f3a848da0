"""Denial-of-service guard for one HTTP/2 client connection: sans-IO, time injected.

The connection's protocol object tells the guard what happens and asks it whether to
close the connection; the answer is a `Verdict` (GOAWAY with its error code), or None.
Each abuse class is one small rule below; `stats()` counts the verdicts per class.

Where the checks sit. The connection (proxy/http/h2server.py, as `h2` before it)
buffers a header block until END_HEADERS without an event per CONTINUATION frame,
so the guard reads the 9-byte frame headers itself from the raw bytes, *before* they
are fed to `ServerConnection.receive`: `receive(data, now)`; it is what bounds a
header block. That one scan also counts the control frames, the new streams and the
RST_STREAMs. What the guard cannot see in the bytes, the protocol reports: a response
started (`response_started`), a stream we reset for the client's fault or refused
(`stream_error`), the HPACK limit tripping (`hpack_bomb`), DATA sent (`data_sent`),
a send window at zero (`flow_blocked`).

Rules and where their defaults come from:

- rapid reset (CVE-2023-44487): RST_STREAM on a stream we have not answered yet, and
  streams we reset for the client's fault ("MadeYouReset", CVE-2025-8671), more than
  200 per 30 s: Netty's server default (`AbstractHttp2ConnectionHandlerBuilder`, 200
  RST_STREAM per 30 s). HAProxy counts the same event ("early RST_STREAM") as a
  glitch (`tune.h2.fe.glitches-threshold`, off by default); nginx refuses more than
  2 x `http2_max_concurrent_streams` (128) new streams per read; Go's net/http closes
  with ENHANCE_YOUR_CALM past 4 x MaxConcurrentStreams (250) handlers waiting to start.
- CONTINUATION flood (CVE-2024-27316 class): a header block over 2 x
  `max_header_list_size` encoded bytes (Go's x/net/http2 `readMetaFrame` closes at a
  fragment over twice what may still be decoded), or more than 4 fragments averaging
  under 1 KiB (HAProxy mux_h2.c counts those as glitches), or still open after 60 s
  (nginx `client_header_timeout`).
- HPACK bomb: hpack's `Decoder.max_header_list_size` stops decoding past the limit
  (the connection raises `HeaderListTooLarge` and queues GOAWAY ENHANCE_YOUR_CALM
  itself); the guard only counts it. Its limit is 65536 (h2's default, advertised as
  SETTINGS_MAX_HEADER_LIST_SIZE; nginx allows 32 KiB of headers, Go about 1 MiB).
- SETTINGS, PING, empty DATA, unknown-type frames: more than 50, 100, 100, 100 in
  10 s. The first three are sozu's flood defaults (per 1 s there), the fourth ours by
  analogy (h2 turned each such frame into an event); the window is 10 s here because
  a frame costs a Python server ten times what it costs a C or Rust one.
  nginx, HAProxy and Go only bound such frames by their queued replies (Go's
  `maxQueuedControlFrames` 10000): the protocol object stops reading while its
  transport is paused, which bounds those queues here.
- WINDOW_UPDATE and PRIORITY: Envoy's ratios, since legitimate rates grow with
  traffic: WINDOW_UPDATEs over 5 + 2 x (streams + 10 x DATA frames sent), PRIORITY
  frames over 100 x (1 + streams). (The 5 is Envoy's since its PR 14924, 2021: peers
  send several connection WINDOW_UPDATEs before any stream; with Envoy's earlier 1, a
  second one closed the connection, before the connection could read the first.)
- slow read: data waiting on a zero send window for over 60 s (nginx `send_timeout`):
  the connection window closes the connection, a stream window resets the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.http.h2frames import (
    CONTINUATION,
    DATA,
    ENHANCE_YOUR_CALM,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
)

KINDS = (
    "rapid_reset",
    "continuation_flood",
    "slow_headers",
    "hpack_bomb",
    "settings_flood",
    "ping_flood",
    "empty_data_flood",
    "unknown_frame_flood",
    "window_update_flood",
    "priority_flood",
    "slow_read",
    "slow_read_stream",
    "framing",
)


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Limits of one connection; the module docstring gives each default's source."""

    # What the connection advertises (ServerConnection's settings); the byte limits follow them.
    max_concurrent_streams: int = 100  # HAProxy and h2 default (nginx 128, Go 250)
    max_header_list_size: int = 65536
    max_frame_size: int = 16384
    early_resets: int = 200
    early_reset_window: float = 30.0
    header_block_bytes: int = 2 * 65536
    free_fragments: int = 4
    min_fragment_avg: int = 1024
    header_block_timeout: float = 60.0
    flood_window: float = 10.0
    settings_frames: int = 50
    ping_frames: int = 100
    empty_data_frames: int = 100
    unknown_frames: int = 100
    window_updates_free: int = 5
    window_updates_per_data: int = 10
    priority_per_stream: int = 100
    send_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Close the connection: GOAWAY with `error_code`. `kind` is one of KINDS."""

    kind: str
    error_code: int  # (RFC 9113 7)
    reason: str


class RateLimit:
    """More than `count` events per `window` seconds, as a leaky bucket (no boundary bursts)."""

    __slots__ = ("count", "last", "level", "rate")

    def __init__(self, count: int, window: float) -> None:
        self.count = count
        self.rate = count / window
        self.level = 0.0
        self.last = 0.0

    def hit(self, now: float) -> bool:
        """Count one event at `now`; True when over the limit."""
        level = self.level
        if now > self.last:
            level = max(0.0, level - (now - self.last) * self.rate)
            self.last = now
        self.level = level + 1.0
        return self.level > self.count


class RapidReset:
    """Streams reset before their response started, by the client or for its fault."""

    __slots__ = ("budget", "count", "unanswered")

    def __init__(self, limits: GuardLimits) -> None:
        self.budget = RateLimit(limits.early_resets, limits.early_reset_window)
        self.unanswered: set[int] = set()
        self.count = 0

    def reset(self, stream_id: int, now: float) -> bool:
        """A client RST_STREAM; True when over the limit."""
        if stream_id not in self.unanswered:
            return False
        self.unanswered.discard(stream_id)
        return self.fault(now)

    def fault(self, now: float) -> bool:
        """A stream we reset because of what the client sent; True when over the limit."""
        self.count += 1
        return self.budget.hit(now)


class HeaderBlock:
    """One header block in the raw frames, HEADERS to END_HEADERS."""

    __slots__ = ("bytes", "fragments", "started", "stream_id")

    def __init__(self, stream_id: int, length: int, now: float) -> None:
        self.stream_id = stream_id
        self.bytes = length
        self.fragments = 1
        self.started = now

    def add(self, length: int, limits: GuardLimits) -> str | None:
        """A CONTINUATION fragment; the reason when the block is now abusive."""
        self.bytes += length
        self.fragments += 1
        if self.bytes > limits.header_block_bytes:
            return f"header block over {limits.header_block_bytes} bytes"
        if self.fragments > limits.free_fragments and self.fragments * limits.min_fragment_avg > self.bytes:
            return f"{self.fragments} CONTINUATION fragments averaging under {limits.min_fragment_avg} bytes"
        return None


class AbuseGuard:
    """The abuse rules of one HTTP/2 connection. Every `now` is seconds on one clock."""

    def __init__(self, limits: GuardLimits | None = None, *, preface: bool = True) -> None:
        self.limits = lim = limits or GuardLimits()
        self.verdict: Verdict | None = None
        self.rapid = RapidReset(lim)
        self.settings = RateLimit(lim.settings_frames, lim.flood_window)
        self.pings = RateLimit(lim.ping_frames, lim.flood_window)
        self.empty_data = RateLimit(lim.empty_data_frames, lim.flood_window)
        self.unknown = RateLimit(lim.unknown_frames, lim.flood_window)
        self.block: HeaderBlock | None = None
        self.blocked: dict[int, float] = {}  # stream id (0: the connection) -> since
        self.streams = self.window_updates = self.priorities = self.data_frames_sent = 0
        self.last_stream_id = 0
        self.counts = dict.fromkeys(KINDS, 0)
        self._preface = len(PREFACE) if preface else 0
        self._head = bytearray()  # a frame header cut by the end of a read
        self._skip = 0  # payload bytes of the current frame still to pass
        self._padded: tuple[int, int] | None = None  # (flags, length) of a padded DATA frame

    # -- what the protocol reports -------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview, now: float) -> Verdict | None:
        """Scan received bytes before the connection reads them: the verdict if it must close."""
        if self.verdict is not None:
            return self.verdict
        i, n = 0, len(data)
        if self._preface:
            i = min(self._preface, n)
            self._preface -= i
        while i < n:
            if self._skip:
                if self._padded is not None:
                    flags, length = self._padded
                    self._padded = None
                    if length - 1 - data[i] <= 0 and not flags & FLAG_END_STREAM and self.empty_data.hit(now):
                        return self._close("empty_data_flood", "empty DATA frames")
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            if not self._head and n - i >= 9:  # (the usual case: a whole frame header here)
                high, low, kind, flags, sid = FRAME_HEAD.unpack_from(data, i)
                i += 9
                length = high << 16 | low
                verdict = self._frame(kind, flags, sid & 0x7FFFFFFF, length, now)
                if verdict is not None:
                    return verdict
                self._skip = length
                continue
            need = 9 - len(self._head)
            if n - i < need:
                self._head += data[i:]
                break
            head = bytes(self._head) + bytes(data[i : i + need])
            self._head.clear()
            i += need
            length = int.from_bytes(head[:3], "big")
            verdict = self._frame(
                head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, length, now
            )
            if verdict is not None:
                return verdict
            self._skip = length
        return None

    def response_started(self, stream_id: int) -> None:
        """We sent the response HEADERS of `stream_id`: a reset is no longer early."""
        self.rapid.unanswered.discard(stream_id)

    def stream_closed(self, stream_id: int) -> None:
        """`stream_id` is closed, however: forget it."""
        self.rapid.unanswered.discard(stream_id)
        self.blocked.pop(stream_id, None)

    def stream_error(self, stream_id: int, now: float) -> Verdict | None:
        """We reset `stream_id` for the client's fault (malformed request, body length...)."""
        self.rapid.unanswered.discard(stream_id)
        if self.verdict is None and self.rapid.fault(now):
            return self._close("rapid_reset", "too many streams reset for errors")
        return self.verdict

    def hpack_bomb(self) -> Verdict:
        """The connection's HPACK limit tripped (it has queued GOAWAY ENHANCE_YOUR_CALM itself)."""
        return self._close("hpack_bomb", "decoded header list over max_header_list_size")

    def data_sent(self, frames: int = 1) -> None:
        """We sent `frames` DATA frames: the client may answer each with WINDOW_UPDATEs."""
        self.data_frames_sent += frames

    def flow_blocked(self, stream_id: int, now: float) -> None:
        """Data for `stream_id` waits on a zero send window (0: the connection's window)."""
        self.blocked.setdefault(stream_id, now)

    def flow_unblocked(self, stream_id: int) -> None:
        self.blocked.pop(stream_id, None)

    # -- timers ---------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When `check`/`expired_streams` next have something to say; None: no timer."""
        times = [since + self.limits.send_timeout for since in self.blocked.values()]
        if self.block is not None:
            times.append(self.block.started + self.limits.header_block_timeout)
        return min(times) if times else None

    def check(self, now: float) -> Verdict | None:
        """The connection-level timers: a header block or the connection window too slow."""
        if self.verdict is not None:
            return self.verdict
        block = self.block
        if block is not None and now >= block.started + self.limits.header_block_timeout:
            return self._close("slow_headers", "header block not finished in time")
        since = self.blocked.get(0)
        if since is not None and now >= since + self.limits.send_timeout:
            return self._close("slow_read", "connection send window closed too long")
        return None

    def expired_streams(self, now: float) -> list[int]:
        """Streams whose send window stayed closed too long: reset them (CANCEL)."""
        limit = now - self.limits.send_timeout
        expired = [sid for sid, since in self.blocked.items() if sid and since <= limit]
        for sid in expired:
            del self.blocked[sid]
        self.counts["slow_read_stream"] += len(expired)
        return expired

    def stats(self) -> dict[str, Any]:
        """Verdicts per kind, and the events counted towards the rate rules."""
        return {**self.counts, "early_resets": self.rapid.count, "streams": self.streams}

    # -- the frame rules --------------------------------------------------------------

    def _frame(self, ftype: int, flags: int, sid: int, length: int, now: float) -> Verdict | None:
        lim = self.limits
        if length > lim.max_frame_size:
            return self._close("framing", f"frame of {length} bytes", FRAME_SIZE_ERROR)
        block = self.block
        if block is not None:
            if ftype != CONTINUATION or sid != block.stream_id:
                return self._close("framing", "frame inside a header block", PROTOCOL_ERROR)
            reason = block.add(length, lim)
            if reason is not None:
                return self._close("continuation_flood", reason)
            if flags & FLAG_END_HEADERS:
                self.block = None
            return None
        if ftype == DATA:
            if flags & FLAG_PADDED and length:
                self._padded = (flags, length)
            elif not length and not flags & FLAG_END_STREAM and self.empty_data.hit(now):
                return self._close("empty_data_flood", "empty DATA frames")
        elif ftype == HEADERS:
            if sid & 1 and sid > self.last_stream_id:
                self.last_stream_id = sid
                self.streams += 1
                self.rapid.unanswered.add(sid)
            if not flags & FLAG_END_HEADERS:
                self.block = HeaderBlock(sid, length, now)
        elif ftype == RST_STREAM:
            if self.rapid.reset(sid, now):
                return self._close("rapid_reset", "too many streams reset before their response")
        elif ftype == SETTINGS:
            if self.settings.hit(now):
                return self._close("settings_flood", "SETTINGS frames")
        elif ftype == PING:
            if self.pings.hit(now):
                return self._close("ping_flood", "PING frames")
        elif ftype == WINDOW_UPDATE:
            self.window_updates += 1
            if self.window_updates > lim.window_updates_free + 2 * (
                self.streams + lim.window_updates_per_data * self.data_frames_sent
            ):
                return self._close("window_update_flood", "WINDOW_UPDATE frames beyond the data sent")
        elif ftype == PRIORITY:
            self.priorities += 1
            if self.priorities > lim.priority_per_stream * (1 + self.streams):
                return self._close("priority_flood", "PRIORITY frames")
        elif ftype == CONTINUATION:
            return self._close("framing", "CONTINUATION outside a header block", PROTOCOL_ERROR)
        elif ftype > CONTINUATION and self.unknown.hit(now):
            return self._close("unknown_frame_flood", "frames of unknown types")
        return None

    def _close(self, kind: str, reason: str, code: int = ENHANCE_YOUR_CALM) -> Verdict:
        if self.verdict is None:
            self.verdict = Verdict(kind, code, reason)
            self.counts[kind] += 1
        return self.verdict
