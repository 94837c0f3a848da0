"""track_script and notify against the real keepalived, in network namespaces (issue 20).

The lab is vrrp_lab's (A and B on C's bridge) with namespaces named sk20-*. Checks
are `test -e FLAG`: removing the flag is "haproxy died". Notify commands are a
shell script that appends "$@" to a file, for sekisho and keepalived alike, so the
two calling conventions are compared on the same transitions' kinds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.vrrp_lab import NET, Lab, Proc, Router, keepalived_instance, sekisho_instance, wait_for
from tests.support import require_root

pytestmark = [pytest.mark.root, pytest.mark.slow]

# The bound of test_vrrp_keepalived's failover: keepalived's (priority 100) master-down
# interval with advert_int 1, and half a second for the rest.
BOUND = 3 * 1.0 + (256 - 100) / 256 + 0.5


class Sk20Lab(Lab):
    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a = Router(f"sk20-a{tag}", f"sk20a{tag}", f"{NET}.1")
        self.b = Router(f"sk20-b{tag}", f"sk20b{tag}", f"{NET}.2")
        self.c = Router(f"sk20-c{tag}", f"sk20c{tag}", f"{NET}.3")


@pytest.fixture
def lab(tmp_path: Path, keepalived: str) -> Iterator[Lab]:
    require_root()
    lab = Sk20Lab(tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.close()


def check(flag: Path, name: str = "chk", **kw: Any) -> str:
    """A [vrrp_script.NAME] table that succeeds while `flag` exists."""
    lines = [f"[vrrp_script.{name}]", f'command = ["/usr/bin/test", "-e", "{flag}"]']
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in kw.items()]
    return "\n" + "\n".join(lines) + "\n"


def script_of(stats: dict[str, Any], name: str = "chk") -> dict[str, Any]:
    return next(s for s in stats["scripts"] if s["name"] == name)


def appender(tmp: Path, log: Path) -> Path:
    script = tmp / f"append-{log.stem}.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    return script


def test_failing_track_script_hands_the_vip_to_keepalived(lab: Lab) -> None:
    """sekisho master (150, weight -100 while chk fails), keepalived backup (100, preempt):
    chk failing puts sekisho at 50 and keepalived takes the VIP; chk back, sekisho takes it back."""
    flag = lab.tmp / "haproxy.up"
    flag.touch()
    toml = sekisho_instance(lab.b, priority=150, initial_state="MASTER")
    toml += 'track_script = [{ name = "chk", weight = -100 }]\n'
    toml += check(flag, interval=0.1, timeout=2.0, rise=2, fall=2)
    sk = lab.sekisho(lab.b, toml)
    lab.wait_vip(lab.b, 5)
    ka = lab.keepalived(lab.a, keepalived_instance(lab.a, priority=100))
    wait_for(lambda: "Entering BACKUP STATE" in ka.text(), 10, "keepalived backup")
    wait_for(lambda: sk.read_stats()["adverts_sent"] >= 3, 5, "sekisho advertising")
    stats = sk.read_stats()
    assert stats["state"] == "MASTER" and stats["effective_priority"] == 150
    assert script_of(stats)["status"] == "up"

    probe = lab.arp_probe(wait_mac=lab.a.mac, timeout=BOUND + 2)
    failed = time.monotonic()
    flag.unlink()  # haproxy dies
    while not lab.has_vip(lab.a):
        assert time.monotonic() - failed < BOUND + 1, f"keepalived never took the VIP\n{ka.text()[-2000:]}"
        time.sleep(0.02)
    took = time.monotonic() - failed
    answer = lab.probe_result(probe)
    assert answer["mac"] == lab.a.mac, answer
    answered = answer["at"] - failed
    wait_for(lambda: not lab.has_vip(lab.b), 2, "sekisho releasing the VIP")
    wait_for(lambda: sk.read_stats()["state"] == "BACKUP", 2, "sekisho in BACKUP")  # stats lag 0.1 s
    stats = sk.read_stats()
    detected = script_of(stats)["last_change"] - failed  # the script's verdict, on the same clock
    print(
        f"\ntrack_script: chk down {detected:.3f}s after the failure; VIP on keepalived {took:.3f}s, "
        f"ARP answered {answered:.3f}s after it (bound {BOUND:.3f}s)"
    )
    assert took <= BOUND and answered <= BOUND
    assert stats["state"] == "BACKUP" and stats["effective_priority"] == 50
    assert stats["master_address"] == lab.a.address
    assert "Entering MASTER STATE" in ka.text()
    assert lab.who_answers() == [lab.a.mac]

    back = time.monotonic()
    flag.touch()  # haproxy is back: 150 again, and sekisho preempts keepalived
    lab.wait_vip(lab.b, 2 * 0.1 + 3 + (256 - 150) / 256 + 1.5)
    wait_for(lambda: not lab.has_vip(lab.a), 2, "keepalived releasing the VIP")
    print(f"track_script: chk up again, VIP back on sekisho {time.monotonic() - back:.3f}s later")
    wait_for(lambda: sk.read_stats()["state"] == "MASTER", 2, "sekisho in MASTER")
    stats = sk.read_stats()
    assert stats["state"] == "MASTER" and stats["effective_priority"] == 150
    assert lab.who_answers() == [lab.b.mac]


def test_weight_zero_track_script_faults_and_releases_at_once(lab: Lab) -> None:
    """An unweighted script failing puts sekisho in FAULT: priority 0, keepalived after skew time."""
    flag = lab.tmp / "ok"
    flag.touch()
    toml = sekisho_instance(lab.b, priority=150, initial_state="MASTER") + 'track_script = ["chk"]\n'
    toml += check(flag, interval=0.1, timeout=2.0)  # a loaded machine spawns slowly
    sk = lab.sekisho(lab.b, toml)
    lab.wait_vip(lab.b, 5)
    ka = lab.keepalived(lab.a, keepalived_instance(lab.a, priority=100))
    wait_for(lambda: "Entering BACKUP STATE" in ka.text(), 10, "keepalived backup")
    failed = time.monotonic()
    flag.unlink()
    lab.wait_vip(lab.a, 2.0)
    took = time.monotonic() - failed
    print(f"\nweight 0: VIP on keepalived {took:.3f}s after the failure (skew {(256 - 100) / 256:.3f}s)")
    assert not lab.has_vip(lab.b)
    assert took <= 0.1 + (256 - 100) / 256 + 0.5
    wait_for(lambda: sk.read_stats()["state"] == "FAULT", 2, "sekisho in FAULT")
    flag.touch()
    wait_for(lambda: sk.read_stats()["state"] == "BACKUP", 2, "sekisho back to BACKUP")
    lab.wait_vip(lab.b, 3 + (256 - 150) / 256 + 1.5)  # then preempts on priority


def notify_table(script: Path) -> str:
    return (
        f'notify = {{ master = "{script} master", backup = "{script} backup", '
        f'fault = "{script} fault", stop = "{script} stop", any = "{script}" }}\n'
    )


def keepalived_notify(script: Path) -> str:
    return (
        "".join(f'  notify_{kind} "{script} {kind}"\n' for kind in ("master", "backup", "fault", "stop"))
        + f"  notify {script}\n"
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_notify_scripts_follow_keepalived_calling_convention(lab: Lab) -> None:
    """Real transitions fire notify.master/backup/fault/stop with no arguments but their own, and
    notify.any with INSTANCE name STATE priority (the effective one) - as keepalived's do."""
    flag = lab.tmp / "ok"
    flag.touch()
    sk_log, ka_log = lab.tmp / "sekisho-events", lab.tmp / "keepalived-events"
    sk_script, ka_script = appender(lab.tmp, sk_log), appender(lab.tmp, ka_log)
    toml = sekisho_instance(lab.b, priority=100, name="VI_1")
    toml += 'track_script = ["chk", "always_down"]\n' + notify_table(sk_script)
    toml += check(flag, interval=0.1, timeout=2.0)  # a loaded machine spawns slowly
    toml += '\n[vrrp_script.always_down]\ncommand = ["/bin/false"]\nweight = -10\ninit_fail = true\n'
    sk = lab.sekisho(lab.b, toml)
    wait_for(lambda: lines(sk_log)[:2] == ["backup", "INSTANCE VI_1 BACKUP 90"], 5, "sekisho BACKUP notify")
    body = keepalived_instance(lab.a, priority=50, name="VI_1")
    ka = lab.keepalived(
        lab.a, body.replace("  virtual_ipaddress", keepalived_notify(ka_script) + "  virtual_ipaddress")
    )
    lab.wait_vip(lab.b, 6)  # alone-ish: sekisho (90) wins the election
    wait_for(lambda: len(lines(sk_log)) >= 4, 3, "sekisho MASTER notify")
    wait_for(lambda: len(lines(ka_log)) >= 2, 10, "keepalived BACKUP notify")

    flag.unlink()  # sekisho: FAULT; keepalived: MASTER
    lab.wait_vip(lab.a, 3)
    wait_for(lambda: len(lines(sk_log)) >= 6 and len(lines(ka_log)) >= 4, 5, "FAULT / MASTER notifies")
    flag.touch()  # sekisho: BACKUP, then MASTER on priority; keepalived: BACKUP
    lab.wait_vip(lab.b, 6)
    wait_for(lambda: len(lines(sk_log)) >= 10 and len(lines(ka_log)) >= 6, 5, "BACKUP / MASTER notifies")
    assert sk.stop() == 0
    assert ka.stop() == 0
    wait_for(lambda: len(lines(sk_log)) >= 12 and len(lines(ka_log)) >= 8, 5, "STOP notifies")

    assert lines(sk_log) == [
        "backup",
        "INSTANCE VI_1 BACKUP 90",
        "master",
        "INSTANCE VI_1 MASTER 90",
        "fault",
        "INSTANCE VI_1 FAULT 90",
        "backup",
        "INSTANCE VI_1 BACKUP 90",
        "master",
        "INSTANCE VI_1 MASTER 90",
        "stop",
        "INSTANCE VI_1 STOP 90",
    ], sk.text()[-3000:]
    # keepalived on the same LAN, the same script: the same arguments. keepalived starts the
    # specific and the generic command of a transition together (sekisho: one after the
    # other), so only the pairs are in order.
    pairs = [sorted(lines(ka_log)[i : i + 2]) for i in range(0, 8, 2)]
    assert pairs == [
        ["INSTANCE VI_1 BACKUP 50", "backup"],
        ["INSTANCE VI_1 MASTER 50", "master"],
        ["INSTANCE VI_1 BACKUP 50", "backup"],
        ["INSTANCE VI_1 STOP 50", "stop"],
    ], ka.text()[-3000:]
    stats: dict[str, Any] = Proc.read_stats(sk)
    assert stats["notify_started"] == 12 and stats["notify_failed"] == 0
