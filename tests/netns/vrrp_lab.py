"""A three-namespace LAN for VRRP tests: two routers (A, B) and a client (C).

C owns a bridge; A's and B's veth peers are ports of it. Every name is unique
(tests.support.unique_name), every address is a documentation address inside
our own namespaces, and `close()` kills what we started (by process group)
and deletes the namespaces, whatever happened before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import unique_name

ROOT = Path(__file__).resolve().parents[2]
KEEPALIVED = "/usr/sbin/keepalived"
NET = "192.0.2"
VIP = f"{NET}.160"


def sh(*cmd: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stats: Path | None = None

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session: the leader's pid is the group id

    def kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        self.kill(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            return self.popen.wait(timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def read_stats(self) -> dict[str, Any]:
        assert self.stats is not None
        for _ in range(50):
            try:
                data = json.loads(self.stats.read_text())
                return dict(data[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        raise AssertionError(f"no stats from {self.name}:\n{self.text()}")


@dataclass
class Router:
    ns: str
    ifname: str
    address: str
    mac: str = ""


@dataclass
class Lab:
    tmp: Path
    a: Router = field(init=False)
    b: Router = field(init=False)
    c: Router = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = unique_name("")
        self.a = Router(f"vra{tag}", f"vra{tag}", f"{NET}.1")
        self.b = Router(f"vrb{tag}", f"vrb{tag}", f"{NET}.2")
        self.c = Router(f"vrc{tag}", f"vrbr{tag}", f"{NET}.3")

    # ----------------------------------------------------------------- topology

    def plug(self, r: Router, port: str) -> None:
        """A veth from `r`'s namespace to a port of the bridge in c's namespace."""
        c = self.c
        sh("ip", "link", "add", r.ifname, "netns", r.ns, "type", "veth", "peer", "name", port, "netns", c.ns)
        sh("ip", "-n", c.ns, "link", "set", port, "master", c.ifname)
        sh("ip", "-n", c.ns, "link", "set", port, "up")

    def up(self) -> Lab:
        c = self.c
        for ns in (self.a.ns, self.b.ns, c.ns):
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(
            "ip",
            "-n",
            c.ns,
            "link",
            "add",
            c.ifname,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        for i, r in enumerate((self.a, self.b)):
            self.plug(r, f"{c.ifname[:-1]}{i}p")
        for r in (self.a, self.b, c):
            sh("ip", "-n", r.ns, "addr", "add", f"{r.address}/24", "dev", r.ifname)
            sh("ip", "-n", r.ns, "link", "set", r.ifname, "up")
            r.mac = self.mac(r)
        return self

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop(signal.SIGKILL, timeout=5.0)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def mac(self, r: Router) -> str:
        out = sh("ip", "-n", r.ns, "-o", "link", "show", "dev", r.ifname).stdout
        return out.split("link/ether ")[1].split()[0]

    def link(self, r: Router, up: bool) -> None:
        sh("ip", "-n", r.ns, "link", "set", r.ifname, "up" if up else "down")

    def has_vip(self, r: Router, vip: str = VIP) -> bool:
        out = sh("ip", "-n", r.ns, "-4", "-o", "addr", "show", "dev", r.ifname).stdout
        return f" {vip}/" in out

    def del_vip(self, r: Router, vip: str = VIP) -> None:
        sh("ip", "-n", r.ns, "addr", "del", f"{vip}/24", "dev", r.ifname, check=False)

    def wait_vip(self, r: Router, timeout: float, vip: str = VIP, present: bool = True) -> float:
        """Seconds until the VIP is (or is not) on r, polling every 20 ms."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.has_vip(r, vip) == present:
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"VIP {vip} {'never appeared on' if present else 'stayed on'} {r.ns}")

    # ---------------------------------------------------------------- processes

    def spawn(self, name: str, ns: str, argv: list[str], stats: Path | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log, stats)
        self.procs.append(proc)
        return proc

    def keepalived(self, r: Router, body: str, name: str = "keepalived") -> Proc:
        conf = self.tmp / f"{name}.conf"
        conf.write_text(f"global_defs {{\n  router_id {name}\n}}\n{body}\n")
        pids = [str(self.tmp / f"{name}.{k}.pid") for k in ("main", "vrrp", "check")]
        argv = [KEEPALIVED, "-n", "-l", "-D", "-f", str(conf), "-p", pids[0], "-r", pids[1], "-c", pids[2]]
        return self.spawn(name, r.ns, argv)

    def sekisho(self, r: Router, toml: str, name: str = "sekisho") -> Proc:
        conf = self.tmp / f"{name}.toml"
        conf.write_text(toml)
        stats = self.tmp / f"{name}.json"
        argv = [sys.executable, "-m", "vrrp", "-c", str(conf), "--stats", str(stats), "--log-level", "debug"]
        return self.spawn(name, r.ns, argv, stats)

    def arp_probe(
        self, wait_mac: str | None = None, timeout: float = 5.0, vip: str = VIP
    ) -> subprocess.Popen[str]:
        argv = [
            "ip",
            "netns",
            "exec",
            self.c.ns,
            sys.executable,
            "-m",
            "tests.netns.arp_probe",
            self.c.ifname,
            vip,
        ]
        if wait_mac:
            argv += ["--wait-mac", wait_mac, "--timeout", str(timeout)]
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert popen.stdout is not None
        ready = popen.stdout.readline()  # the probe is listening once it says so
        assert "ready" in ready, popen.stderr.read() if popen.stderr else ready
        return popen

    @staticmethod
    def probe_result(probe: subprocess.Popen[str], timeout: float = 10.0) -> dict[str, Any]:
        out, err = probe.communicate(timeout=timeout)  # closes the pipes
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines, err
        return dict(json.loads(lines[-1]))

    def who_answers(self, vip: str = VIP) -> list[str]:
        result = self.probe_result(self.arp_probe(vip=vip))
        return sorted({mac for mac, _ in result["replies"]})


