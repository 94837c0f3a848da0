"""Two sekisho nodes behind a BIRD router doing ECMP, built on vrrp_lab's LAN.

    client (198.51.100.2) -- router C (198.51.100.1 | bridge 192.0.2.3, BIRD AS 65000)
                                 |-- node A 192.0.2.1: sekisho + BIRD AS 65001 + backend
                                 |-- node B 192.0.2.2: sekisho + BIRD AS 65001 + backend

vrrp_lab.Lab gives the LAN (A and B are ports of C's bridge), process groups and teardown;
this adds the client namespace, the routing, BIRD on every router and the node's
second-chance forwarding (docs/anycast.md): a packet from the router for a flow this node
does not know (conntrack: invalid) goes over the LAN to the other node, which may hold it
(the router rehashed it when a node withdrew). The backends live inside the node
namespaces (127.0.0.1:9001 there), so "all servers down" is one node's business.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns.vrrp_lab import ROOT, Lab, Proc, Router, sh, wait_for

VIP = "203.0.113.10"
PORT = 8080
BACKEND_PORT = 9001
BIRD_EXAMPLE = ROOT / "conf" / "examples" / "anycast-bird.conf"
SECOND_CHANCE_MARK = "0x5a"
SECOND_CHANCE_TABLE = "200"

ROUTER_BIRD = """
log stderr all;
router id 192.0.2.3;
protocol device {{ }}
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths on limit 16;            # equal BGP routes from both nodes: one ECMP route
}}
protocol bfd {{
    interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 5; }};
}}
template bgp node {{
    local 192.0.2.3 as 65000;
    bfd on;
    connect delay time 1;
    error wait time 1, 10;              # a node back from a failure is taken back within seconds
    ipv4 {{ import all; export none; }};
}}
protocol bgp node_a from node {{ neighbor {a} as 65001; }}
protocol bgp node_b from node {{ neighbor {b} as 65001; }}
"""


def sekisho_toml(tmp: Path, name: str, hold_down: float = 1.0, device: str = "sk-edge") -> str:
    return f"""
[global]
pidfile = "{tmp / name}.pid"
metrics = "127.0.0.1:9100"
admin_token_file = "{tmp / "admin.token"}"
drain_timeout = 15.0
access_log = ""

[pool.web]
servers = [{{ address = "127.0.0.1:{BACKEND_PORT}" }}]
health = {{ kind = "tcp", interval = 0.2, timeout = 0.5, rise = 1, fall = 1 }}

[[tcp]]
listen = "{VIP}:{PORT}"
pool = "web"

