"""proxy.http.h2guard: each abuse rule with a fake clock, and the raw frame scan under it.

Frames are built with hyperframe (what h2 itself uses) or sent by a real h2 client;
no sockets, no loop: `now` is a number the test moves.
"""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived
from h2.exceptions import DenialOfServiceError
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.h2frames import PREFACE
from proxy.http.h2guard import KINDS, AbuseGuard, GuardLimits, RateLimit, Verdict
from proxy.http.h2server import ServerConnection

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/")]
BLOCK = Encoder().encode(REQUEST)


def _headers(sid: int, block: bytes = BLOCK, flags: tuple[str, ...] = ("END_HEADERS", "END_STREAM")) -> bytes:
    return HeadersFrame(sid, data=block, flags=flags).serialize()


def _guard(**limits: float) -> AbuseGuard:
    """A guard past the preface, as after the client's first bytes."""
    guard = AbuseGuard(GuardLimits(**limits))  # type: ignore[arg-type]
    assert guard.receive(PREFACE + SettingsFrame(0).serialize(), 0.0) is None
    return guard


def _client() -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    return client


# -- the leaky bucket -----------------------------------------------------------------


def test_rate_limit_counts_more_than_count_per_window() -> None:
    limit = RateLimit(5, 10.0)
    assert not any(limit.hit(100.0) for _ in range(5))
    assert limit.hit(100.0)


def test_rate_limit_drains_over_the_window() -> None:
    limit = RateLimit(5, 10.0)
    for _ in range(5):
        limit.hit(0.0)
    assert not limit.hit(2.0)  # 2 s drained one event
    assert limit.hit(2.0)


def test_rate_limit_allows_the_steady_rate_forever() -> None:
    limit = RateLimit(5, 10.0)
    assert not any(limit.hit(t * 2.0) for t in range(10_000))


def test_rate_limit_ignores_a_clock_going_back() -> None:
    limit = RateLimit(2, 10.0)
    limit.hit(50.0)
    limit.hit(50.0)
    assert limit.hit(10.0)


# -- the raw frame scan ---------------------------------------------------------------


def _conversation() -> bytes:
    client = _client()
    for sid in range(1, 40, 2):
        client.send_headers(sid, REQUEST, end_stream=sid % 4 == 1)
        if sid % 4 == 3:
            client.send_data(sid, b"x" * 100, end_stream=True)
    client.ping(b"12345678")
    client.reset_stream(39)
    return client.data_to_send()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_scan_does_not_depend_on_how_reads_cut_the_bytes(data: st.DataObject) -> None:
    wire = _conversation() + _headers(41, flags=("END_STREAM",)) + ContinuationFrame(41).serialize()
    whole = AbuseGuard()
    assert whole.receive(wire, 0.0) is None
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=30)))
    pieces = AbuseGuard()
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        assert pieces.receive(wire[a:b], 0.0) is None
    assert pieces.stats() == whole.stats()
    assert (pieces.streams, pieces.last_stream_id, pieces.rapid.unanswered) == (
        21,
        41,
        whole.rapid.unanswered,
    )
    assert pieces.block is not None and whole.block is not None
    assert pieces.block.fragments == whole.block.fragments == 2


def test_preface_may_be_left_out() -> None:
    guard = AbuseGuard(preface=False)
    assert guard.receive(_headers(1), 0.0) is None
    assert guard.streams == 1


def test_an_oversized_frame_is_a_frame_size_error() -> None:
    guard = _guard()
    verdict = guard.receive(DataFrame(1, data=b"x" * 16385).serialize(), 0.0)
    assert verdict is not None
    assert (verdict.kind, verdict.error_code) == ("framing", ErrorCodes.FRAME_SIZE_ERROR)


def test_a_verdict_is_final_and_counted_once() -> None:
    guard = _guard()
    first = guard.receive(ContinuationFrame(1).serialize(), 0.0)
    assert first is not None and first.error_code == ErrorCodes.PROTOCOL_ERROR
    assert guard.receive(_headers(1), 1.0) is first
    assert guard.check(1.0) is first
    assert guard.stream_error(1, 1.0) is first
    assert guard.stats()["framing"] == 1
    assert set(KINDS) <= set(guard.stats())


# -- rapid reset ------------------------------------------------------------------------


def _open_and_reset(guard: AbuseGuard, sid: int, now: float) -> Verdict | None:
    return guard.receive(_headers(sid) + RstStreamFrame(sid).serialize(), now)