def keepalived_instance(
    r: Router,
    *,
    priority: int,
    vrid: int = 51,
    state: str = "BACKUP",
    nopreempt: bool = False,
    auth_pass: str | None = "secret",
    advert_int: int = 1,
    vip: str = VIP,
    name: str = "VI",
    version: int = 2,
    unicast_peer: str | None = None,
) -> str:
    auth = f"  authentication {{\n    auth_type PASS\n    auth_pass {auth_pass}\n  }}\n" if auth_pass else ""
    extra = f"  version {version}\n"
    if nopreempt:
        extra += "  nopreempt\n"
    if unicast_peer:
        extra += f"  unicast_src_ip {r.address}\n  unicast_peer {{\n    {unicast_peer}\n  }}\n"
    return (
        f"vrrp_instance {name} {{\n  state {state}\n  interface {r.ifname}\n  virtual_router_id {vrid}\n"
        f"  priority {priority}\n  advert_int {advert_int}\n{extra}"
        f"{auth}  virtual_ipaddress {{\n    {vip}/24\n  }}\n}}\n"
    )


def sekisho_instance(
    r: Router,
    *,
    priority: int,
    vrid: int = 51,
    version: int = 2,
    advert_int: float = 1.0,
    preempt: bool = True,
    auth_pass: str | None = "secret",
    initial_state: str = "BACKUP",
    vip: str = VIP,
    name: str = "VI",
    garp_master_delay: float = 1.0,
    unicast_peer: str | None = None,
) -> str:
    lines = [
        "[[vrrp]]",
        f'name = "{name}"',
        f'interface = "{r.ifname}"',
        f"virtual_router_id = {vrid}",
        f"priority = {priority}",
        f"version = {version}",
        f"advert_int = {advert_int}",
        f"preempt = {'true' if preempt else 'false'}",
        f'initial_state = "{initial_state}"',
        f"garp_master_delay = {garp_master_delay}",
        f'virtual_ipaddress = ["{vip}/24"]',
    ]
    if auth_pass:
        lines.append(f'auth_pass = "{auth_pass}"')
    if unicast_peer:
        lines += [f'unicast_peer = ["{unicast_peer}"]', f'unicast_src_ip = "{r.address}"']
    return "\n".join(lines) + "\n"


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
