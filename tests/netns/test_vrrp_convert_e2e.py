"""A real keepalived.conf of the seed operator's kind, converted and run (issue 20).

Two LVS directors share the file (priority 101 on A, 100 on B): a VRRP instance (both
`state BACKUP`, `nopreempt`, `garp_master_delay`, PASS authentication) and a
`virtual_server_group` of two real servers (rr, `inhibit_on_failure`, TCP_CHECK). A's file
goes through `sekisho convert keepalived` and `sekisho check`, and the daemon runs it on A;
B runs the original with keepalived. The real servers live on the client's side of the LAN.

What must behave as before (CONTEXT.md sections 2 and 3):
- the VIP: one master; whoever is master stays master when the other comes back (nopreempt);
  when the master goes, the other takes the VIP;
- the pool: connections to VIP:8080 go round robin to both servers; one server stopped: every
  connection still succeeds, on the other; both stopped: connections fail; both started:
  traffic returns to both.

This kernel has no IPVS, so keepalived runs its VRRP half only (`--vrrp`); the pool's
behaviour is compared with what LVS + keepalived did per CONTEXT.md, not with a live IPVS.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.vrrp_lab import KEEPALIVED, VIP, Lab, Proc, Router, sh, wait_for
from tests.support import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]

REAL = ("192.0.2.11", "192.0.2.12")

KEEPALIVED_CONF = """\
! lb{n}: one of the two directors in front of the Squid proxies
global_defs {{
   router_id LVS_LB{n}
}}

vrrp_instance VI_1 {{
    state BACKUP
    interface {ifname}
    virtual_router_id 51
    priority {priority}
    nopreempt
    advert_int 1
    garp_master_delay 5
    authentication {{
        auth_type PASS
        auth_pass p@ssw0rd
    }}
    virtual_ipaddress {{
        {vip}/24
    }}
}}

virtual_server_group SQUID {{
    {vip} 8080
}}

virtual_server group SQUID {{
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP

    real_server {real0} 8080 {{
        weight 1
        inhibit_on_failure
        TCP_CHECK {{
            connect_port 8080
            connect_timeout 1
        }}
    }}
    real_server {real1} 8080 {{
        weight 1
        inhibit_on_failure
        TCP_CHECK {{
            connect_port 8080
            connect_timeout 1
        }}
    }}
}}
"""

# A real server: answers each connection with its own address, then closes.
SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 8080), backlog=64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[1].encode() + b"\\n")
    c.close()
"""


