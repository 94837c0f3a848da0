"""The anycast announcer's I/O: host routes in a kernel table that the BGP daemon exports.

Announcing a VIP is one route, `VIP/32 dev <device> table <table> proto <route_protocol>`;
withdrawing it is deleting that route. The host's BGP daemon (BIRD's kernel protocol with
`learn`, conf/examples/anycast-bird.conf) sees the change over netlink at once and
announces or withdraws the prefix to its peers. Nothing looks the table up for
forwarding: it is only a mailbox between sekisho and the BGP daemon.

The device is a TUN device that this process creates and never makes persistent: the
kernel deletes it, and with it every route through it, when the last descriptor on it
closes. So however sekisho ends (stop, crash, SIGKILL, OOM killer), its announcements end
with it, with no watchdog and no cleanup on the next start. The descriptor is opened
close-on-exec, so scripts and exec'd workers never inherit it (a bare fork would: it would
keep the routes alive as long as the child lives).

The VIP itself stays on `interface` (lo by default) so that this node accepts it; it is
added if missing and left in place on stop, as an operator's `ip addr add VIP/32 dev lo`
would be.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from conf.model import AnycastGroup, IPInterface

from .anycast import (
    Announce,
    Announcer,
    ArmTimer,
    Drain,
    Observed,
    StateChanged,
    TimerFired,
    Undrain,
    Withdraw,
)
from .errors import VrrpIOError
from .netlink import IFF_UP, Netlink

log = logging.getLogger("sekisho.anycast")

TUNSETIFF = 0x400454CA  # linux/if_tun.h _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_TABLE_COMPAT = 252  # what rtm_table says when the real id (> 255) is in RTA_TABLE
_ROUTE_GONE = {errno.ESRCH, errno.ENOENT, errno.ENODEV}


class RouteNetlink(Netlink):
    """`vrrp.netlink.Netlink` plus link-up and host routes in a table of our own."""

    def set_up(self, index: int) -> None:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["index"] = index
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        try:
            self._request(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as exc:
            raise VrrpIOError(f"netlink link up {index}: {exc}") from exc

    def _route_msg(self, vip: IPInterface, table: int, protocol: int, oif: int) -> Any:
        msg = rtmsg()
        msg["family"] = socket.AF_INET if vip.version == 4 else socket.AF_INET6
        msg["dst_len"] = vip.max_prefixlen
        msg["table"] = table if table < 256 else RT_TABLE_COMPAT
        msg["proto"] = protocol
        msg["scope"] = RT_SCOPE_LINK if vip.version == 4 else RT_SCOPE_UNIVERSE
        msg["type"] = RTN_UNICAST
        msg["attrs"] = [["RTA_DST", str(vip.ip)], ["RTA_OIF", oif], ["RTA_TABLE", table]]
        return msg

    def replace_route(self, vip: IPInterface, table: int, protocol: int, oif: int) -> None:
        try:
            self._request(
                self._route_msg(vip, table, protocol, oif),
                RTM_NEWROUTE,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            )
        except NetlinkError as exc:
            raise VrrpIOError(f"netlink route add {vip.ip} table {table}: {exc}") from exc

    def del_route(self, vip: IPInterface, table: int, protocol: int, oif: int) -> bool:
        """True when removed, False when it was not there."""
        try:
            self._request(self._route_msg(vip, table, protocol, oif), RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as exc:
            if exc.code in _ROUTE_GONE:
                return False
            raise VrrpIOError(f"netlink route del {vip.ip} table {table}: {exc}") from exc
        return True


def open_tun(name: str) -> int:
    """A non-persistent TUN device named `name`; returns its descriptor (close it: gone)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise VrrpIOError(f"/dev/net/tun: {exc.strerror}") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EBUSY:
            raise VrrpIOError(f"device {name} is held by another process (another sekisho?)") from exc
        raise VrrpIOError(f"cannot create TUN device {name}: {exc.strerror}") from exc
    return fd


