"""Unsolicited neighbour advertisements (RFC 4861 7.2.6): IPv6's gratuitous ARP, as pure
functions over Ethernet frames.

A new master announces each IPv6 VIP with an NA to all nodes (ff02::1), from the VIP itself,
hop limit 255, the Override flag set and the interface's MAC in a Target Link-Layer Address
option, as keepalived does (vrrp_ndisc.c); RFC 5798 8.2 asks for it on every takeover.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import MalformedPacket
from .packet import inet_checksum

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LINKADDR = 2
ALL_NODES = ipaddress.IPv6Address("ff02::1")
HOP_LIMIT = 255
FLAG_ROUTER, FLAG_SOLICITED, FLAG_OVERRIDE = 0x80, 0x40, 0x20

_ETH = struct.Struct("!6s6sH")
_IPV6 = struct.Struct("!IHBB16s16s")
_NA = struct.Struct("!BBHB3x16sBB6s")  # type code checksum flags reserved target | option


def multicast_mac(address: ipaddress.IPv6Address) -> bytes:
    """RFC 2464 7: 33:33 and the low 32 bits of the group."""
    return b"\x33\x33" + address.packed[-4:]


def unsolicited_na(mac: bytes, address: ipaddress.IPv6Address, *, router: bool = False) -> bytes:
    """The Ethernet frame of an unsolicited NA for `address` (ours) with our `mac`."""
    flags = FLAG_OVERRIDE | (FLAG_ROUTER if router else 0)
    icmp = _NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags, address.packed, ND_OPT_TARGET_LINKADDR, 1, mac)
    pseudo = address.packed + ALL_NODES.packed + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    csum = inet_checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip = _IPV6.pack(6 << 28, len(icmp), IPPROTO_ICMPV6, HOP_LIMIT, address.packed, ALL_NODES.packed)
    return _ETH.pack(multicast_mac(ALL_NODES), mac, ETH_P_IPV6) + ip + icmp


@dataclass(frozen=True)
class NeighbourAdvert:
    eth_src: bytes
    eth_dst: bytes
    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    hop_limit: int
    flags: int
    target: ipaddress.IPv6Address
    target_mac: bytes | None


def parse_na(frame: bytes) -> NeighbourAdvert:
    """An Ethernet frame carrying an NA, checked (lengths, checksum); else MalformedPacket."""
    if len(frame) < _ETH.size + _IPV6.size + 24:
        raise MalformedPacket("short frame", "length")
    dst_mac, src_mac, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        raise MalformedPacket("not IPv6", "type")
    _vtf, length, nxt, hops, src, dst = _IPV6.unpack_from(frame, _ETH.size)
    icmp = frame[_ETH.size + _IPV6.size : _ETH.size + _IPV6.size + length]
    if nxt != IPPROTO_ICMPV6 or len(icmp) < 24 or icmp[0] != ND_NEIGHBOR_ADVERT:
        raise MalformedPacket("not a neighbour advertisement", "type")
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    if inet_checksum(pseudo + icmp) != 0:
        raise MalformedPacket("bad ICMPv6 checksum", "checksum")
    target_mac = None
    if len(icmp) >= 32 and icmp[24] == ND_OPT_TARGET_LINKADDR and icmp[25] == 1:
        target_mac = bytes(icmp[26:32])
    return NeighbourAdvert(
        src_mac,
        dst_mac,
        ipaddress.IPv6Address(src),
        ipaddress.IPv6Address(dst),
        hops,
        icmp[4],
        ipaddress.IPv6Address(icmp[8:24]),
        target_mac,
    )
