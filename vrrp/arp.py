"""ARP frames for gratuitous announcements (RFC 5227 style), as pure functions."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import MalformedPacket

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\0" * 6
ETH_MIN_FRAME = 60  # without FCS

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: ipaddress.IPv4Address
    target_mac: bytes
    target_ip: ipaddress.IPv4Address
    eth_src: bytes
    eth_dst: bytes


def mac_to_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def build_arp(
    op: int,
    *,
    sender_mac: bytes,
    sender_ip: ipaddress.IPv4Address,
    target_mac: bytes,
    target_ip: ipaddress.IPv4Address,
    eth_dst: bytes = BROADCAST,
) -> bytes:
    """An Ethernet frame carrying one IPv4-over-Ethernet ARP packet, padded to 60 bytes."""
    frame = _ETH.pack(eth_dst, sender_mac, ETH_P_ARP) + _ARP.pack(
        1, ETH_P_IP, 6, 4, op, sender_mac, sender_ip.packed, target_mac, target_ip.packed
    )
    return frame.ljust(ETH_MIN_FRAME, b"\0")


def gratuitous_arp(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request for our own address (what keepalived sends on takeover)."""
    return build_arp(ARPOP_REQUEST, sender_mac=mac, sender_ip=address, target_mac=ZERO_MAC, target_ip=address)


def parse_arp(frame: bytes) -> ArpPacket:
    if len(frame) < _ETH.size + _ARP.size:
        raise MalformedPacket("short ARP frame", "length")
    dst, src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        raise MalformedPacket(f"ethertype {ethertype:#06x} is not ARP", "type")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        raise MalformedPacket("not IPv4 over Ethernet ARP", "type")
    return ArpPacket(op, sha, ipaddress.IPv4Address(spa), tha, ipaddress.IPv4Address(tpa), src, dst)
