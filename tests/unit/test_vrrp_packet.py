"""VRRP codec: round trips, malformed input, and scapy's independent layers as oracle."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3

from vrrp import arp, packet
from vrrp.errors import MalformedPacket, VrrpError
from vrrp.packet import Advert, decode, encode

V4 = ipaddress.IPv4Address
SRC = V4("192.0.2.1")
GROUP = packet.VRRP_GROUP_V4
VIP = V4("192.0.2.160")


def v2(**kw: object) -> Advert:
    base: dict[str, object] = {
        "version": 2,
        "vrid": 51,
        "priority": 101,
        "addresses": (VIP,),
        "interval": 1.0,
        "auth_type": packet.AUTH_SIMPLE,
        "auth_data": packet.password_bytes("p@ssw0rd"),
    }
    base.update(kw)
    return Advert(**base)  # type: ignore[arg-type]


def v3(**kw: object) -> Advert:
    base: dict[str, object] = {
        "version": 3,
        "vrid": 7,
        "priority": 200,
        "addresses": (V4("192.0.2.10"), V4("192.0.2.11")),
        "interval": 0.1,
    }
    base.update(kw)
    return Advert(**base)  # type: ignore[arg-type]


def strip(advert: Advert) -> Advert:
    return Advert(**{**advert.__dict__, "checksum": 0})


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("count", [1, 2, 20])
def test_v2_round_trip(count: int) -> None:
    a = v2(addresses=tuple(V4(f"192.0.2.{i + 1}") for i in range(count)))
    data = encode(a)
    assert len(data) == 8 + 4 * count + 8
    assert strip(decode(data, SRC, GROUP)) == a


def test_v2_round_trip_no_auth() -> None:
    a = v2(auth_type=packet.AUTH_NONE, auth_data=b"\0" * 8, interval=3.0, priority=255)
    assert strip(decode(encode(a))) == a


@pytest.mark.parametrize("interval", [0.01, 0.1, 1.0, 40.95])
def test_v3_round_trip_ipv4(interval: float) -> None:
    a = v3(interval=interval)
    data = encode(a, SRC, GROUP)
    got = decode(data, SRC, GROUP)
    assert strip(got) == a
    assert got.centiseconds == round(interval * 100)


def test_v3_round_trip_ipv6() -> None:
    src, dst = ipaddress.IPv6Address("fe80::1"), packet.VRRP_GROUP_V6
    a = v3(addresses=(ipaddress.IPv6Address("fe80::100"), ipaddress.IPv6Address("2001:db8::100")))
    data = encode(a, src, dst)
    assert len(data) == 8 + 32
    assert strip(decode(data, src, dst)) == a


def test_password_is_truncated_and_padded_like_keepalived() -> None:
    assert packet.password_bytes("abc") == b"abc\0\0\0\0\0"
    assert packet.password_bytes("123456789") == b"12345678"
    assert packet.password_bytes(None) == b"\0" * 8


# ---------------------------------------------------------------- scapy oracle


def test_v2_encode_matches_scapy() -> None:
    ours = encode(v2())
    theirs = bytes(
        VRRP(
            vrid=51,
            priority=101,
            addrlist=[str(VIP)],
            authtype=1,
            adv=1,
            auth1=int.from_bytes(b"p@ss"),
            auth2=int.from_bytes(b"w0rd"),
        )
    )
    assert ours == theirs


def test_v2_decode_scapy_packet() -> None:
    raw = bytes(VRRP(vrid=9, priority=50, addrlist=["192.0.2.7", "192.0.2.8"], adv=3))
    got = decode(raw)
    assert (got.vrid, got.priority, got.interval, got.auth_type) == (9, 50, 3.0, 0)
    assert got.addresses == (V4("192.0.2.7"), V4("192.0.2.8"))
    assert got.checksum == VRRP(raw).chksum


def test_v3_ipv4_encode_matches_scapy() -> None:
    ours = encode(v3(), SRC, GROUP)
    theirs = bytes(
        IP(src=str(SRC), dst=str(GROUP))
        / VRRPv3(vrid=7, priority=200, adv=10, addrlist=["192.0.2.10", "192.0.2.11"])
    )[20:]
    assert ours == theirs


def test_v3_ipv4_unicast_checksum_matches_scapy() -> None:
    peer = V4("192.0.2.2")
    ours = encode(v3(), SRC, peer)
    theirs = bytes(
        IP(src=str(SRC), dst=str(peer))
        / VRRPv3(vrid=7, priority=200, adv=10, addrlist=["192.0.2.10", "192.0.2.11"])
    )[20:]
    assert ours == theirs
    # keepalived's old_unicast_checksum variant: computed against the group
    old = encode(v3(), SRC, GROUP)
    with pytest.raises(MalformedPacket):
        decode(old, SRC, peer)
    assert decode(old, SRC, peer, also_dst=GROUP).vrid == 7


def test_v3_ipv6_encode_matches_scapy() -> None:
    src = ipaddress.IPv6Address("fe80::1")
    a = v3(addresses=(ipaddress.IPv6Address("2001:db8::1"),), interval=1.0)
    ours = encode(a, src, packet.VRRP_GROUP_V6)
    theirs = bytes(
        IPv6(src=str(src), dst="ff02::12", hlim=255)
        / VRRPv3(vrid=7, priority=200, adv=100, addrlist=["2001:db8::1"])
    )[40:]
    assert ours == theirs


def test_v3_decode_scapy_packet() -> None:
    raw = bytes(
        IP(src=str(SRC), dst=str(GROUP)) / VRRPv3(vrid=3, priority=1, adv=4095, addrlist=["192.0.2.99"])
    )
    got = decode(raw[20:], SRC, GROUP)
    assert (got.version, got.vrid, got.priority, got.interval) == (3, 3, 1, 40.95)


# ------------------------------------------------------------------- malformed


def reason(
    data: bytes, src: ipaddress.IPv4Address | None = SRC, dst: ipaddress.IPv4Address | None = GROUP
) -> str:
    with pytest.raises(VrrpError) as info:
        decode(data, src, dst)
    assert isinstance(info.value, MalformedPacket)
    return info.value.reason


def test_short_packets() -> None:
    assert reason(b"") == "length"
    assert reason(encode(v2())[:7]) == "length"
    assert reason(encode(v2())[:-1]) == "length"
    assert reason(encode(v2()) + b"\0") == "length"


def test_count_inconsistent_with_length() -> None:
    data = bytearray(encode(v2()))
    data[3] = 2  # claims two addresses, carries one
    assert reason(bytes(data)) == "length"
    data[3] = 0
    assert reason(bytes(data)) == "addresses"


def test_wrong_version_and_type() -> None:
    data = bytearray(encode(v2()))
    data[0] = 0x11
    assert reason(bytes(data)) == "version"
    data[0] = 0x22  # v2, type 2
    assert reason(bytes(data)) == "type"


def test_bad_checksums() -> None:
    data = bytearray(encode(v2()))
    data[6] ^= 0xFF
    assert reason(bytes(data)) == "checksum"
    d3 = encode(v3(), SRC, GROUP)
    assert reason(d3, V4("192.0.2.99"), GROUP) == "checksum"  # pseudo-header covers the source
    corrupted = bytearray(d3)
    corrupted[-1] ^= 1
    assert reason(bytes(corrupted)) == "checksum"
    assert reason(d3, None, None) == "checksum"


def test_v3_checksum_without_pseudo_header_is_refused() -> None:
    a = v3()
    plain = bytearray(encode(a, SRC, GROUP))
    plain[6:8] = b"\0\0"
    plain[6:8] = struct.pack("!H", packet.inet_checksum(bytes(plain)))
    assert reason(bytes(plain)) == "checksum"


def test_encode_refuses_nonsense() -> None:
    with pytest.raises(MalformedPacket):
        encode(v2(addresses=()))
    with pytest.raises(MalformedPacket):
        encode(v2(addresses=(ipaddress.IPv6Address("::1"),)))
    with pytest.raises(MalformedPacket):
        encode(v3(interval=41.0), SRC, GROUP)
    with pytest.raises(MalformedPacket):
        encode(v3())  # v3 needs the IP addresses for its checksum


# ------------------------------------------------------------------- IP and ARP


def test_ipv4_header_round_trip_matches_scapy() -> None:
    payload = encode(v2())
    datagram = packet.build_ipv4(payload, SRC, GROUP, ident=7)
    parsed = IP(datagram)
    assert parsed.ttl == 255 and parsed.proto == 112 and parsed.tos == 0xC0
    assert parsed.chksum == IP(bytes(IP(datagram))).chksum  # scapy agrees with our header checksum
    h = packet.parse_ipv4(datagram + b"\0\0")  # Ethernet padding after total length is ignored
    assert (h.src, h.dst, h.ttl, h.protocol, h.payload) == (SRC, GROUP, 255, 112, payload)


def test_ipv4_header_malformed() -> None:
    with pytest.raises(MalformedPacket):
        packet.parse_ipv4(b"\x45" * 10)
    datagram = bytearray(packet.build_ipv4(encode(v2()), SRC, GROUP))
    datagram[0] = 0x65
    with pytest.raises(MalformedPacket):
        packet.parse_ipv4(bytes(datagram))
    with pytest.raises(MalformedPacket):
        packet.parse_ipv4(packet.build_ipv4(encode(v2()), SRC, GROUP)[:30])


def test_gratuitous_arp_matches_scapy() -> None:
    from scapy.layers.l2 import ARP, Ether

    mac = arp.mac_to_bytes("02:00:00:00:00:01")
    frame = arp.gratuitous_arp(mac, VIP)
    assert len(frame) == 60
    e = Ether(frame)
    assert e.dst == "ff:ff:ff:ff:ff:ff" and e.src == "02:00:00:00:00:01"
    a = e[ARP]
    assert (a.op, a.hwsrc, a.psrc, a.pdst) == (1, "02:00:00:00:00:01", str(VIP), str(VIP))
    parsed = arp.parse_arp(frame)
    assert parsed.sender_ip == VIP and parsed.target_ip == VIP and parsed.sender_mac == mac
    with pytest.raises(MalformedPacket):
        arp.parse_arp(frame[:20])
    with pytest.raises(MalformedPacket):
        arp.parse_arp(frame[:12] + b"\x08\x00" + frame[14:])
