"""The VRRP state machine with a fake clock: instances feed each other's adverts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from conf.model import VrrpInstance
from vrrp import fsm, packet
from vrrp.fsm import (
    Action,
    AddVip,
    AdvertReceived,
    ArmTimer,
    DelVip,
    Instance,
    LinkDown,
    LinkUp,
    RunNotify,
    SendAdvert,
    SendGarp,
    Shutdown,
    Startup,
    State,
    StateChanged,
    TimerFired,
)

V4 = ipaddress.IPv4Address
VIP = ipaddress.IPv4Interface("192.0.2.160/24")
GROUP = packet.VRRP_GROUP_V4


def config(priority: int = 100, **kw: Any) -> VrrpInstance:
    base: dict[str, Any] = {
        "name": "VI",
        "interface": "eth0",
        "virtual_router_id": 51,
        "priority": priority,
        "virtual_ipaddress": (VIP,),
        "garp_master_delay": 5.0,
    }
    base.update(kw)
    return VrrpInstance(**base)


def skew(priority: int, interval: float = 1.0, version: int = 2) -> float:
    return (256 - priority) / 256 * (interval if version == 3 else 1.0)


def mdi(priority: int, interval: float = 1.0, version: int = 2) -> float:
    return 3 * interval + skew(priority, interval, version)


@dataclass
class Node:
    name: str
    inst: Instance
    alive: bool = False
    vip: bool = False
    actions: list[Action] = field(default_factory=list)
    changes: list[tuple[float, State, State]] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.inst.state


class Net:
    """A zero-latency LAN of instances with one fake clock."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.now = 0.0
        self.wire: list[tuple[str, packet.Advert]] = []

    def add(self, name: str, address: str, **kw: Any) -> Node:
        node = Node(name, Instance(config(**kw), V4(address)))
        self.nodes[name] = node
        return node

    def do(self, node: Node, actions: list[Action]) -> None:
        queue = [(node, actions)]
        while queue:
            sender, acts = queue.pop(0)
            for a in acts:
                sender.actions.append(a)
                if isinstance(a, AddVip):
                    sender.vip = True
                elif isinstance(a, DelVip):
                    sender.vip = False
                elif isinstance(a, StateChanged):
                    sender.changes.append((self.now, a.old, a.new))
                elif isinstance(a, SendAdvert):
                    self.wire.append((sender.name, a.advert))
                    for other in self.nodes.values():
                        if other is not sender and other.alive:
                            ev = AdvertReceived(a.advert, sender.inst.primary)
                            queue.append((other, other.inst.handle(ev, self.now)))

    def start(self, name: str) -> None:
        node = self.nodes[name]
        node.alive = True
        self.do(node, node.inst.handle(Startup(), self.now))

    def stop(self, name: str) -> None:
        node = self.nodes[name]
        self.do(node, node.inst.handle(Shutdown(), self.now))
        node.alive = False

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.alive = False
        node.vip = False  # the machine is gone, and its address with it

    def restart(self, name: str, address: str | None = None) -> None:
        old = self.nodes[name]
        node = Node(name, Instance(old.inst.config, V4(address) if address else old.inst.primary))
        self.nodes[name] = node
        self.start(name)

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while True:
            due = [
                (t, n.name, timer)
                for n in self.nodes.values()
                if n.alive
                for timer, t in n.inst.deadlines.items()
                if t <= until
            ]
            if not due:
                break
            t, name, timer = min(due)
            self.now = max(self.now, t)
            node = self.nodes[name]
            self.do(node, node.inst.handle(TimerFired(timer), self.now))
        self.now = until

    def masters(self) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.alive and n.state == State.MASTER)

    def holders(self) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.vip)


def became_master_at(node: Node) -> float:
    return [t for t, _, new in node.changes if new == State.MASTER][-1]


# ----------------------------------------------------------------- startup


def test_startup_alone_becomes_master_after_master_down_interval() -> None:
    net = Net()
    a = net.add("a", "192.0.2.1", priority=100)
    net.start("a")
    assert a.state == State.BACKUP
    assert a.inst.deadlines["master_down"] == pytest.approx(mdi(100))
    assert RunNotify("backup", 100) in a.actions
    net.advance(mdi(100) - 0.01)
    assert a.state == State.BACKUP and not a.vip
    net.advance(0.02)
    assert a.state == State.MASTER and a.vip
    assert became_master_at(a) == pytest.approx(3 + 156 / 256)
    kinds = [type(x) for x in a.actions]
    assert kinds.index(AddVip) < kinds.index(SendAdvert) < kinds.index(SendGarp)
    assert RunNotify("master", 100) in a.actions


