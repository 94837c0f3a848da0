"""A SIGHUP to the sekisho daemon keeps the VIP when the [[vrrp]] identity is unchanged (issue 20).

The daemon (`python -m proxy.cli run`, [[vrrp]] only, both sides `state BACKUP` as in a usual
pair: a restarted instance starts as backup) is master on B, keepalived backup on A;
tcpdump on C's bridge records every advert. A reload that only lowers the master's priority
(still above keepalived's) must not move the VIP, and the adverts go from the old priority to
the new one with no priority 0 between; a reload that changes the VRID stops the old instance
(priority 0 on the old VRID: keepalived takes the VIP) and starts the new one.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.vrrp_lab import Lab, Proc, Router, keepalived_instance, sekisho_instance, wait_for
from tests.support import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]

VIP2 = "192.0.2.161"
ADVERT = re.compile(r"IP (\S+) > \S+: VRRPv2, Advertisement, vrid (\d+), prio (\d+)")


class ReloadLab(Lab):
    """The three-namespace lab with namespaces named sk20r-*."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for r in (self.a, self.b, self.c):
            r.ns = f"sk20r-{r.ns}"


@pytest.fixture
def rlab(tmp_path: Path) -> Iterator[ReloadLab]:
    require_root()
    require_tool("keepalived")
    require_tool("tcpdump")
    lab = ReloadLab(tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.close()


def daemon(lab: Lab, r: Router, toml: str) -> tuple[Proc, Path]:
    conf = lab.tmp / "sekisho.toml"
    conf.write_text("[global]\ndrain_timeout = 1\n\n" + toml)
    return lab.spawn("sekisho", r.ns, [sys.executable, "-m", "proxy.cli", "run", "-c", str(conf)]), conf


def sniff(lab: Lab) -> Proc:
    argv = ["tcpdump", "-n", "-l", "-i", lab.c.ifname, "vrrp"]
    proc = lab.spawn("tcpdump", lab.c.ns, argv)
    wait_for(lambda: "listening on" in proc.text(), 5, "tcpdump")
    return proc


def adverts(dump: Proc, src: str) -> list[tuple[int, int]]:
    """(vrid, priority) of every advert `src` sent, in order."""
    return [(int(v), int(p)) for s, v, p in ADVERT.findall(dump.text()) if s == src]


def reload(proc: Proc, conf: Path, toml: str, reloads: int) -> float:
    conf.write_text("[global]\ndrain_timeout = 1\n\n" + toml)
    sent = time.monotonic()
    proc.kill(signal.SIGHUP)
    wait_for(lambda: proc.text().count("reloaded:") >= reloads, 5, "the reload")
    return sent


def master_with_keepalived_backup(lab: ReloadLab) -> tuple[Proc, Path, Proc, Proc]:
    dump = sniff(lab)
    sk, conf = daemon(lab, lab.b, sekisho_instance(lab.b, priority=150))
    lab.wait_vip(lab.b, 10)
    ka = lab.keepalived(lab.a, keepalived_instance(lab.a, priority=100))
    wait_for(lambda: "Entering BACKUP STATE" in ka.text(), 10, "keepalived backup")
    wait_for(lambda: len(adverts(dump, lab.b.address)) >= 3, 5, "sekisho's adverts")
    assert not lab.has_vip(lab.a)
    return sk, conf, ka, dump


def test_priority_reload_keeps_the_vip_on_the_sekisho_master(rlab: ReloadLab) -> None:
    lab = rlab
    sk, conf, ka, dump = master_with_keepalived_backup(lab)
    before = len(adverts(dump, lab.b.address))

    reload(sk, conf, sekisho_instance(lab.b, priority=120), 1)
    end = time.monotonic() + 3 * 1.0 + 1.0 + 1.5  # past keepalived's Master_Down_Interval
    while time.monotonic() < end:
        assert lab.has_vip(lab.b), "VIP left sekisho during the reload"
        assert not lab.has_vip(lab.a), "VIP appeared on keepalived during the reload"
        time.sleep(0.05)
    assert lab.who_answers() == [lab.b.mac]
    sent = adverts(dump, lab.b.address)
    after = sent[before:]
    print(f"\nsekisho adverts (vrid, prio) before the reload {sent[before - 2 : before]}, after {after}")
    assert after and after[-1] == (51, 120)
    assert all(p in (150, 120) for _, p in after), after  # no priority 0: no handover
    assert after.index((51, 120)) <= 1  # the new priority at once, not a second later
    assert "Entering MASTER STATE" not in ka.text(), ka.text()[-2000:]
    log = sk.text()
    assert "reloaded in place" in log and "MASTER -> " not in log, log[-3000:]

    # lowered below keepalived's: keepalived preempts as the RFC says, no priority 0 from us
    reload(sk, conf, sekisho_instance(lab.b, priority=50), 2)
    took = lab.wait_vip(lab.a, 3 * 1.0 + 1.0 + 2.0)
    lab.wait_vip(lab.b, 2, present=False)
    print(f"priority 150 -> 50 below keepalived's 100: keepalived preempted {took:.3f}s after the reload")
    assert all(p != 0 for _, p in adverts(dump, lab.b.address))
    wait_for(lambda: "MASTER -> BACKUP" in sk.text(), 3, "sekisho backup")


def test_vrid_reload_stops_the_old_instance_and_starts_the_new_one(rlab: ReloadLab) -> None:
    lab = rlab
    sk, conf, ka, dump = master_with_keepalived_backup(lab)
    new = sekisho_instance(lab.b, priority=150, vrid=52, vip=VIP2)
    sent = reload(sk, conf, new, 1)
    took = lab.wait_vip(lab.a, 3)
    print(f"\nVRID 51 -> 52: keepalived took VRID 51's VIP {time.monotonic() - sent:.3f}s after SIGHUP")
    assert took < 2.5
    assert not lab.has_vip(lab.b)
    lab.wait_vip(lab.b, 5, vip=VIP2)  # the new instance, on its own virtual router
    wait_for(lambda: (52, 150) in adverts(dump, lab.b.address), 3, "adverts on VRID 52")
    sent_adverts = adverts(dump, lab.b.address)
    assert (51, 0) in sent_adverts, sent_adverts
    assert sent_adverts.index((51, 0)) < sent_adverts.index((52, 150))
    assert "Entering MASTER STATE" in ka.text()
    assert lab.who_answers() == [lab.a.mac]
    assert lab.who_answers(vip=VIP2) == [lab.b.mac]
