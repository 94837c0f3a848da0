"""The routing table: host forms, path prefixes, built-ins, strip_prefix, redirects."""

from __future__ import annotations

import pytest

import conf
from proxy.http.routing import ADMIN, NO_ROUTE, RouteTable, normalize_host
from proxy.http.target import normalize_target

R = conf.HttpRoute


def table() -> RouteTable:
    return RouteTable(
        [
            R(host="www.example.com", path="/", pool="alpha"),
            R(host="beta.example.com", path="/app/", pool="beta", strip_prefix=True),
            R(host="*.example.org", path="/", pool="wild"),
            R(host="old.example.com", redirect="https://www.example.com/", status=301),
            R(path="/static/", pool="static"),
            R(path="/gone", status=410),
        ]
    )


@pytest.mark.parametrize(
    ("host", "target", "expect"),
    [
        ("www.example.com", b"/", "alpha"),
        ("www.example.com", b"/x/y?z", "alpha"),
        ("beta.example.com", b"/app/x", "beta"),
        ("beta.example.com", b"/other", None),
        ("a.example.org", b"/", "wild"),
        ("a.b.example.org", b"/", "wild"),
        ("example.org", b"/", None),  # the wildcard is for subdomains only
        ("anything", b"/static/a.css", "static"),
        ("www.example.com", b"/static/a.css", "alpha"),  # first match wins
        ("nobody", b"/", None),
    ],
)
def test_match_pool(host: str, target: bytes, expect: str | None) -> None:
    route = table().match(host, target)
    assert route.pool == expect
    if expect is None:
        assert route.kind == "status"


def test_fixed_status_and_no_route() -> None:
    t = table()
    gone = t.match("x", b"/gone/forever")
    assert (gone.kind, gone.status) == ("status", 410)
    assert t.match("x", b"/nothing") is NO_ROUTE
    assert NO_ROUTE.status == 404


@pytest.mark.parametrize(
    "target",
    [
        b"/-/",
        b"/-/admin/x",
        b"/-",
        b"/-?x",
        b"/%2d/",
        b"/%2D/admin",
        b"/-/?q",
        b"//-/",
        b"/a/../-/x",
        b"/%2D",
    ],
)
def test_admin_paths_are_builtin_404_on_every_host(target: bytes) -> None:
    t = table()
    for host in ("www.example.com", "a.example.org", "", "other"):
        assert t.match(host, normalize_target(target)) is ADMIN
    assert ADMIN.status == 404


def test_admin_lookalikes_are_not_admin() -> None:
    t = table()
    assert t.match("www.example.com", b"/-foo") is not ADMIN
    assert t.match("www.example.com", b"/a/-/") is not ADMIN


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        (b"WWW.Example.COM", "www.example.com"),
        (b"www.example.com:8080", "www.example.com"),
        (b"www.example.com.", "www.example.com"),
        (b"[::1]:80", "[::1]"),
        (b"", ""),
    ],
)
def test_normalize_host(raw: bytes, host: str) -> None:
    assert normalize_host(raw) == host


def test_strip_prefix() -> None:
    beta = table().match("beta.example.com", b"/app/x")
    assert beta.upstream_target(b"/app/x/y?q=1") == b"/x/y?q=1"
    assert beta.upstream_target(b"/app/") == b"/"
    assert beta.upstream_target(b"/app/?q") == b"/?q"
    no_slash = RouteTable([R(path="/app", pool="p", strip_prefix=True)]).routes[0]
    assert no_slash.upstream_target(b"/app/x") == b"/x"
    assert no_slash.upstream_target(b"/app") == b"/"


def test_target_passes_byte_for_byte_without_strip() -> None:
    alpha = table().match("www.example.com", b"/")
    weird = b"/a/../b/%2e%2E/c;x?y=%zz&&"
    assert alpha.upstream_target(weird) is weird


def test_redirect_appends_the_rest_of_the_path() -> None:
    old = table().match("old.example.com", b"/foo/bar?x=1")
    assert old.kind == "redirect" and old.status == 301
    assert old.location(b"/foo/bar?x=1") == "https://www.example.com/foo/bar?x=1"
    assert old.location(b"/") == "https://www.example.com/"
    sub = RouteTable([R(path="/docs/", redirect="https://d.example.com/v2", status=308)]).routes[0]
    assert sub.location(b"/docs/a/b") == "https://d.example.com/v2/a/b"
    assert sub.location(b"/docs/") == "https://d.example.com/v2"
    assert sub.location(b"/docs/?q") == "https://d.example.com/v2?q"


def test_labels() -> None:
    labels = table().labels
    assert "www.example.com/" in labels and "*.example.org/" in labels and "*/static/" in labels
