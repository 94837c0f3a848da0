"""HTTP metric families from the per-listener `HttpStats` counters (read at scrape time)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from proxy.http.stats import BUCKETS, HttpStats


def families(stats_by_listener: Mapping[str, HttpStats]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "sekisho_http_requests",
        "HTTP requests answered, by listener, route, status class and protocol.",
        labels=["listener", "route", "code", "protocol"],
    )
    duration = HistogramMetricFamily(
        "sekisho_http_request_duration_seconds",
        "Time from a complete request head to the end of its response.",
        labels=["listener"],
    )
    bytes_in = CounterMetricFamily(
        "sekisho_http_received_bytes", "Bytes received from HTTP clients.", labels=["listener"]
    )
    bytes_out = CounterMetricFamily(
        "sekisho_http_sent_bytes", "Bytes sent to HTTP clients.", labels=["listener"]
    )
    active = GaugeMetricFamily(
        "sekisho_http_client_connections", "Open HTTP client connections.", labels=["listener"]
    )
    total = CounterMetricFamily(
        "sekisho_http_client_connections", "HTTP client connections accepted.", labels=["listener"]
    )
    connect_errors = CounterMetricFamily(
        "sekisho_http_upstream_connect_errors",
        "Failed connection attempts to backend servers.",
        labels=["listener"],
    )
    upstream_errors = CounterMetricFamily(
        "sekisho_http_upstream_errors",
        "Requests lost to a failing backend (502, 504 or an aborted response).",
        labels=["listener"],
    )
    opened = CounterMetricFamily(
        "sekisho_http_upstream_connections_opened",
        "Backend connections opened for HTTP requests.",
        labels=["listener"],
    )
    reused = CounterMetricFamily(
        "sekisho_http_upstream_connections_reused",
        "HTTP requests sent on an idle kept-alive backend connection.",
        labels=["listener"],
    )
    bad = CounterMetricFamily(
        "sekisho_http_bad_requests", "Malformed requests refused (400, 431).", labels=["listener"]
    )
    denied = CounterMetricFamily(
        "sekisho_http_denied_requests", "Requests refused by `allow` (403).", labels=["listener"]
    )
    abuse = CounterMetricFamily(
        "sekisho_http2_abuse",
        "HTTP/2 connections closed with GOAWAY by an abuse rule (rapid reset, floods, ...).",
        labels=["listener", "kind"],
    )
    for name, s in sorted(stats_by_listener.items()):
        for (route, code, protocol), n in sorted(s.requests.items()):
            requests.add_metric([name, route, code, protocol], n)
        for kind, n in sorted(s.h2_abuse.items()):
            abuse.add_metric([name, kind], n)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*(str(b) for b in BUCKETS), "+Inf"), s.duration_buckets, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        duration.add_metric([name], buckets, s.duration_sum)
        bytes_in.add_metric([name], s.bytes_in)
        bytes_out.add_metric([name], s.bytes_out)
        active.add_metric([name], s.connections_active)
        total.add_metric([name], s.connections_total)
        connect_errors.add_metric([name], s.upstream_connect_errors)
        upstream_errors.add_metric([name], s.upstream_errors)
        opened.add_metric([name], s.upstream_opened)
        reused.add_metric([name], s.upstream_reused)
        bad.add_metric([name], s.bad_requests)
        denied.add_metric([name], s.denied)
    yield from (
        requests,
        duration,
        bytes_in,
        bytes_out,
        active,
        total,
        connect_errors,
        upstream_errors,
        opened,
        reused,
        bad,
        denied,
        abuse,
    )
