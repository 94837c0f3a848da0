"""The daemon's `[[anycast]]` groups: one `vrrp.anycast_io.AnycastService` task each.

The daemon hands over what the announcer must look at (its listeners, its pools) as
callables, so neither side holds the other; the daemon calls `start` once its
listeners are up and `withdraw` first in its shutdown, before the listeners stop
accepting, so the router moves new flows away while this node still takes stragglers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import conf
from conf.model import AnycastGroup
from lb.pool import PoolSet
from proxy.process.admin import AdminRequest, AdminResponse, AdminServer
from proxy.process.tasks import Background
from vrrp.anycast import Observed
from vrrp.anycast_io import AnycastService
from vrrp.errors import VrrpIOError

log = logging.getLogger("sekisho.anycast")
WILDCARDS = ("0.0.0.0", "::")


class Anycast:
    def __init__(
        self,
        tasks: Background,
        pools: Callable[[], PoolSet],
        listening: Callable[[], Iterable[conf.Address]],
    ) -> None:
        self.tasks = tasks
        self.pools = pools
        self.listening = listening
        self.groups: dict[str, tuple[AnycastService, asyncio.Task[None]]] = {}
        self.drained: str | None = None  # the node is drained: groups started on a reload stay out

    def start(self, groups: Iterable[AnycastGroup]) -> None:
        for group in groups:
            self._start(group)

    def _start(self, group: AnycastGroup) -> None:
        service = AnycastService(group, lambda: self.observe(service.group))
        service.open()  # raises VrrpIOError: no such interface, device held by another process
        if self.drained is not None:
            service.drain(self.drained)
        task = self.tasks.spawn(service.run(), name=f"anycast {group.name}")
        self.groups[group.name] = (service, task)

    def observe(self, group: AnycastGroup) -> Observed:
        """Listening on one of the VIPs (or a wildcard), and per named pool: any server up."""
        hosts = {str(v.ip) for v in group.vips} | set(WILDCARDS)
        listening = any(a.host in hosts for a in self.listening())
        pools = self.pools()
        up = {
            name: name in pools and any(b.up and b.in_table for b in pools[name].backends)
            for name in group.pools
        }
        return Observed(listening, up)

    def reconcile(self, groups: Iterable[AnycastGroup]) -> None:
        """A reload: groups whose routes are unchanged are updated in place (announced stays
        announced); others are withdrawn and started again."""
        wanted = {g.name: g for g in groups}
        for name, (service, task) in list(self.groups.items()):
            new = wanted.pop(name, None)
            if new is not None and not task.done() and AnycastService.updatable(service.group, new):
                service.reconfigure(new)
                continue
            service.close()  # now, not when the task next runs: the new one may want the device
            task.cancel()
            del self.groups[name]
            if new is not None:
                wanted[name] = new
        for group in wanted.values():
            try:
                self._start(group)
            except VrrpIOError as exc:
                log.error("anycast %s: not started: %s", group.name, exc)

    def drain(self, reason: str) -> bool:
        """Withdraw every group now; True if any was announced."""
        self.drained = reason
        return any([service.drain(reason) for service, _ in self.groups.values()])

    def undrain(self) -> None:
        self.drained = None
        for service, _ in self.groups.values():
            service.undrain()

    async def withdraw(self) -> None:
        """Shutdown: withdraw, then give BGP `withdraw_grace` to carry it before listeners close."""
        if self.drain("stopping"):
            grace = max(s.group.withdraw_grace for s, _ in self.groups.values())
            log.info("anycast: withdrawn; listeners close in %.1fs", grace)
            await asyncio.sleep(grace)

    async def stop(self) -> None:
        tasks = [task for _, task in self.groups.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> list[dict[str, Any]]:
        return [service.stats() for service, _ in self.groups.values()]

    def register(self, admin: AdminServer) -> None:
        """`POST /anycast/drain` takes this node out of every group (the router moves new
        flows to the other nodes, open ones finish here); `POST /anycast/undrain` puts it
        back once healthy. Both need the admin token; a restart forgets a drain."""

        async def drain(request: AdminRequest) -> AdminResponse:
            self.drain("admin")
            log.warning("anycast: drained by the admin API")
            return AdminResponse.json({"anycast": self.stats()})

        async def undrain(request: AdminRequest) -> AdminResponse:
            self.undrain()
            log.warning("anycast: undrained by the admin API")
            return AdminResponse.json({"anycast": self.stats()})

        admin.route("POST", "/anycast/drain", drain)
        admin.route("POST", "/anycast/undrain", undrain)
