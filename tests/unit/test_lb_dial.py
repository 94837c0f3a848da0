"""lb.dial.Attempts, the one pick -> connect -> retry policy of HTTP, SMTP and TCP:
no sockets and no loop, a pool and a fake clock. Every rule: servers per round,
exclusion, health penalty or none, rounds after a server that connected turned
out useless, 502 vs 503, the sorry server, and taking/giving back."""

from __future__ import annotations

from typing import Any

import pytest

import conf
from lb.dial import MAX_ATTEMPTS, Attempts
from lb.errors import NoBackendAvailable, UpstreamConnectError
from lb.pool import Backend, BackendPool


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pool(n: int = 3, **kw: Any) -> BackendPool:
    servers = tuple(conf.Server(conf.Address(f"10.0.0.{i + 1}", 80)) for i in range(n))
    health = kw.pop("health", conf.HealthCheck("tcp", interval=1.0, timeout=0.5, rise=2, fall=3))
    return BackendPool(conf.Pool("p", servers, health=health, **kw), FakeClock())


def active(pool: BackendPool) -> list[int]:
    return [b.active for b in [*pool.backends, *([pool.sorry] if pool.sorry else [])]]


def test_next_picks_and_takes() -> None:
    pool = make_pool()
    attempts = Attempts(pool, "192.0.2.1")
    b = attempts.next()
    assert b is not None and b.active == 1 and b.total == 1 and b.picks == 1
    pool.drop(b)  # the caller's, once it connected


def test_a_failure_is_given_back_penalised_and_not_picked_again() -> None:
    pool = make_pool()
    attempts = Attempts(pool, None)
    first = attempts.next()
    assert first is not None
    attempts.failed(first, f"{first.key}: refused")
    assert first.active == 0 and first.connect_failures == 1 and first.health.streak == 1
    assert attempts.tried == [first] and attempts.error == f"{first.key}: refused"
    second = attempts.next()
    assert second is not None and second is not first
    attempts.failed(second, "x")
    third = attempts.next()
    assert third is not None and third not in (first, second)


def test_passive_health_takes_a_server_down_after_fall_failures() -> None:
    pool = make_pool(1)
    (only,) = pool.backends
    for _ in range(3):  # fall = 3, each from another client
        attempts = Attempts(pool, None)
        b = attempts.next()
        assert b is only
        attempts.failed(b, "refused")
    assert not only.up
    attempts = Attempts(pool, None)
    assert attempts.next() is None
    assert attempts.outcome() == (503, "pool p: no server is up")


def test_a_skipped_server_is_excluded_without_penalty() -> None:
    pool = make_pool(2)
    attempts = Attempts(pool, None)
    first = attempts.next()
    assert first is not None
    attempts.skipped(first, f"{first.key}: XCLIENT not offered")
    assert first.active == 0 and first.connect_failures == 0 and first.up
    assert first.health.streak == 0  # nothing fed to the rise/fall machine
    assert attempts.skips == 1 and attempts.tried == [first]
    second = attempts.next()
    assert second is not None and second is not first
    attempts.skipped(second, "no")
    assert attempts.next() is None
    assert attempts.outcome() == (502, "no backend could be reached")


def test_released_means_the_caller_gave_it_back_already() -> None:
    pool = make_pool(2)
    attempts = Attempts(pool, None)
    a = attempts.next()
    assert a is not None
    pool.drop(a)  # e.g. an SMTP link closed it
    attempts.failed(a, "banner 554", released=True)
    b = attempts.next()
    assert b is not None
    pool.drop(b)
    attempts.skipped(b, "no XCLIENT", released=True)
    assert active(pool) == [0, 0] and a.connect_failures == 1 and b.connect_failures == 0


def test_release_gives_back_unjudged() -> None:
    pool = make_pool(1)
    attempts = Attempts(pool, None)
    b = attempts.next()
    assert b is not None
    attempts.release(b)  # cancelled while connecting
    assert b.active == 0 and b.connect_failures == 0 and attempts.tried == []
    assert attempts.error is None


def test_at_most_max_attempts_servers_per_round() -> None:
    pool = make_pool(5)
    attempts = Attempts(pool, None)
    handed = []
    while (b := attempts.next()) is not None:
        handed.append(b)
        attempts.failed(b, f"{b.key}: timed out")
    assert len(handed) == MAX_ATTEMPTS == 3
    assert len(set(handed)) == 3
    picks = sum(b.picks for b in pool.backends)
    assert attempts.next() is None and sum(b.picks for b in pool.backends) == picks  # no 4th pick
    assert attempts.outcome() == (502, "no backend could be reached")
    assert active(pool) == [0] * 5


def test_max_attempts_is_a_parameter() -> None:
    pool = make_pool(5)
    attempts = Attempts(pool, None, max_attempts=1)
    b = attempts.next()
    assert b is not None
    attempts.failed(b, "x")
    assert attempts.next() is None
    assert not attempts.may_retry and not attempts.again()


def test_nothing_up_is_503_and_something_failed_is_502() -> None:
    pool = make_pool(2)
    for server in pool.backends:
        pool.set_down(server)
    attempts = Attempts(pool, None)
    assert attempts.next() is None
    assert attempts.outcome() == (503, "pool p: no server is up")
    error = attempts.give_up()
    assert isinstance(error, NoBackendAvailable) and str(error) == "pool p: no server is up"

    pool = make_pool(2)
    attempts = Attempts(pool, None)
    last = ""
    while (b := attempts.next()) is not None:
        last = f"{b.key}: refused"
        attempts.failed(b, last)
    assert attempts.outcome() == (502, "no backend could be reached")
    error = attempts.give_up()
    assert isinstance(error, UpstreamConnectError) and str(error) == last  # the last failure