def test_master_advertises_every_interval_and_repeats_garp() -> None:
    net = Net()
    a = net.add("a", "192.0.2.1", priority=100, advert_int=2.0, garp_master_delay=5.0)
    net.start("a")
    net.advance(mdi(100, 2.0))
    t0 = net.now
    sent = len(net.wire)
    net.advance(10.0)
    assert len(net.wire) - sent == 5
    garps = [x for x in a.actions if isinstance(x, SendGarp)]
    assert len(garps) == 2  # on takeover, and once more garp_master_delay later
    assert a.inst.deadlines["advert"] == pytest.approx(t0 + 10, abs=2.0)


def test_address_owner_and_initial_master_start_as_master() -> None:
    net = Net()
    owner = net.add("o", "192.0.2.1", priority=255)
    net.start("o")
    assert owner.state == State.MASTER and owner.vip
    net2 = Net()
    m = net2.add("m", "192.0.2.1", priority=100, initial_state="MASTER")
    net2.start("m")
    assert m.state == State.MASTER


def test_startup_twice_is_a_no_op() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    assert inst.handle(Startup(), 0.0)
    assert inst.handle(Startup(), 0.1) == []


# ------------------------------------------------------------------ election


def test_higher_priority_wins_and_lower_stays_backup() -> None:
    net = Net()
    net.add("hi", "192.0.2.1", priority=150)
    lo = net.add("lo", "192.0.2.2", priority=100)
    net.start("hi")
    net.start("lo")
    net.advance(30)
    assert net.masters() == ["hi"] and net.holders() == ["hi"]
    assert lo.state == State.BACKUP
    assert lo.inst.master_address == V4("192.0.2.1")
    assert lo.inst.adverts_received >= 25


def test_master_crash_backup_takes_over_within_master_down_interval() -> None:
    net = Net()
    net.add("hi", "192.0.2.1", priority=150)
    lo = net.add("lo", "192.0.2.2", priority=100)
    net.start("hi")
    net.start("lo")
    net.advance(10)
    net.crash("hi")
    crash = net.now
    net.advance(10)
    assert net.masters() == ["lo"] and lo.vip
    took = became_master_at(lo) - crash
    assert 0 < took <= mdi(100) + 1e-9


def test_priority_zero_on_shutdown_backup_takes_over_after_skew() -> None:
    net = Net()
    hi = net.add("hi", "192.0.2.1", priority=150)
    lo = net.add("lo", "192.0.2.2", priority=100)
    net.start("hi")
    net.start("lo")
    net.advance(10.3)
    net.stop("hi")
    t = net.now
    release = [a for a in hi.actions if isinstance(a, SendAdvert)][-1]
    assert release.advert.priority == 0
    assert hi.state == State.INIT and not hi.vip
    assert hi.actions[-1] == RunNotify("stop", 150)
    assert lo.inst.deadlines["master_down"] == pytest.approx(t + skew(100))
    net.advance(1)
    assert became_master_at(lo) == pytest.approx(t + skew(100))


