"""The netns VRRP lab of tests/netns/vrrp_lab.py, with "skadv" names and extra hosts.

`AdvLab` keeps the topology of `tests.netns.vrrp_lab.Lab` (routers A and B whose
veths are ports of a bridge owned by the client namespace C) and adds:

- names that all start with "skadv" (namespaces, veths, bridge ports), so these
  tests never collide with other labs running on the same machine;
- `add_host()`: one more namespace on the same segment (the attacker);
- `daemon()`: `sekisho run -c FILE` (the real daemon, not `python -m vrrp`) in a
  namespace, and `scrape()` / `vrrp_metrics()` reading its admin listener
  (`global.metrics`, /metrics) from inside that namespace.

Everything we start is killed by process group id and every namespace is deleted
in `close()` (the Lab's), whatever happened before.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.netns.vrrp_lab import NET, Lab, Proc, Router, sh
from tests.support import require_root, unique_name

ADMIN_PORT = 9100  # every namespace has its own loopback: one port for all daemons
PREFIX = "skadv"


class AdvLab(Lab):
    def __post_init__(self) -> None:
        self.tag = unique_name(PREFIX)  # "skadv" + 6 hex: 11 characters, IFNAMSIZ is 16
        self.a = Router(f"{self.tag}a", f"{self.tag}a", f"{NET}.1")
        self.b = Router(f"{self.tag}b", f"{self.tag}b", f"{NET}.2")
        # Lab.up() names the bridge ports f"{bridge[:-1]}{i}p": tag + "0p", tag + "1p".
        self.c = Router(f"{self.tag}c", f"{self.tag}c", f"{NET}.3")
        self.extra: list[Router] = []

    def add_host(self, suffix: str, address: str) -> Router:
        """One more namespace with a veth on the bridge (after `up()`)."""
        r = Router(f"{self.tag}{suffix}", f"{self.tag}{suffix}", address)
        port = f"{self.tag}{len(self.extra) + 2}p"
        sh("ip", "netns", "add", r.ns)
        self.namespaces.append(r.ns)
        sh("ip", "-n", r.ns, "link", "set", "lo", "up")
        self.plug(r, port)
        sh("ip", "-n", r.ns, "addr", "add", f"{address}/24", "dev", r.ifname)
        sh("ip", "-n", r.ns, "link", "set", r.ifname, "up")
        r.mac = self.mac(r)
        self.extra.append(r)
        return r

    # ---------------------------------------------------------------- processes

    def daemon(self, r: Router, toml: str, name: str) -> Proc:
        """`sekisho run` in r's namespace, its admin listener on 127.0.0.1:ADMIN_PORT there."""
        conf = self.tmp / f"{name}.toml"
        conf.write_text(f'[global]\nmetrics = "127.0.0.1:{ADMIN_PORT}"\naccess_log = ""\n{toml}')
        check = sh(sys.executable, "-m", "proxy.cli", "check", "-c", str(conf), check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        return self.spawn(name, r.ns, [sys.executable, "-m", "proxy.cli", "run", "-c", str(conf)])

    def python(self, r: Router, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", r.ns, sys.executable, *args, timeout=timeout)

    def scrape(self, r: Router, path: str = "/metrics") -> str:
        code = (
            "import sys, urllib.request as u\n"
            "o = u.build_opener(u.ProxyHandler({}))\n"
            f"sys.stdout.write(o.open('http://127.0.0.1:{ADMIN_PORT}{path}', timeout=5).read().decode())\n"
        )
        return self.python(r, "-c", code).stdout

    def vrrp_metrics(self, r: Router) -> VrrpMetrics:
        return VrrpMetrics.parse(self.scrape(r))


@dataclass
class VrrpMetrics:
    """The `sekisho_vrrp_*` samples of one scrape (one instance)."""

    state: str
    master: str
    dropped: dict[str, float]
    transitions: dict[tuple[str, str], float]
    adverts_received: float
    adverts_sent: float

    @classmethod
    def parse(cls, text: str) -> VrrpMetrics:
        state, master = "", ""
        dropped: dict[str, float] = {}
        transitions: dict[tuple[str, str], float] = {}
        received = sent = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "sekisho_vrrp_state" and s.value == 1:
                    state = s.labels["state"]
                elif s.name == "sekisho_vrrp_master_info":
                    master = s.labels["master"]
                elif s.name == "sekisho_vrrp_dropped_packets_total":
                    dropped[s.labels["reason"]] = s.value
                elif s.name == "sekisho_vrrp_transitions_total":
                    transitions[(s.labels["from"], s.labels["to"])] = s.value
                elif s.name == "sekisho_vrrp_adverts_received_total":
                    received = s.value
                elif s.name == "sekisho_vrrp_adverts_sent_total":
                    sent = s.value
        assert state, f"no sekisho_vrrp_state in the scrape:\n{text[:2000]}"
        return cls(state, master, dropped, transitions, received, sent)


@contextmanager
def adv_lab(tmp: Path) -> Iterator[AdvLab]:
    require_root()
    lab = AdvLab(tmp)
    try:
        lab.up()
        yield lab
    finally:
        lab.close()
