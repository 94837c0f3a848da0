"""Failover figures for the VRRP speaker (root): `python -m tests.netns.measure_vrrp_failover [RUNS]`.

Case 1: keepalived master (advert_int 1) dies (SIGKILL + link down); time until
sekisho's MAC answers ARP for the VIP from the client namespace.
Case 5: two sekisho (VRRPv3, advert_int 0.1); the master dies likewise.
Case 2: sekisho master, keepalived preempts; the longest time both held the VIP
(sampled every 50 ms).
Prints every run and the medians; keeps one lab per case and tears it down.
"""

from __future__ import annotations

import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.netns.vrrp_lab import Lab, keepalived_instance, sekisho_instance, wait_for


def case1(lab: Lab, runs: int) -> list[float]:
    sk = lab.sekisho(lab.b, sekisho_instance(lab.b, priority=100))
    ka_conf = keepalived_instance(lab.a, priority=150)
    out = []
    for i in range(runs):
        lab.del_vip(lab.a)
        lab.link(lab.a, up=True)
        ka = lab.keepalived(lab.a, ka_conf, name=f"ka{i}")
        lab.wait_vip(lab.a, 15)
        lab.wait_vip(lab.b, 5, present=False)
        wait_for(lambda: sk.read_stats()["state"] == "BACKUP", 5, "sekisho backup")
        probe = lab.arp_probe(wait_mac=lab.b.mac, timeout=8)
        killed = time.monotonic()
        ka.kill(signal.SIGKILL)
        lab.link(lab.a, up=False)
        answer = lab.probe_result(probe)
        took = answer["at"] - killed
        print(f"case 1 run {i + 1}: {took:.3f}s", flush=True)
        out.append(took)
        ka.popen.wait(5)
    return out


def case5(lab: Lab, runs: int) -> list[float]:
    b = lab.sekisho(lab.b, sekisho_instance(lab.b, priority=100, version=3, advert_int=0.1, auth_pass=None))
    a_conf = sekisho_instance(
        lab.a, priority=150, version=3, advert_int=0.1, auth_pass=None, initial_state="MASTER"
    )
    out = []
    for i in range(runs):
        lab.del_vip(lab.a)
        lab.link(lab.a, up=True)
        a = lab.sekisho(lab.a, a_conf, name=f"sk-a{i}")
        lab.wait_vip(lab.a, 5)
        wait_for(lambda: b.read_stats()["state"] == "BACKUP", 5, "b backup")
        time.sleep(0.5)
        probe = lab.arp_probe(wait_mac=lab.b.mac, timeout=3)
        killed = time.monotonic()
        a.kill(signal.SIGKILL)
        lab.link(lab.a, up=False)
        answer = lab.probe_result(probe)
        took = answer["at"] - killed
        print(f"case 5 run {i + 1}: {took:.3f}s", flush=True)
        out.append(took)
        a.popen.wait(5)
    return out


def case2(lab: Lab, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        sk = lab.sekisho(lab.b, sekisho_instance(lab.b, priority=100, initial_state="MASTER"), name=f"sk{i}")
        lab.wait_vip(lab.b, 5)
        ka = lab.keepalived(lab.a, keepalived_instance(lab.a, priority=150), name=f"ka{i}")
        longest, begun, settled = 0.0, None, 0
        start = time.monotonic()
        while settled < 10 and time.monotonic() - start < 15:
            t = time.monotonic()
            on_a, on_b = lab.has_vip(lab.a), lab.has_vip(lab.b)
            if on_a and on_b:
                begun = t if begun is None else begun
            elif begun is not None:
                longest, begun = max(longest, t - begun), None
            settled = settled + 1 if on_a and not on_b else 0
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t)))
        print(f"case 2 run {i + 1}: longest overlap {longest:.3f}s", flush=True)
        out.append(longest)
        ka.stop()
        sk.stop()
        lab.del_vip(lab.a)
        lab.del_vip(lab.b)
    return out


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    results = {}
    for name, fn, n in (
        ("case 1", case1, runs),
        ("case 5", case5, runs),
        ("case 2", case2, max(1, runs // 3)),
    ):
        with tempfile.TemporaryDirectory(prefix="vrrp-measure-") as tmp:
            lab = Lab(Path(tmp))
            try:
                lab.up()
                results[name] = fn(lab, n)
            finally:
                lab.close()
    for name, values in results.items():
        print(
            f"{name}: median {statistics.median(values):.3f}s min {min(values):.3f}s "
            f"max {max(values):.3f}s over {len(values)} runs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
