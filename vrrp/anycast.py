"""When may this node announce its anycast VIPs? A pure decision core.

Several sekisho nodes announce the same VIP over BGP and the upstream router spreads
flows over them by ECMP. Each node decides alone whether it may carry traffic:

- announce while its listeners are up and every named pool has at least one server up;
- withdraw at once when that stops being true, or on a drain (`sekisho stop`, the admin
  API): withdrawing is always safe, the other nodes carry the flows;
- after a withdrawal for health, announce again only once healthy for `hold_down`
  seconds without a break (a hold-down against a flapping pool moving every flow of
  the VIP back and forth); the first announcement after start waits for nothing.

`Announcer.handle(event, now) -> list[Action]`, in the shape of `vrrp.fsm`: no clock, no
sockets, so tests jump a fake clock. `vrrp.anycast_io` runs the actions (routes in a
kernel table that the BGP daemon exports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

STARTING = "starting"
HEALTHY = "healthy"
LISTENERS_DOWN = "listeners not accepting"


# ------------------------------------------------------------------- events


@dataclass(frozen=True)
class Observed:
    """What the node looks like now: its listeners, and for each named pool whether any
    server is up."""

    listening: bool
    pools_up: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Drain:
    """Stop carrying traffic until `Undrain`, whatever the health (stop, admin drain)."""

    reason: str


@dataclass(frozen=True)
class Undrain:
    pass


@dataclass(frozen=True)
class TimerFired:
    pass


Event = Observed | Drain | Undrain | TimerFired


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Announce:
    pass


@dataclass(frozen=True)
class Withdraw:
    reason: str


@dataclass(frozen=True)
class ArmTimer:
    at: float  # send TimerFired at this time (a later ArmTimer replaces it)


@dataclass(frozen=True)
class StateChanged:
    announced: bool
    reason: str
    since: float  # when `announced` last changed


Action = Announce | Withdraw | ArmTimer | StateChanged


class Announcer:
    def __init__(self, pools: tuple[str, ...], hold_down: float) -> None:
        self.pools = pools
        self.hold_down = hold_down
        self.announced = False
        self.reason = STARTING
        self.since: float | None = None  # when `announced` last changed (None: never)
        self.problem: str | None = STARTING  # what keeps the node unhealthy; None = healthy
        self.healthy_since: float | None = None
        self.drained: str | None = None
        self.held = False  # the last withdrawal was for health: the hold-down applies
        self.announcements = 0
        self.withdrawals = 0

    def reconfigure(self, pools: tuple[str, ...], hold_down: float, now: float) -> list[Action]:
        """New pools or hold-down (a reload); the VIPs stay announced if still healthy."""
        self.pools = pools
        self.hold_down = hold_down
        return self._decide(now)

    def handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, Observed):
            problem = self._problem(event)
            if problem is None and self.problem is not None:
                self.healthy_since = now
            elif problem is not None:
                self.healthy_since = None
            self.problem = problem
        elif isinstance(event, Drain):
            self.drained = event.reason
        elif isinstance(event, Undrain):
            self.drained = None
        return self._decide(now)

    def _problem(self, seen: Observed) -> str | None:
        if not seen.listening:
            return LISTENERS_DOWN
        for name in self.pools:
            if not seen.pools_up.get(name, False):
                return f"pool {name}: no server up"
        return None

    def _decide(self, now: float) -> list[Action]:
        actions: list[Action] = []
        blocker = f"drained: {self.drained}" if self.drained is not None else self.problem
        if blocker is not None:
            if self.announced:
                self.announced = False
                self.since = now
                self.withdrawals += 1
                self.held = self.drained is None  # health: hold down; a drain: no need
                actions.append(Withdraw(blocker))
            return actions + self._report(blocker, now, flipped=bool(actions))
        ready_at = (self.healthy_since if self.healthy_since is not None else now) + self.hold_down
        if not self.announced and self.held and now < ready_at:
            actions.append(ArmTimer(ready_at))
            return actions + self._report(f"hold-down: healthy for {self.hold_down:g}s first", now)
        if not self.announced:
            self.announced = True
            self.held = False
            self.since = now
            self.announcements += 1
            actions.append(Announce())
        return actions + self._report(HEALTHY, now, flipped=bool(actions))

    def _report(self, reason: str, now: float, flipped: bool = False) -> list[Action]:
        if reason == self.reason and not flipped:
            return []
        self.reason = reason
        return [StateChanged(self.announced, reason, self.since if self.since is not None else now)]
