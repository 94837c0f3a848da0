"""Issue 7, part 6: hypothesis against every sans-IO core.

Each core may only raise its declared error type on bad input, and a rejected input
changes no state (VRRP: a dropped packet only increments `dropped[reason]`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conf
from lb import proxy_protocol
from lb.errors import ProxyProtocolError
from proxy.http import headers, routing
from proxy.smtp.address import RouteTable as SmtpRoutes
from proxy.smtp.envelope import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataEnd,
    DataStart,
    Envelope,
    Policy,
    Recipient,
    StartTls,
)
from proxy.smtp.replies import Reply
from tests.adversarial.corpus import all_cases
from tests.adversarial.harness import fuzz_seconds
from vrrp import packet
from vrrp.errors import MalformedPacket
from vrrp.fsm import Instance, PacketReceived, Startup, TimerFired

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [c.raw for c in all_cases()]

# Bytes that matter to HTTP framing, so random heads hit the interesting paths.
HTTP_ALPHABET = (
    b'\r\n \t:;,\x00\x0b\x7f\x80-_0123456789abcdefxHTPGOS/.="chunkedtransfer-encodingcontent-length'
)
http_bytes = st.lists(st.sampled_from([bytes([b]) for b in HTTP_ALPHABET]), max_size=200).map(b"".join)


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 2))
        i = draw(st.integers(0, len(raw)))
        if op == 0:
            raw[i:i] = draw(http_bytes)[:8]
        elif op == 1 and raw:
            del raw[i : i + draw(st.integers(1, 8))]
        elif raw:
            raw[min(i, len(raw) - 1)] = draw(st.integers(0, 255))
    return bytes(raw)


heads = st.one_of(http_bytes, mutated_seed(), st.binary(max_size=300))


# ----------------------------------------------------------------------- HTTP header policy


@FAST
@given(heads)
def test_http_head_checks_never_raise(raw: bytes) -> None:
    end = headers.head_end(raw)
    assert end in (-1, -2) or 4 <= end <= len(raw)
    reason = headers.precheck_head(raw)
    if reason is None and end > 0:
        head = raw[:end]
        assert b"\x00" not in head
        assert head.count(b"\r") == head.count(b"\n") == head.count(b"\r\n")
    cl = headers.check_content_length(raw)
    assert cl is None or isinstance(cl, str)


header_lists = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"host",
                b"connection",
                b"content-length",
                b"transfer-encoding",
                b"te",
                b"upgrade",
                b"x-forwarded-for",
                b"forwarded",
                b"x-real-ip",
                b"keep-alive",
                b"x-a",
            ]
        ),
        st.binary(max_size=40),
    ),
    max_size=12,
)


@FAST
@given(header_lists, st.booleans(), st.booleans(), st.sampled_from(["192.0.2.1", "2001:db8::1", ""]))
def test_request_policy_never_raises_and_never_forwards_hop_by_hop(
    hs: list[tuple[bytes, bytes]], trusted: bool, chunked: bool, peer: str
) -> None:
    policy = headers.RequestPolicy(
        ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"]
    )
    out = policy.apply(hs, peer=peer, proto=b"http", trusted=trusted, chunked=chunked)
    names = [n for n, _ in out]
    assert names.count(b"host") >= 1
    assert not {b"connection", b"keep-alive", b"te", b"upgrade"} & set(names) - {b"te"}
    assert names.count(b"transfer-encoding") == (1 if chunked else 0)
    if not trusted:  # a client cannot forge its address
        assert [v for n, v in out if n == b"x-forwarded-for"] == [peer.encode()]
    resp = headers.response_headers(hs)
    assert not {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"} & {n for n, _ in resp}


ROUTES = routing.RouteTable(
    (
        conf.HttpRoute(host="a.example", path="/x/", pool="p"),
        conf.HttpRoute(host="*.example", path="/", pool="q"),
    )
)


@FAST
@given(st.binary(max_size=60), st.binary(max_size=60))
def test_routing_never_raises_and_never_exposes_admin(host: bytes, target: bytes) -> None:
    name = routing.normalize_host(host)
    route = ROUTES.match(name, target)
    path = target.split(b"?", 1)[0]
    if path.startswith(b"/-/"):
        assert route is routing.ADMIN


# ----------------------------------------------------------------------- PROXY protocol


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
pp_seeds = [
    proxy_protocol.encode("v1", ("192.0.2.1", 1234), ("198.51.100.2", 80)),
    proxy_protocol.encode("v2", ("192.0.2.1", 1234), ("198.51.100.2", 80)),
    proxy_protocol.encode("v2", ("2001:db8::1", 1234), ("2001:db8::2", 443)),
    proxy_protocol.encode("v1", None, None),
    V2_SIG,
]


@st.composite
def pp_input(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(pp_seeds)))
    for _ in range(draw(st.integers(0, 3))):
        if raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw) + draw(st.binary(max_size=20))


@FAST
@given(st.one_of(pp_input(), st.binary(max_size=300)))
def test_proxy_protocol_decoder_raises_only_its_error(raw: bytes) -> None:
    try:
        header = proxy_protocol.decode(raw)
    except ProxyProtocolError:
        return
    if header is not None:
        assert 0 < header.length <= len(raw)
        # Deterministic and prefix-stable: the same header from the bytes it claims.
        assert proxy_protocol.decode(raw[: header.length]) == header


@FAST
@given(
    st.ip_addresses(v=4),
    st.ip_addresses(v=4),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.sampled_from(["v1", "v2"]),
)
def test_proxy_protocol_round_trip(src: Any, dst: Any, sport: int, dport: int, version: str) -> None:
    raw = proxy_protocol.encode(version, (str(src), sport), (str(dst), dport))
    header = proxy_protocol.decode(raw + b"GET / HTTP/1.1\r\n")
    assert header is not None and header.length == len(raw)
    assert header.src == (str(src), sport) and header.dst == (str(dst), dport)


# ----------------------------------------------------------------------- VRRP


def _vrrp_config(**kw: Any) -> conf.VrrpInstance:
    base: dict[str, Any] = {
        "name": "VI",
        "interface": "eth0",
        "virtual_router_id": 51,
        "priority": 100,
        "virtual_ipaddress": (ipaddress.IPv4Interface("192.0.2.160/24"),),
        "auth_pass": "secret",
    }
    base.update(kw)
    return conf.VrrpInstance(**base)


GOOD_V2 = packet.encode(
    packet.Advert(
        2,
        51,
        200,
        (ipaddress.IPv4Address("192.0.2.160"),),
        1.0,
        packet.AUTH_PASS if hasattr(packet, "AUTH_PASS") else 1,
        packet.password_bytes("secret"),
    )
)


@st.composite
def vrrp_bytes(draw: st.DrawFn) -> bytes:
    raw = bytearray(GOOD_V2)
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


@FAST
@given(st.one_of(vrrp_bytes(), st.binary(max_size=80)))
def test_vrrp_decoder_raises_only_malformed_packet(raw: bytes) -> None:
    try:
        advert = packet.decode(raw, ipaddress.IPv4Address("192.0.2.2"), packet.VRRP_GROUP_V4)
    except MalformedPacket:
        return
    assert 1 <= len(advert.addresses) <= 255


def _snapshot(inst: Instance) -> tuple[Any, ...]:
    return (
        inst.state,
        inst.master_address,
        dict(inst.deadlines),
        getattr(inst, "preempt_deadline", None),
        inst.master_adver_interval,
    )


@FAST
@given(
    st.lists(st.tuples(st.one_of(vrrp_bytes(), st.binary(max_size=60)), st.integers(0, 255)), max_size=10),
    st.sampled_from(["backup", "master"]),
)
def test_vrrp_rejected_packets_change_no_state(packets: list[tuple[bytes, int]], start: str) -> None:
    inst = Instance(_vrrp_config(priority=100), ipaddress.IPv4Address("192.0.2.1"))
    now = 10.0
    inst.handle(Startup(), now)
    if start == "master":
        now += 5.0
        inst.handle(TimerFired("master_down"), now)
    for raw, ttl in packets:
        now += 0.01
        before = _snapshot(inst)
        dropped = sum(inst.dropped.values())
        actions = inst.handle(
            PacketReceived(raw, ipaddress.IPv4Address("192.0.2.9"), packet.VRRP_GROUP_V4, ttl), now
        )
        if sum(inst.dropped.values()) > dropped:
            assert actions == []
            assert _snapshot(inst) == before


# ----------------------------------------------------------------------- SMTP envelope

SMTP_POLICY = Policy(
    hostname="mx.example.com",
    routes=SmtpRoutes((conf.SmtpRoute("example.com", "alpha"),)),
    max_message_bytes=10_000,
    max_recipients=5,
    max_unknown_commands=3,
    tls_offered=True,
)
SMTP_LINES = [
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<u@example.com>\r\n",
    b"RCPT TO:<u@evil.example>\r\n",
    b"RCPT TO:<@x:u@example.com>\r\n",
    b"RCPT TO:<u%evil@example.com>\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    b"VRFY u\r\n",
    b"x\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r\n",
    b"a\rb\r\n",
    b"\x00\r\n",
    b"MAIL FROM:<a@b.example> SIZE=99999999\r\n",
    b"A" * 600 + b"\r\n",
]


@FAST
@given(
    st.lists(st.one_of(st.sampled_from(SMTP_LINES), st.binary(max_size=30)), max_size=25),
    st.lists(st.sampled_from([250, 251, 354, 421, 450, 550, 554]), min_size=30, max_size=30),
)
def test_smtp_envelope_machine_never_raises(chunks: list[bytes], codes: list[int]) -> None:
    env = Envelope(SMTP_POLICY)
    answers = iter(codes * 10)
    for chunk in [*chunks, b""]:
        env.receive_data(chunk)
        for _ in range(10_000):
            ev = env.next_event()
            if ev is NEED_DATA or isinstance(ev, ConnectionClosed):
                break
            if ev is PAUSED:
                if env.state.name == "TLS":
                    env.tls_started()
                    continue
                break
            if isinstance(ev, Recipient | DataStart | DataEnd):
                env.answer(Reply.of(next(answers), "x"))
            elif isinstance(ev, StartTls):
                continue
        else:
            raise AssertionError("envelope machine does not make progress")
        # A rejected recipient never joins the transaction.
        txn = env.transaction
        if txn is not None:
            assert len(txn.recipients) <= SMTP_POLICY.max_recipients


def test_fuzz_budget_is_bounded() -> None:
    assert fuzz_seconds(20.0) > 0
