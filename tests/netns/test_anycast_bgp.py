"""Two active sekisho nodes behind a router doing ECMP, announced by BIRD over real BGP.

One topology for the module (tests.netns.anycast_lab: client, router, two nodes, each node
with its own BIRD, sekisho and backend): the tests run in file order and each starts from
both nodes announced. Numbers are printed (`pytest -s`) for docs/anycast.md and the note.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.anycast_lab import AnycastLab
from tests.netns.vrrp_lab import sh, wait_for
from tests.support import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]

A, B = "192.0.2.1", "192.0.2.2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnycastLab]:
    require_root()
    require_tool("bird")
    require_tool("nft")
    lab = AnycastLab(tmp_path_factory.mktemp("anycast"))
    try:
        lab.up()
        lab.start()
        yield lab
    finally:
        lab.close()


def both_announced(lab: AnycastLab) -> None:
    """Whatever the test before did: both sekisho (and backends) running and announced."""
    for key in ("a", "b"):
        node = lab.nodes[key]
        if node.backend is None or node.backend.popen.poll() is not None:
            lab.start_backend(key)
        if node.sekisho is None or node.sekisho.popen.poll() is not None:
            lab.start_node(key)
    lab.wait_paths({A, B}, 20)


def test_connections_spread_over_both_nodes(lab: AnycastLab) -> None:
    both_announced(lab)
    seen = lab.spread(400)
    counts: dict[str, int] = seen["counts"]  # type: ignore[assignment]
    share = {k: v / 400 for k, v in counts.items()}
    print(f"\nspread of 400 connections: {counts} ({', '.join(f'{k} {v:.1%}' for k, v in share.items())})")
    assert seen["failures"] == 0, seen
    assert share.get("node-a", 0) >= 0.30 and share.get("node-b", 0) >= 0.30, counts
    status = lab.status("a")["anycast"]
    assert status[0]["announced"] is True and status[0]["reason"] == "healthy"  # type: ignore[index]
    metrics = lab.metrics("b")
    assert 'sekisho_anycast_announced{group="edge"} 1.0' in metrics
    assert 'sekisho_anycast_reason_info{group="edge",reason="healthy"} 1.0' in metrics


def test_all_servers_down_withdraws_and_the_other_node_carries_everything(lab: AnycastLab) -> None:
    both_announced(lab)
    backend = lab.nodes["a"].backend
    assert backend is not None
    down = time.monotonic()
    backend.stop(signal.SIGKILL)
    took = lab.wait_paths({B}, 10)
    print(f"\nnode a's only server down: withdrawn at the router {took:.3f}s later")
    seen = lab.spread(60)
    assert seen == {"counts": {"node-b": 60}, "failures": 0, "errors": []}, seen
    status = lab.status("a")["anycast"][0]  # type: ignore[index]
    assert status["announced"] is False and status["reason"] == "pool web: no server up", status

    lab.start_backend("a")
    back = time.monotonic()
    took = lab.wait_paths({A, B}, 10)
    print(f"server back: announced again {took:.3f}s later (hold_down 1s, health interval 0.2s)")
    assert took >= 0.8  # the hold-down held it back
    assert back - down < 30
    assert lab.status("a")["anycast"][0]["withdrawals"] == 1  # type: ignore[index]


def test_a_node_coming_back_moves_flows_that_second_chance_keeps_alive(lab: AnycastLab) -> None:
    """Plain multipath rehashes when a path comes (or goes): flows open on b whose hash now
    picks a reach a first, which hands them back to b over the LAN."""
    both_announced(lab)
    backend = lab.nodes["a"].backend
    assert backend is not None
    backend.stop(signal.SIGKILL)
    lab.wait_paths({B}, 10)
    hold = lab.hold(40)
    assert hold.stdout is not None and hold.stdin is not None
    ready = json.loads(hold.stdout.readline())["ready"]
    assert ready == ["node-b"] * 40, ready
    before = lab.moved(lab.a)
    lab.start_backend("a")
    lab.wait_paths({A, B}, 10)
    hold.stdin.write("go\n")
    hold.stdin.flush()
    results = json.loads(hold.stdout.readline())["results"]
    hold.communicate(timeout=10)
    moved = lab.moved(lab.a) - before
    print(
        f"\nnode a back: {moved} of 40 flows open on b rehashed to a; "
        f"{sum(r['ok'] for r in results)} finished"
    )
    assert all(r["ok"] for r in results), results
    assert 0 < moved < 40  # the rehash moved some (about half): second chance kept them


def test_admin_drain_withdraws_and_undrain_announces_again(lab: AnycastLab) -> None:
    both_announced(lab)
    answer = lab.admin("b", "/anycast/drain")
    assert answer["anycast"][0]["reason"] == "drained: admin", answer  # type: ignore[index]
    took = lab.wait_paths({A}, 10)
    print(f"\nadmin drain of node b: router down to node a {took * 1000:.0f} ms later")
    seen = lab.spread(40)
    assert seen["counts"] == {"node-a": 40} and seen["failures"] == 0, seen
    lab.reload("b", device="sk-drained")  # a group started again by a reload stays drained
    wait_for(lambda: lab.status("b")["anycast"][0]["device"] == "sk-drained", 10, "reload")  # type: ignore[index]
    assert lab.status("b")["anycast"][0]["announced"] is False  # type: ignore[index]
    assert lab.paths() == {A}
    lab.admin("b", "/anycast/undrain")
    lab.wait_paths({A, B}, 10)


def test_sigkill_withdraws_through_bgp(lab: AnycastLab) -> None:
    """The routes live on a TUN device of sekisho's: the kernel deletes it with the process,
    BIRD sees the route go, the router drops the path."""
    both_announced(lab)
    node = lab.nodes["a"]
    assert node.sekisho is not None
    killed = time.monotonic()
    os.kill(node.sekisho.popen.pid, signal.SIGKILL)  # the supervisor only: it owns the device
    took = lab.wait_paths({B}, 10)
    print(f"\nsekisho on node a SIGKILLed: router down to node b {took * 1000:.0f} ms later")
    assert took < 2.0
    node.sekisho.popen.wait(5)
    assert time.monotonic() - killed < 10
    node.sekisho.kill(signal.SIGKILL)  # its workers too, before a new one binds the VIP
    seen = lab.spread(40)
    assert seen["counts"] == {"node-b": 40} and seen["failures"] == 0, seen


def test_node_failure_is_noticed_by_bfd(lab: AnycastLab) -> None:
    """A node whose BGP daemon dies is dropped at once (its TCP session ends); a node gone
    silent (its link down) is dropped by the router's BFD, not by BGP's 240 s hold time."""
    both_announced(lab)
    bird = lab.nodes["a"].bird
    assert bird is not None
    bird.stop(signal.SIGKILL)
    took = lab.wait_paths({B}, 10)
    print(f"\nBIRD on node a SIGKILLed: router down to node b {took * 1000:.0f} ms later (TCP closed)")
    assert took < 1.5
    lab.nodes["a"].bird = lab.bird(lab.a, lab.node_bird(lab.a), "bird-a2")
    lab.wait_paths({A, B}, 20)

    lab.link(lab.a, up=False)  # silent: no FIN, no RST, no BFD from a
    took = lab.wait_paths({B}, 10)
    print(f"node a's link down: router down to node b {took * 1000:.0f} ms later (BFD 5 x 100 ms)")
    assert took < 1.5
    lab.relink(lab.a)
    lab.wait_paths({A, B}, 20)


def test_reload_keeps_the_announcement_or_moves_it_to_a_new_device(lab: AnycastLab) -> None:
    both_announced(lab)
    before = lab.status("a")["anycast"][0]  # type: ignore[index]
    lab.reload("a", hold_down=2.0)  # health rules and timers: updated in place
    wait_for(lambda: "reloaded" in lab.nodes["a"].sekisho.text(), 10, "reload")  # type: ignore[union-attr]
    after = lab.status("a")["anycast"][0]  # type: ignore[index]
    assert after["announced"] and after["announcements"] == before["announcements"], after
    assert lab.paths() == {A, B}
    lab.reload("a", device="sk-edge2")  # the routes move to a new device: withdrawn, announced
    wait_for(lambda: lab.status("a")["anycast"][0]["device"] == "sk-edge2", 10, "new device")  # type: ignore[index]
    lab.wait_paths({A, B}, 10)
    table = sh("ip", "-n", lab.a.ns, "route", "show", "table", "100").stdout
    assert "203.0.113.10 dev sk-edge2 proto 252" in table, table


def test_stop_withdraws_first_new_connections_never_fail_open_ones_finish(lab: AnycastLab) -> None:
    both_announced(lab)
    hold = lab.hold(30)
    assert hold.stdout is not None and hold.stdin is not None
    ready = json.loads(hold.stdout.readline())["ready"]
    on_a = ready.count("node-a")
    assert on_a >= 3, ready
    handed_on = lab.moved(lab.b)
    stop_file = lab.tmp / "load.stop"
    load = lab.load(4000, 20.0, stop_file)
    time.sleep(0.5)
    stopping = time.monotonic()
    stop = lab.sekisho_stop("a")
    took = lab.wait_paths({B}, 10)
    # Every open connection, a's included, is used once more and closed from the client:
    # the router sends a's flows to b now, and b hands them on (second chance).
    hold.stdin.write("go\n")
    hold.stdin.flush()
    results = json.loads(hold.stdout.readline())["results"]
    hold.communicate(timeout=10)  # closes the pipes
    handed_on = lab.moved(lab.b) - handed_on
    said, _ = stop.communicate(timeout=20)
    assert stop.returncode == 0, said
    stopped = time.monotonic() - stopping
    time.sleep(0.5)
    stop_file.touch()
    out, _ = load.communicate(timeout=30)
    seen = json.loads(out)
    print(
        f"\nsekisho stop on node a: router down to b {took * 1000:.0f} ms after the stop began; "
        f"a exited after {stopped:.2f}s; load loop {seen['counts']} in {seen['seconds']}s, "
        f"{seen['failures']} failed; open connections on a: {on_a}, finished "
        f"{sum(r['ok'] for r in results if r['node'] == 'node-a')} (b handed {handed_on} flows on to a)"
    )
    assert seen["failures"] == 0, seen
    assert seen["counts"].get("node-a", 0) > 0 and seen["counts"].get("node-b", 0) > 0, seen
    assert all(r["ok"] for r in results), results
    assert handed_on >= on_a
    log = lab.nodes["a"].sekisho.text()  # type: ignore[union-attr]
    withdrawn = log.index("withdrawn 203.0.113.10 (drained: stopping)")
    assert withdrawn < log.index("stopping: draining connections")
    assert re.search(r"stopped", log[withdrawn:])
    assert not Path(lab.tmp / "sekisho-a.pid").exists()
