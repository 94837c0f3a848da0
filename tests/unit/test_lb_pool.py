"""Pools: rise/fall with a fake clock, inhibit vs remove, sorry server, passive
health, slow start, runtime weight, reconcile on reload, hostname resolution."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import conf
from lb.health import Checker, HealthState
from lb.pool import BackendPool, PoolSet


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_config(**kw: Any) -> conf.Pool:
    servers = kw.pop(
        "servers",
        (conf.Server(conf.Address("10.0.0.1", 80), 3), conf.Server(conf.Address("10.0.0.2", 80), 1)),
    )
    health = kw.pop("health", conf.HealthCheck("tcp", interval=1.0, timeout=0.5, rise=2, fall=3))
    return conf.Pool("p", servers, health=health, **kw)


def test_health_state_rise_fall() -> None:
    h = HealthState(rise=2, fall=3)
    assert h.record(False, 1.0) is None
    assert h.record(False, 2.0) is None
    assert h.record(True, 3.0) is None  # a success breaks the streak
    assert [h.record(False, t) for t in (4.0, 5.0, 6.0)] == [None, None, False]
    assert not h.up and h.changed_at == 6.0
    assert h.record(True, 7.0) is None
    assert h.record(False, 8.0) is None
    assert h.record(True, 9.0) is None
    assert h.record(True, 10.0) is True
    assert h.up


def test_rise_fall_through_pool_with_fake_clock() -> None:
    clock = FakeClock()
    pool = BackendPool(pool_config(), clock)
    a, b = pool.backends
    for _ in range(2):
        clock.now += 1
        pool.check_result(a, False, "refused")
    assert a.up and a.effective_weight == 3
    clock.now += 1
    pool.check_result(a, False, "refused")
    assert not a.up and a.effective_weight == 0
    assert a.check_failures == 3 and a.checks == 3
    assert all(pool.pick(f"10.9.0.{i}") is b for i in range(20))
    clock.now += 1
    pool.check_result(a, True)
    assert not a.up
    clock.now += 1
    pool.check_result(a, True)
    assert a.up and a.effective_weight == 3
    assert a.health.changed_at == clock.now


def test_inhibit_keeps_server_in_table() -> None:
    pool = BackendPool(pool_config(on_failure="inhibit"), FakeClock())
    a = pool.backends[0]
    pool.set_down(a)
    assert a.in_table and a in pool.scheduler.members
    s = pool.stats()["servers"][0]
    assert s["up"] is False and s["effective_weight"] == 0 and s["weight"] == 3


def test_remove_takes_server_out_and_back() -> None:
    pool = BackendPool(pool_config(on_failure="remove"), FakeClock())
    a, b = pool.backends
    pool.set_down(a)
    assert not a.in_table and a not in pool.scheduler.members
    assert pool.pick() is b
    pool.set_up(a)
    assert a.in_table and a in pool.scheduler.members


def test_sorry_server_only_when_all_down() -> None:
    pool = BackendPool(pool_config(sorry_server=conf.Address("10.0.0.50", 80)), FakeClock())
    a, b = pool.backends
    pool.set_down(a)
    picked = pool.pick()
    assert picked is b
    pool.set_down(b)
    sorry = pool.pick()
    assert sorry is not None and sorry.is_sorry and sorry.key == "10.0.0.50:80"
    assert pool.pick(exclude=[sorry]) is None
    pool.set_up(b)
    assert pool.pick() is b


def test_no_sorry_all_down_gives_none() -> None:
    pool = BackendPool(pool_config(), FakeClock())
    for x in pool.backends:
        pool.set_down(x)
    assert pool.pick("10.1.1.1") is None
    assert pool.stats()["picks_none"] == 1


def test_passive_health_counts_connect_failures() -> None:
    pool = BackendPool(pool_config(), FakeClock())
    a = pool.backends[0]
    pool.connect_failed(a)
    pool.connect_failed(a)
    assert a.up
    pool.connect_failed(a)
    assert not a.up and a.connect_failures == 3


def test_take_drop_counts() -> None:
    pool = BackendPool(pool_config(scheduler="lc"), FakeClock())
    a = pool.pick()
    assert a is not None
    pool.take(a)
    assert a.active == 1 and a.total == 1
    assert pool.pick() is not a
    pool.drop(a)
    assert a.active == 0 and a.total == 1


def test_slow_start_ramps_weight() -> None:
    clock = FakeClock()
    pool = BackendPool(pool_config(slow_start=10.0), clock)
    pool.started = True  # servers up at start do not ramp; returning ones do
    a = pool.backends[0]
    assert a.effective_weight == 3
    pool.set_down(a)
    pool.set_up(a)
    assert 0 < a.effective_weight < 0.1
    clock.now += 5
    pool.pick()
    assert a.effective_weight == pytest.approx(1.5, abs=0.07)
    clock.now += 5
    pool.pick()
    assert a.effective_weight == 3
    assert not pool._ramping


def test_runtime_weight_drain() -> None:
    pool = BackendPool(pool_config(), FakeClock())
    a, b = pool.backends
    pool.take(a)
    pool.set_weight(a, 0)
    assert all(pool.pick() is b for _ in range(10))
    assert a.active == 1  # existing connections go on
    pool.set_weight(a, 2)
    assert a.effective_weight == 2


def test_find_by_key_or_configured() -> None:
    pool = BackendPool(pool_config(), FakeClock())
    assert pool.find("10.0.0.2:80") == [pool.backends[1]]
    assert pool.find("10.0.0.9:80") == []


def test_reconcile_keeps_state_of_surviving_servers() -> None:
    cfg = pool_config()
    ps = PoolSet({"p": cfg})
    a, b = ps["p"].backends
    ps["p"].set_down(a)
    ps["p"].take(b)
    ps.reconcile({"p": cfg})  # unchanged: the same pool object
    assert ps["p"].backends == [a, b]
    new = pool_config(
        servers=(conf.Server(conf.Address("10.0.0.2", 80), 5), conf.Server(conf.Address("10.0.0.3", 80)))
    )
    ps.reconcile({"p": new})
    b2, c = ps["p"].backends
    assert b2 is b and b.active == 1 and b.weight == 5
    assert c.key == "10.0.0.3:80"
    ps.reconcile({})
    assert len(ps) == 0


@pytest.mark.asyncio
async def test_hostname_resolution_adds_and_removes() -> None:
    answers = {"backend.test": ["10.0.0.7", "10.0.0.8"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    cfg = pool_config(servers=(conf.Server(conf.Address("backend.test", 8080), 2),))
    pool = BackendPool(cfg, FakeClock())
    assert pool.backends == []
    await pool.resolve_now(resolver)
    assert [b.key for b in pool.backends] == ["10.0.0.7:8080", "10.0.0.8:8080"]
    assert all(b.weight == 2 and b.configured == "backend.test:8080" for b in pool.backends)
    assert len(pool.find("backend.test:8080")) == 2
    answers["backend.test"] = ["10.0.0.8", "10.0.0.9"]
    kept = pool.backends[1]
    await pool.resolve_now(resolver)
    assert [b.key for b in pool.backends] == ["10.0.0.8:8080", "10.0.0.9:8080"]
    assert pool.backends[0] is kept

    async def failing(host: str, port: int) -> list[str]:
        raise OSError("SERVFAIL")

    await pool.resolve_now(failing)  # a DNS outage keeps the last answer
    assert len(pool.backends) == 2


def test_checker_jitter_and_no_overlap() -> None:
    pool = BackendPool(pool_config(), FakeClock())
    ch = Checker(pool, pool.backends[0], random.Random(3))
    firsts = {round(Checker(pool, pool.backends[0], random.Random(i)).first_delay(), 3) for i in range(20)}
    assert len(firsts) == 20 and all(0 <= f <= 1.0 for f in firsts)
    for _ in range(100):
        d = ch.next_delay(0.2)
        assert 0.7 <= d <= 0.9  # interval +-10% minus the time the check took
    assert ch.next_delay(5.0) == 0.0  # a slow check is followed, never overlapped


@pytest.mark.asyncio
async def test_checker_kind_none_readmits_passively_failed_server() -> None:
    cfg = pool_config(health=conf.HealthCheck("none", interval=0.01, rise=1, fall=1))
    pool = BackendPool(cfg)
    a = pool.backends[0]
    pool.connect_failed(a)
    assert not a.up
    task = asyncio.get_running_loop().create_task(Checker(pool, a).run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if a.up:
            break
    task.cancel()
    assert a.up
