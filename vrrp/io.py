"""Thin I/O for VRRP: the protocol-112 raw socket and the AF_PACKET ARP sender.

Network errors are caught here and nowhere else: a failed send is logged and
counted by the caller, never raised into the state machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Callable

from . import arp, packet
from .errors import MalformedPacket, VrrpIOError

IP_MULTICAST_ALL = 49  # linux/in.h: 0 = only groups joined on this socket
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
        if self.sock.fileno() >= 0:
            if loop is not None:
                loop.remove_reader(self.sock.fileno())
            self.sock.close()


class ArpSender:
    """Gratuitous ARP from an AF_PACKET socket bound to the interface."""

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
        if address.version != 4:
            return False
        self.sock.send(arp.gratuitous_arp(self.mac, address))
        return True

    def close(self) -> None:
        self.sock.close()
