"""The routing table: (host, path) -> the first matching route, or a built-in answer.

Pure and synchronous. Host matching is case-insensitive and ignores the port;
paths are matched as raw prefixes of the request target (no decoding, so what
the backend sees is what was matched). `/-/` and everything below it answer 404
on every listener whatever the config says: DeleGate's admin pages are never
reachable from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import conf

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
    strip_prefix: bool = False

    def matches(self, host: str) -> bool:
        if self.host is not None:
            return host == self.host
        if self.suffix is not None:
            return host.endswith(self.suffix) and len(host) > len(self.suffix)
        return True

    def upstream_target(self, target: bytes) -> bytes:
        """The request target for the backend: byte-for-byte unless strip_prefix."""
        if not self.strip_prefix:
            return target
        rest = target[len(self.path) :]
        return rest if rest.startswith(b"/") else b"/" + rest

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
    if path.startswith(b"/-/") or path == b"/-":
        return True
    # "/%2D/", "/%2d" and friends are the same resource to most backends.
    if path.startswith(b"/%") and path[2:4].lower() == b"2d":
        rest = path[4:5]
        return rest in (b"", b"/", b"?") or path[4:7].lower() == b"%2f"
    return False


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
                    path=r.path.encode("latin-1"),
                    kind=r.target,
                    pool=r.pool,
                    status=r.status if r.status is not None else (301 if r.redirect else 404),
                    redirect=r.redirect,
                    strip_prefix=r.strip_prefix,
                )
            )
        self.routes = tuple(compiled)
        # (path prefix, exact host, host suffix, route): what `match` compares, unpacked once.
        self._table = tuple((r.path, r.host, r.suffix, r) for r in compiled)

    @property
    def labels(self) -> list[str]:
        return [ADMIN.label, NO_ROUTE.label, *(r.label for r in self.routes)]

    def match(self, host: str, target: bytes) -> Route:
        """The route for a request; `host` already normalized, `target` the raw target."""
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        second = path[1:2]
        if second in {b"-", b"%"} and _is_admin_path(path):
            return ADMIN
        for prefix, exact, suffix, r in self._table:  # Route.matches, inlined
            if path.startswith(prefix):
                if exact is not None:
                    if host == exact:
                        return r
                elif suffix is None or (host.endswith(suffix) and len(host) > len(suffix)):
                    return r
        return NO_ROUTE
