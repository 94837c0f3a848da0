"""Pool, server and TCP service metrics, named after HAProxy's exporter.

`families(pools)` turns `PoolSet` snapshots into families at scrape time;
`tcp_families(stats_by_listener)` does the same for `[[tcp]]` services
(`proxy.tcp.TcpStats`, keyed by the listener's first address).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lb.pool import PoolSet

# (name, help, kind, stats key); kind "g" gauge, "c" counter (name without _total)
_SERVER = [
    ("sekisho_server_up", "1 if the server passes its health check, else 0", "g", "up"),
    (
        "sekisho_server_weight",
        "Effective scheduling weight (0 when down or drained)",
        "g",
        "effective_weight",
    ),
    ("sekisho_server_configured_weight", "Weight from the config or the admin API", "g", "weight"),
    ("sekisho_server_current_connections", "Connections or requests assigned now", "g", "active"),
    ("sekisho_server_max_connections", "Per-server connection limit (0 = none)", "g", "max_connections"),
    ("sekisho_server_connections", "Connections or requests assigned", "c", "total"),
    ("sekisho_server_connect_failures", "Failed connects (passive health)", "c", "connect_failures"),
    ("sekisho_server_picks", "Times the scheduler chose this server", "c", "picks"),
    ("sekisho_server_bytes_in", "Bytes from clients to the server (L4 relay)", "c", "bytes_in"),
    ("sekisho_server_bytes_out", "Bytes from the server to clients (L4 relay)", "c", "bytes_out"),
    ("sekisho_server_checks", "Health checks run", "c", "checks"),
    ("sekisho_server_check_failures", "Health checks failed", "c", "check_failures"),
    ("sekisho_server_check_duration_seconds", "Duration of the last health check", "g", "check_duration"),
]


def families(pools: PoolSet) -> Iterator[Metric]:
    snapshots = pools.stats()
    metrics: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
    for name, text, kind, _ in _SERVER:
        cls = GaugeMetricFamily if kind == "g" else CounterMetricFamily
        metrics[name] = cls(name, text, labels=["pool", "server"])
    sorry = GaugeMetricFamily(
        "sekisho_server_sorry", "1 for a pool's sorry server", labels=["pool", "server"]
    )
    up_servers = GaugeMetricFamily("sekisho_backend_up_servers", "Servers up", labels=["pool"])
    servers = GaugeMetricFamily("sekisho_backend_servers", "Servers known (resolved)", labels=["pool"])
    status = GaugeMetricFamily(
        "sekisho_backend_status", "1 if the pool has a server up (or a sorry server)", labels=["pool"]
    )
    none = CounterMetricFamily(
        "sekisho_backend_no_server", "Picks that found no server (refused / 503)", labels=["pool"]
    )
    for p in snapshots:
        pool = p["name"]
        for s in p["servers"]:
            labels = [pool, s["address"]]
            sorry.add_metric(labels, 1.0 if s["sorry"] else 0.0)
            for name, _, _, key in _SERVER:
                metrics[name].add_metric(labels, float(s[key]))
        real = [s for s in p["servers"] if not s["sorry"]]
        up_servers.add_metric([pool], float(p["up_servers"]))
        servers.add_metric([pool], float(len(real)))
        has_sorry = len(real) != len(p["servers"])
        status.add_metric([pool], 1.0 if p["up_servers"] or has_sorry else 0.0)
        none.add_metric([pool], float(p["picks_none"]))
    yield from metrics.values()
    yield from (sorry, up_servers, servers, status, none)


_TCP = [
    ("sekisho_tcp_connections", "Client connections accepted", "c", "accepted"),
    ("sekisho_tcp_current_connections", "Client connections open", "g", "active"),
    ("sekisho_tcp_refused", "Connections reset because no server could take them", "c", "refused"),
    ("sekisho_tcp_relayed", "Connections relayed to a server", "c", "relayed"),
    ("sekisho_tcp_spliced", "Relayed connections that switched to splice", "c", "spliced"),
    ("sekisho_tcp_bytes_in", "Bytes from clients to servers", "c", "bytes_in"),
    ("sekisho_tcp_bytes_out", "Bytes from servers to clients", "c", "bytes_out"),
    ("sekisho_tcp_errors", "Relays ended by a reset or an error", "c", "errors"),
    ("sekisho_tcp_idle_timeouts", "Relays closed for idleness", "c", "idle_timeouts"),
    ("sekisho_tcp_denied", "Connections reset at accept: the client is not in `allow`", "c", "denied"),
]


def tcp_families(stats_by_listener: Mapping[str, Any]) -> Iterator[Metric]:
    out: list[GaugeMetricFamily | CounterMetricFamily] = []
    for name, text, kind, _ in _TCP:
        cls = GaugeMetricFamily if kind == "g" else CounterMetricFamily
        out.append(cls(name, text, labels=["listener"]))
    for listener, stats in stats_by_listener.items():
        snap = stats.stats() if hasattr(stats, "stats") else dict(stats)
        for family, (_, _, _, key) in zip(out, _TCP, strict=True):
            family.add_metric([listener], float(snap.get(key, 0)))
    yield from out
