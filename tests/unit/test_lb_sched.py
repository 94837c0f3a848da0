"""Schedulers: sequences, distributions, never picking weight-0 or down servers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lb import sched
from lb.pool import Backend


def servers(*weights: int, max_connections: int = 0) -> list[Backend]:
    return [
        Backend(f"10.0.0.{i + 1}", 80, f"10.0.0.{i + 1}:80", w, max_connections=max_connections)
        for i, w in enumerate(weights)
    ]


def make(name: str, backends: list[Backend]) -> sched.Scheduler:
    s = sched.make(name)
    for b in backends:
        s.add(b)
    return s


def names(picks: list[Backend | None], backends: list[Backend]) -> str:
    return "".join("-" if p is None else "ABCDEFGH"[backends.index(p)] for p in picks)


def clients(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"] = None
    return list(out)


ALL = sorted(sched.SCHEDULERS)


def test_rr_sequence() -> None:
    bs = servers(1, 1, 1)
    s = make("rr", bs)
    assert names([s.pick(None) for _ in range(7)], bs) == "ABCABCA"


def test_rr_one_server_fast_return_keeps_every_rule() -> None:
    """A one-server pool skips the loop: still never a down, excluded, weight-0 or full server,
    and a second server added later takes its turn as it would have."""
    (a,) = bs = servers(1, max_connections=1)
    s = make("rr", bs)
    assert s.pick(None) is a
    assert s.pick(None, exclude=[a]) is None
    s.set_down(a)
    assert s.pick(None) is None
    s.set_up(a)
    a.active = 1  # at max_connections
    assert s.pick(None) is None
    a.active = 0
    s.set_weight(a, 0)
    assert s.pick(None) is None
    s.set_weight(a, 1)
    (b,) = servers(1, 1)[1:]
    s.add(b)
    assert names([s.pick(None) for _ in range(4)], [a, b]) == "BABA"


def test_wrr_smooth_3_1() -> None:
    bs = servers(3, 1)
    s = make("wrr", bs)
    assert names([s.pick(None) for _ in range(8)], bs) == "AABAAABA"


def test_wrr_smooth_5_1_1() -> None:
    bs = servers(5, 1, 1)
    s = make("wrr", bs)
    # nginx's documented example: a a b a c a a
    assert names([s.pick(None) for _ in range(7)], bs) == "AABACAA"


@pytest.mark.parametrize("weights", [(3, 1), (5, 3, 2), (1, 1, 1, 7), (10, 1)])
def test_wrr_ratios_within_one_percent(weights: tuple[int, ...]) -> None:
    bs = servers(*weights)
    s = make("wrr", bs)
    counts = Counter(s.pick(None) for _ in range(10_000))
    total = sum(weights)
    for b, w in zip(bs, weights, strict=True):
        assert abs(counts[b] / 10_000 - w / total) < 0.01


def test_lc_prefers_least_active_and_rotates_ties() -> None:
    bs = servers(1, 1, 1)
    s = make("lc", bs)
    bs[0].active, bs[1].active, bs[2].active = 5, 2, 2
    first = s.pick(None)
    second = s.pick(None)
    assert {first, second} == {bs[1], bs[2]}


def test_lc_balances_concurrent_connections() -> None:
    bs = servers(1, 1, 1)
    s = make("lc", bs)
    for _ in range(30):
        b = s.pick(None)
        assert b is not None
        b.active += 1
    assert [b.active for b in bs] == [10, 10, 10]


def test_lc_never_piles_onto_a_dead_server() -> None:
    # LVS without health checks: the dead server has 0 connections and attracts all.
    bs = servers(1, 1)
    s = make("lc", bs)
    bs[0].active = 50
    s.set_down(bs[1])
    for _ in range(20):
        assert s.pick(None) is bs[0]


def test_wlc_unequal_weights() -> None:
    bs = servers(3, 1)
    s = make("wlc", bs)
    for _ in range(400):
        b = s.pick(None)
        assert b is not None
        b.active += 1
    assert bs[0].active == 300
    assert bs[1].active == 100


def test_wlc_release_refills_least_loaded() -> None:
    bs = servers(2, 1, 1)
    s = make("wlc", bs)
    for _ in range(40):
        b = s.pick(None)
        assert b is not None
        b.active += 1
    bs[2].active -= 5
    assert s.pick(None) is bs[2]


def test_sh_same_client_same_server_and_spread() -> None:
    bs = servers(1, 1, 1, 1)
    s = make("sh", bs)
    cs = clients(4000)
    first = {c: s.pick(c) for c in cs}
    assert all(s.pick(c) is first[c] for c in cs)
    counts = Counter(first.values())
    assert all(800 < counts[b] < 1200 for b in bs)


def test_sh_falls_back_when_hashed_server_down() -> None:
    bs = servers(1, 1)
    s = make("sh", bs)
    s.set_down(bs[0])
    assert all(s.pick(c) is bs[1] for c in clients(100))


def test_mh_table_size_is_prime_and_large() -> None:
    bs = servers(*([1] * 13))
    s = make("mh", bs)
    s.pick("1.2.3.4")
    assert isinstance(s, sched.Maglev)
    assert len(s.table) == s.size
    assert s.size >= 100 * 13
    assert sched._is_prime(s.size)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mh_removing_one_remaps_about_one_nth(n: int) -> None:
    bs = servers(*([1] * n))
    s = make("mh", bs)
    cs = clients(20_000)
    before = {c: s.pick(c) for c in cs}
    share = Counter(before.values())
    assert all(abs(share[b] / len(cs) - 1 / n) < 0.03 for b in bs)
    gone = bs[n // 2]
    s.set_down(gone)
    after = {c: s.pick(c) for c in cs}
    moved = sum(1 for c in cs if after[c] is not before[c])
    moved_unaffected = sum(1 for c in cs if before[c] is not gone and after[c] is not before[c])
    assert abs(moved / len(cs) - 1 / n) < 0.03
    assert moved_unaffected / len(cs) < 0.02  # Maglev's "minimal disruption"
    assert all(after[c] is not gone for c in cs)
    s.set_up(gone)  # coming back restores the original mapping
    assert all(s.pick(c) is before[c] for c in cs)


def test_mh_weights() -> None:
    bs = servers(3, 1)
    s = make("mh", bs)
    counts = Counter(s.pick(c) for c in clients(20_000))
    assert abs(counts[bs[0]] / 20_000 - 0.75) < 0.03


def test_lblc_stickiness() -> None:
    bs = servers(1, 1, 1)
    s = make("lblc", bs)
    cs = clients(30)
    first = {}
    for c in cs:
        b = s.pick(c)
        assert b is not None
        first[c] = b
        b.active += 1
    for c in cs:
        assert s.pick(c) is first[c]


def test_lblc_overflow_when_over_twice_the_share() -> None:
    bs = servers(1, 1, 1)
    s = make("lblc", bs)
    picks = []
    for _ in range(12):  # one client opens many connections, none finish
        b = s.pick("203.0.113.7")
        assert b is not None
        b.active += 1
        picks.append(b)
    assert picks[0] is picks[1]  # sticky while it is not overloaded
    total = sum(b.active for b in bs)
    for b in bs:  # nobody ended with more than twice its 1/3 share (+1 for the last pick)
        assert b.active <= 2 * total / 3 + 1
    assert len(set(picks)) > 1


def test_lblc_moves_when_server_down() -> None:
    bs = servers(1, 1)
    s = make("lblc", bs)
    b = s.pick("203.0.113.9")
    assert b is not None
    s.set_down(b)
    other = s.pick("203.0.113.9")
    assert other is not None and other is not b
    s.set_up(b)
    assert s.pick("203.0.113.9") is other  # now sticky to the new one


@pytest.mark.parametrize("name", ALL)
def test_weight_zero_never_picked(name: str) -> None:
    bs = servers(1, 0, 2)
    s = make(name, bs)
    for c in clients(500):
        b = s.pick(c)
        assert b is not None and b is not bs[1]
        b.active += 1


@pytest.mark.parametrize("name", ALL)
def test_down_never_picked_and_all_down_gives_none(name: str) -> None:
    bs = servers(1, 1, 1)
    s = make(name, bs)
    s.set_down(bs[0])
    for c in [*clients(300), None]:
        assert s.pick(c) is not bs[0]
    s.set_down(bs[1])
    s.set_down(bs[2])
    assert s.pick("198.51.100.1") is None
    assert s.pick(None) is None


@pytest.mark.parametrize("name", ALL)
def test_set_weight_zero_drains(name: str) -> None:
    bs = servers(1, 1)
    s = make(name, bs)
    s.set_weight(bs[0], 0)
    assert all(s.pick(c) is bs[1] for c in clients(200))
    s.set_weight(bs[0], sched.SCALE)
    assert bs[0] in {s.pick(c) for c in clients(200, seed=2)}  # new clients (lblc is sticky)


@pytest.mark.parametrize("name", ALL)
def test_exclude_and_max_connections(name: str) -> None:
    bs = servers(1, 1, max_connections=2)
    s = make(name, bs)
    assert s.pick("198.51.100.1", exclude=[bs[0]]) is bs[1]
    bs[0].active = 2
    assert s.pick("198.51.100.1") is bs[1]
    bs[1].active = 2
    assert s.pick("198.51.100.1") is None


@pytest.mark.parametrize("name", ALL)
def test_remove_and_add(name: str) -> None:
    bs = servers(1, 1)
    s = make(name, bs)
    s.remove(bs[0])
    assert all(s.pick(c) is bs[1] for c in clients(50))
    s.add(bs[0])
    assert bs[0] in {s.pick(c) for c in clients(200)}
