"""The vocabulary of the VRRP state machine: states, events in, actions out."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from conf.model import VrrpInstance

from . import packet
from .packet import Advert, IPAddress


class State(StrEnum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


Timer = Literal["advert", "master_down", "garp"]
NotifyKind = Literal["master", "backup", "fault", "stop"]


# ----------------------------------------------------------------------- events


@dataclass(frozen=True)
class Startup:
    pass


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class TimerFired:
    timer: Timer


@dataclass(frozen=True)
class PacketReceived:
    """A VRRP message as the IP layer delivered it (payload only, no IP header)."""

    payload: bytes
    src: IPAddress
    dst: IPAddress
    ttl: int = packet.VRRP_TTL


@dataclass(frozen=True)
class AdvertReceived:
    """An already decoded advertisement (tests feed instances each other's adverts)."""

    advert: Advert
    src: IPAddress
    ttl: int = packet.VRRP_TTL


@dataclass(frozen=True)
class LinkDown:
    interface: str


@dataclass(frozen=True)
class LinkUp:
    interface: str


@dataclass(frozen=True)
class ScriptDown:
    """A tracked vrrp_script went down (after `fall` failures, or its first result)."""

    name: str


@dataclass(frozen=True)
class ScriptUp:
    name: str


@dataclass(frozen=True)
class Reconfigured:
    """A reload changed this instance's configuration but not its identity (interface,
    VRID, address family: `vrrp.fsm.same_identity`); the instance keeps its state."""

    config: VrrpInstance


Event = (
    Startup
    | Shutdown
    | TimerFired
    | PacketReceived
    | AdvertReceived
    | LinkDown
    | LinkUp
    | ScriptDown
    | ScriptUp
    | Reconfigured
)


# ---------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendAdvert:
    advert: Advert


@dataclass(frozen=True)
class AddVip:
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]


@dataclass(frozen=True)
class DelVip:
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]


@dataclass(frozen=True)
class SendGarp:
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class ArmTimer:
    """Fire `TimerFired(timer)` at `at` (monotonic seconds); `at=None` cancels it."""

    timer: Timer
    at: float | None


@dataclass(frozen=True)
class StateChanged:
    old: State
    new: State
    reason: str


@dataclass(frozen=True)
class PriorityChanged:
    """The effective priority moved (a weighted track went up or down)."""

    old: int
    new: int
    reason: str


@dataclass(frozen=True)
class RunNotify:
    """Run the notify commands for entering `kind`; `priority` is the effective priority
    (keepalived's fourth argument to the generic notify)."""

    kind: NotifyKind
    priority: int


Action = SendAdvert | AddVip | DelVip | SendGarp | ArmTimer | StateChanged | PriorityChanged | RunNotify
