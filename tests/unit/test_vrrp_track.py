"""vrrp.track: rise/fall of one script, and weights -> effective priority and faults."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from conf.model import VrrpInstance, VrrpScript, VrrpTrack, VrrpTrackScript
from vrrp.track import ScriptCheck, Tracking

VIP = ipaddress.IPv4Interface("192.0.2.160/24")


def script(name: str = "chk", **kw: Any) -> VrrpScript:
    return VrrpScript(name, ("/bin/true",), **kw)


def instance(priority: int = 100, **kw: Any) -> VrrpInstance:
    return VrrpInstance("VI", "eth0", 51, priority, (VIP,), **kw)


def feed(check: ScriptCheck, results: str) -> list[bool | None]:
    """'+' success, '-' failure; the status change each one caused (None: none)."""
    return [check.record(r == "+", float(i)) for i, r in enumerate(results)]


# ------------------------------------------------------------------ ScriptCheck


def test_first_result_counts_at_once_then_fall_and_rise() -> None:
    c = ScriptCheck(script(rise=2, fall=3))
    assert c.status is None
    assert feed(c, "+") == [True]  # keepalived: result = rise - 1, one success is enough
    assert feed(c, "--+---") == [None, None, None, None, None, False]  # a success resets the count
    assert feed(c, "+-++") == [None, None, None, True]
    assert (c.runs, c.failures) == (11, 6)


def test_first_failure_counts_at_once() -> None:
    c = ScriptCheck(script(rise=5, fall=5))
    assert feed(c, "-") == [False]
    assert feed(c, "++++-+++++") == [None] * 9 + [True]


def test_init_fail_starts_down_and_needs_rise_successes() -> None:
    c = ScriptCheck(script(rise=2, init_fail=True))
    assert c.status is False
    assert feed(c, "-++") == [None, None, True]


def test_next_run_keeps_the_grid_and_skips_what_an_overrun_missed() -> None:
    c = ScriptCheck(script(interval=2.0))
    assert c.next_run(10.0, 10.05) == pytest.approx(12.0)
    assert c.next_run(10.0, 12.3) == pytest.approx(14.0)
    assert c.next_run(10.0, 15.9) == pytest.approx(16.0)  # ran 3.6 s: the start at 14 is skipped


def test_stats() -> None:
    c = ScriptCheck(script())
    c.record(False, 3.0, timed_out=True)
    assert c.stats() == {
        "name": "chk",
        "status": "down",
        "runs": 1,
        "failures": 1,
        "timeouts": 1,
        "last_result": False,
        "last_change": 3.0,
    }


# --------------------------------------------------------------------- Tracking


def tracked(priority: int = 100, **weights: int) -> Tracking:
    """Scripts named by keyword with their weights."""
    scripts = tuple(VrrpTrackScript(script(n), w) for n, w in weights.items())
    return Tracking(instance(priority, track_script=scripts))


def test_negative_weight_subtracts_while_down_positive_adds_while_up() -> None:
    t = tracked(100, neg=-30, pos=20)
    assert t.priority == 100  # nothing counts before a script's first result
    t.set("script", "neg", True)
    t.set("script", "pos", True)
    assert t.priority == 120
    t.set("script", "neg", False)
    assert t.priority == 90
    t.set("script", "pos", False)
    assert t.priority == 70
    assert t.faults() == []


def test_priority_stays_within_1_and_254() -> None:
    t = tracked(250, a=100)
    t.set("script", "a", True)
    assert t.priority == 254
    t = tracked(10, a=-100)
    t.set("script", "a", False)
    assert t.priority == 1


def test_owner_never_moves() -> None:
    t = Tracking(instance(255, track_interface=("eth1",)))
    assert t.priority == 255


def test_reverse_negates_the_weight() -> None:
    s = (VrrpTrackScript(script("pos"), 20, reverse=True), VrrpTrackScript(script("neg"), -20, reverse=True))
    t = Tracking(instance(100, track_script=s))
    t.set("script", "pos", True)
    t.set("script", "neg", False)
    assert t.priority == 100 - 20 + 20
    t.set("script", "neg", True)
    assert t.priority == 80


def test_weight_zero_faults_and_a_silent_script_is_pending() -> None:
    t = tracked(100, chk=0)
    assert t.pending() == ["chk"] and t.faults() == []
    t.set("script", "chk", False)
    assert t.pending() == [] and t.faults() == ["script chk down"]
    t.set("script", "chk", True)
    assert t.faults() == []
    rev = Tracking(instance(track_script=(VrrpTrackScript(script(), 0, reverse=True),)))
    rev.set("script", "chk", True)
    assert rev.faults() == ["script chk up"]


def test_interfaces_weights_and_the_own_interface() -> None:
    t = Tracking(
        instance(
            100,
            track_interface=("eth0", "eth1", "eth2"),
            track_interface_weight=(VrrpTrack("eth2", -25),),
        )
    )
    assert t.priority == 100 and t.faults() == []  # links start up
    t.set("interface", "eth2", False)
    assert t.priority == 75 and t.faults() == []
    t.set("interface", "eth1", False)
    t.set("interface", "eth0", False)
    assert t.faults() == ["interface eth0 down", "interface eth1 down"]
    assert not t.set("interface", "eth9", False)  # not tracked
    assert not t.set("interface", "eth0", False)  # no change
    assert {s["name"]: s["adjustment"] for s in t.stats()} == {"eth0": 0, "eth1": 0, "eth2": -25}