def test_exclude_is_never_picked_and_is_not_a_failure() -> None:
    pool = make_pool(2)
    a, b = pool.backends
    attempts = Attempts(pool, None, exclude=(a,))
    assert attempts.next() is b
    pool.drop(b)
    attempts = Attempts(pool, None, exclude=(a, b))
    assert attempts.next() is None
    assert attempts.outcome()[0] == 503  # excluded by the caller: nothing was tried here
    assert a.connect_failures == b.connect_failures == 0


def test_rounds_after_a_connected_server_turned_out_useless() -> None:
    """TCP: a server reset before answering, the client's bytes go to another;
    SMTP: a server would not talk. A new round of servers, the tried ones still
    excluded, at most MAX_ATTEMPTS rounds in all."""
    pool = make_pool(9)
    attempts = Attempts(pool, None)
    used = []
    for round_ in range(1, MAX_ATTEMPTS + 1):
        assert attempts.rounds == round_
        assert attempts.may_retry == (round_ < MAX_ATTEMPTS)
        # two connect failures, then one connects and fails before it answers
        for _ in range(2):
            b = attempts.next()
            assert b is not None
            used.append(b)
            attempts.failed(b, "refused")
        b = attempts.next()
        assert b is not None
        used.append(b)
        attempts.failed(b, "reset before answering")
        again = attempts.again()
        assert again == (round_ < MAX_ATTEMPTS)
    assert len(set(used)) == 9  # each server once: failures stay excluded across rounds
    assert attempts.next() is None  # the last round is over
    assert active(pool) == [0] * 9


def test_a_new_round_starts_with_no_failure_of_its_own() -> None:
    # SMTP: a server without XCLIENT, then nothing else is up: the round found
    # nothing (NoBackendAvailable), though the client had a server skipped.
    pool = make_pool(1)
    attempts = Attempts(pool, None)
    b = attempts.next()
    assert b is not None
    attempts.skipped(b, "no XCLIENT")
    assert attempts.again()
    assert attempts.next() is None
    assert isinstance(attempts.give_up(), NoBackendAvailable) and attempts.skips == 1


def test_a_connect_failure_in_a_round_is_that_rounds_error() -> None:
    pool = make_pool(3)
    attempts = Attempts(pool, None)
    a = attempts.next()
    assert a is not None
    attempts.failed(a, "banner 554")
    assert attempts.again()
    assert attempts.error is None
    b = attempts.next()
    assert b is not None
    attempts.failed(b, f"{b.key}: refused")
    c = attempts.next()
    assert c is not None
    attempts.failed(c, f"{c.key}: refused")
    assert attempts.next() is None  # every server tried
    assert str(attempts.give_up()) == f"{c.key}: refused"


def test_sorry_server_is_tried_once_when_nothing_is_up() -> None:
    pool = make_pool(2, sorry_server=conf.Address("10.9.9.9", 80))
    for b in pool.backends:
        pool.set_down(b)
    attempts = Attempts(pool, None)
    sorry = attempts.next()
    assert sorry is pool.sorry and sorry is not None and sorry.active == 1
    attempts.failed(sorry, f"{sorry.key}: refused")
    assert sorry.active == 0 and sorry.connect_failures == 1  # counted; it has no health to lose
    assert attempts.next() is None  # not picked twice for one client
    assert attempts.outcome() == (502, "no backend could be reached")
    # another client gets it again
    other = Attempts(pool, None)
    assert other.next() is sorry
    other.release(sorry)


def test_sorry_server_only_after_the_real_servers() -> None:
    pool = make_pool(2, sorry_server=conf.Address("10.9.9.9", 80))
    attempts = Attempts(pool, None)
    got = []
    while (b := attempts.next()) is not None:
        got.append(b)
        attempts.failed(b, "refused")
    assert len(got) == 3 and set(got[:2]) == set(pool.backends) and got[2] is pool.sorry


def test_client_ip_reaches_the_scheduler() -> None:
    pool = make_pool(5, scheduler="sh")
    picks = set()
    for _ in range(10):
        attempts = Attempts(pool, "198.51.100.7")
        b = attempts.next()
        assert b is not None
        picks.add(b)
        attempts.release(b)
    assert len(picks) == 1  # source hashing: the same client, the same server


def test_max_connections_full_server_is_passed_over() -> None:
    servers = (
        conf.Server(conf.Address("10.0.0.1", 80), 10, max_connections=1),
        conf.Server(conf.Address("10.0.0.2", 80), 1),
    )
    pool = BackendPool(conf.Pool("p", servers, scheduler="wrr"), FakeClock())
    full, other = pool.backends
    first = Attempts(pool, None).next()
    assert first is full
    assert Attempts(pool, None).next() is other  # full is at its limit
    pool.drop(full)
    pool.drop(other)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_server_handed_out_is_given_back(n: int) -> None:
    pool = make_pool(n)
    attempts = Attempts(pool, None)
    taken: list[Backend] = []
    while (b := attempts.next()) is not None:
        taken.append(b)
        if len(taken) % 2:
            attempts.failed(b, "refused")
        else:
            attempts.skipped(b, "not for this client")
    assert len(taken) == min(n, MAX_ATTEMPTS)
    assert active(pool) == [0] * n
    assert sum(b.total for b in pool.backends) == len(taken)