def test_rapid_reset_trips_past_200_in_30_seconds() -> None:
    guard = _guard()
    assert all(_open_and_reset(guard, sid, 5.0) is None for sid in range(1, 401, 2))
    verdict = _open_and_reset(guard, 401, 5.0)
    assert verdict is not None and verdict is guard.verdict
    assert (verdict.kind, verdict.error_code) == ("rapid_reset", ErrorCodes.ENHANCE_YOUR_CALM)
    assert guard.stats()["rapid_reset"] == 1
    assert guard.stats()["early_resets"] == 201


def test_resets_at_a_browsers_pace_are_fine() -> None:
    guard = _guard()
    # 6 per second for an hour: a user pressing Stop rather often.
    assert all(_open_and_reset(guard, 2 * i + 1, i / 6) is None for i in range(6 * 3600))


def test_a_reset_after_the_response_started_is_not_early() -> None:
    guard = _guard(early_resets=1)
    for sid in range(1, 21, 2):
        assert guard.receive(_headers(sid), 0.0) is None
        guard.response_started(sid)
        assert guard.receive(RstStreamFrame(sid).serialize(), 0.0) is None
    assert guard.stats()["early_resets"] == 0


def test_a_reset_of_an_unknown_or_closed_stream_is_not_counted() -> None:
    guard = _guard(early_resets=1)
    assert guard.receive(RstStreamFrame(99).serialize() * 5, 0.0) is None
    guard.receive(_headers(1), 0.0)
    guard.stream_closed(1)
    assert guard.receive(RstStreamFrame(1).serialize(), 0.0) is None
    assert guard.stats()["early_resets"] == 0


def test_streams_we_reset_for_the_clients_fault_count_too() -> None:
    """MadeYouReset: malformed requests make the server reset; same budget."""
    guard = _guard(early_resets=3)
    for sid in (1, 3, 5):
        guard.receive(_headers(sid), 0.0)
        assert guard.stream_error(sid, 0.0) is None
    guard.receive(_headers(7), 0.0)
    verdict = guard.stream_error(7, 0.0)
    assert verdict is not None and verdict.kind == "rapid_reset"


def test_rapid_reset_from_a_real_client() -> None:
    client = _client()
    guard = AbuseGuard()
    verdict = None
    for sid in range(1, 1001, 2):
        client.send_headers(sid, REQUEST)
        client.reset_stream(sid)
        verdict = guard.receive(client.data_to_send(), 1.0)
        if verdict is not None:
            break
    assert verdict is not None and verdict.kind == "rapid_reset"
    assert guard.stats()["early_resets"] == 201


# -- CONTINUATION -------------------------------------------------------------------------


def test_tiny_continuation_fragments_trip_at_the_fifth() -> None:
    guard = _guard()
    assert guard.receive(_headers(1, BLOCK[:1], flags=()), 0.0) is None
    for _ in range(3):
        assert guard.receive(ContinuationFrame(1, data=b"\x00").serialize(), 0.0) is None
    verdict = guard.receive(ContinuationFrame(1, data=b"\x00").serialize(), 0.0)
    assert verdict is not None
    assert (verdict.kind, verdict.error_code) == ("continuation_flood", ErrorCodes.ENHANCE_YOUR_CALM)


def test_h2_alone_buffers_such_a_flood() -> None:
    """The gap: h2 takes 60 one-byte CONTINUATIONs silently (it stops only at 64)."""
    client = _client()
    server = H2Connection(H2Configuration(client_side=False))
    server.initiate_connection()
    flood = _headers(1, BLOCK[:1], flags=()) + ContinuationFrame(1, data=BLOCK[1:2]).serialize() * 60
    events = server.receive_data(client.data_to_send() + flood)
    assert not any(isinstance(e, RequestReceived) for e in events)  # still waiting for END_HEADERS
    guard = AbuseGuard()
    verdict = guard.receive(PREFACE + flood, 0.0)
    assert verdict is not None and verdict.kind == "continuation_flood"


def test_a_header_block_over_twice_the_list_size_trips() -> None:
    guard = _guard()
    frame = b"\x00" * 16384
    assert guard.receive(_headers(1, frame, flags=()), 0.0) is None
    for _ in range(7):  # 8 x 16 KiB = 131072: the limit itself
        assert guard.receive(ContinuationFrame(1, data=frame).serialize(), 0.0) is None
    verdict = guard.receive(ContinuationFrame(1, data=b"\x00").serialize(), 0.0)
    assert verdict is not None and "header block over 131072" in verdict.reason


def test_large_headers_from_a_real_client_pass() -> None:
    """h2 cuts a 40 KiB header block into full-size fragments: normal, not abuse."""
    client = _client()
    client.send_headers(1, [*REQUEST, (b"x-big", b"v" * 40000)], end_stream=True)
    guard = AbuseGuard()
    assert guard.receive(client.data_to_send(), 0.0) is None
    assert guard.block is None
    assert guard.streams == 1


