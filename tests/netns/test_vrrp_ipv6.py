"""IPv6 VIPs with VRRPv3 (RFC 5798) against keepalived, IPv4 and IPv6 instances side by side
(issue 20).

keepalived on A and `python -m vrrp` on B each run two instances: VI4 (VRRPv2, IPv4 VIP)
and VI6 (VRRPv3, IPv6 VIP). Checked: sekisho hears keepalived's IPv6 adverts and stays backup;
when A dies sekisho takes both VIPs, announces the IPv6 one with an unsolicited neighbour
advertisement (from the VIP to ff02::1, hop limit 255, Override, its MAC) that moves the
client's neighbour entry without the client asking, and advertises from its link-local
address with hop limit 255; keepalived, back with a lower priority, hears sekisho's IPv6
adverts and stays backup.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.vrrp_lab import Lab, Proc, keepalived_instance, sekisho_instance, sh, wait_for
from tests.support import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]

VIP6 = "2001:db8::160"
CLIENT6 = "2001:db8::3"


class V6Lab(Lab):
    """The three-namespace lab, names prefixed par6-, the bridge without MLD snooping."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for r in (self.a, self.b, self.c):
            r.ns = f"par6-{r.ns}"

    def has_vip6(self, r: object, vip: str = VIP6) -> bool:
        out = sh("ip", "-n", r.ns, "-6", "-o", "addr", "show", "dev", r.ifname).stdout  # type: ignore[attr-defined]
        return f" {vip}/" in out


@pytest.fixture
def lab6(tmp_path: Path) -> Iterator[V6Lab]:
    require_root()
    require_tool("keepalived")
    require_tool("tcpdump")
    lab = V6Lab(tmp_path)
    try:
        lab.up()
        sh("ip", "-n", lab.c.ns, "link", "set", lab.c.ifname, "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", lab.c.ns, "-6", "addr", "add", f"{CLIENT6}/64", "dev", lab.c.ifname, "nodad")
        for r in (lab.a, lab.b, lab.c):  # link-local addresses out of DAD (tentative) first
            wait_for(
                lambda r=r: (
                    "tentative" not in sh("ip", "-n", r.ns, "-6", "addr", "show", "dev", r.ifname).stdout
                ),
                10,
                f"{r.ns} link-local address",
            )
        yield lab
    finally:
        lab.close()


def keepalived_v6(ifname: str, priority: int) -> str:
    return (
        f"vrrp_instance VI6 {{\n  state BACKUP\n  interface {ifname}\n  virtual_router_id 52\n"
        f"  priority {priority}\n  advert_int 1\n  virtual_ipaddress {{\n    {VIP6}/64\n  }}\n}}\n"
    )


def sekisho_v6(ifname: str, priority: int) -> str:
    return (
        f'[[vrrp]]\nname = "VI6"\ninterface = "{ifname}"\nvirtual_router_id = 52\npriority = {priority}\n'
        f'version = 3\nadvert_int = 1.0\ngarp_master_delay = 1.0\nvirtual_ipaddress = ["{VIP6}/64"]\n'
    )


def stats(p: Proc) -> dict[str, dict[str, object]]:
    assert p.stats is not None
    for _ in range(50):
        try:
            return {s["name"]: s for s in json.loads(p.stats.read_text())}
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(p.text()[-2000:])


def neighbour_mac(lab: Lab, address: str) -> str:
    out = sh("ip", "-n", lab.c.ns, "-6", "neigh", "show", address, "dev", lab.c.ifname).stdout
    m = re.search(r"lladdr (\S+)", out)
    return m[1] if m else ""


