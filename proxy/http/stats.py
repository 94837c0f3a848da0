"""Plain counters of one HTTP listener; the daemon keeps them across reloads.

No prometheus import here: `proxy.metrics.http.families` reads these at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

# Request duration buckets (seconds), prometheus-client's defaults plus a finer low end.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class HttpStats:
    # (route label, status class "2xx", protocol "http/1.1" | "h2") -> count
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)
    duration_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    duration_sum: float = 0.0
    duration_count: int = 0
    bytes_in: int = 0  # from clients (request heads and bodies)
    bytes_out: int = 0  # to clients
    connections_active: int = 0
    connections_total: int = 0
    upstream_connect_errors: int = 0
    upstream_errors: int = 0  # responses lost to a failing backend (502/504 or aborted)
    upstream_opened: int = 0
    upstream_reused: int = 0
    bad_requests: int = 0
    denied: int = 0
    h2_abuse: dict[str, int] = field(default_factory=dict)  # HTTP/2 connections closed, by rule

    def observe(self, label: str, status: int, duration: float, protocol: str = "http/1.1") -> None:
        key = (label, _CLASSES[status // 100] if 0 < status < 600 else "other", protocol)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.duration_buckets[bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration
        self.duration_count += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self._requests_by_route(),
            "duration_count": self.duration_count,
            "duration_sum": self.duration_sum,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "connections_active": self.connections_active,
            "connections_total": self.connections_total,
            "upstream_connect_errors": self.upstream_connect_errors,
            "upstream_errors": self.upstream_errors,
            "upstream_opened": self.upstream_opened,
            "upstream_reused": self.upstream_reused,
            "bad_requests": self.bad_requests,
            "denied": self.denied,
        }

    def _requests_by_route(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (route, code, _), n in sorted(self.requests.items()):
            key = f"{route} {code}"
            out[key] = out.get(key, 0) + n
        return out


_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
