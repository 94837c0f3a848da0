"""The VRRP master's machine dies (kill -9 + link down) under TCP traffic to the VIP.

Scenario, crash model and bound: tests/adversarial/vrrp_failover.py. Two
`sekisho run` daemons (VRRPv2, advert_int 1 s, A priority 150 MASTER, B 100)
each serve [[tcp]] VIP:8080 in front of their own echo backend; a client opens a
fresh connection every 20 ms, one request/response each. Asserted:

- before the crash every request succeeds, answered through A;
- the first request opened after the crash succeeds within the bound:
  B's Master_Down_Interval 3 x 1 s + (256 - 100)/256 s = 3.609 s, plus
  garp_master_delay 1 s (the second gratuitous ARP), plus 0.5 s client margin
  = 5.109 s;
- from that request on, every request succeeds, answered through B;
- B ends MASTER with the VIP, and only B's MAC answers ARP for it.

Median over several runs: `python -m tests.adversarial.vrrp_failover 5`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.vrrp_adv_lab import AdvLab, adv_lab
from tests.adversarial.vrrp_failover import bound, scenario

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[AdvLab]:
    with adv_lab(tmp_path) as lab:
        yield lab


def test_master_killed_during_traffic_backup_serves_the_vip(lab: AdvLab) -> None:
    limit = bound(1.0, 2)
    assert limit == pytest.approx(3 + 156 / 256 + 1.0 + 0.5)
    run = scenario(lab, advert_int=1.0, version=2)
    print(f"\nVRRPv2 master killed -9 + link down under traffic: {run.summary()}")

    assert len(run.before) >= 10, run.attempts[:5]
    bad = [x for x in run.before if not x.ok or x.by != "a"]
    assert not bad, f"before the crash: {bad[:5]}\n{run.evidence}"
    assert run.gap <= limit, f"gap {run.gap:.3f}s > {limit:.3f}s: {run.during[-5:]}\n{run.evidence}"
    assert len(run.recovered) >= 20, f"{run.summary()}\n{run.evidence}"
    bad = [x for x in run.recovered if not x.ok or x.by != "b"]
    assert not bad, f"after failover: {bad[:5]}\n{run.evidence}"

    m = lab.vrrp_metrics(lab.b)
    assert m.state == "MASTER", m
    assert m.transitions.get(("BACKUP", "MASTER")) == 1, m.transitions
    assert lab.has_vip(lab.b)
    assert lab.who_answers() == [lab.b.mac]
