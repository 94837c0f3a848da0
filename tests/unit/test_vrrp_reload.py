"""A reload that keeps an instance's identity updates it in place (issue 20), fake clock."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from conf.model import VrrpNotify, VrrpScript, VrrpTrackScript
from vrrp.fsm import (
    AddVip,
    AdvertReceived,
    ArmTimer,
    DelVip,
    Instance,
    PriorityChanged,
    Reconfigured,
    RunNotify,
    ScriptUp,
    SendAdvert,
    SendGarp,
    Startup,
    State,
    StateChanged,
    same_identity,
)
from vrrp.service import VrrpService

from .test_vrrp_fsm import V4, VIP, Net, Node, config, mdi

VIP2 = ipaddress.IPv4Interface("192.0.2.161/24")
VIP3 = ipaddress.IPv4Interface("192.0.2.162/24")


def reload(net: Net, node: Node, **changes: Any) -> list[Any]:
    """Reconfigure `node` with its config plus `changes`; the actions it returned."""
    new = replace(node.inst.config, **changes)
    actions = node.inst.handle(Reconfigured(new), net.now)
    net.do(node, actions)
    return actions


def master_pair(net: Net, master: int = 150, backup: int = 100, **kw: Any) -> tuple[Node, Node]:
    m = net.add("m", "192.0.2.1", priority=master, **kw)
    b = net.add("b", "192.0.2.2", priority=backup, **kw)
    net.start("m")
    net.start("b")
    net.advance(10)
    assert net.masters() == ["m"] and m.vip
    return m, b


def test_priority_change_on_master_keeps_master_and_advertises_the_new_priority() -> None:
    net = Net()
    m, b = master_pair(net)
    sent = len(net.wire)
    actions = reload(net, m, priority=120)
    assert m.state == State.MASTER and m.vip
    assert not any(isinstance(a, (StateChanged, DelVip, AddVip, RunNotify)) for a in actions)
    assert PriorityChanged(150, 120, "reload") in actions
    adverts = [a.advert for a in actions if isinstance(a, SendAdvert)]
    assert [a.priority for a in adverts] == [120]
    assert net.wire[sent:] == [("m", adverts[0])]
    assert ArmTimer("advert", net.now + 1.0) in actions
    net.advance(10)
    assert net.masters() == ["m"] and net.holders() == ["m"]
    assert all(adv.priority == 120 for who, adv in net.wire[sent:] if who == "m")
    assert b.state == State.BACKUP
    assert m.inst.stats()["priority"] == 120 and m.inst.stats()["effective_priority"] == 120


def test_master_reloaded_below_a_preempting_backup_gives_way() -> None:
    """The backup (preempt) ignores the lower adverts, its timer runs out, and the
    master hears the higher priority: one handover, never a priority 0 advert."""
    net = Net()
    m, _ = master_pair(net)
    reload(net, m, priority=50)
    assert m.state == State.MASTER  # it learns of the higher peer from the peer
    net.advance(mdi(100) + 0.1)
    assert net.masters() == ["b"] and net.holders() == ["b"]
    assert m.state == State.BACKUP
    assert not any(adv.priority == 0 for _, adv in net.wire)


def test_master_reloaded_below_a_nopreempt_backup_stays_master() -> None:
    net = Net()
    m, b = master_pair(net, preempt=False)
    reload(net, m, priority=50)
    net.advance(20)
    assert net.masters() == ["m"] and net.holders() == ["m"]
    assert b.state == State.BACKUP


def test_backup_reloaded_above_the_master_preempts_on_the_next_advert() -> None:
    net = Net()
    _m, b = master_pair(net)
    actions = reload(net, b, priority=200)
    assert b.state == State.BACKUP and not any(isinstance(a, SendAdvert) for a in actions)
    assert PriorityChanged(100, 200, "reload") in actions
    net.advance(mdi(200) + 1.1)
    assert net.masters() == ["b"] and net.holders() == ["b"]


def test_backup_reloaded_above_the_master_with_nopreempt_stays_backup() -> None:
    net = Net()
    _m, b = master_pair(net)
    reload(net, b, priority=200, preempt=False)
    net.advance(20)
    assert net.masters() == ["m"]


def test_backup_priority_change_moves_its_master_down_timer_by_the_skew() -> None:
    net = Net()
    _m, b = master_pair(net)
    due = b.inst.deadlines["master_down"]
    reload(net, b, priority=50)
    assert b.inst.deadlines["master_down"] == pytest.approx(due + mdi(50) - mdi(100))


def test_vip_list_change_adds_and_removes_in_place() -> None:
    net = Net()
    m, _ = master_pair(net, virtual_ipaddress=(VIP, VIP2))
    actions = reload(net, m, virtual_ipaddress=(VIP, VIP3))
    assert m.state == State.MASTER
    assert [a for a in actions if isinstance(a, DelVip)] == [DelVip((VIP2,))]
    assert [a for a in actions if isinstance(a, AddVip)] == [AddVip((VIP3,))]
    assert [a for a in actions if isinstance(a, SendGarp)] == [SendGarp((VIP3.ip,))]
    kinds = [type(a) for a in actions]
    assert kinds.index(DelVip) < kinds.index(AddVip) < kinds.index(SendAdvert) < kinds.index(SendGarp)
    (advert,) = [a.advert for a in actions if isinstance(a, SendAdvert)]
    assert advert.addresses == (VIP.ip, VIP3.ip) and advert.priority == 150
    assert not any(isinstance(a, StateChanged) for a in actions)


def test_vip_added_on_a_backup_touches_no_address() -> None:
    net = Net()
    _m, b = master_pair(net)
    actions = reload(net, b, virtual_ipaddress=(VIP, VIP2))
    assert actions == []
    assert b.state == State.BACKUP and not b.vip


def test_reload_without_a_change_does_nothing() -> None:
    net = Net()
    m, _ = master_pair(net)
    assert reload(net, m) == []
    assert reload(net, m, notify=VrrpNotify(master=("/bin/true",))) == []


def test_advert_interval_change_on_master_rearms_the_timer() -> None:
    net = Net()
    m, b = master_pair(net)
    actions = reload(net, m, advert_int=2.0)
    (advert,) = [a.advert for a in actions if isinstance(a, SendAdvert)]
    assert advert.interval == 2.0
    assert m.inst.deadlines["advert"] == pytest.approx(net.now + 2.0)
    assert b.inst.dropped["interval"] == 1  # v2: both sides must agree on the interval
    reload(net, b, advert_int=2.0)
    net.advance(20)
    assert net.masters() == ["m"] and b.inst.dropped["interval"] == 1


def test_weight_change_keeps_the_script_status() -> None:
    script = VrrpScript("chk", ("/bin/true",), interval=1.0)
    net = Net()
    m = net.add("m", "192.0.2.1", priority=100, track_script=(VrrpTrackScript(script, 10),))
    net.start("m")
    net.do(m, m.inst.handle(ScriptUp("chk"), net.now))
    assert m.inst.priority == 110
    actions = reload(net, m, track_script=(VrrpTrackScript(script, 20),))
    assert m.inst.priority == 120
    assert PriorityChanged(110, 120, "reload") in actions


def test_new_weight_zero_script_that_is_down_faults_the_master() -> None:
    script = VrrpScript("chk", ("/bin/false",), interval=1.0)
    net = Net()
    m, _ = master_pair(net, track_script=(VrrpTrackScript(script, 10),))
    # init_fail is False: the script has not reported; no fault until it says down
    actions = reload(net, m, priority=140)
    assert m.state == State.MASTER
    assert PriorityChanged(150, 140, "reload") in actions


def test_backup_becoming_address_owner_takes_over() -> None:
    net = Net()
    m, b = master_pair(net)
    reload(net, b, priority=255)
    assert b.state == State.MASTER
    net.advance(1.1)
    assert net.masters() == ["b"] and m.state == State.BACKUP


def test_not_started_instance_takes_the_config_quietly() -> None:
    inst = Instance(config(), V4("192.0.2.1"))
    assert inst.handle(Reconfigured(config(priority=120)), 0.0) == [PriorityChanged(100, 120, "reload")]
    assert inst.state == State.INIT and inst.priority == 120
    inst.handle(Startup(), 0.0)
    assert inst.deadlines["master_down"] == pytest.approx(mdi(120))


@pytest.mark.parametrize(
    "change",
    [
        {"virtual_router_id": 52},
        {"interface": "eth1"},
        {"version": 3},
        {"virtual_ipaddress": (ipaddress.IPv6Interface("2001:db8::1/64"),)},
    ],
    ids=["vrid", "interface", "version", "family"],
)
def test_identity_change_is_refused_in_place(change: dict[str, Any]) -> None:
    old = config()
    new = replace(old, **change)
    assert not same_identity(old, new)
    assert not VrrpService.updatable(old, new)
    inst = Instance(old, V4("192.0.2.1"))
    with pytest.raises(ValueError):
        inst.handle(Reconfigured(new), 0.0)


def test_what_the_service_opened_at_start_needs_a_restart() -> None:
    old = config()
    script = VrrpScript("chk", ("/bin/true",), interval=1.0)
    assert VrrpService.updatable(old, replace(old, priority=1, advert_int=2.0, virtual_ipaddress=(VIP2,)))
    assert not VrrpService.updatable(old, replace(old, unicast_peer=(V4("192.0.2.9"),)))
    assert not VrrpService.updatable(old, replace(old, track_interface=("eth9",)))
    assert not VrrpService.updatable(old, replace(old, track_script=(VrrpTrackScript(script),)))


def test_vrid_change_is_stop_and_start() -> None:
    """What the daemon does for a changed identity: the old instance sends priority 0 and
    lets go of the VIP, the new one starts from INIT; the peer takes over meanwhile."""
    net = Net()
    m, _ = master_pair(net)
    net.stop("m")
    assert any(adv.priority == 0 and adv.vrid == 51 for who, adv in net.wire if who == "m")
    assert not m.vip
    net.advance(1.0)
    assert net.masters() == ["b"]
    fresh = Node("m2", Instance(replace(m.inst.config, virtual_router_id=52), V4("192.0.2.1")))
    net.nodes["m2"] = fresh
    net.start("m2")
    assert fresh.state == State.BACKUP  # its own virtual router: nobody else speaks VRID 52
    net.advance(mdi(150) + 0.1)
    assert fresh.state == State.MASTER and net.masters() == ["b", "m2"]
    assert AdvertReceived  # (the fake LAN delivers every advert; VRID 51 and 52 ignore each other)