def test_master_answers_priority_zero_with_an_advert() -> None:
    inst = Instance(config(priority=255), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    release = replace(inst.advert(0))
    out = inst.handle(AdvertReceived(release, V4("192.0.2.9")), 0.5)
    assert [type(a) for a in out] == [SendAdvert, ArmTimer]
    assert inst.state == State.MASTER


def test_shutdown_of_a_backup_sends_nothing() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    out = inst.handle(Shutdown(), 1.0)
    assert not [a for a in out if isinstance(a, (SendAdvert, DelVip))]
    assert inst.state == State.INIT
    assert inst.handle(Shutdown(), 2.0) == []


# ------------------------------------------------------------------- preempt


def test_preempt_higher_priority_backup_takes_over() -> None:
    net = Net()
    lo = net.add("lo", "192.0.2.2", priority=100)
    hi = net.add("hi", "192.0.2.1", priority=150)
    net.start("lo")
    net.advance(10)
    assert net.masters() == ["lo"]
    net.start("hi")
    start = net.now
    net.advance(10)
    assert net.masters() == ["hi"] and net.holders() == ["hi"]
    assert lo.state == State.BACKUP
    assert became_master_at(hi) == pytest.approx(start + mdi(150))  # lower adverts never reset its timer
    assert [c[1:] for c in lo.changes][-1] == (State.MASTER, State.BACKUP)


def test_nopreempt_master_stays_master_when_higher_priority_returns() -> None:
    """CONTEXT.md section 3: both BACKUP, nopreempt, 101/100, advert_int 1."""
    net = Net()
    a = net.add("a", "192.0.2.1", priority=101, preempt=False)
    b = net.add("b", "192.0.2.2", priority=100, preempt=False)
    net.start("a")
    net.start("b")
    net.advance(10)
    assert net.masters() == ["a"]
    net.crash("a")
    net.advance(5)
    assert net.masters() == ["b"] and net.holders() == ["b"]
    net.restart("a")
    net.advance(30)
    assert net.masters() == ["b"] and net.holders() == ["b"]
    assert net.nodes["a"].state == State.BACKUP
    # and the other way round: b restarts, a (now master) keeps it
    net.crash("b")
    net.advance(5)
    assert net.masters() == ["a"]
    net.restart("b")
    net.advance(30)
    assert net.masters() == ["a"]
    assert b.inst is not net.nodes["b"].inst  # restarted instance
    assert a.inst is not net.nodes["a"].inst


def test_nopreempt_backup_resets_timer_on_lower_priority_adverts() -> None:
    inst = Instance(config(priority=200, preempt=False), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    lower = Instance(config(priority=50), V4("192.0.2.2")).advert()
    for t in range(1, 20):
        out = inst.handle(AdvertReceived(lower, V4("192.0.2.2")), float(t))
        assert out == [ArmTimer("master_down", t + mdi(200))]
    assert inst.state == State.BACKUP


def test_preempt_delay_holds_off_takeover() -> None:
    net = Net()
    net.add("lo", "192.0.2.2", priority=100)
    hi = net.add("hi", "192.0.2.1", priority=150, preempt_delay=10.0)
    net.start("lo")
    net.advance(5)
    net.start("hi")
    start = net.now
    net.advance(9.9)
    assert net.masters() == ["lo"]
    net.advance(10)
    assert net.masters() == ["hi"]
    took = became_master_at(hi) - start
    assert 10.0 <= took <= 10.0 + mdi(150) + 1e-9


def test_preempt_delay_restarts_after_a_higher_master() -> None:
    inst = Instance(config(priority=150, preempt_delay=5.0), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    higher = Instance(config(priority=200), V4("192.0.2.3")).advert()
    lower = Instance(config(priority=100), V4("192.0.2.2")).advert()
    inst.handle(AdvertReceived(higher, V4("192.0.2.3")), 1.0)
    assert inst.preempt_deadline is None
    assert inst.handle(AdvertReceived(lower, V4("192.0.2.2")), 2.0)  # hold: timer reset
    assert inst.preempt_deadline == 7.0
    assert inst.handle(AdvertReceived(lower, V4("192.0.2.2")), 6.9)
    assert inst.handle(AdvertReceived(lower, V4("192.0.2.2")), 7.1) == []  # delay over: let it run out


# ---------------------------------------------------------- equal priorities


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_equal_priorities_higher_primary_address_wins(order: tuple[str, str]) -> None:
    net = Net()
    net.add("a", "192.0.2.1", priority=100, initial_state="MASTER")
    net.add("b", "192.0.2.20", priority=100, initial_state="MASTER")
    for name in order:
        net.start(name)
    net.advance(10)
    assert net.masters() == ["b"] and net.holders() == ["b"]


def test_equal_priority_master_ignores_lower_address() -> None:
    inst = Instance(config(priority=255), V4("192.0.2.5"))
    inst.handle(Startup(), 0.0)
    same = inst.advert()
    assert inst.handle(AdvertReceived(same, V4("192.0.2.4")), 0.5) == []
    assert inst.state == State.MASTER
    out = inst.handle(AdvertReceived(same, V4("192.0.2.6")), 0.6)
    assert inst.state == State.BACKUP
    assert DelVip((VIP,)) in out


def test_equal_priority_backup_does_not_preempt() -> None:
    net = Net()
    net.add("a", "192.0.2.1", priority=100)
    net.start("a")
    net.advance(10)
    b = net.add("b", "192.0.2.200", priority=100)
    net.start("b")
    net.advance(20)
    assert net.masters() == ["a"] and b.state == State.BACKUP


# ------------------------------------------------------------ v3 intervals


def test_v3_backup_adopts_master_interval() -> None:
    net = Net()
    net.add("m", "192.0.2.1", priority=200, version=3, advert_int=0.5)
    b = net.add("b", "192.0.2.2", priority=100, version=3, advert_int=2.0)
    net.start("m")
    net.start("b")
    net.advance(5)
    assert net.masters() == ["m"]
    assert b.inst.master_adver_interval == 0.5
    assert b.inst.master_down_interval == pytest.approx(1.5 + 156 * 0.5 / 256)
    net.crash("m")
    crash = net.now
    net.advance(5)
    took = became_master_at(b) - crash
    assert took <= mdi(100, 0.5, 3) + 1e-9
    # once master it advertises its own interval again
    assert b.inst.master_adver_interval == 2.0
    assert net.wire[-1][1].interval == 2.0


def test_v3_fast_failover_100ms() -> None:
    net = Net()
    net.add("a", "192.0.2.1", priority=150, version=3, advert_int=0.1)
    b = net.add("b", "192.0.2.2", priority=100, version=3, advert_int=0.1)
    net.start("a")
    net.start("b")
    net.advance(2)
    net.crash("a")
    crash = net.now
    net.advance(1)
    assert became_master_at(b) - crash <= 0.3 + 156 * 0.1 / 256 + 1e-9


def test_v3_master_becoming_backup_adopts_new_interval() -> None:
    inst = Instance(config(priority=100, version=3, advert_int=1.0), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    inst.handle(TimerFired("master_down"), mdi(100))
    assert inst.state == State.MASTER
    higher = Instance(config(priority=200, version=3, advert_int=0.25), V4("192.0.2.2")).advert()
    inst.handle(AdvertReceived(higher, V4("192.0.2.2")), 5.0)
    assert inst.state == State.BACKUP
    assert inst.master_adver_interval == 0.25
    assert inst.deadlines["master_down"] == pytest.approx(
        5.0 + 0.75 + 156 * 0.25 / 256
    )  # our own priority's skew


# -------------------------------------------------------------- fault / links


def test_link_down_master_releases_and_goes_fault() -> None:
    inst = Instance(config(priority=255, track_interface=("eth1",)), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    out = inst.handle(LinkDown("eth1"), 1.0)
    assert inst.state == State.FAULT
    sent = [a for a in out if isinstance(a, SendAdvert)]
    assert sent and sent[0].advert.priority == 0
    assert DelVip((VIP,)) in out and RunNotify("fault", 255) in out
    assert inst.deadlines == {}
    # adverts are ignored while in fault
    lower = Instance(config(priority=10), V4("192.0.2.2")).advert()
    assert inst.handle(AdvertReceived(lower, V4("192.0.2.2")), 1.5) == []
    assert inst.handle(LinkDown("eth0"), 1.6) == []
    assert inst.handle(LinkUp("eth1"), 2.0) == []  # eth0 still down
    out = inst.handle(LinkUp("eth0"), 3.0)
    assert inst.state == State.MASTER  # the owner comes straight back


def test_link_down_backup_goes_fault_and_back_to_backup() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    out = inst.handle(LinkDown("eth0"), 1.0)
    assert inst.state == State.FAULT and not [a for a in out if isinstance(a, SendAdvert)]
    assert inst.handle(TimerFired("master_down"), 10.0) == []
    inst.handle(LinkUp("eth0"), 20.0)
    assert inst.state == State.BACKUP
    assert inst.deadlines["master_down"] == pytest.approx(20.0 + mdi(100))
    assert inst.transitions[("FAULT", "BACKUP")] == 1


def test_link_down_before_startup_starts_in_fault() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    assert inst.handle(LinkDown("eth0"), 0.0) == []
    inst.handle(Startup(), 0.0)
    assert inst.state == State.FAULT


def test_stale_timer_is_ignored() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    inst.handle(Startup(), 0.0)
    higher = Instance(config(priority=200), V4("192.0.2.2")).advert()
    inst.handle(AdvertReceived(higher, V4("192.0.2.2")), 3.0)
    assert inst.handle(TimerFired("master_down"), mdi(100)) == []  # was re-armed to 3 + mdi
    assert inst.handle(TimerFired("advert"), 100.0) == []  # never armed
    assert inst.state == State.BACKUP


def test_transitions_and_stats() -> None:
    net = Net()
    a = net.add("a", "192.0.2.1", priority=100)
    net.start("a")
    net.advance(5)
    s = a.inst.stats()
    assert s["state"] == "MASTER"
    assert s["transitions"] == [
        {"from": "BACKUP", "to": "MASTER", "count": 1},
        {"from": "INIT", "to": "BACKUP", "count": 1},
    ]
    assert a.inst.last_transition == pytest.approx(mdi(100))


def test_handle_rejects_unknown_events() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    with pytest.raises(TypeError):
        inst.handle(object(), 0.0)  # type: ignore[arg-type]


def test_timer_slack_constant_is_small() -> None:
    assert fsm.TIMER_SLACK <= 0.005
