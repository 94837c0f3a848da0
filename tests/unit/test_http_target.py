"""Routing on the path the backend will see: the normal form, and what is refused.

The invariant (audit issue, item 1): no backend ever receives a request target whose
normalised path would have matched a different route than the one that sent it there.
The property test checks it against three backends that normalise in their own ways.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
from proxy.http.errors import BadRequest
from proxy.http.routing import ADMIN, Route, RouteTable
from proxy.http.target import normalize_target

R = conf.HttpRoute


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/", b"/"),
        (b"/a/b?x=%2F..//", b"/a/b?x=%2F..//"),  # the query is not touched
        (b"/a/./b", b"/a/b"),
        (b"/a/../b", b"/b"),
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/.", b"/"),
        (b"//a///b", b"/a/b"),
        (b"/%2D/x", b"/-/x"),
        (b"/%2d", b"/-"),
        (b"/%7euser", b"/~user"),
        (b"/a/%2e%2E/-/", b"/-/"),  # encoded dots are dots, and climb like dots
        (b"/a%20b/%c3%a9", b"/a%20b/%C3%A9"),  # other encodings: upper-case hex
        (b"/.well-known/x", b"/.well-known/x"),
        (b"/a/...", b"/a/..."),
        (b"/a;b/c", b"/a;b/c"),
    ],
)
def test_normal_form(raw: bytes, normal: bytes) -> None:
    assert normalize_target(raw) == normal
    assert normalize_target(normal) == normal  # idempotent


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"/a%2Fb", "encoded slash"),
        (b"/a%2fb", "encoded slash"),
        (b"/a%5Cb", "encoded backslash"),
        (b"/a\\b", "backslash"),
        (b"/a%00", "encoded NUL"),
        (b"/a%zz", "malformed"),
        (b"/a%4", "malformed"),
        (b"/a%", "malformed"),
        (b"/a#x", "fragment"),
        (b"/..", "above the root"),
        (b"/a/../../b", "above the root"),
        (b"/%2e%2e/x", "above the root"),
        (b"/a/..;/-/", "parameters"),
        (b"/a/.;x/b", "parameters"),
        (b"/a/..%3bx/b", "parameters"),
    ],
)
def test_refused(raw: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why) as info:
        normalize_target(raw)
    assert info.value.status == 400


def test_fast_path_returns_the_same_object() -> None:
    plain = b"/static/app.js?v=3"
    assert normalize_target(plain) is plain


def test_configured_paths_match_in_normal_form() -> None:
    table = RouteTable([R(path="/%7Euser/", pool="u"), R(path="/", pool="root")])
    assert table.match("h", normalize_target(b"/~user/x")).pool == "u"
    assert table.match("h", normalize_target(b"/%7euser/x")).pool == "u"


def test_strip_prefix_cannot_make_a_dot_segment() -> None:
    app = RouteTable([R(path="/app", pool="p", strip_prefix=True)]).routes[0]
    assert app.upstream_target(b"/app.x/y") == b"/.x/y"
    with pytest.raises(BadRequest):
        app.upstream_target(b"/app../y")  # "/../y" for the backend: above its root


# ------------------------------------------------------------ the invariant, by property

ROUTES = RouteTable(
    [
        R(path="/private/", status=403),
        R(path="/a/b/", pool="ab"),
        R(path="/a/", pool="a"),
        R(path="/app", pool="app", strip_prefix=True),
        R(path="/old/", redirect="https://example.com/new/"),
        R(path="/", pool="root"),
    ]
)
UNRESERVED = re.compile(rb"%(2[dDeE]|[46][1-9a-fA-F]|[57][0-9aA]|3[0-9]|5[fF]|7[eE])")


def _remove_dots(path: bytes) -> bytes:
    """RFC 3986 5.2.4, word for word (a ".." at the root stays at the root)."""
    inp, out = path, b""
    while inp:
        if inp.startswith(b"../"):
            inp = inp[3:]
        elif inp.startswith((b"./", b"/./")):
            inp = inp[2:]
        elif inp == b"/.":
            inp = b"/"
        elif inp.startswith(b"/../"):
            inp = inp[3:]
            out = out[: max(out.rfind(b"/"), 0)]
        elif inp == b"/..":
            inp = b"/"
            out = out[: max(out.rfind(b"/"), 0)]
        elif inp in (b".", b".."):
            inp = b""
        else:
            start = 1 if inp.startswith(b"/") else 0
            end = inp.find(b"/", start)
            end = len(inp) if end < 0 else end
            out += inp[:end]
            inp = inp[end:]
    return out


def rfc3986(path: bytes) -> bytes:
    """A backend that normalises as RFC 3986 says: 6.2.2.2 then 5.2.4."""
    decoded = UNRESERVED.sub(lambda m: bytes((int(m.group(1), 16),)), path)
    return _remove_dots(decoded)


def merging(path: bytes) -> bytes:
    """nginx-like: RFC 3986 and merged slashes."""
    return rfc3986(re.sub(rb"//+", b"/", path))


def decoding(path: bytes) -> bytes:
    """A backend that percent-decodes everything once, then merges slashes and dots."""
    decoded = re.sub(rb"%([0-9a-fA-F]{2})", lambda m: bytes((int(m.group(1), 16),)), path)
    return _remove_dots(re.sub(rb"/+", b"/", decoded.replace(b"\\", b"/")))


BACKENDS = (rfc3986, merging, decoding)

SEGMENTS = st.sampled_from(
    [
        b"a", b"b", b"-", b"private", b"app", b"app.", b"old", b"x y", b"~u",
        b".", b"..", b"", b"...", b".well-known",
        b"%2e", b"%2E", b"%2e%2e", b".%2e", b"%2d", b"%2D", b"%61", b"%41", b"%7e",
        b"%2f", b"%2F", b"%5c", b"%00", b"%zz", b"%", b"%2", b"%20", b"%25", b"%3b", b"%3B",
        b";", b"..;", b".;p", b"a;p", b"\\", b"#",
    ]
)  # fmt: skip


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    path = b"/" + b"/".join(draw(st.lists(SEGMENTS, max_size=7)))
    query = draw(st.sampled_from([b"", b"?", b"?x=/-/", b"?a=%2F"]))
    return path + query


def _route_seen_by(backend_path: bytes, route: Route) -> Route:
    """The route a backend's normalised path belongs to, in the proxy's namespace."""
    seen = route.path.rstrip(b"/") + backend_path if route.strip_prefix else backend_path
    return ROUTES.match("h", seen)


@given(targets())
@settings(max_examples=3000, deadline=None)
def test_no_backend_sees_a_path_of_another_route(target: bytes) -> None:
    try:
        normal = normalize_target(target)
        route = ROUTES.match("h", normal)
        forwarded = route.upstream_target(normal) if route.kind == "pool" else None
    except BadRequest:
        # Refused: only for what the policy names (never for a plain path).
        path = target.split(b"?", 1)[0]
        assert re.search(rb"[%\\#;]|(^|/)\.\.(/|$)", path), target
        return
    assert normalize_target(normal) == normal
    if forwarded is None:  # answered by sekisho (the 404 of /-/, 403, a redirect)
        assert route.kind in ("status", "redirect")
        return
    assert route is not ADMIN
    path = forwarded.split(b"?", 1)[0]
    for backend in BACKENDS:
        seen = backend(path)
        assert _route_seen_by(seen, route) is route, (target, forwarded, backend.__name__, seen)
    # Already normal: an RFC 3986 backend changes nothing.
    assert rfc3986(path) == path and merging(path) == path


@given(targets())
@settings(max_examples=1000, deadline=None)
def test_hidden_prefix_never_reaches_a_backend(target: bytes) -> None:
    """However the path is spelled, a backend that normalises never gets /-/ or /private/."""
    try:
        normal = normalize_target(target)
    except BadRequest:
        return
    route = ROUTES.match("h", normal)
    if route.kind != "pool":
        return
    path = route.upstream_target(normal).split(b"?", 1)[0]
    for backend in BACKENDS:
        seen = backend(path)
        if not route.strip_prefix:
            assert not seen.startswith((b"/-/", b"/private/")) and seen != b"/-", (target, seen)
