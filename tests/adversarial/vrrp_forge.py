"""Forged VRRPv2 adverts from a raw socket: `python -m tests.adversarial.vrrp_forge`.

Run inside the attacker's namespace::

    python -m tests.adversarial.vrrp_forge IFACE SRC KIND COUNT [--vip A] [--vrid N]
        [--password P] [--interval S] [--gap SECONDS]

Every kind aims at a VRRPv2 virtual router (vrid, VIP, PASS password, advert
interval as configured on the speakers) and is built to fail exactly one receive
check, so the speakers' drop counter for `KINDS[kind].reason` must grow by
COUNT and nothing else may change. Each one also claims a priority above both
speakers, so a speaker that wrongly accepted it would visibly give up MASTER.
The IP header is ours (IPPROTO_RAW implies IP_HDRINCL): source, TTL and the
VRRP payload are exactly what we say; the kernel only fills in the IP total
length and header checksum.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from vrrp import packet
from vrrp.packet import Advert

V4 = ipaddress.IPv4Address
GROUP = packet.VRRP_GROUP_V4
HIGH = 254  # above any non-owner speaker


@dataclass(frozen=True)
class Target:
    vrid: int
    vip: V4
    password: str
    interval: int
    src: V4  # the attacker's own address on the segment

    def advert(self, **kw: object) -> Advert:
        base = Advert(
            version=2,
            vrid=self.vrid,
            priority=HIGH,
            addresses=(self.vip,),
            interval=float(self.interval),
            auth_type=packet.AUTH_SIMPLE,
            auth_data=packet.password_bytes(self.password),
        )
        return Advert(**{**base.__dict__, **kw})

    def wire(self, advert: Advert) -> bytes:
        return packet.encode(advert, self.src, GROUP)

    def datagram(self, payload: bytes, ttl: int = packet.VRRP_TTL) -> bytes:
        return packet.build_ipv4(payload, self.src, GROUP, ttl=ttl)


def _auth_password(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert(auth_data=packet.password_bytes("wrong"))))


def _auth_none(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert(auth_type=packet.AUTH_NONE, auth_data=b"")))


def _ttl(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert()), ttl=254)


def _vrid(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert(vrid=(t.vrid % 255) + 1)))


def _truncated(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert())[:-4])  # half the auth data missing


def _checksum(t: Target) -> bytes:
    data = bytearray(t.wire(t.advert()))
    data[6] ^= 0x5A
    return t.datagram(bytes(data))


def _owner_foreign(t: Target) -> bytes:
    # "I own the virtual router": priority 255, correct password, but the address
    # list names the attacker's address, not the VIP it would take over.
    return t.datagram(t.wire(t.advert(priority=255, addresses=(t.src,))))


def _owner_extra(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert(priority=255, addresses=(t.vip, t.src))))


def _count(t: Target) -> bytes:
    # well formed with two addresses (count 2): ours plus one more
    extra = V4(int(t.vip) + 1)
    return t.datagram(t.wire(t.advert(addresses=(t.vip, extra))))


def _count_field(t: Target) -> bytes:
    # the count byte says 2, the packet carries room for 1: inconsistent length
    data = bytearray(t.wire(t.advert()))
    data[3] = 2
    data[6:8] = b"\0\0"
    data[6:8] = struct.pack("!H", packet.inet_checksum(bytes(data)))
    return t.datagram(bytes(data))


def _version3(t: Target) -> bytes:
    v3 = Advert(version=3, vrid=t.vrid, priority=HIGH, addresses=(t.vip,), interval=float(t.interval))
    return t.datagram(t.wire(v3))


def _version1(t: Target) -> bytes:
    data = bytearray(t.wire(t.advert()))
    data[0] = 0x11
    data[6:8] = b"\0\0"
    data[6:8] = struct.pack("!H", packet.inet_checksum(bytes(data)))
    return t.datagram(bytes(data))


def _interval(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert(interval=float(t.interval + 2))))


def _type(t: Target) -> bytes:
    return t.datagram(t.wire(t.advert(type=2)))


@dataclass(frozen=True)
class Kind:
    reason: str
    build: Callable[[Target], bytes]
    what: str


KINDS: dict[str, Kind] = {
    "auth-password": Kind("auth", _auth_password, "priority 254, PASS auth with the wrong password"),
    "auth-none": Kind("auth", _auth_none, "priority 254, no auth where PASS is configured"),
    "ttl-254": Kind("ttl", _ttl, "valid advert, priority 254, IP TTL 254 (must be 255)"),
    "vrid": Kind("vrid", _vrid, "valid advert, priority 254, another VRID"),
    "truncated": Kind("length", _truncated, "priority 254, last 4 bytes cut off"),
    "checksum": Kind("checksum", _checksum, "priority 254, VRRP checksum corrupted"),
    "owner-foreign": Kind(
        "addresses", _owner_foreign, "priority 255 'owner' listing its own address, not the VIP"
    ),
    "owner-extra": Kind(
        "addresses", _owner_extra, "priority 255 'owner' listing the VIP plus its own address"
    ),
    "count": Kind("addresses", _count, "priority 254, well formed, 2 addresses (VIP + another)"),
    "count-field": Kind("length", _count_field, "priority 254, count byte 2 but room for 1 address"),
    "version-3": Kind("version", _version3, "a valid VRRPv3 advert, priority 254, to v2 speakers"),
    "version-1": Kind("version", _version1, "version nibble 1, checksum fixed up"),
    "interval": Kind("interval", _interval, "priority 254, advert interval +2 s (v2 must match)"),
    "type": Kind("type", _type, "priority 254, type 2 (not an advertisement)"),
}


def send(ifname: str, target: Target, kind: str, count: int, gap: float) -> int:
    datagram = KINDS[kind].build(target)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(str(target.src)))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sent = 0
        for _ in range(count):
            s.sendto(datagram, (str(GROUP), 0))
            sent += 1
            time.sleep(gap)
    return sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.adversarial.vrrp_forge", description=__doc__)
    p.add_argument("ifname")
    p.add_argument("src", type=V4)
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("count", type=int)
    p.add_argument("--vip", type=V4, default=V4("192.0.2.160"))
    p.add_argument("--vrid", type=int, default=51)
    p.add_argument("--password", default="secret")
    p.add_argument("--interval", type=int, default=1)
    p.add_argument("--gap", type=float, default=0.002)
    a = p.parse_args(argv)
    target = Target(a.vrid, a.vip, a.password, a.interval, a.src)
    print(send(a.ifname, target, a.kind, a.count, a.gap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
