"""Every receive check: the packet is dropped, counted by reason, and changes nothing."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from conf.model import VrrpInstance
from vrrp import packet
from vrrp.fsm import Instance, PacketReceived, Startup, State, TimerFired
from vrrp.packet import Advert

V4 = ipaddress.IPv4Address
ME = V4("192.0.2.1")
PEER = V4("192.0.2.2")
GROUP = packet.VRRP_GROUP_V4
VIP = ipaddress.IPv4Interface("192.0.2.160/24")


def config(**kw: Any) -> VrrpInstance:
    base: dict[str, Any] = {
        "name": "VI",
        "interface": "eth0",
        "virtual_router_id": 51,
        "priority": 100,
        "virtual_ipaddress": (VIP,),
        "auth_pass": "p@ssw0rd",
    }
    base.update(kw)
    return VrrpInstance(**base)


def peer_advert(cfg: VrrpInstance, **kw: Any) -> Advert:
    a = Instance(cfg, PEER).advert(priority=kw.pop("priority", 200))
    return Advert(**{**a.__dict__, **kw})


def running(state: State, **kw: Any) -> Instance:
    inst = Instance(config(**kw), ME, sibling_vrids={51, 60})
    inst.handle(Startup(), 0.0)
    if state == State.MASTER:
        inst.handle(TimerFired("master_down"), 10.0)
    assert inst.state == state
    return inst


def snapshot(inst: Instance) -> tuple[Any, ...]:
    return (
        inst.state,
        dict(inst.deadlines),
        inst.master_address,
        inst.master_adver_interval,
        inst.adverts_received,
    )


def assert_dropped(inst: Instance, event: PacketReceived, reason: str) -> None:
    before = snapshot(inst)
    dropped = copy.copy(inst.dropped)
    assert inst.handle(event, 11.0) == []
    assert snapshot(inst) == before
    dropped[reason] += 1
    assert inst.dropped == dropped


def wire(advert: Advert, src: ipaddress.IPv4Address = PEER, dst: ipaddress.IPv4Address = GROUP) -> bytes:
    return packet.encode(advert, src, dst)


STATES = [State.BACKUP, State.MASTER]


@pytest.mark.parametrize("state", STATES)
def test_valid_higher_priority_advert_is_accepted(state: State) -> None:
    inst = running(state)
    data = wire(peer_advert(inst.config))
    inst.handle(PacketReceived(data, PEER, GROUP, 255), 11.0)
    assert inst.adverts_received == 1 and not inst.dropped
    assert inst.state == State.BACKUP
    assert inst.master_address == PEER


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("ttl", [0, 1, 64, 254])
def test_ttl_not_255(state: State, ttl: int) -> None:
    inst = running(state)
    assert_dropped(inst, PacketReceived(wire(peer_advert(inst.config)), PEER, GROUP, ttl), "ttl")


def test_ttl_not_checked_in_unicast_mode_like_keepalived() -> None:
    inst = running(State.BACKUP, unicast_peer=(PEER,), unicast_src_ip=ME)
    inst.handle(PacketReceived(wire(peer_advert(inst.config), dst=ME), PEER, ME, 63), 11.0)
    assert inst.adverts_received == 1


@pytest.mark.parametrize("state", STATES)
def test_wrong_version(state: State) -> None:
    inst = running(state)
    v3 = Advert(version=3, vrid=51, priority=200, addresses=(VIP.ip,), interval=1.0)
    assert_dropped(inst, PacketReceived(wire(v3), PEER, GROUP), "version")
    data = bytearray(wire(peer_advert(inst.config)))
    data[0] = 0x41
    assert_dropped(inst, PacketReceived(bytes(data), PEER, GROUP), "version")


@pytest.mark.parametrize("state", STATES)
def test_wrong_type(state: State) -> None:
    inst = running(state)
    data = wire(Advert(**{**peer_advert(inst.config).__dict__, "type": 2}))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "type")


@pytest.mark.parametrize("state", STATES)
def test_bad_checksum(state: State) -> None:
    inst = running(state)
    data = bytearray(wire(peer_advert(inst.config)))
    data[6] ^= 0x55
    assert_dropped(inst, PacketReceived(bytes(data), PEER, GROUP), "checksum")


def test_bad_v3_checksum_wrong_pseudo_header() -> None:
    inst = running(State.BACKUP, version=3, auth_pass=None)
    data = wire(peer_advert(inst.config), src=V4("192.0.2.77"))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "checksum")


@pytest.mark.parametrize("state", STATES)
def test_length_short_or_inconsistent(state: State) -> None:
    inst = running(state)
    good = wire(peer_advert(inst.config))
    assert_dropped(inst, PacketReceived(good[:5], PEER, GROUP), "length")
    assert_dropped(inst, PacketReceived(good[:-2], PEER, GROUP), "length")
    assert_dropped(inst, PacketReceived(good + b"\0\0\0\0", PEER, GROUP), "length")
    data = bytearray(good)
    data[3] = 3
    assert_dropped(inst, PacketReceived(bytes(data), PEER, GROUP), "length")


@pytest.mark.parametrize("state", STATES)
def test_vrid_not_configured(state: State) -> None:
    inst = running(state)
    data = wire(peer_advert(inst.config, vrid=52))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "vrid")


def test_vrid_of_a_sibling_instance_is_ignored_not_counted() -> None:
    inst = running(State.BACKUP)
    before = snapshot(inst)
    assert inst.handle(PacketReceived(wire(peer_advert(inst.config, vrid=60)), PEER, GROUP), 11.0) == []
    assert snapshot(inst) == before and not inst.dropped


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize(
    "auth",
    [
        {"auth_data": packet.password_bytes("wrong")},
        {"auth_type": packet.AUTH_NONE, "auth_data": b""},
        {"auth_type": 2},
    ],
)
def test_auth_mismatch(state: State, auth: dict[str, Any]) -> None:
    inst = running(state)
    data = wire(peer_advert(inst.config, **auth))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "auth")


def test_auth_present_when_none_configured() -> None:
    inst = running(State.BACKUP, auth_pass=None)
    data = wire(peer_advert(config(), priority=200))  # carries p@ssw0rd
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "auth")


@pytest.mark.parametrize("state", STATES)
def test_v2_interval_mismatch(state: State) -> None:
    inst = running(state)
    data = wire(peer_advert(inst.config, interval=2.0))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "interval")


def test_v3_zero_interval() -> None:
    inst = running(State.BACKUP, version=3, auth_pass=None)
    data = wire(peer_advert(inst.config, interval=0.0))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "interval")


def test_v3_other_interval_is_not_a_mismatch() -> None:
    inst = running(State.BACKUP, version=3, auth_pass=None)
    inst.handle(PacketReceived(wire(peer_advert(inst.config, interval=0.3)), PEER, GROUP), 11.0)
    assert inst.master_adver_interval == 0.3 and not inst.dropped


@pytest.mark.parametrize("state", STATES)
def test_our_own_packets(state: State) -> None:
    inst = running(state)
    data = wire(inst.advert(), src=ME)
    assert_dropped(inst, PacketReceived(data, ME, GROUP), "own")


def test_zero_addresses() -> None:
    inst = running(State.BACKUP)
    data = bytearray(wire(peer_advert(inst.config)))
    data[3] = 0
    assert_dropped(inst, PacketReceived(bytes(data[:8] + data[12:]), PEER, GROUP), "addresses")


def test_unicast_accepts_old_keepalived_checksum() -> None:
    inst = running(State.BACKUP, version=3, auth_pass=None, unicast_peer=(PEER,), unicast_src_ip=ME)
    old = wire(peer_advert(inst.config), dst=GROUP)  # keepalived < 1.3.8 unicast checksum
    inst.handle(PacketReceived(old, PEER, ME), 11.0)
    assert inst.adverts_received == 1 and not inst.dropped


def test_packets_in_fault_or_init_do_not_change_state() -> None:
    inst = Instance(config(), ME)
    data = wire(peer_advert(inst.config))
    assert inst.handle(PacketReceived(data, PEER, GROUP), 0.0) == []
    assert inst.state == State.INIT


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize(
    "addresses",
    [
        (VIP.ip, V4("192.0.2.161")),  # one more address than ours
        (V4("192.0.2.161"),),  # the right count, another address
        (VIP.ip, VIP.ip),  # ours twice: the count is wrong
    ],
)
@pytest.mark.parametrize("priority", [200, 255])
def test_address_list_mismatch_is_dropped_even_from_an_owner(
    state: State, addresses: tuple[ipaddress.IPv4Address, ...], priority: int
) -> None:
    """Regression (issue 7): a higher-priority or priority-255 advert listing other
    addresses than our VIPs used to be obeyed; now dropped as 'addresses' like keepalived."""
    inst = running(state)
    data = wire(peer_advert(inst.config, priority=priority, addresses=addresses))
    assert_dropped(inst, PacketReceived(data, PEER, GROUP), "addresses")


def test_address_list_in_another_order_is_accepted() -> None:
    two = (VIP, ipaddress.IPv4Interface("192.0.2.161/24"))
    inst = running(State.MASTER, virtual_ipaddress=two)
    data = wire(peer_advert(inst.config, addresses=(two[1].ip, two[0].ip)))
    inst.handle(PacketReceived(data, PEER, GROUP), 11.0)
    assert not inst.dropped and inst.state == State.BACKUP
