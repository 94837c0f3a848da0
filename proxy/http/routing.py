"""The routing table: (host, path) -> the first matching route, or a built-in answer.

Pure and synchronous. Host matching is case-insensitive and ignores the port;
paths are matched as prefixes of the normalised target (proxy/http/target.py:
the caller normalises, and what the backend sees is what was matched). `/-/`
and everything below it answer 404 on every listener whatever the config says:
DeleGate's admin pages are never reachable from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import conf
from proxy.http.errors import BadRequest
from proxy.http.target import NEEDS_WORK, normalize_path, normalize_target

Kind = Literal["pool", "redirect", "status"]


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled route."""

    index: int  # position in the config, -1 for built-ins
    label: str  # metrics label: "host/path" ("*" for any host)
    host: str | None  # exact host, lower-case
    suffix: str | None  # ".example.com" for "*.example.com"
    path: bytes
    kind: Kind
    pool: str | None = None
    status: int = 404
    redirect: str | None = None
    strip_prefix: bool = False  # the matched path is replaced with `new_prefix` (rewrite_prefix)
    upgrade: frozenset[bytes] = frozenset()  # protocols that may be tunnelled (lower-case)
    new_prefix: bytes = b"/"

    def matches(self, host: str) -> bool:
        if self.host is not None:
            return host == self.host
        if self.suffix is not None:
            return host.endswith(self.suffix) and len(host) > len(self.suffix)
        return True

    def upstream_target(self, target: bytes) -> bytes:
        """The (normalised) request target for the backend: as matched unless strip_prefix,
        which replaces the matched path with `new_prefix` ("/" unless rewrite_prefix).

        Replacing can make a dot segment ("/app.." less "/app" is "/.."), so the result is
        normalised again: the backend gets a normal path or the client a 400."""
        if not self.strip_prefix:
            return target
        rest = target[len(self.path) :]
        prefix = self.new_prefix
        if prefix.endswith(b"/") and rest.startswith(b"/"):
            rest = rest[1:]
        out = prefix + rest
        out = out if out.startswith(b"/") else b"/" + out
        return normalize_target(out) if NEEDS_WORK.search(out) is not None else out

    def allowed_upgrade(self, offered: bytes) -> bytes | None:
        """The client's Upgrade list less what this route does not tunnel; None if nothing
        is left (the request then goes on as plain HTTP/1.1, as nginx does with h2c)."""
        kept = [
            token
            for token in (t.strip() for t in offered.split(b","))
            if token.split(b"/", 1)[0].lower() in self.upgrade
        ]
        return b", ".join(kept) if kept else None

    def location(self, target: bytes) -> str:
        """The redirect Location: the configured URL with the rest of the target appended."""
        assert self.redirect is not None
        rest = target[len(self.path) :].decode("latin-1")
        base = self.redirect
        if base.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        elif rest and not base.endswith("/") and rest[0] not in "/?#":
            rest = "/" + rest
        return base + rest


ADMIN = Route(-1, "builtin:/-/", None, None, b"/-/", "status", status=404)
NO_ROUTE = Route(-1, "none", None, None, b"/", "status", status=404)


def _is_admin_path(path: bytes) -> bool:
    # On the normal form only: "/%2D/", "//-/" and "/a/../-/" arrive here as "/-/".
    return path.startswith(b"/-/") or path == b"/-"


def normalize_host(value: bytes | str) -> str:
    """Host header value -> lower-case name without port or trailing dot."""
    host = value.decode("latin-1") if isinstance(value, bytes) else value
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end > 0 else host
    else:
        colon = host.rfind(":")
        if colon >= 0:
            host = host[:colon]
    return host.rstrip(".")


def _route_path(path: str) -> bytes:
    """A configured path prefix in the normal form requests are matched in
    ("/%7Euser" matches requests for "/~user"); an unusable one never matches."""
    raw = path.encode("latin-1")
    try:
        return normalize_path(raw)
    except BadRequest:
        return raw


class RouteTable:
    """The routes of one listener, in config order."""

    def __init__(self, routes: Sequence[conf.HttpRoute]) -> None:
        compiled: list[Route] = []
        for i, r in enumerate(routes):
            host = suffix = None
            if r.host is not None:
                h = r.host.lower().rstrip(".")
                if h.startswith("*."):
                    suffix = h[1:]
                else:
                    host = h
            compiled.append(
                Route(
                    index=i,
                    label=f"{r.host or '*'}{r.path}",
                    host=host,
                    suffix=suffix,
                    path=_route_path(r.path),
                    kind=r.target,
                    pool=r.pool,
                    status=r.status if r.status is not None else (301 if r.redirect else 404),
                    redirect=r.redirect,
                    strip_prefix=r.strip_prefix or r.rewrite_prefix is not None,
                    upgrade=frozenset(u.encode("ascii") for u in r.upgrade),
                    new_prefix=_route_path(r.rewrite_prefix or "/"),
                )
            )
        self.routes = tuple(compiled)
        # (path prefix, exact host, host suffix, route): what `match` compares, unpacked once.
        self._table = tuple((r.path, r.host, r.suffix, r) for r in compiled)

    @property
    def labels(self) -> list[str]:
        return [ADMIN.label, NO_ROUTE.label, *(r.label for r in self.routes)]

    def match(self, host: str, target: bytes) -> Route:
        """The route for a request; `host` and `target` already normalised."""
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        if path[1:2] == b"-" and _is_admin_path(path):
            return ADMIN
        for prefix, exact, suffix, r in self._table:  # Route.matches, inlined
            if path.startswith(prefix):
                if exact is not None:
                    if host == exact:
                        return r
                elif suffix is None or (host.endswith(suffix) and len(host) > len(suffix)):
                    return r
        return NO_ROUTE
