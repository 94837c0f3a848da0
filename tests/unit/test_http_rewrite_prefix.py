"""rewrite_prefix (issue 20, DeleGate MOUNT="/a/* http://h/b/*", nginx proxy_pass with a URI):
the matched prefix is replaced, the result normalised again."""

from __future__ import annotations

import pytest

import conf
from proxy.http.routing import RouteTable


def _target(path: str, target: bytes, rewrite: str | None = None, strip: bool = False) -> bytes:
    table = RouteTable([conf.HttpRoute(path=path, pool="p", strip_prefix=strip, rewrite_prefix=rewrite)])
    return table.routes[0].upstream_target(target)


@pytest.mark.parametrize(
    ("path", "rewrite", "target", "expected"),
    [
        ("/a/", "/b/", b"/a/x?q=1", b"/b/x?q=1"),
        ("/a/", "/b/", b"/a/", b"/b/"),
        ("/a", "/b", b"/abc", b"/bbc"),  # a plain string prefix, as nginx and DeleGate
        ("/a/", "/", b"/a/x", b"/x"),  # = strip_prefix
        ("/static/", "/assets/v2/", b"/static/img/x.png", b"/assets/v2/img/x.png"),
        ("/a", "/b/", b"/a..", b"/"),  # a dot segment made by the join is resolved
    ],
)
def test_the_matched_prefix_is_replaced(path: str, rewrite: str, target: bytes, expected: bytes) -> None:
    assert _target(path, target, rewrite) == expected


def test_strip_prefix_is_unchanged() -> None:
    assert _target("/app/", b"/app/x", strip=True) == b"/x"
    assert _target("/app", b"/app", strip=True) == b"/"
    assert _target("/app/", b"/app/x") == b"/app/x"


def _errors(route: str) -> list[str]:
    text = (
        '[pool.p]\nservers = [{ address = "127.0.0.1:80" }]\n[[http]]\nlisten = "127.0.0.1:80"\n'
        f"[[http.route]]\n{route}\n"
    )
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(text)
    return [str(i) for i in info.value.issues]


def test_config_checks() -> None:
    text = '[pool.p]\nservers = [{ address = "127.0.0.1:80" }]\n[[http]]\nlisten = "127.0.0.1:80"\n'
    route = conf.load_text(text + '[[http.route]]\npath = "/a/"\npool = "p"\nrewrite_prefix = "/b/"\n')
    assert route.http[0].routes[0].rewrite_prefix == "/b/"
    assert _errors('path = "/a/"\nstatus = 404\nrewrite_prefix = "/b/"') == [
        "http[0].route[0].rewrite_prefix: only for routes with a pool"
    ]
    assert _errors('path = "/a/"\npool = "p"\nstrip_prefix = true\nrewrite_prefix = "/b/"') == [
        'http[0].route[0].rewrite_prefix: strip_prefix = true is rewrite_prefix = "/": set one of them'
    ]
    assert _errors('path = "/a/"\npool = "p"\nrewrite_prefix = "b/?x"') == [
        "http[0].route[0].rewrite_prefix: expected a path that starts with '/' (no query, no spaces)"
    ]
