"""Addresses and link state over rtnetlink (pyroute2), idempotent.

Adding an address that is already there, or deleting one that is gone, is not
an error: the VIP is wanted present (or absent), not toggled.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import VrrpIOError

log = logging.getLogger("sekisho.vrrp")

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x1
RTMGRP_LINK = 0x1

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_GONE = {errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV}


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    mac: bytes
    up: bool  # administratively up and carrier present


async def _all(result: Any) -> list[Any]:
    """pyroute2 0.9 answers some requests with a list and dumps with an async generator."""
    if hasattr(result, "__aiter__"):
        return [m async for m in result]
    return list(result)


def _is_up(flags: int) -> bool:
    return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)


class Netlink:
    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None

    async def open(self) -> None:
        self._ipr = AsyncIPRoute()

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise VrrpIOError("netlink is not open")
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def link(self, name: str) -> Link | None:
        try:
            msgs = await _all(await self.ipr.link("get", ifname=name))
        except NetlinkError as exc:
            if exc.code in _GONE:
                return None
            raise VrrpIOError(f"netlink link get {name}: {exc}") from exc
        if not msgs:
            return None
        m = msgs[0]
        mac = m.get("IFLA_ADDRESS") or "00:00:00:00:00:00"
        return Link(name, int(m["index"]), bytes.fromhex(mac.replace(":", "")), _is_up(int(m["flags"])))

    async def addresses(self, index: int, family: int = 4) -> list[tuple[Interface, bool]]:
        """(address/prefix, is_secondary) on the interface, in kernel order."""
        out: list[tuple[Interface, bool]] = []
        for m in await _all(await self.ipr.addr("dump", index=index)):
            fam = 4 if m["family"] == 2 else 6 if m["family"] == 10 else 0
            if fam != family or m.get("IFA_ADDRESS") is None:
                continue
            iface = ipaddress.ip_interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}")
            out.append((iface, bool(m["flags"] & IFA_F_SECONDARY)))
        return out

    async def add_address(self, index: int, vip: Interface) -> bool:
        """True when added, False when it was already there."""
        try:
            await _all(
                await self.ipr.addr("add", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen)
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise VrrpIOError(f"netlink add {vip}: {exc}") from exc
        return True

    async def del_address(self, index: int, vip: Interface) -> bool:
        """True when removed, False when it was not there."""
        try:
            await _all(
                await self.ipr.addr("del", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen)
            )
        except NetlinkError as exc:
            if exc.code in _GONE:
                return False
            raise VrrpIOError(f"netlink del {vip}: {exc}") from exc
        return True


class LinkWatcher:
    """Reports link up/down transitions of the named interfaces (RTMGRP_LINK)."""

    def __init__(self, names: set[str], on_change: Callable[[str, bool], None]) -> None:
        self.names = names
        self.on_change = on_change
        self.state: dict[str, bool] = {}
        self._ipr: AsyncIPRoute | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, initial: dict[str, bool]) -> None:
        self.state = dict(initial)
        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="vrrp-link-watch")

    async def _messages(self) -> AsyncIterator[Any]:
        assert self._ipr is not None
        async for msg in self._ipr.get():
            yield msg

    async def _watch(self) -> None:
        try:
            async for msg in self._messages():
                name = msg.get("IFLA_IFNAME")
                if name not in self.names:
                    continue
                up = msg["event"] == "RTM_NEWLINK" and _is_up(int(msg["flags"]))
                if self.state.get(name) != up:
                    self.state[name] = up
                    self.on_change(name, up)
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher must never die silently
            log.exception("vrrp link watcher failed")
            raise

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
