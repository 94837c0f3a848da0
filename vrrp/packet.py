"""VRRP advertisement codec: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798 / RFC 9568).

Pure functions over bytes. Anything malformed raises `MalformedPacket` whose
`reason` is the drop counter label: "length", "version", "type", "checksum",
"addresses".

VRRPv2 (IPv4 only)::

    |Ver=2|Type=1| VRID | Priority | Count IPvX |
    | Auth Type  | Adver Int (s) |   Checksum   |
    | IPv4 address(es) ...                      |
    | Authentication data (8 bytes)             |

The checksum covers the VRRP message only. Auth type 1 ("simple text",
keepalived's `auth_type PASS`) carries the password NUL-padded to 8 bytes.

VRRPv3::

    |Ver=3|Type=1| VRID | Priority | Count IPvX |
    |rsvd(4)| Max Adver Int (12 bits, cs) | Checksum |
    | IPv4 or IPv6 address(es) ...              |

The checksum covers an IP pseudo-header (source, destination, protocol 112,
VRRP length) plus the message, like keepalived does by default. keepalived's
`old_unicast_checksum` peers computed unicast checksums against 224.0.0.18;
`decode(..., also_dst=...)` accepts that variant as well.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from .errors import MalformedPacket

IPPROTO_VRRP = 112
VRRP_GROUP_V4 = ipaddress.IPv4Address("224.0.0.18")
VRRP_GROUP_V6 = ipaddress.IPv6Address("ff02::12")
VRRP_TTL = 255
TYPE_ADVERTISEMENT = 1
AUTH_NONE = 0
AUTH_SIMPLE = 1
AUTH_DATA_LEN = 8
HEADER_LEN = 8

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Version = Literal[2, 3]

_HEADER = struct.Struct("!BBBBHH")  # vers_type vrid prio count (v2: auth|int, v3: rsvd|maxint) csum


@dataclass(frozen=True)
class Advert:
    """One VRRP advertisement, version-independent.

    `interval` is in seconds: whole seconds for v2, hundredths for v3.
    `checksum` is what the wire carried (decode) and is ignored by encode.
    """

    version: Version
    vrid: int
    priority: int
    addresses: tuple[IPAddress, ...]
    interval: float = 1.0
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""
    type: int = TYPE_ADVERTISEMENT
    checksum: int = 0

    @property
    def centiseconds(self) -> int:
        return round(self.interval * 100)

    @property
    def family(self) -> int:
        return 6 if self.addresses and self.addresses[0].version == 6 else 4


def password_bytes(password: str | None) -> bytes:
    """keepalived's PASS auth data: the password truncated/NUL-padded to 8 bytes."""
    if not password:
        return b"\0" * AUTH_DATA_LEN
    return password.encode()[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\0")


def inet_checksum(data: bytes) -> int:
    """RFC 1071 one's complement checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, IPPROTO_VRRP)


def _v3_checksum(message: bytes, src: IPAddress | None, dst: IPAddress | None) -> int:
    if src is None or dst is None:
        raise MalformedPacket("VRRPv3 checksum needs the IP source and destination", "checksum")
    if src.version != dst.version:
        raise MalformedPacket("source and destination of different families", "checksum")
    return inet_checksum(_pseudo_header(src, dst, len(message)) + message)


def encode(advert: Advert, src: IPAddress | None = None, dst: IPAddress | None = None) -> bytes:
    """The VRRP message (no IP header). VRRPv3 needs the IP `src` and `dst`."""
    if advert.version not in (2, 3):
        raise MalformedPacket(f"version {advert.version} is not 2 or 3", "version")
    if not 0 <= advert.vrid <= 255 or not 0 <= advert.priority <= 255:
        raise MalformedPacket("vrid and priority are one byte each", "length")
    if not 0 < len(advert.addresses) <= 255:
        raise MalformedPacket("1 to 255 addresses", "addresses")
    family = advert.addresses[0].version
    if any(a.version != family for a in advert.addresses):
        raise MalformedPacket("one advertisement carries one address family", "addresses")
    body = b"".join(a.packed for a in advert.addresses)
    vers_type = (advert.version << 4) | (advert.type & 0x0F)
    if advert.version == 2:
        if family != 4:
            raise MalformedPacket("VRRPv2 is IPv4 only", "addresses")
        interval = round(advert.interval)
        if not 0 <= interval <= 255:
            raise MalformedPacket("VRRPv2 advert interval is 0-255 s", "length")
        auth = advert.auth_data.ljust(AUTH_DATA_LEN, b"\0")[:AUTH_DATA_LEN]
        word = (advert.auth_type << 8) | interval
        head = _HEADER.pack(vers_type, advert.vrid, advert.priority, len(advert.addresses), word, 0)
        message = head + body + auth
        csum = inet_checksum(message)
    else:
        centis = advert.centiseconds
        if not 0 <= centis <= 0x0FFF:
            raise MalformedPacket("VRRPv3 max advert interval is 0-40.95 s", "length")
        head = _HEADER.pack(vers_type, advert.vrid, advert.priority, len(advert.addresses), centis, 0)
        message = head + body
        csum = _v3_checksum(message, src, dst)
    return message[:6] + struct.pack("!H", csum) + message[8:]


def peek_version(data: bytes) -> int:
    if not data:
        raise MalformedPacket("empty VRRP message", "length")
    return data[0] >> 4


def decode(
    data: bytes,
    src: IPAddress | None = None,
    dst: IPAddress | None = None,
    *,
    also_dst: IPAddress | None = None,
) -> Advert:
    """Parse and verify one VRRP message (the IP payload).

    The address family of the advertised addresses follows `src` (IPv4 when
    unknown). VRRPv3 needs `src` and `dst` for its pseudo-header checksum;
    `also_dst` is a second destination to try (keepalived's old unicast
    checksum, computed against the multicast group).
    """
    if len(data) < HEADER_LEN:
        raise MalformedPacket(f"{len(data)} bytes is shorter than the VRRP header", "length")
    vers_type, vrid, priority, count, word, csum = _HEADER.unpack_from(data)
    version, ptype = vers_type >> 4, vers_type & 0x0F
    if version not in (2, 3):
        raise MalformedPacket(f"version {version}", "version")
    if ptype != TYPE_ADVERTISEMENT:
        raise MalformedPacket(f"type {ptype} is not an advertisement", "type")
    if count == 0:
        raise MalformedPacket("no addresses", "addresses")
    family = 6 if src is not None and src.version == 6 else 4
    if version == 2 and family == 6:
        raise MalformedPacket("VRRPv2 over IPv6", "version")
    size = 4 if family == 4 else 16
    expected = HEADER_LEN + count * size + (AUTH_DATA_LEN if version == 2 else 0)
    if len(data) != expected:
        raise MalformedPacket(
            f"{len(data)} bytes, {count} addresses need {expected}",
            "length",
        )
    if version == 2:
        if inet_checksum(data) != 0:
            raise MalformedPacket("bad VRRPv2 checksum", "checksum")
    else:
        ok = _v3_checksum(data, src, dst) == 0
        if not ok and also_dst is not None:
            ok = _v3_checksum(data, src, also_dst) == 0
        if not ok:
            raise MalformedPacket("bad VRRPv3 checksum", "checksum")
    body = data[HEADER_LEN : HEADER_LEN + count * size]
    addresses: tuple[IPAddress, ...]
    if family == 4:
        addresses = tuple(ipaddress.IPv4Address(body[i : i + 4]) for i in range(0, len(body), 4))
    else:
        addresses = tuple(ipaddress.IPv6Address(body[i : i + 16]) for i in range(0, len(body), 16))
    if version == 2:
        return Advert(
            version=2,
            vrid=vrid,
            priority=priority,
            addresses=addresses,
            interval=float(word & 0xFF),
            auth_type=word >> 8,
            auth_data=bytes(data[expected - AUTH_DATA_LEN : expected]),
            checksum=csum,
        )
    return Advert(
        version=3,
        vrid=vrid,
        priority=priority,
        addresses=addresses,
        interval=(word & 0x0FFF) / 100,
        checksum=csum,
    )


# ------------------------------------------------------------------ IPv4 header


@dataclass(frozen=True)
class IPv4Header:
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int
    protocol: int
    payload: bytes


@dataclass(frozen=True)
class IPv6Header:
    """What an IPv6 raw socket tells of a datagram: its ancillary data (IPV6_PKTINFO,
    IPV6_HOPLIMIT) and the payload; `ttl` is the hop limit, as IPv4Header's."""

    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    ttl: int
    protocol: int
    payload: bytes


_IPV4 = struct.Struct("!BBHHHBBH4s4s")


def parse_ipv4(datagram: bytes) -> IPv4Header:
    """Split what a raw IPv4 socket returns into header fields and payload."""
    if len(datagram) < 20:
        raise MalformedPacket("shorter than an IPv4 header", "length")
    ver_ihl, _tos, total, _id, _frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(datagram)
    if ver_ihl >> 4 != 4:
        raise MalformedPacket("not IPv4", "version")
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < 20 or total < ihl or len(datagram) < total:
        raise MalformedPacket("inconsistent IPv4 lengths", "length")
    return IPv4Header(
        ipaddress.IPv4Address(src),
        ipaddress.IPv4Address(dst),
        ttl,
        proto,
        bytes(datagram[ihl:total]),
    )


def build_ipv4(
    payload: bytes,
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    ttl: int = VRRP_TTL,
    ident: int = 0,
) -> bytes:
    """An IPv4 header (no options, DSCP CS6 like keepalived) + payload, for IP_HDRINCL."""
    head = _IPV4.pack(0x45, 0xC0, 20 + len(payload), ident, 0, ttl, IPPROTO_VRRP, 0, src.packed, dst.packed)
    csum = inet_checksum(head)
    return head[:10] + struct.pack("!H", csum) + head[12:] + payload