class AnycastService:
    """One `[[anycast]]` group: watches health, runs the `Announcer`, owns the routes."""

    def __init__(
        self,
        group: AnycastGroup,
        observe: Callable[[], Observed],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.observe = observe
        self.clock = clock
        self.core = Announcer(group.pools, group.hold_down)
        self.netlink = RouteNetlink()
        self._tun: int | None = None
        self._oif = 0
        self._timer: float | None = None
        self.routed: set[IPInterface] = set()
        self.error: str | None = None

    @staticmethod
    def updatable(old: AnycastGroup, new: AnycastGroup) -> bool:
        """A reload keeps the announcement when only health rules and timers change."""
        same = ("vips", "interface", "table", "route_protocol", "device")
        return all(getattr(old, k) == getattr(new, k) for k in same)

    def reconfigure(self, group: AnycastGroup) -> None:
        self.group = group
        self._run(self.core.reconfigure(group.pools, group.hold_down, self.clock()))

    # ------------------------------------------------------------------ run

    def open(self) -> None:
        self.netlink.open()
        try:
            link = self.netlink.link(self.group.interface)
            if link is None:
                raise VrrpIOError(f"anycast {self.group.name}: no interface {self.group.interface}")
            for vip in self.group.vips:
                if self.netlink.add_address(link.index, vip):
                    log.info("anycast %s: %s added to %s", self.group.name, vip.ip, self.group.interface)
            self._tun = open_tun(self.group.device)
            tun = self.netlink.link(self.group.device)
            if tun is None:
                raise VrrpIOError(f"TUN device {self.group.device} vanished")
            self._oif = tun.index
            self.netlink.set_up(tun.index)
        except BaseException:
            self.close()
            raise

    async def run(self) -> None:
        if self._tun is None:
            self.open()
        try:
            while True:
                self.tick()
                await asyncio.sleep(self.group.check_interval)
        except Exception as exc:
            self.error = str(exc)
            raise
        finally:
            self.close()

    def tick(self) -> None:
        now = self.clock()
        self._run(self.core.handle(self.observe(), now))
        if self._timer is not None and now >= self._timer:
            self._timer = None
            self._run(self.core.handle(TimerFired(), now))

    def drain(self, reason: str) -> bool:
        """Withdraw now (synchronously) and stay withdrawn; True if it was announced."""
        was = self.core.announced
        self._run(self.core.handle(Drain(reason), self.clock()))
        return was

    def undrain(self) -> None:
        self._run(self.core.handle(Undrain(), self.clock()))

    def close(self) -> None:
        """Routes out, device gone (closing the descriptor would remove both anyway)."""
        if self._tun is not None:
            for vip in list(self.routed):
                try:
                    self.netlink.del_route(vip, self.group.table, self.group.route_protocol, self._oif)
                except VrrpIOError as exc:
                    log.warning("anycast %s: %s", self.group.name, exc)
            self.routed.clear()
            if self.core.announced:
                self.core.handle(Drain("closed"), self.clock())
            os.close(self._tun)
            self._tun = None
        self.netlink.close()

    def _run(self, actions: list[Any]) -> None:
        g = self.group
        for action in actions:
            if isinstance(action, Announce):
                for vip in g.vips:
                    self.netlink.replace_route(vip, g.table, g.route_protocol, self._oif)
                    self.routed.add(vip)
            elif isinstance(action, Withdraw):
                for vip in g.vips:
                    self.netlink.del_route(vip, g.table, g.route_protocol, self._oif)
                    self.routed.discard(vip)
            elif isinstance(action, ArmTimer):
                self._timer = action.at
            elif isinstance(action, StateChanged):
                vips = " ".join(str(v.ip) for v in g.vips)
                verb = "announced" if action.announced else "withdrawn"
                log.warning("anycast %s: %s %s (%s)", g.name, verb, vips, action.reason)

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        core = self.core
        since = None
        if core.since is not None:
            since = time.time() - (self.clock() - core.since)
        return {
            "name": self.group.name,
            "vips": [str(v.ip) for v in self.group.vips],
            "announced": core.announced,
            "reason": f"error: {self.error}" if self.error else core.reason,
            "since": since,
            "announcements": core.announcements,
            "withdrawals": core.withdrawals,
            "device": self.group.device,
            "table": self.group.table,
            "pools": list(self.group.pools),
        }
