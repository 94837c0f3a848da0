"""vrrp.anycast_io against the kernel, in a namespace of our own: the routes it announces
(IPv4 and IPv6), the VIPs it keeps on lo, the TUN device that takes the routes with it
when the process is killed, and a second owner refused."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.netns.vrrp_lab import ROOT, sh, wait_for
from tests.support import require_root

pytestmark = [pytest.mark.root]

HOLDER = """
import ipaddress, logging, sys, time
logging.disable(logging.CRITICAL)  # only what this script prints
from conf.model import AnycastGroup
from vrrp.anycast import Observed
from vrrp.anycast_io import AnycastService
from vrrp.errors import VrrpIOError
vips = (ipaddress.ip_interface("203.0.113.10/32"), ipaddress.ip_interface("2001:db8::10/128"))
service = AnycastService(AnycastGroup("edge", vips, table=1234, device="sk-edge"), lambda: Observed(True))
try:
    service.open()
except VrrpIOError as exc:
    print("refused:", exc, flush=True)
    sys.exit(3)
service.tick()
print("announced", flush=True)
if sys.argv[1] == "drain":
    service.drain("test")
    print("drained", flush=True)
time.sleep(30)
"""


@pytest.fixture
def ns() -> Iterator[str]:
    require_root()
    name = f"any-rt-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def holder(ns: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc


def routes(ns: str, family: str) -> str:
    return sh("ip", "-n", ns, family, "route", "show", "table", "1234", check=False).stdout


def test_routes_follow_the_process_and_the_device_is_not_shared(ns: str) -> None:
    first = holder(ns, "hold")
    second = None
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "announced"
        assert "203.0.113.10 dev sk-edge proto 252 scope link" in routes(ns, "-4")
        assert "2001:db8::10 dev sk-edge proto 252" in routes(ns, "-6")
        lo = sh("ip", "-n", ns, "addr", "show", "dev", "lo").stdout
        assert "inet 203.0.113.10/32" in lo and "inet6 2001:db8::10/128" in lo

        second = holder(ns, "hold")  # the same device: refused, the first keeps its routes
        out, _ = second.communicate(timeout=10)
        assert second.returncode == 3 and "sk-edge is held by another process" in out, out
        assert "203.0.113.10" in routes(ns, "-4")

        killed = time.monotonic()
        first.kill()  # SIGKILL: no clean-up code runs
        first.communicate(timeout=10)
        took = wait_for(lambda: "203.0.113.10" not in routes(ns, "-4"), 5, "routes gone", interval=0.01)
        print(f"\nSIGKILL: routes gone {took * 1000:.0f} ms after the kill")
        assert "2001:db8::10" not in routes(ns, "-6")
        assert sh("ip", "-n", ns, "link", "show", "sk-edge", check=False).returncode != 0
        assert time.monotonic() - killed < 5
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate(timeout=10)


def test_drain_deletes_the_routes_and_keeps_the_vip_on_lo(ns: str) -> None:
    proc = holder(ns, "drain")
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline().strip() for _ in range(2)] == ["announced", "drained"]
        assert "203.0.113.10" not in routes(ns, "-4") and "2001:db8::10" not in routes(ns, "-6")
        assert "inet 203.0.113.10/32" in sh("ip", "-n", ns, "addr", "show", "dev", "lo").stdout
    finally:
        proc.kill()
        proc.communicate(timeout=10)
