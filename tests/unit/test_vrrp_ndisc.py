"""Unsolicited neighbour advertisements (vrrp.ndisc): IPv6's gratuitous ARP for a new master."""

from __future__ import annotations

import ipaddress

import pytest

from vrrp import ndisc
from vrrp.errors import MalformedPacket

MAC = bytes.fromhex("020000000001")
VIP = ipaddress.IPv6Address("2001:db8::160")


def test_frame_is_an_na_to_all_nodes_from_the_vip() -> None:
    frame = ndisc.unsolicited_na(MAC, VIP)
    na = ndisc.parse_na(frame)  # checks the ICMPv6 checksum too
    assert na.eth_dst == bytes.fromhex("333300000001") and na.eth_src == MAC
    assert (na.src, na.dst, na.target) == (VIP, ndisc.ALL_NODES, VIP)
    assert na.hop_limit == 255  # RFC 4861 7.1.2: receivers drop an NA with any other
    assert na.flags == ndisc.FLAG_OVERRIDE  # not solicited; override the old master's entry
    assert na.target_mac == MAC
    assert ndisc.parse_na(ndisc.unsolicited_na(MAC, VIP, router=True)).flags & ndisc.FLAG_ROUTER


def test_a_damaged_frame_is_refused() -> None:
    frame = bytearray(ndisc.unsolicited_na(MAC, VIP))
    frame[-1] ^= 0xFF
    with pytest.raises(MalformedPacket, match="checksum"):
        ndisc.parse_na(bytes(frame))
    with pytest.raises(MalformedPacket):
        ndisc.parse_na(bytes(frame[:40]))


def test_multicast_mac() -> None:
    assert ndisc.multicast_mac(ipaddress.IPv6Address("ff02::12")) == bytes.fromhex("333300000012")