def test_ipv4_and_ipv6_instances_beside_keepalived(lab6: V6Lab) -> None:
    lab = lab6
    ka_conf = keepalived_instance(lab.a, priority=150, name="VI4") + keepalived_v6(lab.a.ifname, 150)
    ka = lab.keepalived(lab.a, ka_conf, name="ka1")
    sk_conf = sekisho_instance(lab.b, priority=100, name="VI4") + sekisho_v6(lab.b.ifname, 100)
    sk = lab.sekisho(lab.b, sk_conf)
    lab.wait_vip(lab.a, 10)
    wait_for(lambda: lab.has_vip6(lab.a), 10, "keepalived's IPv6 VIP")

    # sekisho hears keepalived's VRRPv3 over IPv6 (from A's link-local address) and stays backup
    wait_for(
        lambda: stats(sk)["VI6"]["adverts_received"] >= 2, 5, "sekisho hearing keepalived's IPv6 adverts"
    )
    s6 = stats(sk)["VI6"]
    assert s6["state"] == "BACKUP" and str(s6["master_address"]).startswith("fe80::"), s6
    assert stats(sk)["VI4"]["state"] == "BACKUP"
    assert not lab.has_vip6(lab.b) and not lab.has_vip(lab.b)

    # the client knows the IPv6 VIP at A's MAC
    touch = f"import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'x', ('{VIP6}', 9))"
    sh("ip", "netns", "exec", lab.c.ns, sys.executable, "-c", touch)  # neighbour discovery
    wait_for(lambda: neighbour_mac(lab, VIP6) == lab.a.mac, 3, "the client resolving the IPv6 VIP")

    dump = lab.spawn(
        "tcpdump", lab.c.ns, ["tcpdump", "-n", "-l", "-e", "-v", "-i", lab.c.ifname, "icmp6 or ip6 proto 112"]
    )
    time.sleep(0.5)  # tcpdump listening
    killed = time.monotonic()
    ka.kill(signal.SIGKILL)
    lab.link(lab.a, up=False)  # A is gone with it
    bound = 3 * 1.0 + (256 - 100) / 256 + 1.0
    wait_for(lambda: lab.has_vip6(lab.b) and lab.has_vip(lab.b), bound, "sekisho taking both VIPs")
    took = time.monotonic() - killed
    # the unsolicited NA moves the client's entry to B without the client asking
    wait_for(lambda: neighbour_mac(lab, VIP6) == lab.b.mac, 2, "the client's neighbour entry moving to B")
    print(f"\nipv6: both VIPs on sekisho {took:.3f}s after keepalived died (bound {bound:.3f}s)")
    wait_for(
        lambda: stats(sk)["VI6"]["state"] == stats(sk)["VI4"]["state"] == "MASTER",
        2,
        "both MASTER in the stats",
    )
    s = stats(sk)
    assert int(s["VI6"]["garps_sent"]) >= 1  # (neighbour advertisements for IPv6)
    time.sleep(1.2)  # past garp_master_delay (1 s): the second round of NAs
    dump.stop(signal.SIGINT)
    text = dump.text()
    mine = [line for line in text.splitlines() if line.split(" > ")[0].endswith(lab.b.mac)]
    # its adverts: from its link-local address to ff02::12, hop limit 255
    adverts = [line for line in mine if "VRRPv3" in line and "vrid 52" in line]
    assert adverts and all(re.search(r"hlim 255.*\) fe80::[0-9a-f:]+ > ff02::12:", a) for a in adverts), text[
        -3000:
    ]
    # the unsolicited NA: from the VIP to all nodes, hop limit 255, Override, checksum right
    nas = [line for line in mine if f"tgt is {VIP6}" in line]
    assert nas, text[-3000:]
    assert all(
        "hlim 255" in n and f"{VIP6} > ff02::1:" in n and "[override]" in n and "sum ok" in n for n in nas
    )

    # keepalived comes back with a lower priority: it hears sekisho's IPv6 adverts, stays backup
    lab.del_vip(lab.a)  # A "rebooted": what the killed keepalived left on it is gone
    sh("ip", "-n", lab.a.ns, "-6", "addr", "del", f"{VIP6}/64", "dev", lab.a.ifname, check=False)
    lab.link(lab.a, up=True)
    wait_for(
        lambda: "tentative" not in sh("ip", "-n", lab.a.ns, "-6", "addr", "show", "dev", lab.a.ifname).stdout,
        10,
        "A's link-local address",
    )
    ka2 = lab.keepalived(
        lab.a,
        keepalived_instance(lab.a, priority=50, name="VI4") + keepalived_v6(lab.a.ifname, 50),
        name="ka2",
    )
    end = time.monotonic() + 3 * 1.0 + 0.8 + 0.5  # past keepalived's master-down (skew 0.8)
    while time.monotonic() < end:
        assert lab.has_vip6(lab.b) and not lab.has_vip6(lab.a), "the IPv6 VIP left sekisho"
        assert lab.has_vip(lab.b) and not lab.has_vip(lab.a), "the IPv4 VIP left sekisho"
        time.sleep(0.1)
    log = ka2.text()
    assert "(VI6) Entering BACKUP STATE" in log and "(VI6) Entering MASTER STATE" not in log, log[-2000:]
    assert stats(sk)["VI6"]["dropped"] in ({}, None) or not any(stats(sk)["VI6"]["dropped"].values())  # type: ignore[union-attr]


