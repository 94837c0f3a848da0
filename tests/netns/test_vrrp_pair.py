"""Two sekisho VRRP speakers (VRRPv3, 100 ms adverts) in network namespaces."""

from __future__ import annotations

import signal
import time

import pytest

from tests.netns.vrrp_lab import Lab, sekisho_instance, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

ADVERT = 0.1
BUDGET = 0.5


def test_v3_fast_failover_between_two_sekisho(lab: Lab) -> None:
    """Case 5: the master dies; the VIP answers ARP from the other side within 0.5 s."""
    a_conf = sekisho_instance(
        lab.a, priority=150, version=3, advert_int=ADVERT, auth_pass=None, initial_state="MASTER"
    )
    b_conf = sekisho_instance(lab.b, priority=100, version=3, advert_int=ADVERT, auth_pass=None)
    a = lab.sekisho(lab.a, a_conf, name="sk-a")
    b = lab.sekisho(lab.b, b_conf, name="sk-b")
    lab.wait_vip(lab.a, 5)
    wait_for(
        lambda: b.read_stats()["state"] == "BACKUP" and b.read_stats()["adverts_received"] >= 5,
        5,
        "b backup hearing a",
    )
    stats = b.read_stats()
    assert stats["master_address"] == lab.a.address
    assert stats["master_adver_interval"] == ADVERT

    probe = lab.arp_probe(wait_mac=lab.b.mac, timeout=3)
    killed = time.monotonic()
    a.kill(signal.SIGKILL)
    lab.link(lab.a, up=False)
    answer = lab.probe_result(probe)
    assert answer["mac"] == lab.b.mac, answer
    answered = answer["at"] - killed
    bound = 3 * ADVERT + (256 - 100) * ADVERT / 256
    print(f"\ncase 5: ARP for the VIP answered by b {answered:.3f}s after kill (MDI {bound:.3f}s)")
    assert answered <= BUDGET
    assert lab.who_answers() == [lab.b.mac]
    assert b.read_stats()["state"] == "MASTER"


def test_sigterm_releases_vip_and_sends_priority_zero(lab: Lab) -> None:
    """SIGTERM: priority 0 first, the VIP released, and the backup takes over after skew time."""
    a = lab.sekisho(lab.a, sekisho_instance(lab.a, priority=200, initial_state="MASTER"), name="sk-a")
    b = lab.sekisho(lab.b, sekisho_instance(lab.b, priority=100), name="sk-b")
    lab.wait_vip(lab.a, 5)
    wait_for(lambda: b.read_stats()["adverts_received"] >= 1, 5, "b hearing a")
    stopped = time.monotonic()
    assert a.stop() == 0
    assert not lab.has_vip(lab.a)
    lab.wait_vip(lab.b, 3)
    took = time.monotonic() - stopped
    skew = (256 - 100) / 256
    print(f"\nsigterm: b master {took:.3f}s after a's SIGTERM (skew {skew:.3f}s)")
    assert took < 3 * 1.0  # well before the master-down interval
    stats = a.read_stats()
    assert stats["state"] == "INIT"
    assert ("MASTER", "INIT") in {(t["from"], t["to"]) for t in stats["transitions"]}


def test_stale_vip_from_a_crashed_run_is_removed(lab: Lab) -> None:
    """A VIP left on the interface by a killed run is found and removed when starting as backup."""
    lab.sekisho(lab.a, sekisho_instance(lab.a, priority=200, initial_state="MASTER"), name="sk-a")
    lab.wait_vip(lab.a, 5)
    from subprocess import run

    run(["ip", "-n", lab.b.ns, "addr", "add", "192.0.2.160/24", "dev", lab.b.ifname], check=True)
    b = lab.sekisho(lab.b, sekisho_instance(lab.b, priority=100), name="sk-b")
    lab.wait_vip(lab.b, 5, present=False)
    wait_for(lambda: b.read_stats()["stale_vips_removed"] == 1, 3, "stale VIP counted")
    assert b.read_stats()["state"] == "BACKUP"


def test_track_interface_down_goes_fault(lab: Lab) -> None:
    """The VRRP interface losing carrier: FAULT, VIP released; carrier back: BACKUP/MASTER again."""
    a = lab.sekisho(lab.a, sekisho_instance(lab.a, priority=200, initial_state="MASTER"), name="sk-a")
    b = lab.sekisho(lab.b, sekisho_instance(lab.b, priority=100), name="sk-b")
    lab.wait_vip(lab.a, 5)
    wait_for(lambda: b.read_stats()["adverts_received"] >= 1, 5, "b hearing a")
    port = f"{lab.c.ifname[:-1]}0p"
    from subprocess import run

    run(["ip", "-n", lab.c.ns, "link", "set", port, "down"], check=True)  # a loses carrier
    wait_for(lambda: a.read_stats()["state"] == "FAULT", 3, "a in FAULT")
    lab.wait_vip(lab.a, 2, present=False)
    lab.wait_vip(lab.b, 5)
    run(["ip", "-n", lab.c.ns, "link", "set", port, "up"], check=True)
    wait_for(lambda: a.read_stats()["state"] == "MASTER", 8, "a back (preempting, priority 200)")
    lab.wait_vip(lab.b, 5, present=False)


def test_sekisho_run_with_only_vrrp_sections(lab: Lab) -> None:
    """`sekisho run -c FILE` as the keepalived replacement: master alone, VIP released on SIGTERM."""
    import sys

    toml = sekisho_instance(lab.a, priority=100, version=3, advert_int=0.5, auth_pass=None)
    conf = lab.tmp / "daemon.toml"
    conf.write_text(toml)
    daemon = lab.spawn("daemon", lab.a.ns, [sys.executable, "-m", "proxy.cli", "run", "-c", str(conf)])
    lab.wait_vip(lab.a, 5)  # 3 x 0.5 + skew, alone on the LAN
    assert lab.who_answers() == [lab.a.mac]
    assert daemon.stop() == 0, daemon.text()[-2000:]
    assert not lab.has_vip(lab.a), daemon.text()[-2000:]
