"""Addresses and link state over rtnetlink, idempotent, on any event loop.

pyroute2's message classes encode and decode; the sockets are plain
AF_NETLINK sockets of our own, because pyroute2 0.9's IPRoute/AsyncIPRoute
need a stock asyncio loop (uvloop refuses AF_NETLINK datagram endpoints).
rtnetlink answers synchronously within sendmsg, so a request costs a few
microseconds and never waits on the network.

Adding an address that is already there, or deleting one that is gone, is not
an error: the VIP is wanted present (or absent), not toggled.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from .errors import VrrpIOError

log = logging.getLogger("sekisho.vrrp")

NETLINK_ROUTE = 0
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x1
IFA_F_NODAD = 0x2
RTMGRP_LINK = 0x1
RECV_SIZE = 65536

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_GONE = {errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV}


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    mac: bytes
    up: bool  # administratively up and carrier present


def is_up(flags: int) -> bool:
    return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)


def _link_from(msg: Any) -> Link:
    mac = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
    return Link(
        str(msg.get_attr("IFLA_IFNAME")),
        int(msg["index"]),
        bytes.fromhex(mac.replace(":", "")),
        is_up(int(msg["flags"])),
    )


class Netlink:
    """A blocking rtnetlink request/response socket (answers are immediate)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = itertools.count(1)
        self._marshal = MarshalRtnl()

    def open(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            self._sock.bind((0, 0))
            self._sock.settimeout(2.0)
        except OSError as exc:
            raise VrrpIOError(f"rtnetlink socket: {exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _request(self, msg: Any, mtype: int, flags: int) -> list[Any]:
        if self._sock is None:
            raise VrrpIOError("netlink is not open")
        seq = next(self._seq)
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        out: list[Any] = []
        try:
            self._sock.send(msg.data)
            while True:
                data = self._sock.recv(RECV_SIZE)
                for reply in self._marshal.parse(data):
                    if reply["header"]["sequence_number"] != seq:
                        continue
                    error = reply["header"].get("error")
                    if error is not None:
                        raise error
                    rtype = reply["header"]["type"]
                    if rtype in (NLMSG_DONE, NLMSG_ERROR):  # NLMSG_ERROR with code 0 is the ack
                        return out
                    out.append(reply)
                    if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                        return out
        except NetlinkError:
            raise
        except OSError as exc:
            raise VrrpIOError(f"rtnetlink: {exc}") from exc

    def link(self, name: str) -> Link | None:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["attrs"] = [["IFLA_IFNAME", name]]
        try:
            replies = self._request(msg, RTM_GETLINK, NLM_F_REQUEST)
        except NetlinkError as exc:
            if exc.code in _GONE:
                return None
            raise VrrpIOError(f"netlink link get {name}: {exc}") from exc
        links = [r for r in replies if r["header"]["type"] == RTM_NEWLINK]
        return _link_from(links[0]) if links else None

    def addresses(self, index: int, family: int = 4) -> list[tuple[Interface, bool]]:
        """(address/prefix, is_secondary) on the interface, in kernel order."""
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if family == 4 else socket.AF_INET6
        try:
            replies = self._request(msg, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP)
        except NetlinkError as exc:
            raise VrrpIOError(f"netlink address dump: {exc}") from exc
        out: list[tuple[Interface, bool]] = []
        for m in replies:
            address = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            if m["index"] != index or address is None:
                continue
            iface = ipaddress.ip_interface(f"{address}/{m['prefixlen']}")
            out.append((iface, bool(m["flags"] & IFA_F_SECONDARY)))
        return out

    def _addr_msg(self, index: int, vip: Interface) -> Any:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if vip.version == 4 else socket.AF_INET6
        msg["prefixlen"] = vip.network.prefixlen
        msg["index"] = index
        if vip.version == 6:
            # No duplicate address detection: the address moves between routers by design,
            # and a tentative address could not be announced or sent from (keepalived: nodad).
            msg["flags"] = IFA_F_NODAD
        msg["attrs"] = [["IFA_LOCAL", str(vip.ip)], ["IFA_ADDRESS", str(vip.ip)]]
        return msg

    def add_address(self, index: int, vip: Interface) -> bool:
        """True when added, False when it was already there."""
        try:
            self._request(
                self._addr_msg(index, vip),
                RTM_NEWADDR,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise VrrpIOError(f"netlink add {vip}: {exc}") from exc
        return True

    def del_address(self, index: int, vip: Interface) -> bool:
        """True when removed, False when it was not there."""
        try:
            self._request(self._addr_msg(index, vip), RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as exc:
            if exc.code in _GONE:
                return False
            raise VrrpIOError(f"netlink del {vip}: {exc}") from exc
        return True


class LinkWatcher:
    """Reports up/down transitions of the named interfaces (RTMGRP_LINK multicast)."""

    def __init__(self, names: set[str], on_change: Callable[[str, bool], None]) -> None:
        self.names = names
        self.on_change = on_change
        self.state: dict[str, bool] = {}
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._marshal = MarshalRtnl()

    def start(self, loop: asyncio.AbstractEventLoop, initial: dict[str, bool]) -> None:
        self.state = dict(initial)
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            self._sock.bind((0, RTMGRP_LINK))
            self._sock.setblocking(False)
        except OSError as exc:
            raise VrrpIOError(f"rtnetlink link monitor: {exc}") from exc
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ENOBUFS: events lost; nothing better to do than log
                log.warning("vrrp link monitor: %s", exc)
                return
            for msg in self._marshal.parse(data):
                self.feed(msg["header"]["type"], msg.get_attr("IFLA_IFNAME"), int(msg.get("flags", 0)))

    def feed(self, mtype: int, name: str | None, flags: int) -> None:
        if name not in self.names:
            return
        up = mtype == RTM_NEWLINK and is_up(flags)
        if self.state.get(name) != up:
            self.state[name] = up
            self.on_change(name, up)

    def stop(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