A6, B6 = "2001:db8::1", "2001:db8::2"


def test_daemon_unicast_ipv6_beside_keepalived(lab6: V6Lab) -> None:
    """`sekisho run` (the daemon, not `python -m vrrp`) with an IPv6 instance in unicast mode:
    keepalived (unicast too, lower priority) hears it and stays backup; the daemon's SIGTERM
    (priority 0) hands the VIP over at once."""
    lab = lab6
    for r, address in ((lab.a, A6), (lab.b, B6)):
        sh("ip", "-n", r.ns, "-6", "addr", "add", f"{address}/64", "dev", r.ifname, "nodad")
    ka_conf = (
        f"vrrp_instance VI6 {{\n  state BACKUP\n  interface {lab.a.ifname}\n  virtual_router_id 52\n"
        f"  priority 100\n  advert_int 1\n  unicast_src_ip {A6}\n  unicast_peer {{\n    {B6}\n  }}\n"
        f"  virtual_ipaddress {{\n    {VIP6}/64\n  }}\n}}\n"
    )
    toml = (
        "[global]\nworkers = 1\ndrain_timeout = 1\n\n"
        + sekisho_v6(lab.b.ifname, 150)
        + f'initial_state = "MASTER"\nunicast_src_ip = "{B6}"\nunicast_peer = ["{A6}"]\n'
    )
    conf = lab.tmp / "daemon.toml"
    conf.write_text(toml)
    daemon = lab.spawn("daemon", lab.b.ns, [sys.executable, "-m", "proxy.cli", "run", "-c", str(conf)])
    wait_for(lambda: lab.has_vip6(lab.b), 15, "the daemon holding the IPv6 VIP")
    ka = lab.keepalived(lab.a, ka_conf, name="ka")
    end = time.monotonic() + 3 * 1.0 + 0.6 + 0.5  # past keepalived's master-down interval
    while time.monotonic() < end:
        assert lab.has_vip6(lab.b) and not lab.has_vip6(lab.a), "the IPv6 VIP moved"
        time.sleep(0.1)
    assert "(VI6) Entering MASTER STATE" not in ka.text(), ka.text()[-2000:]
    stopped = time.monotonic()
    assert daemon.stop() == 0, daemon.text()[-2000:]
    wait_for(lambda: lab.has_vip6(lab.a), 3, "keepalived taking the VIP after the daemon's priority 0")
    print(f"\nipv6 unicast: keepalived master {time.monotonic() - stopped:.3f}s after the daemon's SIGTERM")
    assert not lab.has_vip6(lab.b)


def test_starts_while_the_link_local_address_is_tentative(lab6: V6Lab) -> None:
    """At boot the interface's link-local address is still in duplicate address detection:
    the instance starts all the same (IPV6_FREEBIND) and becomes master once alone."""
    lab, b = lab6, lab6.b
    # three probes one second apart (net.ipv6.neigh.*.retrans_time_ms is 1000 by default)
    sh("ip", "netns", "exec", b.ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{b.ifname}.dad_transmits=3")
    lab.link(b, up=False)
    lab.link(b, up=True)  # a new link-local address, tentative for about 3 s
    assert "tentative" in sh("ip", "-n", b.ns, "-6", "addr", "show", "dev", b.ifname).stdout
    sk = lab.sekisho(b, sekisho_v6(b.ifname, 100))
    wait_for(lambda: sk.stats is not None and sk.stats.exists(), 5, "sekisho running")
    assert "tentative" in sh("ip", "-n", b.ns, "-6", "addr", "show", "dev", b.ifname).stdout, (
        "DAD ended first"
    )
    wait_for(lambda: lab.has_vip6(b), 10, "the IPv6 VIP on b")
    wait_for(lambda: stats(sk)["VI6"]["state"] == "MASTER", 2, "MASTER in the stats")
    assert sk.popen.poll() is None, sk.text()[-2000:]
