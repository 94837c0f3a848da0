"""What tracked links and scripts make of an instance, sans-IO (keepalived's vrrp_track.c).

`ScriptCheck` turns one script's exit statuses into up/down with rise and fall;
`Tracking` turns the up/down of everything an instance tracks into its effective
priority and its reasons to be in FAULT. Neither runs anything nor reads a clock:
`vrrp.scripts` runs the commands, `vrrp.fsm.Instance` acts on the result.

keepalived's rules, kept here:

- A script is unknown until its first result (`init_fail`: down), and its first
  result counts at once, whatever rise and fall say; after that it takes `fall`
  failures in a row to go down and `rise` successes in a row to come back.
- weight 0: the instance is in FAULT while the object is down. An instance whose
  weight-0 script has not reported yet does not start (keepalived holds it in FAULT
  without a notify; we hold it in INIT).
- weight > 0 is added while the object is up, weight < 0 is added (subtracted) while
  it is down; `reverse` negates the weight and, for weight 0, faults while it is *up*.
  Nothing is added for a script that has not reported yet.
- The effective priority stays within 1..254; the address owner (255) never moves
  (conf refuses weights on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from conf.model import VrrpInstance, VrrpScript, VrrpTrack

Kind = Literal["interface", "script"]

PRIORITY_OWNER = 255


class ScriptCheck:
    """One vrrp_script's verdict from its exit statuses (True = success)."""

    def __init__(self, config: VrrpScript) -> None:
        self.config = config
        self.status: bool | None = False if config.init_fail else None
        self._streak = 0  # results in a row that disagree with `status`
        self.runs = 0
        self.failures = 0
        self.timeouts = 0
        self.last_result: bool | None = None
        self.last_run: float | None = None
        self.last_change: float | None = None

    def record(self, ok: bool, now: float, *, timed_out: bool = False) -> bool | None:
        """Count one result; the new status when it changed, else None."""
        self.runs += 1
        self.failures += not ok
        self.timeouts += timed_out
        self.last_result = ok
        self.last_run = now
        if self.status is None:  # unknown: the first result decides
            return self._set(ok, now)
        if ok == self.status:
            self._streak = 0
            return None
        self._streak += 1
        if self._streak >= (self.config.rise if ok else self.config.fall):
            return self._set(ok, now)
        return None

    def _set(self, status: bool, now: float) -> bool:
        self.status = status
        self._streak = 0
        self.last_change = now
        return status

    def next_run(self, started: float, now: float) -> float:
        """The next start on the grid `started + k * interval` after `now` (a run that
        overran its interval skips the starts it missed, as keepalived does)."""
        interval = self.config.interval
        k = int((now - started) / interval) + 1
        return started + k * interval

    def stats(self) -> dict[str, object]:
        return {
            "name": self.config.name,
            "status": {None: "unknown", True: "up", False: "down"}[self.status],
            "runs": self.runs,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "last_result": self.last_result,
            "last_change": self.last_change,
        }


@dataclass
class Tracked:
    kind: Kind
    track: VrrpTrack
    up: bool | None

    @property
    def ok(self) -> bool | None:
        """Up, with `reverse` applied (None: no result yet)."""
        return None if self.up is None else self.up != self.track.reverse

    def contribution(self) -> int:
        w = self.track.weight
        if self.up is None or w == 0:
            return 0
        if self.up != (w > 0):
            return 0  # a positive weight counts while up, a negative one while down
        return -w if self.track.reverse else w


class Tracking:
    """The tracked objects of one instance and what they make of it."""

    def __init__(self, config: VrrpInstance) -> None:
        self.base = config.priority
        self.objects: dict[tuple[Kind, str], Tracked] = {}
        weights = {t.name: t for t in config.track_interface_weight}
        for name in (config.interface, *config.track_interface):
            track = VrrpTrack(name) if name == config.interface else weights.get(name, VrrpTrack(name))
            self.objects.setdefault(("interface", name), Tracked("interface", track, True))
        for ts in config.track_script:
            s = ts.script
            track = VrrpTrack(s.name, ts.weight, ts.reverse)
            self.objects[("script", s.name)] = Tracked("script", track, False if s.init_fail else None)

    def set(self, kind: Kind, name: str, up: bool) -> bool:
        """Record a new status; False when the object is not tracked or nothing changed."""
        obj = self.objects.get((kind, name))
        if obj is None or obj.up == up:
            return False
        obj.up = up
        return True

    @property
    def priority(self) -> int:
        if self.base == PRIORITY_OWNER:
            return PRIORITY_OWNER
        total = self.base + sum(o.contribution() for o in self.objects.values())
        return max(1, min(PRIORITY_OWNER - 1, total))

    def faults(self) -> list[str]:
        """Why the instance must be in FAULT (weight-0 objects that are down), sorted."""
        return sorted(
            f"{o.kind} {o.track.name} {'up' if o.track.reverse else 'down'}"
            for o in self.objects.values()
            if o.track.weight == 0 and o.ok is False
        )

    def pending(self) -> list[str]:
        """Weight-0 scripts that have not reported yet: the instance waits for them."""
        return sorted(o.track.name for o in self.objects.values() if o.track.weight == 0 and o.up is None)

    def stats(self) -> list[dict[str, object]]:
        return [
            {
                "kind": o.kind,
                "name": o.track.name,
                "weight": o.track.weight,
                "reverse": o.track.reverse,
                "status": {None: "unknown", True: "up", False: "down"}[o.up],
                "adjustment": o.contribution(),
            }
            for o in self.objects.values()
        ]
