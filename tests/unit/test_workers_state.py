"""The state worker processes share, without processes: the shared connection counts,
the health view a worker copies, the totals over workers, `global.workers`."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator

import pytest

import conf
from lb.pool import PoolSet
from lb.shared import Columns, SharedCounts
from proxy.http.stats import HttpStats
from proxy.process import totals
from proxy.process.serving import Prepared
from proxy.process.tasks import Background
from proxy.process.worker import slots_of
from proxy.process.workers import WorkerProcess, Workers, count_for
from proxy.smtp.stats import SmtpStats


def _config(scheduler: str = "lc", extra: str = "") -> conf.Config:
    return conf.load_text(
        f'[pool.web]\nscheduler = "{scheduler}"\n{extra}\n'
        'servers = [{ address = "10.0.0.1:80" }, { address = "10.0.0.2:80" }, { address = "10.0.0.3:80" }]\n'
    )


@pytest.fixture
def counts() -> Iterator[SharedCounts]:
    table = SharedCounts.create(rows=4, columns=8)
    yield table
    table.close()
    os.close(table.fd)


def test_each_worker_writes_its_row_and_readers_sum_the_column(counts: SharedCounts) -> None:
    a, b = counts.attach(0), counts.attach(1)
    a.add(3, 2)
    b.add(3, 5)
    b.add(4, 1)
    assert counts.total(3) == 7 and counts.total(4) == 1 and counts.total(0) == 0
    assert counts.of_row(1, 3) == 5
    counts.clear_row(1)  # worker 1 died: its connections went with it
    assert counts.total(3) == 2 and counts.total(4) == 0
    a.add(3, -2)
    assert counts.total(3) == 0


def test_readers_sum_only_the_rows_in_use(counts: SharedCounts) -> None:
    counts.attach(0).add(2, 1)
    counts.attach(1).add(2, 1)
    counts.rows_in_use(1)  # the supervisor: only row 0 is a live worker's
    assert counts.total(2) == 1
    counts.rows_in_use(2)
    assert counts.total(2) == 2


def test_worker_i_watches_slots_i_plus_multiples_of_n() -> None:
    # as many slots as workers: one each
    assert [slots_of(i, 2, 2) for i in range(2)] == [[0], [1]]
    # a reload from 4 workers to 3 keeps the 4 sockets (nothing queued is lost): all watched
    assert [slots_of(i, 3, 4) for i in range(3)] == [[0, 3], [1], [2]]
    assert sorted(j for i in range(3) for j in slots_of(i, 3, 4)) == [0, 1, 2, 3]


def test_every_column_is_a_servers() -> None:
    table = SharedCounts.create(rows=2, columns=8)
    try:
        columns = Columns(table)
        assert [columns.take() for _ in range(9)] == [0, 1, 2, 3, 4, 5, 6, 7, -1]
    finally:
        table.close()
        os.close(table.fd)


def test_a_column_is_reused_only_once_nobody_counts_in_it(counts: SharedCounts) -> None:
    columns = Columns(counts)
    first, second = columns.take(), columns.take()
    assert (first, second) == (0, 1)
    counts.attach(2).add(first, 1)  # a worker still holds a connection to the removed server
    columns.free(first)
    assert columns.take() == 2  # not 0 yet
    counts.attach(2).add(first, -1)
    assert columns.take() == first
    for _ in range(6):
        columns.take()
    assert columns.take() == -1  # full: that server is counted per worker


def test_a_worker_copies_the_supervisors_view(counts: SharedCounts) -> None:
    config = _config()
    supervisor, worker = PoolSet(config.pools), PoolSet(config.pools)
    changes: list[int] = []
    supervisor.share_counts(counts, Columns(counts))
    supervisor.watch(lambda: changes.append(1))
    worker.share_counts(counts.attach(0))
    pool = supervisor["web"]
    _, two, three = pool.backends
    pool.set_down(two)
    pool.set_weight(three, 5)
    assert changes  # the supervisor sends a view on every change
    worker.apply_view(supervisor.view())
    w = worker["web"]
    assert [b.up for b in w.backends] == [True, False, True]
    assert [b.weight for b in w.backends] == [1, 1, 5]
    assert [b.slot for b in w.backends] == [b.slot for b in pool.backends] == [0, 1, 2]
    picks = {w.pick("192.0.2.1").key for _ in range(20)}  # type: ignore[union-attr]
    assert "10.0.0.2:80" not in picks
    pool.set_up(two)
    worker.apply_view(supervisor.view())
    assert w.backends[1].up


def test_lc_in_a_worker_sees_the_connections_of_the_others(counts: SharedCounts) -> None:
    config = _config()
    supervisor = PoolSet(config.pools)
    supervisor.share_counts(counts, Columns(counts))
    first, second = PoolSet(config.pools), PoolSet(config.pools)
    first.share_counts(counts.attach(0))
    second.share_counts(counts.attach(1))
    view = supervisor.view()
    first.apply_view(view)
    second.apply_view(view)
    busy = first["web"].backends[0]
    for _ in range(3):
        first["web"].take(busy)  # worker 0 holds three connections on 10.0.0.1
    picked = [second["web"].pick() for _ in range(6)]
    assert busy.key not in {b.key for b in picked if b is not None}
    assert supervisor["web"].stats()["servers"][0]["active"] == 3
    for _ in range(3):
        first["web"].drop(busy)
    assert counts.total(busy.slot) == 0


def test_pools_whose_picks_need_no_counts_leave_the_table_alone(counts: SharedCounts) -> None:
    """rr (no max_connections) counts in the worker only: no shared write per request."""
    config = _config("rr")
    supervisor, worker = PoolSet(config.pools), PoolSet(config.pools)
    supervisor.share_counts(counts, Columns(counts))
    worker.share_counts(counts.attach(0))
    worker.apply_view(supervisor.view())
    b = worker["web"].backends[0]
    worker["web"].take(b)
    assert b.active == 1 and counts.total(b.slot) == 0
    assert worker["web"].counts is None


def test_a_failed_connect_in_a_worker_goes_to_the_supervisor() -> None:
    config = _config(extra='health = { kind = "tcp", fall = 1 }')
    worker = PoolSet(config.pools)
    reported: list[tuple[str, str]] = []
    worker.report_failures(lambda pool, server: reported.append((pool, server)))
    b = worker["web"].backends[0]
    worker["web"].connect_failed(b)
    assert reported == [("web", "10.0.0.1:80")]
    assert b.up  # the supervisor decides, then tells every worker
    supervisor = PoolSet(config.pools)
    (s,) = supervisor["web"].find("10.0.0.1:80")
    supervisor["web"].failed_in_worker(s)
    assert not s.up


def test_totals_add_counters_and_keep_gauges_of_the_live_only() -> None:
    one, two = HttpStats(), HttpStats()
    one.observe("a", 200, 0.001)
    two.observe("a", 200, 0.002)
    two.observe("b", 503, 0.2)
    one.connections_active, two.connections_active = 3, 4
    total = totals.add(totals.add(None, one), two)
    assert total.requests == {("a", "2xx", "http/1.1"): 2, ("b", "5xx", "http/1.1"): 1}
    assert total.duration_count == 3 and sum(total.duration_buckets) == 3
    assert total.connections_active == 7
    gone = totals.retire(None, {"stats": {"http": {"l": one}}, "connections": 3})
    assert gone["stats"]["http"]["l"].connections_active == 0 and "connections" not in gone
    assert gone["stats"]["http"]["l"].duration_count == 1
    smtp = totals.add(SmtpStats(transactions=Counter({("r", "relayed"): 2})), SmtpStats(starttls=1))
    assert smtp.transactions[("r", "relayed")] == 2 and smtp.starttls == 1


def test_workers_setting() -> None:
    assert conf.load_text("").global_.workers == "auto"
    assert conf.load_text("[global]\nworkers = 4").global_.workers == 4
    for bad, message in (("0", "between 1 and"), ('"all"', 'or "auto"'), ("2.5", "integer")):
        with pytest.raises(conf.ConfigError) as err:
            conf.load_text(f"[global]\nworkers = {bad}")
        assert "global.workers" in str(err.value.issues[0]) and message in str(err.value.issues[0])
    assert count_for("auto") == len(os.sched_getaffinity(0))
    assert count_for(3) == 3


@pytest.mark.asyncio
async def test_a_failed_reload_leaves_restarts_on_the_config_that_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """New workers that do not start fail the reload; a worker of the old generation that
    dies afterwards is restarted from the old config (text and certificates), not from the
    refused one."""
    workers = Workers(2, PoolSet({}), Background(logging.getLogger("test")))
    spawned: list[tuple[int, Prepared | None]] = []
    starts = iter([True, True, False, False])  # the first generation starts, the second does not

    def spawn(index: int, generation: int) -> WorkerProcess:
        spawned.append((generation, workers._prepared))
        return WorkerProcess(index, generation, -1)

    async def ready(w: WorkerProcess) -> bool:
        return next(starts)

    monkeypatch.setattr(workers, "_spawn", spawn)
    monkeypatch.setattr(workers, "_wait_ready", ready)
    monkeypatch.setattr(workers, "_kill", lambda w: None)
    serving = Prepared(_config(), {}, None, "serving", {"/c.pem": b"old"})
    refused = Prepared(_config("rr"), {}, None, "refused", {"/c.pem": b"new"})
    try:
        assert await workers.commit(serving, {})
        assert not await workers.commit(refused, {})
        assert (workers.generation, workers.count) == (1, 2)
        workers._spawn(0, workers.generation)  # a restart, as _replace does it
        assert spawned[-1] == (1, serving)
        assert [p.text for _, p in spawned if p is not None] == ["serving"] * 2 + ["refused"] * 2 + [
            "serving"
        ]
    finally:
        workers.counts.close()
        os.close(workers.counts.fd)
