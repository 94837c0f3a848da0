"""The state machine with tracked scripts and weighted links, on the fake-clock LAN."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from conf.model import VrrpScript, VrrpTrack, VrrpTrackScript
from tests.unit.test_vrrp_fsm import VIP, Net, became_master_at, config, mdi, skew
from vrrp.fsm import (
    AddVip,
    ArmTimer,
    DelVip,
    Instance,
    LinkDown,
    LinkUp,
    PriorityChanged,
    RunNotify,
    ScriptDown,
    ScriptUp,
    SendAdvert,
    Startup,
    State,
    StateChanged,
)

V4 = ipaddress.IPv4Address


def chk(weight: int = 0, name: str = "chk", **kw: Any) -> tuple[VrrpTrackScript, ...]:
    return (VrrpTrackScript(VrrpScript(name, ("/bin/true",), weight=weight, **kw), weight),)


def test_failing_weighted_script_hands_the_vip_to_the_backup() -> None:
    """keepalived's haproxy pattern: master 150 with weight -60, backup 100 (preempt)."""
    net = Net()
    a = net.add("a", "192.0.2.1", priority=150, track_script=chk(-60))
    b = net.add("b", "192.0.2.2", priority=100)
    net.start("a")
    net.do(a, a.inst.handle(ScriptUp("chk"), net.now))
    net.start("b")
    net.advance(10.2)
    assert net.masters() == ["a"]
    last_high = became_master_at(a) + 6  # adverts every second since; the last before 10.2
    failed = net.now
    out = a.inst.handle(ScriptDown("chk"), failed)
    net.do(a, out)
    assert PriorityChanged(150, 90, "script chk down") in out
    assert a.state == State.MASTER  # no fault: only the priority moved
    net.advance(0.8)
    assert [x for _, x in net.wire][-1].priority == 90  # the next advert says so
    net.advance(5)
    assert net.masters() == ["b"] and net.holders() == ["b"]
    # b ignored the lower adverts and took over when its timer ran out: counted from the
    # last advert it accepted (a's at priority 150)
    assert became_master_at(b) == pytest.approx(last_high + mdi(100))
    assert a.state == State.BACKUP
    assert a.inst.stats()["effective_priority"] == 90 and a.inst.stats()["priority"] == 150

    net.do(a, a.inst.handle(ScriptUp("chk"), net.now))  # recovered: 150 again, preempts b
    back = net.now
    net.advance(5)
    assert net.masters() == ["a"]
    assert back < became_master_at(a) <= back + mdi(150) + 1


def test_weight_zero_script_faults_the_master_and_back_to_backup() -> None:
    net = Net()
    a = net.add("a", "192.0.2.1", priority=150, initial_state="MASTER", track_script=chk(0))
    b = net.add("b", "192.0.2.2", priority=100)
    net.start("a")
    assert a.state == State.INIT and a.actions == []  # waits for the script's first word
    net.do(a, a.inst.handle(ScriptUp("chk"), 0.5))
    assert a.state == State.MASTER  # initial_state MASTER, once the script said yes
    net.start("b")
    net.advance(5.0)
    out = a.inst.handle(ScriptDown("chk"), net.now)
    net.do(a, out)
    assert a.state == State.FAULT
    assert [x.advert.priority for x in out if isinstance(x, SendAdvert)] == [0]
    assert DelVip((VIP,)) in out and RunNotify("fault", 150) in out
    t = net.now
    net.advance(1.0)
    assert became_master_at(b) == pytest.approx(t + skew(100))
    net.do(a, a.inst.handle(ScriptUp("chk"), net.now))
    assert a.state == State.BACKUP  # not MASTER: initial_state is for startup only
    net.advance(5.0)
    assert net.masters() == ["a"]  # then preempts b on priority
    assert a.inst.transitions[("FAULT", "BACKUP")] == 1


def test_startup_waits_for_weight_zero_scripts_only() -> None:
    inst = Instance(config(track_script=chk(0) + chk(-10, name="w")), V4("192.0.2.1"))
    assert inst.handle(Startup(), 0.0) == []
    assert inst.handle(ScriptDown("w"), 0.1) == [PriorityChanged(100, 90, "script w down")]
    assert inst.state == State.INIT
    out = inst.handle(ScriptDown("chk"), 0.2)
    assert inst.state == State.FAULT
    assert out == [
        StateChanged(State.INIT, State.FAULT, "script chk down with script chk down"),
        RunNotify("fault", 90),
    ]


def test_init_fail_starts_in_fault() -> None:
    inst = Instance(config(track_script=chk(0, init_fail=True)), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    assert inst.state == State.FAULT
    inst.handle(ScriptUp("chk"), 1.0)
    assert inst.state == State.BACKUP


def test_backup_timer_moves_with_its_skew() -> None:
    inst = Instance(config(priority=100, track_script=chk(-50)), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    due = inst.deadlines["master_down"]
    out = inst.handle(ScriptDown("chk"), 1.0)
    assert ArmTimer("master_down", pytest.approx(due + skew(50) - skew(100))) in out  # type: ignore[arg-type]
    assert inst.master_down_interval == pytest.approx(mdi(50))


def test_positive_weight_lifts_a_backup_over_the_master() -> None:
    net = Net()
    a = net.add("a", "192.0.2.1", priority=120)
    b = net.add("b", "192.0.2.2", priority=100, track_script=chk(30))
    net.start("a")
    net.start("b")
    net.advance(6.0)
    assert net.masters() == ["a"]
    net.do(b, b.inst.handle(ScriptUp("chk"), net.now))
    assert b.inst.priority == 130
    net.advance(5.0)
    assert net.masters() == ["b"] and a.state == State.BACKUP


def test_weighted_link_moves_priority_unweighted_link_faults() -> None:
    inst = Instance(
        config(
            priority=100,
            track_interface=("eth1", "eth2"),
            track_interface_weight=(VrrpTrack("eth2", -20),),
        ),
        V4("192.0.2.1"),
    )
    inst.handle(Startup(), 0.0)
    out = inst.handle(LinkDown("eth2"), 1.0)
    assert inst.state == State.BACKUP and PriorityChanged(100, 80, "link eth2 down") in out
    out = inst.handle(LinkDown("eth1"), 2.0)
    assert inst.state == State.FAULT and RunNotify("fault", 80) in out
    assert inst.handle(LinkUp("eth2"), 3.0) == [PriorityChanged(80, 100, "link eth2 up")]
    out = inst.handle(LinkUp("eth1"), 4.0)
    assert inst.state == State.BACKUP and RunNotify("backup", 100) in out


def test_owner_ignores_weights_and_leaves_fault_as_master() -> None:
    inst = Instance(config(priority=255, track_script=chk(0)), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    inst.handle(ScriptDown("chk"), 0.5)
    assert inst.state == State.FAULT
    out = inst.handle(ScriptUp("chk"), 1.0)
    assert inst.state == State.MASTER and AddVip((VIP,)) in out


def test_notify_carries_the_effective_priority() -> None:
    net = Net()
    a = net.add("a", "192.0.2.1", priority=100, track_script=chk(-40))
    net.start("a")
    net.do(a, a.inst.handle(ScriptDown("chk"), 0.1))
    net.advance(5.0)
    assert RunNotify("master", 60) in a.actions
    net.stop("a")
    assert a.actions[-1] == RunNotify("stop", 60)
