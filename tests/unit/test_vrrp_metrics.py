"""proxy.process.metrics.vrrp: families from VrrpService.stats() snapshots."""

from __future__ import annotations

import ipaddress
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from conf.model import VrrpInstance
from proxy.process.metrics import vrrp as vrrp_metrics
from vrrp import packet
from vrrp.fsm import PacketReceived, Startup, TimerFired
from vrrp.service import VrrpService


class _Source(Collector):
    def __init__(self, services: list[Any]) -> None:
        self.services = services

    def collect(self) -> Any:
        yield from vrrp_metrics.families(self.services)


def render(services: list[Any]) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Source(services))
    return generate_latest(reg).decode()


def service() -> VrrpService:
    cfg = VrrpInstance(
        name="VI",
        interface="eth0",
        virtual_router_id=51,
        priority=101,
        virtual_ipaddress=(ipaddress.IPv4Interface("192.0.2.160/24"),),
    )
    svc = VrrpService(cfg)
    svc.instance.primary = ipaddress.IPv4Address("192.0.2.1")
    return svc


def test_families_from_a_live_instance() -> None:
    svc = service()
    inst = svc.instance
    inst.handle(Startup(), 0.0)
    inst.handle(TimerFired("master_down"), 10.0)
    bad = bytearray(packet.encode(inst.advert()))
    bad[6] ^= 1
    inst.handle(PacketReceived(bytes(bad), ipaddress.IPv4Address("192.0.2.2"), packet.VRRP_GROUP_V4), 10.5)
    inst.handle(PacketReceived(b"", ipaddress.IPv4Address("192.0.2.2"), packet.VRRP_GROUP_V4, 1), 10.6)
    svc.adverts_sent = 7
    svc.last_transition = 1700000000.0
    text = render([svc])
    assert 'sekisho_vrrp_state{instance="VI",state="MASTER"} 1.0' in text
    assert 'sekisho_vrrp_state{instance="VI",state="BACKUP"} 0.0' in text
    assert 'sekisho_vrrp_transitions_total{from="INIT",instance="VI",to="BACKUP"} 1.0' in text
    assert 'sekisho_vrrp_transitions_total{from="BACKUP",instance="VI",to="MASTER"} 1.0' in text
    assert 'sekisho_vrrp_adverts_sent_total{instance="VI"} 7.0' in text
    assert 'sekisho_vrrp_adverts_received_total{instance="VI"} 0.0' in text
    assert 'sekisho_vrrp_dropped_packets_total{instance="VI",reason="checksum"} 1.0' in text
    assert 'sekisho_vrrp_dropped_packets_total{instance="VI",reason="ttl"} 1.0' in text
    assert 'sekisho_vrrp_master_info{instance="VI",master="192.0.2.1"} 1.0' in text
    assert 'sekisho_vrrp_last_transition_timestamp_seconds{instance="VI"} 1.7e+09' in text
    assert 'sekisho_vrrp_instance_info{instance="VI",interface="eth0",version="2",vrid="51"} 1.0' in text


def test_families_accept_transition_mapping_and_unknown_master() -> None:
    class Fake:
        def stats(self) -> dict[str, Any]:
            return {
                "name": "X",
                "state": "BACKUP",
                "transitions": {("INIT", "BACKUP"): 2},
                "master_address": None,
                "dropped": {},
            }

    text = render([Fake()])
    assert 'sekisho_vrrp_transitions_total{from="INIT",instance="X",to="BACKUP"} 2.0' in text
    assert 'sekisho_vrrp_master_info{instance="X",master=""} 1.0' in text
    assert "sekisho_vrrp_last_transition_timestamp_seconds{" not in text


def test_families_type() -> None:
    assert all(isinstance(m, Metric) for m in vrrp_metrics.families([service()]))
