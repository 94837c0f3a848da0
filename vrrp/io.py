"""Thin I/O for VRRP: the protocol-112 raw sockets (IPv4, IPv6) and the AF_PACKET sender of
gratuitous ARP and unsolicited neighbour advertisements.

Network errors are caught here and nowhere else: a failed send is logged and
counted by the caller, never raised into the state machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Callable

from . import arp, ndisc, packet
from .errors import MalformedPacket, VrrpIOError

IP_MULTICAST_ALL = 49  # linux/in.h: 0 = only groups joined on this socket
IPV6_FREEBIND = 78  # linux/in6.h
RECV_SIZE = 65535


class VrrpSocket:
    """A raw IPv4 socket for protocol 112 on one interface.

    Bound to the device (SO_BINDTODEVICE), joined to 224.0.0.18 on it (unless
    unicast), sending with our own IP header (IP_HDRINCL) so the source is
    always the primary address and the TTL 255 whatever the route says.
    """

    def __init__(
        self,
        ifname: str,
        ifindex: int,
        src: ipaddress.IPv4Address,
        peers: tuple[ipaddress.IPv4Address, ...] = (),
    ) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.src = src
        self.peers = peers
        self.destinations = peers or (packet.VRRP_GROUP_V4,)
        self._ident = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, packet.IPPROTO_VRRP)
        try:
            s = self.sock
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            mreqn = struct.pack("4s4si", packet.VRRP_GROUP_V4.packed, src.packed, ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, packet.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            if not peers:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise VrrpIOError(f"raw socket on {ifname}: {exc}") from exc

    def send(self, advert: packet.Advert) -> int:
        """Send to the group (or every unicast peer); returns how many datagrams left."""
        sent = 0
        for dst in self.destinations:
            payload = packet.encode(advert, self.src, dst)
            self._ident = (self._ident + 1) & 0xFFFF or 1
            datagram = packet.build_ipv4(payload, self.src, dst, ident=self._ident)
            self.sock.sendto(datagram, (str(dst), 0))
            sent += 1
        return sent

    def receive(self, on_packet: Callable[[packet.IPv4Header], None], on_bad: Callable[[str], None]) -> None:
        """Drain the socket (a reader callback): parse IP headers, hand VRRP payloads on."""
        for _ in range(64):  # bounded: never starve the loop
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                header = packet.parse_ipv4(data)
            except MalformedPacket as exc:
                on_bad(exc.reason)
                continue
            if header.protocol != packet.IPPROTO_VRRP:
                continue
            on_packet(header)

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        on_packet: Callable[[packet.IPv4Header], None],
        on_bad: Callable[[str], None],
    ) -> None:
        loop.add_reader(self.sock.fileno(), self.receive, on_packet, on_bad)

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        close_raw(self.sock, loop)


class VrrpSocket6:
    """A raw IPv6 socket for protocol 112 on one interface (VRRPv3 over IPv6, RFC 5798).

    The kernel writes the IPv6 header: the source is the interface's link-local address
    (the socket is bound to it), the hop limit 255 (IPV6_MULTICAST_HOPS / UNICAST_HOPS);
    joined to ff02::12 on the interface unless unicast. Received datagrams come with their
    destination and hop limit as ancillary data (IPV6_RECVPKTINFO, IPV6_RECVHOPLIMIT), which
    the state machine checks as it checks IPv4's TTL.
    """

    def __init__(
        self,
        ifname: str,
        ifindex: int,
        src: ipaddress.IPv6Address,
        peers: tuple[ipaddress.IPv6Address, ...] = (),
    ) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.src = src
        self.peers = peers
        self.destinations = peers or (packet.VRRP_GROUP_V6,)
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, packet.IPPROTO_VRRP)
        try:
            s = self.sock
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            # A link-local address still in duplicate address detection (an interface just
            # brought up, at boot) cannot be bound without IPV6_FREEBIND: EADDRNOTAVAIL.
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            s.bind((str(src), 0, 0, ifindex if src.is_link_local else 0))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, packet.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, packet.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xC0)  # CS6, as the IPv4 header's TOS
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            if not peers:
                mreq = packet.VRRP_GROUP_V6.packed + struct.pack("@I", ifindex)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            s.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise VrrpIOError(f"raw IPv6 socket on {ifname}: {exc}") from exc

    def send(self, advert: packet.Advert) -> int:
        sent = 0
        for dst in self.destinations:
            payload = packet.encode(advert, self.src, dst)
            scope = self.ifindex if dst.is_link_local or dst.is_multicast else 0
            self.sock.sendto(payload, (str(dst), 0, 0, scope))
            sent += 1
        return sent

    def receive(self, on_packet: Callable[[packet.IPv6Header], None], on_bad: Callable[[str], None]) -> None:
        space = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)
        for _ in range(64):
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(RECV_SIZE, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            dst: ipaddress.IPv6Address | None = None
            hops = -1
            for level, kind, value in ancdata:
                if level != socket.IPPROTO_IPV6:
                    continue
                if kind == socket.IPV6_PKTINFO and len(value) >= 16:
                    dst = ipaddress.IPv6Address(value[:16])
                elif kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                    hops = struct.unpack("@i", value[:4])[0]
            if dst is None or hops < 0:
                on_bad("length")
                continue
            src = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
            on_packet(packet.IPv6Header(src, dst, hops, packet.IPPROTO_VRRP, data))

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        on_packet: Callable[[packet.IPv6Header], None],
        on_bad: Callable[[str], None],
    ) -> None:
        loop.add_reader(self.sock.fileno(), self.receive, on_packet, on_bad)

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        close_raw(self.sock, loop)


def close_raw(sock: socket.socket, loop: asyncio.AbstractEventLoop | None) -> None:
    """Stop watching a VRRP socket (IPv4 or IPv6) and close it; twice is harmless."""
    if sock.fileno() >= 0:
        if loop is not None:
            loop.remove_reader(sock.fileno())
        sock.close()


class ArpSender:
    """Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) from an
    AF_PACKET socket bound to the interface."""

    def __init__(self, ifname: str, mac: bytes) -> None:
        self.ifname = ifname
        self.mac = mac
        try:
            # protocol 0: this socket only sends, the kernel queues nothing for it
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.sock.bind((ifname, 0))
            self.sock.setblocking(False)
        except OSError as exc:
            raise VrrpIOError(f"AF_PACKET socket on {ifname}: {exc}") from exc

    def announce(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address):
            self.sock.send(ndisc.unsolicited_na(self.mac, address))
        else:
            self.sock.send(arp.gratuitous_arp(self.mac, address))
        return True

    def close(self) -> None:
        self.sock.close()
