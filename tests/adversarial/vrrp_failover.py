"""The VRRP master's machine dies under traffic to the VIP: one scenario, measured.

    python -m tests.adversarial.vrrp_failover [RUNS] [--advert-int S] [--version 2|3]

prints every run's gap and the median (min-max) against the bound; each run
builds and tears down its own "skadv" lab and crashes A at a random phase of its
advert interval (the gap is Master_Down_Interval minus the time since A's last
advert, plus the ARP update and the client's retry).
tests/adversarial/test_vrrp_failover_traffic.py runs the scenario once and asserts on it.

Lab: routers A and B each run `sekisho run` with one [[vrrp]] instance (VIP
192.0.2.160, A priority 150 MASTER, B priority 100) and a [[tcp]] service on
VIP:8080 (bound with IP_FREEBIND, so B listens before it holds the VIP) in front
of a line-echo backend on 127.0.0.1:7001 in its own namespace, which answers with
its router's name. The client namespace C (the bridge) opens a fresh TCP
connection to VIP:8080 every 20 ms for a bounded time, whatever the earlier ones
still wait for, one request/response each (250 ms connect timeout, 2 s response
timeout).

The crash: SIGKILL to A's daemon and, at the same moment, A's link down. A bare
SIGKILL is not what a dead machine looks like: the VIP stays on A's interface
(nobody deletes it) and A's kernel keeps answering ARP for it and resetting
connections to VIP:8080, so the client would fail forever, against a box that a
real crash (power, kernel panic) would have taken off the wire entirely. The link
going down with the process is that crash. The client's ARP cache still points at
A's MAC; only B's gratuitous ARP (at takeover and again garp_master_delay later)
moves it, so the measured gap includes the ARP update as a real client sees it.

Gap: from the kill to the end of the first successful request whose connection
was opened after the kill. Bound: B's Master_Down_Interval (3 x advert_int +
skew) + garp_master_delay (the second GARP, if the neighbour entry refused the
first one within its 1 s locktime) + 0.5 s for the client (a connection opened
every 20 ms, a SYN that went to A's MAC just before the ARP update given up after
250 ms) and scheduling on a shared machine.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.adversarial.vrrp_adv_lab import AdvLab, adv_lab
from tests.adversarial.vrrp_traffic import Attempt
from tests.netns.vrrp_lab import VIP, Proc, Router, sekisho_instance, sh, wait_for

PORT = 8080
BACKEND = 7001
PRE = 1.5  # seconds of traffic through A before the crash
POST = 3.0  # seconds of traffic after the bound
GARP_MASTER_DELAY = 1.0
CLIENT_RETRY = 0.5


def bound(advert_int: float, version: int, priority: int = 100) -> float:
    skew = (256 - priority) / 256 if version == 2 else (256 - priority) * advert_int / 256
    return 3 * advert_int + skew + GARP_MASTER_DELAY + CLIENT_RETRY


def config(r: Router, priority: int, advert_int: float, version: int) -> str:
    vrrp = sekisho_instance(
        r,
        priority=priority,
        version=version,
        advert_int=advert_int,
        auth_pass="secret" if version == 2 else None,
        initial_state="MASTER" if priority > 100 else "BACKUP",
        garp_master_delay=GARP_MASTER_DELAY,
    )
    return (
        f'[pool.local]\nscheduler = "rr"\nservers = [{{ address = "127.0.0.1:{BACKEND}" }}]\n'
        f'[[tcp]]\nlisten = "{VIP}:{PORT}"\npool = "local"\n'
        f"timeouts = {{ connect = 1.0, idle = 10.0 }}\n{vrrp}"
    )


@dataclass
class Run:
    bound: float
    killed: float
    attempts: list[Attempt] = field(default_factory=list)
    evidence: str = ""  # the client's neighbour table and the daemons' logs, for a failure message

    @property
    def first(self) -> Attempt | None:
        """The first success among the connections opened after the kill (by opening time)."""
        return min(
            (x for x in self.attempts if x.start >= self.killed and x.ok), key=lambda x: x.start, default=None
        )

    @property
    def gap(self) -> float:
        """From the kill to the end of `first`."""
        return float("inf") if self.first is None else self.first.end - self.killed

    @property
    def before(self) -> list[Attempt]:
        """Opened and answered before the kill."""
        return [x for x in self.attempts if x.end < self.killed]

    @property
    def recovered(self) -> list[Attempt]:
        """Every connection opened from `first` on."""
        first = self.first
        return [] if first is None else [x for x in self.attempts if x.start >= first.start]

    @property
    def during(self) -> list[Attempt]:
        """The rest: in flight at the kill, or opened between the kill and `first`."""
        rest = {id(x) for x in self.before + self.recovered}
        return [x for x in self.attempts if id(x) not in rest]

    def summary(self) -> str:
        failed = sum(not x.ok for x in self.during)
        ok_a = sum(x.ok and x.by == "a" for x in self.before)
        return (
            f"gap {self.gap:.3f}s (bound {self.bound:.3f}s): {ok_a}/{len(self.before)} ok through A before, "
            f"{failed}/{len(self.during)} failed during, {len(self.recovered)} after "
            f"({sum(x.ok for x in self.recovered)} ok, by {sorted({x.by for x in self.recovered})})"
        )


def _ready(proc: Proc, timeout: float = 10.0) -> None:
    wait_for(lambda: "ready" in proc.text(), timeout, f"{proc.name} ready")


def scenario(lab: AdvLab, advert_int: float = 1.0, version: int = 2, pre: float = PRE) -> Run:
    limit = bound(advert_int, version)
    for r, name in ((lab.a, "a"), (lab.b, "b")):
        _ready(lab.spawn(f"backend-{name}", r.ns, _py("serve", str(BACKEND), name)))
    a = lab.daemon(lab.a, config(lab.a, 150, advert_int, version), "sk-a")
    b = lab.daemon(lab.b, config(lab.b, 100, advert_int, version), "sk-b")

    def settled() -> bool:
        for p in (a, b):
            assert p.popen.poll() is None, f"{p.name} exited:\n{p.text()[-3000:]}"
        if not lab.has_vip(lab.a) or lab.has_vip(lab.b):
            return False
        try:
            m = lab.vrrp_metrics(lab.b)
        except Exception:  # the admin listener is not up yet
            return False
        return m.state == "BACKUP" and m.master == lab.a.address

    try:
        wait_for(settled, 20, "VIP on A only, B backup hearing A", interval=0.1)
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.name}:\n{p.text()[-2500:]}" for p in (a, b))
        raise AssertionError(f"{exc}\n{logs}") from None
    duration = pre + limit + POST
    client = lab.spawn("client", lab.c.ns, _py("client", VIP, str(PORT), "--duration", str(duration)))
    _ready(client)
    time.sleep(pre)
    killed = time.monotonic()
    a.kill(signal.SIGKILL)  # the daemon's process group: `ip netns exec` exec'd into it
    lab.link(lab.a, up=False)  # ... and the machine with it (see the module docstring)
    client.popen.wait(duration + 15)
    attempts = [Attempt.parse(line) for line in client.text().splitlines() if line.startswith("{")]
    neigh = sh("ip", "-n", lab.c.ns, "neigh", "show", "dev", lab.c.ifname, check=False).stdout
    evidence = f"client neighbours:\n{neigh}\n" + "\n".join(
        f"--- {p.name} (killed {killed:.3f}):\n{p.text()[-2500:]}" for p in (a, b)
    )
    return Run(limit, killed, attempts, evidence)


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.adversarial.vrrp_traffic", *args]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.adversarial.vrrp_failover", description=__doc__)
    p.add_argument("runs", type=int, nargs="?", default=5)
    p.add_argument("--advert-int", type=float, default=1.0)
    p.add_argument("--version", type=int, choices=(2, 3), default=2)
    a = p.parse_args(argv)
    gaps = []
    for i in range(a.runs):
        # The gap depends on when the crash falls between two of A's adverts: spread it.
        pre = PRE + random.uniform(0.0, a.advert_int)
        with tempfile.TemporaryDirectory(prefix="skadv-failover-") as tmp, adv_lab(Path(tmp)) as lab:
            run = scenario(lab, a.advert_int, a.version, pre)
        print(f"run {i + 1}: {run.summary()}", flush=True)
        if run.gap > run.bound or not all(x.ok for x in run.before + run.recovered):
            print(run.evidence, flush=True)
        gaps.append(run.gap)
    print(
        f"VRRPv{a.version} advert_int {a.advert_int}s, master killed -9 + link down under TCP traffic "
        f"to the VIP: gap median {statistics.median(gaps):.3f}s, min {min(gaps):.3f}s, "
        f"max {max(gaps):.3f}s over {len(gaps)} runs (bound {bound(a.advert_int, a.version):.3f}s)"
    )
    return 0 if all(g <= bound(a.advert_int, a.version) for g in gaps) else 1


if __name__ == "__main__":
    sys.exit(main())