def test_frames_inside_a_header_block_are_a_protocol_error() -> None:
    for intruder in (DataFrame(1, data=b"x").serialize(), ContinuationFrame(3).serialize(), _headers(3)):
        guard = _guard()
        guard.receive(_headers(1, flags=()), 0.0)
        verdict = guard.receive(intruder, 0.0)
        assert verdict is not None
        assert (verdict.kind, verdict.error_code) == ("framing", ErrorCodes.PROTOCOL_ERROR)


def test_a_header_block_left_open_times_out() -> None:
    guard = _guard()
    guard.receive(_headers(1, flags=()), 100.0)
    assert guard.deadline() == 160.0
    assert guard.check(159.9) is None
    verdict = guard.check(160.0)
    assert verdict is not None and verdict.kind == "slow_headers"


def test_an_ended_header_block_has_no_deadline() -> None:
    guard = _guard()
    guard.receive(_headers(1, flags=()), 100.0)
    guard.receive(ContinuationFrame(1, flags=("END_HEADERS",)).serialize(), 101.0)
    assert guard.deadline() is None
    assert guard.check(1000.0) is None


# -- HPACK bomb ---------------------------------------------------------------------------


def test_h2_stops_an_hpack_bomb_and_the_guard_counts_it() -> None:
    """A 4 KB field in the dynamic table, referenced 20 times: 80 KB decoded from 4 KB sent."""
    encoder = Encoder()
    block = encoder.encode([*REQUEST, *[(b"x-bomb", b"b" * 4000)] * 20])
    assert len(block) < 4200
    client = _client()
    wire = client.data_to_send() + _headers(1, block)
    server = H2Connection(H2Configuration(client_side=False))
    server.initiate_connection()
    with pytest.raises(DenialOfServiceError):
        server.receive_data(wire)
    guard = AbuseGuard()
    assert guard.receive(wire, 0.0) is None  # small on the wire: only h2's decoder sees it
    verdict = guard.hpack_bomb()
    assert (verdict.kind, verdict.error_code) == ("hpack_bomb", ErrorCodes.ENHANCE_YOUR_CALM)
    assert guard.stats()["hpack_bomb"] == 1


# -- floods -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "frame", "count"),
    [
        ("settings_flood", SettingsFrame(0).serialize(), 50),
        ("settings_flood", SettingsFrame(0, flags=("ACK",)).serialize(), 50),
        ("ping_flood", PingFrame(0, opaque_data=b"12345678").serialize(), 100),
        ("ping_flood", PingFrame(0, opaque_data=b"12345678", flags=("ACK",)).serialize(), 100),
        ("empty_data_flood", DataFrame(1).serialize(), 100),
        ("empty_data_flood", DataFrame(1, pad_length=5, flags=("PADDED",)).serialize(), 100),
        ("unknown_frame_flood", ExtensionFrame(0xFA, 0, 0, b"").serialize(), 100),
    ],
)
def test_flood_trips_past_its_count_in_10_seconds(kind: str, frame: bytes, count: int) -> None:
    guard = AbuseGuard()
    assert guard.receive(PREFACE, 0.0) is None
    assert all(guard.receive(frame, 20.0) is None for _ in range(count))
    verdict = guard.receive(frame, 20.0)
    assert verdict is not None
    assert (verdict.kind, verdict.error_code) == (kind, ErrorCodes.ENHANCE_YOUR_CALM)


@pytest.mark.parametrize(
    "frame",
    [
        SettingsFrame(0).serialize(),
        PingFrame(0, opaque_data=b"12345678").serialize(),
        DataFrame(1).serialize(),
        ExtensionFrame(0xFA, 0, 0, b"").serialize(),
    ],
)
def test_floods_at_one_a_second_are_fine(frame: bytes) -> None:
    guard = _guard()
    assert all(guard.receive(frame, float(t)) is None for t in range(10_000))


def test_data_that_is_not_empty_or_ends_the_stream_is_no_flood() -> None:
    guard = _guard(empty_data_frames=1)
    for frame in (
        DataFrame(1, data=b"x").serialize(),
        DataFrame(1, flags=("END_STREAM",)).serialize(),
        DataFrame(1, data=b"x", pad_length=3, flags=("PADDED",)).serialize(),
        DataFrame(1, pad_length=3, flags=("PADDED", "END_STREAM")).serialize(),
    ):
        assert all(guard.receive(frame, 0.0) is None for _ in range(50))


