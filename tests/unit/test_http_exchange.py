"""The sans-IO exchange driven with plain values and a fake clock: no loop, no socket.

Each timeout, retry rule, limit and status the exchange decides, one test each.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

import conf
from lb.pool import PoolSet
from proxy.http.exchange import ABORT, RETRY, Answer, Exchange, Forward, Site
from proxy.http.response import parse_head

TOML = """
[global]
access_log = ""
[pool.alpha]
servers = [{ address = "127.0.0.1:9" }]
[[http]]
listen = ["127.0.0.1:1"]
max_body_bytes = 100
timeouts = { header = 10.0, response = 60.0 }
  [[http.route]]
  path = "/gone"
  status = 410
  [[http.route]]
  path = "/old/"
  redirect = "https://example.com/new/"
  [[http.route]]
  path = "/ws/"
  pool = "alpha"
  [[http.route]]
  path = "/missing/"
  pool = "alpha"
  [[http.route]]
  path = "/"
  pool = "alpha"
"""


@pytest.fixture
def site() -> Site:
    cfg = conf.load_text(TOML)
    return Site(cfg.http[0], PoolSet(cfg.pools))


def start(ex: Exchange, target: bytes = b"/x", **kw: Any) -> Answer | Forward:
    args: dict[str, Any] = {
        "http11": True,
        "keep_alive": True,
        "host": b"h",
        "items": [(b"Host", b"host", b"h")],
        "content_length": None,
        "chunked": False,
        "upgrade": None,
        "peer": "192.0.2.1",
        "proto": b"http",
        "allowed": True,
        "trusted": False,
    }
    args.update(kw)
    method = args.pop("method", b"GET")
    return ex.start(method, target, **args)


def forwarded(site: Site, now: float = 100.0, **kw: Any) -> Exchange:
    ex = Exchange(site, now)
    assert isinstance(start(ex, **kw), Forward)
    return ex


# ------------------------------------------------------------------ the request's fate


def test_forward_builds_the_backend_head(site: Site) -> None:
    ex = Exchange(site, 0.0)
    decision = start(ex, b"/a/../b?q")
    assert isinstance(decision, Forward) and decision.pool.name == "alpha"
    assert ex.up_head.startswith(b"GET /b?q HTTP/1.1\r\nhost: h\r\n")
    assert b"x-forwarded-for: 192.0.2.1\r\n" in ex.up_head


def test_fixed_status_route_keeps_a_bodiless_request_alive(site: Site) -> None:
    ex = Exchange(site, 0.0)
    answer = start(ex, b"/gone")
    assert isinstance(answer, Answer) and answer.status == 410 and not answer.close
    assert ex.request_done and ex.response_done


def test_fixed_status_route_with_an_unread_body_closes(site: Site) -> None:
    answer = start(Exchange(site, 0.0), b"/gone", method=b"POST", content_length=5)
    assert isinstance(answer, Answer) and answer.close and b"connection: close" in answer.data


def test_redirect(site: Site) -> None:
    answer = start(Exchange(site, 0.0), b"/old/a?b")
    assert isinstance(answer, Answer) and answer.status == 301
    assert b"location: https://example.com/new/a?b\r\n" in answer.data


def test_retired_site_closes_after_a_local_answer(site: Site) -> None:
    site.retired = True
    answer = start(Exchange(site, 0.0), b"/gone")
    assert isinstance(answer, Answer) and answer.close


@pytest.mark.parametrize(
    ("kw", "status"),
    [
        ({"target": b"/a%2Fb"}, 400),
        ({"target": b"/.."}, 400),
        ({"allowed": False}, 403),
        ({"content_length": 101, "method": b"POST"}, 413),
    ],
)
def test_refusals(site: Site, kw: dict[str, Any], status: int) -> None:
    ex = Exchange(site, 0.0)
    target = kw.pop("target", b"/x")
    answer = start(ex, target, **kw)
    assert isinstance(answer, Answer) and answer.status == status and answer.close
    assert ex.status == status


def test_refusal_counters(site: Site) -> None:
    start(Exchange(site, 0.0), b"/a%zz")
    start(Exchange(site, 0.0), allowed=False)
    assert site.stats.bad_requests == 1 and site.stats.denied == 1


def test_a_route_to_a_pool_that_is_gone_is_503() -> None:
    cfg = conf.load_text(TOML)
    site = Site(cfg.http[0], {})
    answer = start(Exchange(site, 0.0))
    assert isinstance(answer, Answer) and answer.status == 503


@pytest.mark.parametrize(
    ("offered", "http11", "expect"),
    [
        (b"websocket", True, b"websocket"),
        (b"h2c", True, None),
        (b"h2c, WebSocket/13", True, b"WebSocket/13"),
        (b"websocket", False, None),  # RFC 9110 7.8: ignored in HTTP/1.0
    ],
)
def test_upgrade_allow_list(site: Site, offered: bytes, http11: bool, expect: bytes | None) -> None:
    ex = forwarded(site, upgrade=offered, http11=http11)
    assert ex.upgrade == expect
    assert (b"upgrade: " in ex.up_head) == (expect is not None)


# ------------------------------------------------------------------ the body and its limits


def test_chunked_body_is_framed_for_the_backend(site: Site) -> None:
    ex = forwarded(site, method=b"POST", chunked=True)
    assert ex.request_data(b"abc", 1.0) == (b"3\r\n", b"abc", b"\r\n")
    assert ex.request_data(b"", 1.0) == ()
    assert ex.request_end(2.0) == b"0\r\n\r\n"


def test_body_over_the_limit_is_413_then_abort_once_the_response_started(site: Site) -> None:
    ex = forwarded(site, method=b"POST", chunked=True)
    out = ex.request_data(b"x" * 101, 1.0)
    assert isinstance(out, Answer) and out.status == 413
    ex = forwarded(site, method=b"POST", chunked=True)
    ex.response_started = True
    assert ex.request_data(b"x" * 101, 1.0) is ABORT


# ------------------------------------------------------------------ timeouts


def test_body_gap_timeout_is_408(site: Site) -> None:
    ex = forwarded(site, now=0.0, method=b"POST", content_length=10)
    assert ex.deadline == math.inf
    ex.attached(site.pools["alpha"].backends[0], reused=False, now=0.0)
    assert ex.deadline == 10.0
    ex.request_data(b"12345", 8.0)  # each piece moves the deadline
    assert ex.deadline == 18.0
    assert ex.expired(17.0, backend_full=False) is None
    out = ex.expired(18.0, backend_full=False)
    assert isinstance(out, Answer) and out.status == 408


def test_body_gap_is_ours_when_the_backend_is_full(site: Site) -> None:
    ex = forwarded(site, now=0.0, method=b"POST", content_length=10)
    ex.attached(site.pools["alpha"].backends[0], reused=False, now=0.0)
    assert ex.expired(10.0, backend_full=True) is None
    assert ex.deadline == 20.0


def test_body_gap_after_the_response_started_aborts(site: Site) -> None:
    ex = forwarded(site, now=0.0, method=b"POST", content_length=10)
    ex.attached(site.pools["alpha"].backends[0], reused=False, now=0.0)
    ex.response_started = True
    assert ex.expired(10.0, backend_full=False) is ABORT


def test_response_timeout_counts_from_the_last_byte_heard(site: Site) -> None:
    ex = forwarded(site, now=0.0)
    ex.attached(site.pools["alpha"].backends[0], reused=False, now=0.0)
    ex.request_end(1.0)
    assert ex.deadline == 61.0
    ex.heard(30.0)
    assert ex.expired(61.0, backend_full=False) is None and ex.deadline == 90.0
    out = ex.expired(90.0, backend_full=False)
    assert isinstance(out, Answer) and out.status == 504
    assert site.stats.upstream_errors == 1


def test_nothing_to_wait_for_once_the_response_is_done(site: Site) -> None:
    ex = forwarded(site, now=0.0)
    ex.request_end(1.0)
    ex.response_end()
    assert ex.deadline == math.inf and ex.expired(1e9, backend_full=False) is None


# ------------------------------------------------------------------ retries


def test_reused_connection_closed_under_a_get_is_retried_once(site: Site) -> None:
    ex = forwarded(site)
    ex.attached(site.pools["alpha"].backends[0], reused=True, now=0.0)
    assert ex.upstream_failed(502, "lost", closed=False) is RETRY
    ex.attached(site.pools["alpha"].backends[0], reused=False, now=0.0)
    out = ex.upstream_failed(502, "lost", closed=False)
    assert isinstance(out, Answer) and out.status == 502


@pytest.mark.parametrize(
    "change",
    ["post", "fresh", "body", "started", "504"],
)
def test_no_retry_when_it_could_repeat_or_mislead(site: Site, change: str) -> None:
    ex = forwarded(site, method=b"POST" if change == "post" else b"GET")
    ex.attached(site.pools["alpha"].backends[0], reused=change != "fresh", now=0.0)
    if change == "body":
        ex.request_data(b"x", 0.0)
    if change == "started":
        ex.response_started = True
    out = ex.upstream_failed(504 if change == "504" else 502, "lost", closed=False)
    if change == "started":
        assert out is ABORT
    else:
        assert isinstance(out, Answer) and out.status in (502, 504)


def test_failure_after_the_client_left_is_just_an_abort(site: Site) -> None:
    ex = forwarded(site)
    assert ex.upstream_failed(502, "lost", closed=True) is ABORT


# ------------------------------------------------------------------ the response head


def head(raw: bytes) -> Any:
    return parse_head(raw + b"\r\n")


def test_response_without_length_is_chunked_for_http11(site: Site) -> None:
    ex = forwarded(site)
    out = ex.response_head(head(b"HTTP/1.1 200 OK\r\nX: y"))
    assert out == b"HTTP/1.1 200 OK\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n"  # the backend's name case
    assert ex.resp_chunked and not ex.resp_close
    assert ex.response_end() == b"0\r\n\r\n"


def test_response_without_length_closes_for_http10(site: Site) -> None:
    ex = forwarded(site, http11=False, keep_alive=False)
    out = ex.response_head(head(b"HTTP/1.1 200 OK"))
    assert out.endswith(b"Connection: close\r\n\r\n") and ex.resp_close and not ex.resp_chunked


def test_head_request_is_not_rechunked(site: Site) -> None:
    ex = forwarded(site, method=b"HEAD")
    ex.response_head(head(b"HTTP/1.1 200 OK"))
    assert not ex.resp_chunked


def test_204_loses_its_content_length(site: Site) -> None:
    ex = forwarded(site)
    out = ex.response_head(head(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: x\r\nX: y"))
    assert b"content-length" not in out.lower() and b"transfer-encoding" not in out.lower()


def test_retired_site_closes_after_the_response(site: Site) -> None:
    ex = forwarded(site)
    site.retired = True
    out = ex.response_head(head(b"HTTP/1.1 200 OK\r\nContent-Length: 0"))
    assert out.endswith(b"Connection: close\r\n\r\n") and ex.resp_close