[[anycast]]
name = "edge"
vips = ["{VIP}/32"]
pools = ["web"]
device = "{device}"
hold_down = {hold_down}
withdraw_grace = 1.0
check_interval = 0.05
"""


@dataclass
class Node:
    router: Router
    name: str
    sekisho: Proc | None = None
    backend: Proc | None = None
    bird: Proc | None = None
    conf: Path = field(default_factory=Path)


@dataclass
class AnycastLab(Lab):
    client_ns: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.a = Router(f"any-a-{tag}", f"anya{tag}", "192.0.2.1")
        self.b = Router(f"any-b-{tag}", f"anyb{tag}", "192.0.2.2")
        self.c = Router(f"any-rtr-{tag}", f"anybr{tag}", "192.0.2.3")
        self.client_ns = f"any-cl-{tag}"
        self.tag = tag

    # ----------------------------------------------------------------- topology

    def up(self) -> AnycastLab:
        super().up()
        c, cl, tag = self.c, self.client_ns, self.tag
        sh("ip", "netns", "add", cl)
        self.namespaces.append(cl)
        sh("ip", "-n", cl, "link", "set", "lo", "up")
        sh(
            "ip",
            "link",
            "add",
            f"anyc{tag}",
            "netns",
            cl,
            "type",
            "veth",
            "peer",
            "name",
            f"anyr{tag}",
            "netns",
            c.ns,
        )
        sh("ip", "-n", cl, "addr", "add", "198.51.100.2/24", "dev", f"anyc{tag}")
        sh("ip", "-n", c.ns, "addr", "add", "198.51.100.1/24", "dev", f"anyr{tag}")
        sh("ip", "-n", cl, "link", "set", f"anyc{tag}", "up")
        sh("ip", "-n", c.ns, "link", "set", f"anyr{tag}", "up")
        sh("ip", "-n", cl, "route", "add", "default", "via", "198.51.100.1")
        # The router's layer-4 ECMP hash: sysctls only inside namespaces this test made.
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"):
            sh("ip", "netns", "exec", c.ns, "sysctl", "-qw", key)
        for r, other in ((self.a, self.b), (self.b, self.a)):
            sh("ip", "-n", r.ns, "route", "add", "default", "via", c.address)
            self.second_chance(r, other)
        return self

    def relink(self, r: Router) -> None:
        """The link up again, and the routes through it that going down flushed."""
        other = self.b if r is self.a else self.a
        self.link(r, up=True)
        sh("ip", "-n", r.ns, "route", "replace", "default", "via", self.c.address)
        sh(
            "ip",
            "-n",
            r.ns,
            "route",
            "replace",
            f"{VIP}/32",
            "via",
            other.address,
            "dev",
            r.ifname,
            "table",
            SECOND_CHANCE_TABLE,
        )

    def second_chance(self, r: Router, other: Router) -> None:
        """A flow this node never saw (conntrack invalid: no SYN here) that the router sends
        goes on to the other node over the LAN, destination unchanged (as GLB's second chance
        and Beamer's daisy chaining do). Packets that the other node forwards are not sent back."""
        for key in (
            "net.ipv4.ip_forward=1",
            "net.netfilter.nf_conntrack_tcp_loose=0",  # a mid-flow ACK does not start a flow
            f"net.ipv4.conf.{r.ifname}.send_redirects=0",
            "net.ipv4.conf.all.send_redirects=0",
        ):
            sh("ip", "netns", "exec", r.ns, "sysctl", "-qw", key)
        rules = (
            "table inet anycast {\n"
            # the flows handed on (client address . port), to count what a rehash moved
            "  set moved { type ipv4_addr . inet_service; flags dynamic; size 65536; }\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority -150; policy accept;\n"
            f"    iifname {r.ifname} ether saddr {self.c.mac} ip daddr {VIP} tcp dport {PORT} "
            f"ct state invalid add @moved {{ ip saddr . tcp sport }} meta mark set {SECOND_CHANCE_MARK}\n"
            "  }\n"
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", r.ns, "nft", "-f", "-"], input=rules, text=True, check=True)
        # The VIP is local here: the mark must be looked at before the local table.
        sh(
            "ip",
            "-n",
            r.ns,
            "rule",
            "add",
            "pref",
            "100",
            "fwmark",
            SECOND_CHANCE_MARK,
            "lookup",
            SECOND_CHANCE_TABLE,
        )
        sh("ip", "-n", r.ns, "rule", "add", "pref", "200", "lookup", "local")
        sh("ip", "-n", r.ns, "rule", "del", "pref", "0", "lookup", "local")
        sh(
            "ip",
            "-n",
            r.ns,
            "route",
            "add",
            f"{VIP}/32",
            "via",
            other.address,
            "dev",
            r.ifname,
            "table",
            SECOND_CHANCE_TABLE,
        )

    def moved(self, r: Router) -> int:
        """Flows `r` has handed on to the other node so far (second chance)."""
        out = sh("ip", "netns", "exec", r.ns, "nft", "list", "set", "inet", "anycast", "moved").stdout
        return out.count(" . ")

    # ---------------------------------------------------------------- processes

    def bird(self, r: Router, config: str, name: str) -> Proc:
        path = self.tmp / f"{name}.conf"
        path.write_text(config)
        sock = self.tmp / f"{name}.ctl"
        return self.spawn(
            name, r.ns, ["bird", "-f", "-c", str(path), "-s", str(sock), "-P", str(self.tmp / f"{name}.pid")]
        )

    def node_bird(self, r: Router) -> str:
        """The shipped example, with this node's address (it is written for 192.0.2.1)."""
        text = BIRD_EXAMPLE.read_text()
        assert "router id 192.0.2.1;" in text and "local 192.0.2.1 as 65001;" in text
        return "log stderr all;\n" + text.replace("192.0.2.1", r.address)

    def start_node(self, key: str, *, hold_down: float = 1.0) -> Node:
        r = self.a if key == "a" else self.b
        node = self.nodes.get(key) or Node(r, f"node-{key}")
        self.nodes[key] = node
        if node.bird is None:
            node.bird = self.bird(r, self.node_bird(r), f"bird-{key}")
        if node.backend is None:
            node.backend = self.start_backend(key)
        token = self.tmp / "admin.token"
        if not token.exists():
            token.write_text(f"{uuid.uuid4().hex}\n")
            token.chmod(0o600)
        node.conf = self.tmp / f"sekisho-{key}.toml"
        node.conf.write_text(sekisho_toml(self.tmp, f"sekisho-{key}", hold_down))
        node.sekisho = self.spawn(
            f"sekisho-{key}", r.ns, [sys.executable, "-m", "proxy.cli", "run", "-c", str(node.conf)]
        )
        return node

    def start_backend(self, key: str) -> Proc:
        node = self.nodes[key]
        proc = self.spawn(
            f"backend-{key}",
            node.router.ns,
            [sys.executable, "-m", "tests.netns.anycast_peer", "backend", str(BACKEND_PORT), node.name],
        )
        wait_for(lambda: "ready" in proc.text(), 10, f"backend {key}")
        node.backend = proc
        return proc

    def start(self) -> None:
        self.bird(self.c, ROUTER_BIRD.format(a=self.a.address, b=self.b.address), "bird-router")
        self.start_node("a")
        self.start_node("b")
        self.wait_paths({self.a.address, self.b.address}, 20)

    def reload(self, key: str, **changes: Any) -> None:
        """Write the node's config with `changes` and SIGHUP its sekisho."""
        node = self.nodes[key]
        assert node.sekisho is not None
        node.conf.write_text(sekisho_toml(self.tmp, f"sekisho-{key}", **changes))
        node.sekisho.popen.send_signal(signal.SIGHUP)

    def sekisho_stop(self, key: str) -> subprocess.Popen[str]:
        node = self.nodes[key]
        return subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                node.router.ns,
                sys.executable,
                "-m",
                "proxy.cli",
                "stop",
                "-c",
                str(node.conf),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill_sekisho(self, key: str) -> None:
        node = self.nodes[key]
        assert node.sekisho is not None
        node.sekisho.kill(signal.SIGKILL)
        node.sekisho.popen.wait(5)

    # ------------------------------------------------------------------ routing

    def paths(self) -> set[str]:
        """The next hops the router uses for the VIP now (empty: no route)."""
        out = sh("ip", "-n", self.c.ns, "-4", "route", "show", f"{VIP}/32").stdout
        return {hop for hop in (self.a.address, self.b.address) if f"via {hop} " in out}

    def wait_paths(self, want: set[str], timeout: float) -> float:
        return wait_for(lambda: self.paths() == want, timeout, f"router paths {want}", interval=0.01)

    def metrics(self, key: str) -> str:
        r = self.nodes[key].router
        return sh("ip", "netns", "exec", r.ns, "curl", "-s", "http://127.0.0.1:9100/metrics").stdout

    def status(self, key: str) -> dict[str, object]:
        r = self.nodes[key].router
        out = sh("ip", "netns", "exec", r.ns, "curl", "-s", "http://127.0.0.1:9100/api/status").stdout
        return dict(json.loads(out))

    def admin(self, key: str, path: str) -> dict[str, object]:
        """POST to the node's admin API with the token."""
        r = self.nodes[key].router
        token = (self.tmp / "admin.token").read_text().strip()
        out = sh(
            "ip",
            "netns",
            "exec",
            r.ns,
            "curl",
            "-s",
            "-X",
            "POST",
            "-H",
            f"Authorization: Bearer {token}",
            f"http://127.0.0.1:9100{path}",
        ).stdout
        return dict(json.loads(out))

    # ------------------------------------------------------------------- client

    def client(self, *args: str) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.client_ns,
            sys.executable,
            "-m",
            "tests.netns.anycast_peer",
            *args,
        ]

    def spread(self, n: int) -> dict[str, object]:
        out = subprocess.run(
            self.client("spread", VIP, str(PORT), str(n)),
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def load(self, most: int, seconds: float, stop_file: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.client("load", VIP, str(PORT), str(most), str(seconds), str(stop_file)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def hold(self, k: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.client("hold", VIP, str(PORT), str(k)),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()