class ConvertLab(Lab):
    """The three-namespace lab, names prefixed par-."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for r in (self.a, self.b, self.c):
            r.ns = f"par-{r.ns}"


@pytest.fixture
def plab(tmp_path: Path) -> Iterator[ConvertLab]:
    require_root()
    require_tool("keepalived")
    lab = ConvertLab(tmp_path)
    try:
        lab.up()
        for ip in REAL:
            sh("ip", "-n", lab.c.ns, "addr", "add", f"{ip}/24", "dev", lab.c.ifname)
        yield lab
    finally:
        lab.close()


def keepalived_conf(r: Router, n: int, priority: int) -> str:
    return KEEPALIVED_CONF.format(
        n=n, ifname=r.ifname, priority=priority, vip=VIP, real0=REAL[0], real1=REAL[1]
    )


def real_server(lab: Lab, ip: str) -> Proc:
    proc = lab.spawn(f"real-{ip}", lab.c.ns, [sys.executable, "-c", SERVER, ip])
    wait_for(lambda: "ready" in proc.text(), 5, f"real server {ip}")
    return proc


def ask(lab: Lab, n: int) -> Counter[str]:
    """n connections from the client's namespace to VIP:8080; who answered ('' = failed)."""
    code = (
        "import socket, sys\n"
        f"for _ in range({n}):\n"
        "    try:\n"
        f"        with socket.create_connection(('{VIP}', 8080), timeout=2) as s:\n"
        "            print(s.makefile().readline().strip() or 'closed')\n"
        "    except OSError:\n"
        "        print('failed')\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", lab.c.ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return Counter(out.split())


def hold(lab: Lab, holder: Router, other: Router, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert lab.has_vip(holder) and not lab.has_vip(other), f"the VIP left {holder.ns}"
        time.sleep(0.1)


def test_converted_director_beside_the_original(plab: ConvertLab) -> None:
    lab = plab
    # ------------------------------------------------ convert and check A's file
    original = lab.tmp / "keepalived-lb1.conf"
    original.write_text(keepalived_conf(lab.a, 1, 101))
    converted = lab.tmp / "sekisho.toml"
    cli = [sys.executable, "-m", "proxy.cli"]
    run = subprocess.run(
        [*cli, "convert", "keepalived", str(original), "-o", str(converted)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "lb_kind DR" in run.stderr  # said, not silently dropped
    check = subprocess.run(
        [*cli, "check", "-c", str(converted)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = converted.read_text()
    assert "preempt = false" in text and "garp_master_delay = 5.0" in text
    assert 'on_failure = "inhibit"' in text and f'listen = "{VIP}:8080"' in text

    # ------------------------------------------------ the real servers, the two directors
    servers = {ip: real_server(lab, ip) for ip in REAL}
    sk = lab.spawn("sekisho", lab.a.ns, [*cli, "run", "-c", str(converted)])
    ka_conf = lab.tmp / "keepalived-lb2.conf"
    ka_conf.write_text(keepalived_conf(lab.b, 2, 100))

    def keepalived(name: str) -> Proc:
        pids = [str(lab.tmp / f"{name}.{k}.pid") for k in ("main", "vrrp", "check")]
        argv = [KEEPALIVED, "-n", "-l", "-D", "--vrrp", "-f", str(ka_conf), "-p", pids[0], "-r", pids[1]]
        return lab.spawn(name, lab.b.ns, argv)

    # Both start as BACKUP and the first to hear nobody for its master-down interval becomes
    # master: sekisho here, started first.
    wait_for(lambda: "INIT -> BACKUP" in sk.text(), 15, "sekisho's instance in BACKUP")
    ka = keepalived("ka1")
    lab.wait_vip(lab.a, 10)
    hold(lab, lab.a, lab.b, 1.0)

    # ------------------------------------------------ the pool through the VIP
    wait_for(lambda: set(ask(lab, 2)) <= set(REAL), 10, "the pool answering through the VIP")
    got = ask(lab, 20)
    assert set(got) == set(REAL) and abs(got[REAL[0]] - got[REAL[1]]) <= 2, got  # rr
    servers[REAL[0]].stop()
    got = ask(lab, 20)  # at once: a refused connect is retried on the other server
    assert got == Counter({REAL[1]: 20}), got
    time.sleep(2.2)  # TCP_CHECK every second, two failures: inhibited (weight 0), still listed
    assert ask(lab, 10) == Counter({REAL[1]: 10})
    servers[REAL[1]].stop()
    got = ask(lab, 5)
    assert set(got) == {"failed"} or set(got) <= {"failed", "closed"}, got  # both down: clients fail
    servers = {ip: real_server(lab, ip) for ip in REAL}
    wait_for(lambda: set(ask(lab, 4)) == set(REAL), 10, "traffic back on both servers")

    # ------------------------------------------------ the VIP: nopreempt both ways
    ka.stop()  # keepalived restarts on B: sekisho (master) keeps the VIP
    ka = keepalived("ka2")
    hold(lab, lab.a, lab.b, 3 * 1.0 + 1.0 + 0.3)  # past keepalived's master-down interval
    assert "Entering BACKUP STATE" in ka.text() and "Entering MASTER STATE" not in ka.text()

    sk.stop()  # the master leaves (priority 0): keepalived takes the VIP
    lab.wait_vip(lab.b, 5)
    assert not lab.has_vip(lab.a)
    sk = lab.spawn("sekisho2", lab.a.ns, [*cli, "run", "-c", str(converted)])
    # sekisho comes back with the higher priority and nopreempt: it stays backup
    hold(lab, lab.b, lab.a, 3 * 1.0 + 1.0 + 0.5)  # past sekisho's master-down interval
    assert sk.popen.poll() is None, sk.text()[-2000:]
