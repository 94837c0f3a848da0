"""PROXY protocol v1 (text) and v2 (binary), encoder and decoder.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

    encode("v1", ("192.0.2.1", 56324), ("192.0.2.160", 443))
        -> b"PROXY TCP4 192.0.2.1 192.0.2.160 56324 443\\r\\n"
    header = decode(buffer)   # None: need more bytes; raises ProxyProtocolError

The decoder takes the start of a stream; `header.length` bytes of it are the
PROXY header, the rest belongs to the application.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from lb.errors import ProxyProtocolError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
_V2_FAMILIES = {0x11: ("TCP4", 12), 0x12: ("UDP4", 12), 0x21: ("TCP6", 36), 0x22: ("UDP6", 36)}


@dataclass(frozen=True)
class ProxyHeader:
    version: int  # 1 or 2
    command: str  # "PROXY" or "LOCAL"
    family: str  # "TCP4" | "TCP6" | "UDP4" | "UDP6" | "UNKNOWN" | "UNIX"...
    src: tuple[str, int] | None
    dst: tuple[str, int] | None
    length: int  # bytes of the stream taken by the header
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())


def _family(src: str, dst: str) -> int:
    a = ipaddress.ip_address(src)
    b = ipaddress.ip_address(dst)
    if a.version != b.version:
        # An IPv4 client on an IPv6 socket (::ffff:a.b.c.d): present both as IPv6.
        return 6
    return a.version


def _v6(addr: str) -> bytes:
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{ip}").packed
    return ip.packed


def _unmap(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def encode(version: str, src: tuple[str, int] | None, dst: tuple[str, int] | None) -> bytes:
    """The PROXY header for a connection from `src` to `dst` (our listener).

    `version` is "v1" or "v2" (as in the pool config). Addresses of unknown
    family (a UNIX socket, None) give "PROXY UNKNOWN" / a v2 LOCAL header.
    """
    if version not in ("v1", "v2"):
        raise ValueError(f"PROXY protocol version {version!r}")
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n" if version == "v1" else V2_SIGNATURE + b"\x20\x00\x00\x00"
    s_host, d_host = _unmap(src[0].split("%")[0]), _unmap(dst[0].split("%")[0])
    fam = _family(s_host, d_host)
    if version == "v1":
        if fam == 4:
            return f"PROXY TCP4 {s_host} {d_host} {src[1]} {dst[1]}\r\n".encode()
        s6 = str(ipaddress.IPv6Address(_v6(s_host)))
        d6 = str(ipaddress.IPv6Address(_v6(d_host)))
        return f"PROXY TCP6 {s6} {d6} {src[1]} {dst[1]}\r\n".encode()
    if fam == 4:
        body = (
            ipaddress.IPv4Address(s_host).packed
            + ipaddress.IPv4Address(d_host).packed
            + struct.pack("!HH", src[1], dst[1])
        )
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(body)) + body
    body = _v6(s_host) + _v6(d_host) + struct.pack("!HH", src[1], dst[1])
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(body)) + body


def decode(data: bytes | bytearray | memoryview) -> ProxyHeader | None:
    """Parse a PROXY header at the start of `data`; None if more bytes are needed."""
    data = bytes(data[: 65536 + 16])
    if not data:
        return None
    if data[:1] == b"\r":
        n = min(len(data), len(V2_SIGNATURE))
        if data[:n] != V2_SIGNATURE[:n]:
            raise ProxyProtocolError("not a PROXY protocol header")
        if len(data) < 16:
            return None
        return _decode_v2(data)
    if data[:1] == b"P":
        n = min(len(data), 6)
        if data[:n] != b"PROXY "[:n]:
            raise ProxyProtocolError("not a PROXY protocol header")
        return _decode_v1(data)
    raise ProxyProtocolError("not a PROXY protocol header")


def _port(text: bytes) -> int:
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0") or len(text) > 5:
        raise ProxyProtocolError(f"bad port {text[:8]!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"bad port {port}")
    return port


def _decode_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyProtocolError("v1 header without CRLF within 107 bytes")
        return None
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, end + 2)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("v1 header: expected 'PROXY TCP4|TCP6 src dst sport dport'")
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        dst = ipaddress.ip_address(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError("v1 header: bad address") from None
    want = 4 if parts[1] == b"TCP4" else 6
    if src.version != want or dst.version != want:
        raise ProxyProtocolError(f"v1 header: address family is not {parts[1].decode()}")
    return ProxyHeader(
        1,
        "PROXY",
        parts[1].decode(),
        (str(src), _port(parts[4])),
        (str(dst), _port(parts[5])),
        end + 2,
    )


def _decode_v2(data: bytes) -> ProxyHeader | None:
    ver_cmd, fam, length = struct.unpack("!BBH", data[12:16])
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 header: version {ver_cmd >> 4}")
    cmd = ver_cmd & 0x0F
    if cmd not in (0, 1):
        raise ProxyProtocolError(f"v2 header: command {cmd}")
    if len(data) < 16 + length:
        return None
    body = data[16 : 16 + length]
    total = 16 + length
    if cmd == 0:
        return ProxyHeader(2, "LOCAL", "UNSPEC", None, None, total)
    if fam == 0x00:
        return ProxyHeader(2, "PROXY", "UNSPEC", None, None, total)
    if fam not in _V2_FAMILIES:
        if fam >> 4 == 3:  # AF_UNIX: 216 bytes of addresses, not ours to interpret
            if length < 216:
                raise ProxyProtocolError("v2 header: short UNIX address block")
            return ProxyHeader(2, "PROXY", "UNIX", None, None, total, _tlvs(body[216:]))
        raise ProxyProtocolError(f"v2 header: family/protocol 0x{fam:02x}")
    name, size = _V2_FAMILIES[fam]
    if length < size:
        raise ProxyProtocolError(f"v2 header: {name} needs {size} address bytes, has {length}")
    alen = (size - 4) // 2
    src = ipaddress.ip_address(body[:alen])
    dst = ipaddress.ip_address(body[alen : 2 * alen])
    sport, dport = struct.unpack("!HH", body[2 * alen : size])
    return ProxyHeader(2, "PROXY", name, (str(src), sport), (str(dst), dport), total, _tlvs(body[size:]))


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    out = []
    i = 0
    while i < len(data):
        if len(data) - i < 3:
            raise ProxyProtocolError("v2 header: truncated TLV")
        kind, n = struct.unpack("!BH", data[i : i + 3])
        if len(data) - i - 3 < n:
            raise ProxyProtocolError("v2 header: TLV overruns the header")
        out.append((kind, data[i + 3 : i + 3 + n]))
        i += 3 + n
    return tuple(out)