def test_window_updates_beyond_the_data_sent_trip() -> None:
    guard = _guard()
    wu = WindowUpdateFrame(0, window_increment=1).serialize()
    assert guard.receive(wu * 5, 0.0) is None  # (a few before any stream: Envoy's 5)
    verdict = guard.receive(wu, 0.0)
    assert verdict is not None
    assert (verdict.kind, verdict.error_code) == ("window_update_flood", ErrorCodes.ENHANCE_YOUR_CALM)


def test_window_updates_answering_our_data_are_fine() -> None:
    guard = _guard()
    guard.receive(_headers(1), 0.0)
    guard.data_sent(100)
    allowed = 5 + 2 * (1 + 10 * 100)
    wu = WindowUpdateFrame(1, window_increment=1).serialize()
    assert guard.receive(wu * allowed, 0.0) is None
    assert guard.receive(wu, 0.0) is not None


def test_priority_frames_per_stream() -> None:
    guard = _guard()
    prio = PriorityFrame(1, depends_on=0, stream_weight=16).serialize()
    assert guard.receive(prio * 100, 0.0) is None
    guard.receive(_headers(1), 0.0)
    assert guard.receive(prio * 100, 0.0) is None
    verdict = guard.receive(prio, 0.0)
    assert verdict is not None and verdict.kind == "priority_flood"


def test_a_busy_honest_connection_trips_nothing() -> None:
    """A real client: 300 requests with bodies, downloads acknowledged, a ping now and then."""
    client = _client()
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    guard = AbuseGuard()
    now = 0.0
    for sid in range(1, 601, 2):
        now += 0.01
        client.send_headers(sid, [*REQUEST, (b"content-length", b"3")])
        client.send_data(sid, b"abc", end_stream=True)
        if sid % 50 == 1:
            client.ping(b"pingpong")
        wire = client.data_to_send()
        assert guard.receive(wire, now) is None
        for event in server.receive_data(wire):
            if isinstance(event, RequestReceived):
                server.send_headers(event.stream_id, [(b":status", b"200")])
                guard.response_started(event.stream_id)
                server.send_data(event.stream_id, b"y" * 10000)
                server.send_data(event.stream_id, b"y" * 10000, end_stream=True)
                guard.data_sent(2)
                guard.stream_closed(event.stream_id)
        for event in client.receive_data(server.data_to_send()):
            if isinstance(event, DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    assert guard.verdict is None
    assert guard.stats()["streams"] == 300
    assert guard.window_updates > 100  # the acknowledgements did reach the guard


# -- slow read ----------------------------------------------------------------------------


def test_a_closed_connection_window_times_out() -> None:
    guard = _guard()
    guard.flow_blocked(0, 10.0)
    guard.flow_blocked(0, 30.0)  # still the same wait
    assert guard.deadline() == 70.0
    assert guard.check(69.0) is None
    verdict = guard.check(70.0)
    assert verdict is not None
    assert (verdict.kind, verdict.error_code) == ("slow_read", ErrorCodes.ENHANCE_YOUR_CALM)


def test_a_window_that_opens_again_clears_the_timer() -> None:
    guard = _guard()
    guard.flow_blocked(0, 10.0)
    guard.flow_unblocked(0)
    assert guard.deadline() is None
    assert guard.check(1000.0) is None


def test_a_closed_stream_window_resets_only_that_stream() -> None:
    guard = _guard()
    guard.flow_blocked(3, 10.0)
    guard.flow_blocked(5, 20.0)
    guard.flow_blocked(7, 20.0)
    guard.stream_closed(7)
    assert guard.deadline() == 70.0
    assert guard.expired_streams(69.0) == []
    assert guard.expired_streams(70.0) == [3]
    assert guard.deadline() == 80.0
    assert guard.expired_streams(100.0) == [5]
    assert guard.check(100.0) is None
    assert guard.stats()["slow_read_stream"] == 2


# -- settings -----------------------------------------------------------------------------


def test_the_connection_advertises_and_enforces_what_the_limits_assume() -> None:
    """h2.py builds its ServerConnection from the guard's limits: the SETTINGS a client
    receives, and the HPACK limit the connection enforces, are the guard's."""
    limits = GuardLimits()
    assert limits.header_block_bytes == 2 * limits.max_header_list_size
    server = ServerConnection(
        max_concurrent_streams=limits.max_concurrent_streams,
        max_header_list_size=limits.max_header_list_size,
        max_frame_size=limits.max_frame_size,
    )
    server.initiate()
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    client.receive_data(server.data_to_send())
    advertised = client.remote_settings
    assert advertised.max_concurrent_streams == limits.max_concurrent_streams == 100
    assert advertised.max_header_list_size == limits.max_header_list_size == 65536
    assert advertised.max_frame_size == limits.max_frame_size == 16384
    assert server.decoder.max_header_list_size == limits.max_header_list_size
