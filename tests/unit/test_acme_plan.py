"""The ACME planner with a fake clock: renewal time, ARI, backoff, which hosts."""

from __future__ import annotations

import math

import conf
from proxy.acme.plan import Planner, hosts_for, renewal_time, retry_delay

DAY = 86400.0


def test_renewal_at_two_thirds_of_the_lifetime_unless_the_ca_says_otherwise() -> None:
    assert renewal_time(0.0, 90 * DAY) == 60 * DAY
    assert renewal_time(1000.0, 1000.0 + 6 * DAY) == 1000.0 + 4 * DAY
    assert renewal_time(0.0, 90 * DAY, ari_time=80 * DAY) == 80 * DAY  # ARI wins, later too
    assert renewal_time(0.0, 90 * DAY, ari_time=10 * DAY) == 10 * DAY  # or earlier (revocation)
    assert renewal_time(0.0, 90 * DAY, ari_time=99 * DAY) == 90 * DAY  # never after the end


def test_retry_delay_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() -> None:
    assert retry_delay(1, 0.0) == 30.0 and retry_delay(1, 1.0) == 60.0  # half fixed, half drawn
    assert retry_delay(2, 1.0) == 120.0 and retry_delay(3, 0.5) == 180.0
    assert retry_delay(30, 1.0) == 6 * 3600.0  # capped
    assert retry_delay(1, 0.0, retry_after=3600.0) == 3600.0  # the CA's rate limit is a floor
    assert retry_delay(5, 1.0, retry_after=10.0) == 960.0
    assert retry_delay(1, 1.0, retry_min=1.0) == 1.0


def test_planner_orders_missing_renews_due_and_backs_off_after_failure() -> None:
    plan = Planner()
    plan.set_hosts(["a.test", "b.test"])
    now = 1_000_000.0
    plan.have("b.test", now - 10 * DAY, now + 80 * DAY)  # stored, fresh
    assert plan.due(now) == ["a.test"]
    assert plan.records["a.test"].state(now) == "missing"
    # a.test fails: not due again before its retry time
    delay = plan.failed("a.test", now, draw=0.5, error="CA down", retry_after=None)
    assert delay == 45.0
    assert plan.due(now + 44) == [] and plan.due(now + 45) == ["a.test"]
    assert plan.records["a.test"].state(now) == "failing"
    assert plan.next_wake(now) == now + 45
    plan.failed("a.test", now + 45, draw=1.0, error="CA down")
    assert plan.records["a.test"].next_try == now + 45 + 120
    # then it succeeds: due again at two thirds of its lifetime
    plan.issued("a.test", now + 200, now + 200 + 90 * DAY, now + 200)
    record = plan.records["a.test"]
    assert record.failures == 0 and record.last_error == ""
    assert record.renew_at == now + 200 + 60 * DAY
    assert plan.due(now + 201) == []
    # b.test: due at its two-thirds point (60 of its 90 days: 50 days from now)
    assert plan.due(now + 49 * DAY) == []
    assert plan.due(now + 50 * DAY) == ["b.test"]
    assert plan.records["b.test"].state(now + 50 * DAY) == "renewing"
    assert plan.records["b.test"].state(now + 80 * DAY) == "expired"


def test_a_failed_renewal_keeps_the_certificate_and_is_visible() -> None:
    plan = Planner(retry_min=10.0)
    plan.set_hosts(["a.test"])
    plan.have("a.test", 0.0, 90 * DAY)
    now = 61 * DAY
    assert plan.due(now) == ["a.test"]
    plan.failed("a.test", now, 0.0, "rateLimited", retry_after=7200.0)
    record = plan.records["a.test"]
    assert record.has_certificate and record.state(now) == "failing"
    assert record.next_try == now + 7200.0


def test_ari_moves_the_renewal_and_is_asked_again_later() -> None:
    plan = Planner()
    plan.set_hosts(["a.test"])
    plan.have("a.test", 0.0, 90 * DAY)
    plan.records["a.test"].ari_check = 5.0
    assert plan.ari_due(4.0) == [] and plan.ari_due(5.0) == ["a.test"]
    plan.ari("a.test", 30 * DAY, next_check=6 * 3600.0)
    assert plan.records["a.test"].renew_at == 30 * DAY
    assert plan.ari_due(3600.0) == []
    assert plan.next_wake(0.0) == 6 * 3600.0
    plan.ari("a.test", None, next_check=math.inf)  # the CA has no renewal information
    assert plan.records["a.test"].renew_at == 60 * DAY


def test_reload_keeps_known_hosts_and_forgets_dropped_ones() -> None:
    plan = Planner()
    plan.set_hosts(["a.test", "b.test"])
    plan.have("a.test", 0.0, 90 * DAY)
    plan.set_hosts(["a.test", "c.test"])
    assert set(plan.records) == {"a.test", "c.test"}
    assert plan.records["a.test"].has_certificate
    assert plan.due(DAY) == ["c.test"]


def test_hosts_are_the_exact_route_hosts_of_acme_listeners_wildcards_need_dns01() -> None:
    config = conf.load_text(
        """
[pool.p]
servers = [{ address = "127.0.0.1:1" }]
[[http]]
listen = ["127.0.0.1:8080"]
  [[http.route]]
  host = "plain-only.test"
  pool = "p"
[[http]]
listen = ["127.0.0.1:8443"]
tls = [{ acme = true }]
  [[http.route]]
  host = "www.example.test"
  path = "/api/"
  pool = "p"
  [[http.route]]
  host = "www.example.test"
  pool = "p"
  [[http.route]]
  host = "*.example.test"
  pool = "p"
  [[http.route]]
  path = "/"
  pool = "p"
"""
    )
    hosts = hosts_for(config)
    assert hosts.managed == ("www.example.test",)
    assert hosts.need_dns01 == ("*.example.test",)
