"""A third host on the VRRP segment forges adverts; the pair must not move.

Lab (tests/adversarial/vrrp_adv_lab.py, names "skadv..."): routers A and B run
`sekisho run` with one VRRPv2 instance (vrid 51, PASS auth, advert_int 1 s, VIP
192.0.2.160): A priority 150 MASTER, B priority 100 BACKUP. C owns the bridge;
X, the attacker, is one more port on it and injects forged adverts to
224.0.0.18 from a raw socket (tests/adversarial/vrrp_forge.py). Every forged kind
claims priority 254 or 255 (above both speakers) and breaks exactly one receive
check, so on each speaker the drop counter of its reason, read from the daemon's
own /metrics (`sekisho_vrrp_dropped_packets_total{reason}`), must grow by exactly
the number sent, every other reason must stay put, and:

- no state change: no new `sekisho_vrrp_transitions_total`, A MASTER, B BACKUP
  believing A is the master, held past one Master_Down_Interval after the last
  forged packet (a wrongly accepted advert would have shown by then);
- A's `adverts_received` stays 0: nobody legitimate speaks but A, so any advert A
  accepted would be a forged one;
- the VIP is on A only, and only A's MAC answers ARP for it.

What this cannot reject: a priority-255 advert with the right password, the
right VRID, interval and address list, from any host on the segment. VRRPv2's
PASS auth is a cleartext password and VRRPv3 has none; RFC 5798 section 9 leaves
on-link attackers out of scope. `owner-*` kinds therefore forge "owners" whose
address list does not match ours (RFC 5798 7.1 MAY verify it; keepalived drops
it as addr_list_err; sekisho did not, fixed in vrrp/fsm.py with
tests/unit/test_vrrp_receive.py::test_address_list_mismatch_is_dropped_even_from_an_owner).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.vrrp_adv_lab import AdvLab, VrrpMetrics, adv_lab
from tests.adversarial.vrrp_forge import KINDS
from tests.netns.vrrp_lab import VIP, Proc, sekisho_instance, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

PER_KIND = 20
ATTACKER = "192.0.2.66"
MASTER_DOWN = 3 * 1.0 + (256 - 100) / 256  # B's Master_Down_Interval, v2 advert_int 1 s


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[AdvLab]:
    with adv_lab(tmp_path) as lab:
        yield lab


def dropped_delta(now: VrrpMetrics, before: VrrpMetrics) -> Counter[str]:
    out: Counter[str] = Counter()
    for reason, n in now.dropped.items():
        if n != before.dropped.get(reason, 0.0):
            out[reason] = int(n - before.dropped.get(reason, 0.0))
    return out


def test_forged_adverts_are_dropped_and_counted_and_move_nothing(lab: AdvLab) -> None:
    x = lab.add_host("x", ATTACKER)
    daemons: dict[str, Proc] = {
        "a": lab.daemon(lab.a, sekisho_instance(lab.a, priority=150, initial_state="MASTER"), "sk-a"),
        "b": lab.daemon(lab.b, sekisho_instance(lab.b, priority=100), "sk-b"),
    }
    routers = {"a": lab.a, "b": lab.b}

    def scrape(name: str) -> VrrpMetrics:
        proc = daemons[name]
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.text()[-3000:]}"
        return lab.vrrp_metrics(routers[name])

    lab.wait_vip(lab.a, 10)

    def settled() -> bool:
        for proc in daemons.values():
            assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.text()[-3000:]}"
        try:
            a, b = scrape("a"), scrape("b")
        except Exception:  # the admin listener is not up yet
            return False
        return (
            a.state == "MASTER"
            and b.state == "BACKUP"
            and b.master == lab.a.address
            and b.adverts_received >= 2
        )

    wait_for(settled, 15, "A master, B backup hearing A")
    before = {n: scrape(n) for n in daemons}
    assert before["a"].adverts_received == 0
    assert not before["a"].dropped and not before["b"].dropped, (before["a"].dropped, before["b"].dropped)

    expected: Counter[str] = Counter()
    rows: list[tuple[str, int, str, int, int]] = []
    got: dict[str, Counter[str]] = {}

    def counted() -> bool:
        for n in daemons:
            got[n] = dropped_delta(scrape(n), before[n])
        return all(got[n] == expected for n in daemons)

    for kind, spec in KINDS.items():
        out = lab.python(
            x,
            "-m",
            "tests.adversarial.vrrp_forge",
            x.ifname,
            ATTACKER,
            kind,
            str(PER_KIND),
        )
        assert int(out.stdout.strip()) == PER_KIND, out.stderr
        expected[spec.reason] += PER_KIND
        try:
            wait_for(counted, 5, f"{kind}: drops counted on both speakers", interval=0.1)
        except AssertionError:
            raise AssertionError(f"{kind} ({spec.what}): expected {dict(expected)}, got {got}") from None
        time.sleep(0.1)  # nothing late: the counters stay exactly at what was sent
        assert counted(), f"{kind}: counted more than sent: {got}"
        rows.append((kind, PER_KIND, spec.reason, got["a"][spec.reason], got["b"][spec.reason]))
        assert lab.has_vip(lab.a) and not lab.has_vip(lab.b), f"VIP moved after {kind}"

    # Hold past a Master_Down_Interval after the last forged packet.
    end = time.monotonic() + MASTER_DOWN + 0.5
    while time.monotonic() < end:
        assert lab.has_vip(lab.a), "VIP left A"
        assert not lab.has_vip(lab.b), "VIP appeared on B"
        time.sleep(0.1)
    after = {n: scrape(n) for n in daemons}
    for n in daemons:
        assert after[n].transitions == before[n].transitions, (n, before[n].transitions, after[n].transitions)
        assert dropped_delta(after[n], before[n]) == expected
    assert after["a"].state == "MASTER" and after["b"].state == "BACKUP"
    assert after["b"].master == lab.a.address
    assert after["a"].adverts_received == 0, "A accepted a forged advert"
    assert lab.who_answers(VIP) == [lab.a.mac]

    print(f"\nforged VRRPv2 adverts from {ATTACKER}, {PER_KIND} of each kind (totals cumulative per reason):")
    print(f"  {'kind':<14} {'sent':>4}  {'reason':<9} {'A total':>7} {'B total':>7}  what")
    for kind, sent, reason, da, db in rows:
        print(f"  {kind:<14} {sent:>4}  {reason:<9} {da:>7} {db:>7}  {KINDS[kind].what}")
    print(f"  no transition on either speaker; A MASTER, B BACKUP, VIP on A only; drops {dict(expected)}")
