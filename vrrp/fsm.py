"""The VRRP state machine, sans-IO: `Instance.handle(event, now) -> list[Action]`.

RFC 5798 / RFC 9568 section 6.4 (and RFC 3768 for VRRPv2), with keepalived's
`nopreempt` and `preempt_delay`, and its tracking (`vrrp.track`: links and
scripts that fault the instance or move its priority). No clock, no socket: the
caller passes `now` (monotonic seconds), executes the returned actions in order,
and calls `handle(TimerFired(timer), now)` once the deadline of an `ArmTimer` is
reached.

All state transitions happen in this file; every receive check (TTL, version,
type, length, checksum, VRID, auth, interval, our own packets) happens here
too, before the state is looked at, so a refused packet can only increment
`dropped[reason]`. Reasons: ttl, length, version, type, checksum (codec), vrid,
own, auth, interval, addresses (the advertised list is not our VIPs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field

from conf.model import VrrpInstance

from . import packet
from .errors import MalformedPacket
from .events import (
    Action,
    AddVip,
    AdvertReceived,
    ArmTimer,
    DelVip,
    Event,
    LinkDown,
    LinkUp,
    NotifyKind,
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
    State,
    StateChanged,
    Timer,
    TimerFired,
)
from .packet import Advert, IPAddress
from .track import Kind, Tracking

PRIORITY_OWNER = 255
PRIORITY_RELEASE = 0
TIMER_SLACK = 1e-3  # a timer that fires this early still counts as due

__all__ = [
    "Action",
    "AddVip",
    "AdvertReceived",
    "ArmTimer",
    "DelVip",
    "Event",
    "Instance",
    "LinkDown",
    "LinkUp",
    "NotifyKind",
    "PacketReceived",
    "PriorityChanged",
    "Reconfigured",
    "RunNotify",
    "ScriptDown",
    "ScriptUp",
    "SendAdvert",
    "SendGarp",
    "Shutdown",
    "Startup",
    "State",
    "StateChanged",
    "Timer",
    "TimerFired",
    "same_identity",
]


def same_identity(old: VrrpInstance, new: VrrpInstance) -> bool:
    """keepalived's reload keeps an instance's state when this holds: same interface, same
    VRID, same address family (and, here, the same VRRP version: another packet format
    is another virtual router for every peer). Anything else is updated in place."""
    return (
        old.interface == new.interface
        and old.virtual_router_id == new.virtual_router_id
        and old.version == new.version
        and _family(old) == _family(new)
    )


def _family(config: VrrpInstance) -> int:
    return config.virtual_ipaddress[0].version if config.virtual_ipaddress else 4


# --------------------------------------------------------------------- instance


@dataclass
class Instance:
    """One VRRP instance (one VRID on one interface).

    `primary` is the address we send from (the interface's primary address or
    `unicast_src_ip`): it breaks priority ties and identifies our own packets.
    `sibling_vrids` are VRIDs other instances of this process run on the same
    interface: their packets are not ours but not "VRID not configured" either.
    """

    config: VrrpInstance
    primary: IPAddress
    sibling_vrids: Container[int] = frozenset()
    state: State = State.INIT
    master_adver_interval: float = 0.0
    master_address: IPAddress | None = None
    deadlines: dict[Timer, float] = field(default_factory=dict)
    preempt_deadline: float | None = None
    adverts_received: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_transition: float | None = None

    def __post_init__(self) -> None:
        self.master_adver_interval = self.config.advert_int
        self._vips = tuple(self.config.virtual_ipaddress)
        self._vip_set = frozenset(v.ip for v in self._vips)
        self._auth = packet.password_bytes(self.config.auth_pass)
        self._multicast = not self.config.unicast_peer
        self.tracking = Tracking(self.config)
        self._started = False  # Startup seen (INIT may still wait for weight-0 scripts)

    # ------------------------------------------------------------ derived values

    @property
    def priority(self) -> int:
        """The effective priority: the configured one moved by weighted tracks."""
        return self.tracking.priority

    @property
    def skew_time(self) -> float:
        if self.config.version == 2:
            return (256 - self.priority) / 256
        return (256 - self.priority) * self.master_adver_interval / 256

    @property
    def master_down_interval(self) -> float:
        return 3 * self.master_adver_interval + self.skew_time

    def advert(self, priority: int | None = None) -> Advert:
        """The advertisement this instance sends (priority 0 on release)."""
        v2 = self.config.version == 2
        return Advert(
            version=self.config.version,
            vrid=self.config.virtual_router_id,
            priority=self.priority if priority is None else priority,
            addresses=tuple(v.ip for v in self._vips),
            interval=self.config.advert_int,
            auth_type=packet.AUTH_SIMPLE if v2 and self.config.auth_pass else packet.AUTH_NONE,
            auth_data=self._auth if v2 else b"",
        )

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)

    # ------------------------------------------------------------------ dispatch

    def handle(self, event: Event, now: float) -> list[Action]:
        match event:
            case Startup():
                return self._startup(now)
            case Shutdown():
                return self._shutdown(now)
            case TimerFired(timer=timer):
                return self._timer(timer, now)
            case PacketReceived():
                advert = self._decode(event)
                if advert is None:
                    return []
                return self._advert(advert, event.src, event.ttl, now, ttl_checked=True)
            case AdvertReceived(advert=advert, src=src, ttl=ttl):
                return self._advert(advert, src, ttl, now)
            case LinkDown(interface=ifname):
                return self._track("interface", ifname, False, now)
            case LinkUp(interface=ifname):
                return self._track("interface", ifname, True, now)
            case ScriptDown(name=name):
                return self._track("script", name, False, now)
            case ScriptUp(name=name):
                return self._track("script", name, True, now)
            case Reconfigured(config=config):
                return self._reconfigure(config, now)
        raise TypeError(f"not a VRRP event: {event!r}")

    # --------------------------------------------------------------- transitions

    def _arm(self, timer: Timer, at: float | None) -> ArmTimer:
        if at is None:
            self.deadlines.pop(timer, None)
        else:
            self.deadlines[timer] = at
        return ArmTimer(timer, at)

    def _change(self, new: State, now: float, reason: str) -> list[Action]:
        old = self.state
        self.state = new
        self.transitions[(old.value, new.value)] += 1
        self.last_transition = now
        out: list[Action] = [StateChanged(old, new, reason)]
        kind: NotifyKind = {
            State.MASTER: "master",
            State.BACKUP: "backup",
            State.FAULT: "fault",
            State.INIT: "stop",
        }[new]  # type: ignore[assignment]
        out.append(RunNotify(kind, self.priority))
        return out

    def _release(self, out: list[Action]) -> None:
        """Leave MASTER: stop advertising, drop the VIPs."""
        out.append(self._arm("advert", None))
        out.append(self._arm("garp", None))
        out.append(DelVip(self._vips))

    def _become_master(self, now: float, reason: str) -> list[Action]:
        out: list[Action] = [self._arm("master_down", None)]
        self.master_adver_interval = self.config.advert_int
        self.master_address = self.primary
        out.append(AddVip(self._vips))
        out.append(SendAdvert(self.advert()))
        out.append(SendGarp(tuple(v.ip for v in self._vips)))
        out.append(self._arm("advert", now + self.config.advert_int))
        if self.config.garp_master_delay > 0:
            out.append(self._arm("garp", now + self.config.garp_master_delay))
        out += self._change(State.MASTER, now, reason)
        return out

    def _become_backup(self, now: float, reason: str, master_interval: float | None = None) -> list[Action]:
        out: list[Action] = []
        if self.state == State.MASTER:
            self._release(out)
        self.master_adver_interval = master_interval or self.config.advert_int
        out.append(self._arm("master_down", now + self.master_down_interval))
        out += self._change(State.BACKUP, now, reason)
        return out

    def _enter_running(self, now: float, reason: str) -> list[Action]:
        """Initialize -> Master (address owner, or initial_state MASTER) or Backup.

        Leaving FAULT goes to Backup unless we own the address: initial_state is a
        startup hint (keepalived's try_up_instance does the same), and a master that
        comes back from a fault would otherwise grab the VIP before hearing the peer.
        """
        if self.preempt_deadline is None and self.config.preempt_delay > 0:
            self.preempt_deadline = now + self.config.preempt_delay
        initial = self.state == State.INIT and self.config.initial_state == "MASTER"
        if self.priority == PRIORITY_OWNER or initial:
            return self._become_master(now, reason)
        return self._become_backup(now, reason)

    def _startup(self, now: float) -> list[Action]:
        if self.state != State.INIT or self._started:
            return []
        self._started = True
        return self._settle(now, "startup")

    def _shutdown(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.state == State.MASTER:
            out.append(SendAdvert(self.advert(PRIORITY_RELEASE)))
            self._release(out)
        self._started = False
        if self.state == State.INIT:
            return out
        out.append(self._arm("master_down", None))
        self.master_address = None
        out += self._change(State.INIT, now, "shutdown")
        return out

    def _timer(self, timer: Timer, now: float) -> list[Action]:
        due = self.deadlines.get(timer)
        if due is None or now < due - TIMER_SLACK:
            return []  # cancelled or re-armed since: stale
        self.deadlines.pop(timer)
        if timer == "master_down" and self.state == State.BACKUP:
            return self._become_master(now, "master down timer expired")
        if timer == "advert" and self.state == State.MASTER:
            return [
                SendAdvert(self.advert()),
                self._arm("advert", now + self.config.advert_int),
            ]
        if timer == "garp" and self.state == State.MASTER:
            return [SendGarp(tuple(v.ip for v in self._vips))]
        return []

    # -------------------------------------------------------------------- reload

    def _reconfigure(self, config: VrrpInstance, now: float) -> list[Action]:
        """A reload with the same identity: keep the state, apply the rest in place.

        As keepalived does: a master adds the new VIPs and deletes the dropped ones
        without leaving MASTER, and advertises the new priority (and interval, and
        address list) at once. A master whose new priority is below a peer's learns it
        from the peer's next advertisement and gives way then (RFC 5798 6.4.3: the
        backup with preemption ignores our lower adverts, its Master_Down_Timer runs
        out, and we hear its higher priority); a backup re-evaluates preemption on the
        next advertisement it hears with the new priority and `preempt` setting.
        """
        if not same_identity(self.config, config):
            raise ValueError(
                f"vrrp {self.config.name}: interface, VRID, version or family changed: stop and start"
            )
        if config == self.config:
            return []
        old_priority, old_mdi = self.priority, self.master_down_interval
        old_vips, old_advert = self._vips, self.advert()
        self.config = config
        self._vips = tuple(config.virtual_ipaddress)
        self._vip_set = frozenset(v.ip for v in self._vips)
        self._auth = packet.password_bytes(config.auth_pass)
        self._multicast = not config.unicast_peer
        previous = self.tracking
        self.tracking = Tracking(config)
        for key, obj in self.tracking.objects.items():
            known = previous.objects.get(key)
            if known is not None and known.up is not None:
                obj.up = known.up
        if config.preempt_delay <= 0:
            self.preempt_deadline = None
        out: list[Action] = []
        if self.priority != old_priority:
            out.append(PriorityChanged(old_priority, self.priority, "reload"))
        if self.state == State.MASTER:
            self.master_adver_interval = config.advert_int
            gone = tuple(v for v in old_vips if v not in self._vips)
            new = tuple(v for v in self._vips if v not in old_vips)
            if gone:
                out.append(DelVip(gone))
            if new:
                out.append(AddVip(new))
            if self.advert() != old_advert:
                out.append(SendAdvert(self.advert()))
                out.append(self._arm("advert", now + config.advert_int))
            if new:
                out.append(SendGarp(tuple(v.ip for v in new)))
        elif self.state == State.BACKUP:
            if config.version == 2 or self.master_address is None:
                self.master_adver_interval = config.advert_int
            due = self.deadlines.get("master_down")
            if self.priority == PRIORITY_OWNER:
                return out + self._become_master(now, "reload: address owner")
            if due is not None and self.master_down_interval != old_mdi:
                # keepalived moves the running timer by the change of its skew
                out.append(self._arm("master_down", due + self.master_down_interval - old_mdi))
        return out + self._settle(now, "reload")

    # ------------------------------------------------------------------ tracking

    def _track(self, kind: Kind, name: str, up: bool, now: float) -> list[Action]:
        old_priority, old_mdi = self.priority, self.master_down_interval
        if not self.tracking.set(kind, name, up):
            return []
        reason = f"{'link' if kind == 'interface' else 'script'} {name} {'up' if up else 'down'}"
        out: list[Action] = []
        if self.priority != old_priority:
            out.append(PriorityChanged(old_priority, self.priority, reason))
            due = self.deadlines.get("master_down")
            if self.state == State.BACKUP and due is not None:
                # keepalived moves the running timer by the change of its skew
                out.append(self._arm("master_down", due + self.master_down_interval - old_mdi))
        return out + self._settle(now, reason)

    def _settle(self, now: float, reason: str) -> list[Action]:
        """Put the state where the tracked objects say it belongs."""
        faults = self.tracking.faults()
        if self.state == State.INIT:
            if not self._started or self.tracking.pending():
                return []  # not started, or waiting for a weight-0 script's first word
            if faults:
                return self._change(State.FAULT, now, f"{reason} with {', '.join(faults)}")
            return self._enter_running(now, reason)
        if self.state == State.FAULT:
            return [] if faults else self._enter_running(now, reason)
        if not faults:
            return []
        out: list[Action] = []
        if self.state == State.MASTER:
            out.append(SendAdvert(self.advert(PRIORITY_RELEASE)))
            self._release(out)
        out.append(self._arm("master_down", None))
        self.master_address = None
        out += self._change(State.FAULT, now, reason)
        return out

    # ------------------------------------------------------------------- receive

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _decode(self, event: PacketReceived) -> Advert | None:
        if self._multicast and event.ttl != packet.VRRP_TTL:
            self._drop("ttl")
            return None
        group = packet.VRRP_GROUP_V4 if event.src.version == 4 else packet.VRRP_GROUP_V6
        try:
            return packet.decode(
                event.payload,
                event.src,
                event.dst,
                also_dst=None if self._multicast else group,
            )
        except MalformedPacket as exc:
            self._drop(exc.reason)
            return None

    def accept(self, advert: Advert, src: IPAddress, ttl: int, *, ttl_checked: bool = False) -> str | None:
        """The receive checks that need the configuration: None, or the drop reason."""
        if not ttl_checked and self._multicast and ttl != packet.VRRP_TTL:
            return "ttl"
        if advert.version != self.config.version:
            return "version"
        if advert.type != packet.TYPE_ADVERTISEMENT:
            return "type"
        if advert.vrid != self.config.virtual_router_id:
            return "" if advert.vrid in self.sibling_vrids else "vrid"
        if src == self.primary:
            return "own"
        if advert.version == 2:
            want = packet.AUTH_SIMPLE if self.config.auth_pass else packet.AUTH_NONE
            if advert.auth_type != want or (want == packet.AUTH_SIMPLE and advert.auth_data != self._auth):
                return "auth"
            if advert.interval != self.config.advert_int:
                return "interval"
        elif advert.centiseconds == 0:
            return "interval"
        if len(advert.addresses) != len(self._vips) or set(advert.addresses) != self._vip_set:
            # RFC 3768 7.1 / RFC 5798 7.1 "MAY verify" the address list; keepalived
            # drops a mismatch whatever the priority (addr_list_err), and so do we:
            # a priority-255 "owner" advertising other addresses than ours owns
            # nothing of this virtual router, and obeying it would hand the VIP to
            # whoever can forge one packet on the segment.
            return "addresses"
        return None

    def _advert(
        self, advert: Advert, src: IPAddress, ttl: int, now: float, *, ttl_checked: bool = False
    ) -> list[Action]:
        reason = self.accept(advert, src, ttl, ttl_checked=ttl_checked)
        if reason is not None:
            if reason:
                self._drop(reason)
            return []
        self.adverts_received += 1
        if self.state == State.BACKUP:
            return self._backup_advert(advert, src, now)
        if self.state == State.MASTER:
            return self._master_advert(advert, src, now)
        return []  # Initialize / Fault: not listening

    def _backup_advert(self, advert: Advert, src: IPAddress, now: float) -> list[Action]:
        if advert.priority == PRIORITY_RELEASE:
            # The master is leaving: take over after Skew_Time only.
            self.master_address = None
            return [self._arm("master_down", now + self.skew_time)]
        self.master_address = src
        hold = False
        if self.config.preempt and advert.priority < self.priority and self.config.preempt_delay > 0:
            if self.preempt_deadline is None:
                self.preempt_deadline = now + self.config.preempt_delay
            hold = now < self.preempt_deadline
        if not self.config.preempt or advert.priority >= self.priority or hold:
            if advert.priority >= self.priority:
                self.preempt_deadline = None
            if advert.version == 3:
                self.master_adver_interval = advert.interval
            return [self._arm("master_down", now + self.master_down_interval)]
        # Preempt: a lower priority master; let the Master_Down_Timer run out.
        return []

    def _master_advert(self, advert: Advert, src: IPAddress, now: float) -> list[Action]:
        if advert.priority == PRIORITY_RELEASE:
            return [SendAdvert(self.advert()), self._arm("advert", now + self.config.advert_int)]
        if advert.priority > self.priority or (advert.priority == self.priority and src > self.primary):  # type: ignore[operator]
            self.master_address = src
            interval = advert.interval if advert.version == 3 else None
            return self._become_backup(
                now, f"higher priority master {src} (priority {advert.priority})", interval
            )
        return []

    # --------------------------------------------------------------------- stats

    def stats(self) -> dict[str, object]:
        return {
            "name": self.config.name,
            "interface": self.config.interface,
            "virtual_router_id": self.config.virtual_router_id,
            "version": self.config.version,
            "state": self.state.value,
            "priority": self.config.priority,
            "effective_priority": self.priority,
            "tracking": self.tracking.stats(),
            "master_address": str(self.master_address) if self.master_address else None,
            "master_adver_interval": self.master_adver_interval,
            "transitions": [
                {"from": a, "to": b, "count": n} for (a, b), n in sorted(self.transitions.items())
            ],
            "adverts_received": self.adverts_received,
            "dropped": dict(self.dropped),
        }
