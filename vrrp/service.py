"""`VrrpService`: one VRRP instance wired to the network.

The state machine (`vrrp.fsm.Instance`) decides; this module only turns its
actions into syscalls and feeds it events: packets from the raw socket, link
changes from netlink, tracked scripts' verdicts from `vrrp.scripts`, and timers
from the event loop. `await run()` until cancelled; on cancellation the instance
sends a priority-0 advertisement, releases its VIPs, runs the "stop" notify, and
re-raises CancelledError.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter

from conf.model import VrrpInstance

from . import arp, scripts
from .errors import VrrpIOError
from .fsm import (
    Action,
    AddVip,
    ArmTimer,
    DelVip,
    Event,
    Instance,
    LinkDown,
    LinkUp,
    PacketReceived,
    PriorityChanged,
    Reconfigured,
    RunNotify,
    ScriptDown,
    ScriptUp,
    SendAdvert,
    SendGarp,
    Shutdown,
    Startup,
    StateChanged,
    Timer,
    TimerFired,
    same_identity,
)
from .io import ArpSender, VrrpSocket, VrrpSocket6
from .netlink import Link, LinkWatcher, Netlink
from .notify import Notifier
from .packet import Advert, IPv4Header, IPv6Header

log = logging.getLogger("sekisho.vrrp")

GARP_REPEAT = 3  # frames per address per announcement (keepalived sends 5 by default)
UNSPECIFIED = ipaddress.IPv4Address("0.0.0.0")


class _Vrids(Counter[int]):
    """VRIDs run by this process on one interface, counted: a reload may briefly run the
    old and the new service of one instance side by side. Membership means count > 0."""

    def __contains__(self, vrid: object) -> bool:
        return isinstance(vrid, int) and self.get(vrid, 0) > 0

    def add(self, vrid: int) -> None:
        self[vrid] += 1

    def discard(self, vrid: int) -> None:
        self[vrid] -= 1
        if self[vrid] <= 0:
            self.pop(vrid, None)


# VRIDs run by this process, per interface: another instance's packets are not
# "VRID not configured" drops.
_RUNNING: dict[str, _Vrids] = {}


class VrrpService:
    def __init__(self, config: VrrpInstance) -> None:
        self.config = config
        self._siblings = _RUNNING.setdefault(config.interface, _Vrids())
        self.instance = Instance(config, config.unicast_src_ip or UNSPECIFIED, sibling_vrids=self._siblings)
        self.adverts_sent = 0
        self.send_errors = 0
        self.garps_sent = 0
        self.vip_errors = 0
        self.stale_vips_removed = 0
        self.last_transition: float | None = None
        self.link: Link | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: VrrpSocket | VrrpSocket6 | None = None
        self._arp: ArpSender | None = None
        self._netlink = Netlink()
        self._links: LinkWatcher | None = None
        self._notifier = Notifier(config.name, config.notify)
        self._scripts: list[scripts.ScriptRunner] = []

    @property
    def name(self) -> str:
        return self.config.name

    @staticmethod
    def updatable(old: VrrpInstance, new: VrrpInstance) -> bool:
        """Can a running service take `new` in place (`reconfigure`), keeping its state?

        The identity (`vrrp.fsm.same_identity`) must hold, and what the service opened at
        start must not move: the socket (unicast peers and source) and the tracked objects
        it watches (link and script names; their weights may change).
        """
        return (
            same_identity(old, new)
            and old.name == new.name
            and old.unicast_peer == new.unicast_peer
            and old.unicast_src_ip == new.unicast_src_ip
            and set(old.track_interface) == set(new.track_interface)
            and [t.script for t in old.track_script] == [t.script for t in new.track_script]
        )

    def reconfigure(self, config: VrrpInstance) -> None:
        """Apply a reloaded config in place (the caller checked `updatable`): the
        instance keeps its state and, as master, its VIPs."""
        if not self.updatable(self.config, config):
            raise ValueError(f"vrrp {self.name}: cannot be updated in place")
        self._events.put_nowait(Reconfigured(config))

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        vrid = self.config.virtual_router_id
        self._siblings.add(vrid)
        try:
            await self._open()
            await self._execute(self.instance.handle(Startup(), loop.time()))
            while True:
                event = await self._events.get()
                if isinstance(event, Reconfigured):
                    self._reconfigured(event.config)
                await self._execute(self.instance.handle(event, loop.time()))
        finally:
            try:
                await self._stop()
            finally:
                self._siblings.discard(vrid)

    async def _open(self) -> None:
        cfg = self.config
        family = cfg.virtual_ipaddress[0].version if cfg.virtual_ipaddress else 4
        self._netlink.open()
        link = self._netlink.link(cfg.interface)
        if link is None:
            raise VrrpIOError(f"vrrp {cfg.name}: no interface {cfg.interface!r}")
        self.link = link
        addresses = self._netlink.addresses(link.index, family)
        vips = {v.ip for v in cfg.virtual_ipaddress}
        primary: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        if family == 6:
            # RFC 5798 5.1.2.1: IPv6 adverts come from the interface's link-local address.
            primary = cfg.unicast_src_ip or next((a.ip for a, _ in addresses if a.ip.is_link_local), None)
        else:
            primary = cfg.unicast_src_ip or next(
                (a.ip for a, secondary in addresses if not secondary and a.ip not in vips),
                next((a.ip for a, _ in addresses if a.ip not in vips), None),
            )
        if primary is None or primary.version != family:
            kind = "IPv6 link-local" if family == 6 else "IPv4"
            raise VrrpIOError(f"vrrp {cfg.name}: {cfg.interface} has no {kind} address to send from")
        self.instance.primary = primary
        await self._remove_stale(link, addresses, primary)
        loop = asyncio.get_running_loop()
        if isinstance(primary, ipaddress.IPv6Address):
            peers6 = tuple(p for p in cfg.unicast_peer if isinstance(p, ipaddress.IPv6Address))
            sock6 = VrrpSocket6(cfg.interface, link.index, primary, peers6)
            sock6.attach(loop, self._on_packet, self._on_bad_packet)
            self._sock, peers = sock6, tuple(map(str, peers6))
        else:
            peers4 = tuple(p for p in cfg.unicast_peer if isinstance(p, ipaddress.IPv4Address))
            sock4 = VrrpSocket(cfg.interface, link.index, primary, peers4)
            sock4.attach(loop, self._on_packet, self._on_bad_packet)
            self._sock, peers = sock4, tuple(map(str, peers4))
        self._arp = ArpSender(cfg.interface, link.mac)
        names = {cfg.interface, *cfg.track_interface}
        initial: dict[str, bool] = {}
        for name in sorted(names):
            found = link if name == cfg.interface else self._netlink.link(name)
            initial[name] = found is not None and found.up
        self._links = LinkWatcher(names, self._on_link)
        self._links.start(asyncio.get_running_loop(), initial)
        now = asyncio.get_running_loop().time()
        seed: list[Event] = [LinkDown(name) for name, up in sorted(initial.items()) if not up]
        for track in cfg.track_script:
            runner = scripts.acquire(track.script)
            self._scripts.append(runner)
            runner.subscribe(self._on_script)
            if runner.check.status is not None:  # shared: it has run for another instance
                seed.append(ScriptUp(runner.name) if runner.check.status else ScriptDown(runner.name))
        for event in seed:
            await self._execute(self.instance.handle(event, now))
        log.info(
            "vrrp %s: %s vrid %d priority %d from %s (%s)",
            cfg.name,
            cfg.interface,
            cfg.virtual_router_id,
            self.instance.priority,
            primary,
            f"unicast to {', '.join(peers)}" if peers else "multicast",
        )

    def _reconfigured(self, config: VrrpInstance) -> None:
        old = self.config
        self.config = config
        self._notifier.config = config.notify
        log.info(
            "vrrp %s: reloaded in place (%s vrid %d priority %d -> %d)",
            config.name,
            config.interface,
            config.virtual_router_id,
            old.priority,
            config.priority,
        )

    async def _remove_stale(
        self,
        link: Link,
        addresses: list[tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, bool]],
        primary: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ) -> None:
        """A VIP on the interface before we ever were master was left by a crashed run."""
        if self.config.priority == 255:
            return  # the address owner really has these addresses
        present = {a.ip for a, _ in addresses}
        for vip in self.config.virtual_ipaddress:
            if vip.ip in present and vip.ip != primary:
                log.warning("vrrp %s: removing stale VIP %s left on %s", self.name, vip, link.name)
                if self._netlink.del_address(link.index, vip):
                    self.stale_vips_removed += 1

    async def _stop(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        try:
            if self._sock is not None:
                await self._execute(self.instance.handle(Shutdown(), loop.time()))
                notify = self.config.notify
                await self._notifier.drain(notify.timeout * (2 if notify.any else 1))
        finally:
            for runner in self._scripts:
                runner.unsubscribe(self._on_script)
                await scripts.release(runner)
            self._scripts.clear()
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            self._notifier.close()
            if self._links is not None:
                self._links.stop()
            if self._sock is not None:
                self._sock.close(loop)
            if self._arp is not None:
                self._arp.close()
            self._netlink.close()

    # -------------------------------------------------------------------- inputs

    def _on_packet(self, header: IPv4Header | IPv6Header) -> None:
        self._events.put_nowait(PacketReceived(header.payload, header.src, header.dst, header.ttl))

    def _on_bad_packet(self, reason: str) -> None:
        self.instance.dropped[reason] += 1

    def _on_link(self, name: str, up: bool) -> None:
        log.info("vrrp %s: link %s %s", self.name, name, "up" if up else "down")
        self._events.put_nowait(LinkUp(name) if up else LinkDown(name))

    def _on_script(self, name: str, up: bool) -> None:
        self._events.put_nowait(ScriptUp(name) if up else ScriptDown(name))

    # ------------------------------------------------------------------- actions

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendAdvert(advert=advert):
                    self._send(advert)
                case AddVip(addresses=vips):
                    await self._vips(vips, add=True)
                case DelVip(addresses=vips):
                    await self._vips(vips, add=False)
                case SendGarp(addresses=addresses):
                    self._garp(addresses)
                case ArmTimer(timer=timer, at=at):
                    self._arm(timer, at)
                case StateChanged(old=old, new=new, reason=reason):
                    self.last_transition = time.time()
                    log.info("vrrp %s: %s -> %s (%s)", self.name, old.value, new.value, reason)
                case PriorityChanged(old=old_priority, new=new_priority, reason=reason):
                    log.info(
                        "vrrp %s: effective priority %d -> %d (%s)",
                        self.name,
                        old_priority,
                        new_priority,
                        reason,
                    )
                case RunNotify(kind=kind, priority=priority):
                    self._notifier.submit(kind, priority)

    def _send(self, advert: Advert) -> None:
        if self._sock is None:
            return
        try:
            self.adverts_sent += self._sock.send(advert)
        except OSError as exc:
            self.send_errors += 1
            log.debug("vrrp %s: advert send failed: %s", self.name, exc)

    async def _vips(
        self, vips: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...], add: bool
    ) -> None:
        if self.link is None:
            return
        for vip in vips:
            try:
                if add:
                    self._netlink.add_address(self.link.index, vip)
                else:
                    self._netlink.del_address(self.link.index, vip)
            except VrrpIOError as exc:
                self.vip_errors += 1
                log.error("vrrp %s: %s", self.name, exc)

    def _garp(self, addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]) -> None:
        if self._arp is None:
            return
        for address in addresses:
            for _ in range(GARP_REPEAT):
                try:
                    if self._arp.announce(address):
                        self.garps_sent += 1
                except OSError as exc:
                    self.send_errors += 1
                    log.debug("vrrp %s: gratuitous ARP failed: %s", self.name, exc)

    def _arm(self, timer: Timer, at: float | None) -> None:
        old = self._timers.pop(timer, None)
        if old is not None:
            old.cancel()
        if at is not None and self._loop is not None:
            self._timers[timer] = self._loop.call_at(at, self._events.put_nowait, TimerFired(timer))

    # --------------------------------------------------------------------- stats

    def stats(self) -> dict[str, object]:
        s = self.instance.stats()
        s.update(
            adverts_sent=self.adverts_sent,
            send_errors=self.send_errors,
            garps_sent=self.garps_sent,
            vip_errors=self.vip_errors,
            stale_vips_removed=self.stale_vips_removed,
            notify_started=self._notifier.started,
            notify_failed=self._notifier.failed,
            scripts=[runner.stats() for runner in self._scripts],
            last_transition=self.last_transition,
            primary_address=str(self.instance.primary),
            mac=arp.mac_to_str(self.link.mac) if self.link else None,
        )
        return s
