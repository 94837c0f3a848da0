"""PROXY protocol v1/v2, against the examples of the HAProxy spec."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.errors import ProxyProtocolError
from lb.proxy_protocol import V2_SIGNATURE, decode, encode


def test_v1_tcp4_spec_example() -> None:
    # proxy-protocol.txt 2.1: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert encode("v1", ("192.168.0.1", 56324), ("192.168.0.11", 443)) == line
    h = decode(line + b"GET / HTTP/1.1\r\n")
    assert h is not None
    assert (h.version, h.family, h.src, h.dst, h.length) == (
        1,
        "TCP4",
        ("192.168.0.1", 56324),
        ("192.168.0.11", 443),
        len(line),
    )


def test_v1_tcp6_and_unknown() -> None:
    line = encode("v1", ("2001:db8::1", 1234), ("2001:db8::2", 80))
    assert line == b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n"
    h = decode(line)
    assert h is not None and h.src == ("2001:db8::1", 1234)
    assert encode("v1", None, None) == b"PROXY UNKNOWN\r\n"
    h = decode(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    assert h is not None and h.family == "UNKNOWN" and h.src is None


def test_v1_mapped_ipv4_is_tcp4() -> None:
    assert encode("v1", ("::ffff:192.0.2.1", 5), ("::ffff:192.0.2.2", 6)).startswith(b"PROXY TCP4 192.0.2.1 ")


def test_v2_tcp4_bytes() -> None:
    data = encode("v2", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert data[:12] == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
    assert data[12] == 0x21 and data[13] == 0x11
    assert struct.unpack("!H", data[14:16])[0] == 12
    assert data[16:] == bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443)
    h = decode(data + b"payload")
    assert h is not None and h.version == 2 and h.command == "PROXY" and h.length == 28
    assert h.src == ("192.168.0.1", 56324) and h.dst == ("192.168.0.11", 443)


def test_v2_tcp6_and_local_and_tlvs() -> None:
    data = encode("v2", ("2001:db8::1", 1), ("2001:db8::2", 2))
    assert data[13] == 0x21 and len(data) == 16 + 36
    h = decode(data)
    assert h is not None and h.family == "TCP6" and h.dst == ("2001:db8::2", 2)
    local = encode("v2", None, None)
    h = decode(local)
    assert h is not None and h.command == "LOCAL" and h.length == 16
    body = bytes(12) + b"\x04\x00\x02hi"  # TCP4 addresses + a NOOP TLV
    h = decode(V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body)
    assert h is not None and h.tlvs == ((4, b"hi"),)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY " + b"1" * 120,
        V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12),  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x23, 0x11, 0, 12]) + bytes(12),  # command 3
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4),  # short addresses
        V2_SIGNATURE + bytes([0x21, 0x41, 0, 0]),  # unknown family
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 15]) + bytes(12) + b"\x01\x00\x09",  # TLV overrun
        b"\r\n\r\nXXXX",
    ],
)
def test_malformed_raises(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        decode(data)


def test_incomplete_needs_more() -> None:
    full = encode("v2", ("10.0.0.1", 1), ("10.0.0.2", 2))
    for i in range(len(full)):
        assert decode(full[:i]) is None
    line = encode("v1", ("10.0.0.1", 1), ("10.0.0.2", 2))
    for i in range(len(line) - 1):
        assert decode(line[:i]) is None


@given(
    st.sampled_from(["v1", "v2"]),
    st.ip_addresses(v=4),
    st.ip_addresses(v=4),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
def test_roundtrip_v4(version: str, s: object, d: object, sp: int, dp: int) -> None:
    h = decode(encode(version, (str(s), sp), (str(d), dp)))
    assert h is not None and h.src == (str(s), sp) and h.dst == (str(d), dp)


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), st.integers(0, 65535))
def test_roundtrip_v6(s: object, d: object, p: int) -> None:
    for version in ("v1", "v2"):
        data = encode(version, (str(s), p), (str(d), p))
        h = decode(data)
        assert h is not None and h.length == len(data)
        assert h.src is not None and h.src[1] == p


@given(st.binary(max_size=300))
def test_decoder_never_crashes(data: bytes) -> None:
    try:
        decode(data)
    except ProxyProtocolError:
        pass
    try:
        decode(V2_SIGNATURE + data)
    except ProxyProtocolError:
        pass
