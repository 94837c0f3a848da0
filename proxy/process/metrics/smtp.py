"""SMTP listener counters as Prometheus families (read from SmtpStats at scrape time)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

from proxy.smtp.stats import OUTCOMES, SmtpStats


def families(stats_by_listener: Mapping[str, Any]) -> Iterator[Metric]:
    conns = CounterMetricFamily(
        "sekisho_smtp_connections", "SMTP client connections accepted", labels=["listener"]
    )
    refused = CounterMetricFamily(
        "sekisho_smtp_connections_refused",
        "SMTP client connections refused by `allow`",
        labels=["listener"],
    )
    txns = CounterMetricFamily(
        "sekisho_smtp_transactions",
        "SMTP transactions by route and outcome (relayed, rejected_relay, temp_fail, error)",
        labels=["listener", "route", "outcome"],
    )
    rcpts = CounterMetricFamily(
        "sekisho_smtp_recipients_rejected",
        "Recipients refused, by reason",
        labels=["listener", "reason"],
    )
    tls = CounterMetricFamily("sekisho_smtp_starttls", "Successful STARTTLS upgrades", labels=["listener"])
    tls_fail = CounterMetricFamily(
        "sekisho_smtp_starttls_failures", "Failed STARTTLS handshakes", labels=["listener"]
    )
    relayed = CounterMetricFamily(
        "sekisho_smtp_bytes_relayed", "Message bytes relayed to backends", labels=["listener", "route"]
    )
    connect_fail = CounterMetricFamily(
        "sekisho_smtp_backend_connect_failures",
        "Backend connections that failed (connect, banner, EHLO or XCLIENT)",
        labels=["listener", "pool"],
    )
    timeouts = CounterMetricFamily(
        "sekisho_smtp_timeouts", "Client sessions closed for a timeout", labels=["listener"]
    )
    xclient_refused = CounterMetricFamily(
        "sekisho_smtp_xclient_refused",
        "Backend servers not used because the route asks for XCLIENT and the server does not offer it",
        labels=["listener", "pool", "server"],
    )
    for name, stats in sorted(stats_by_listener.items()):
        if not isinstance(stats, SmtpStats):
            continue
        conns.add_metric([name], stats.connections)
        refused.add_metric([name], stats.refused_connections)
        routes = {r for r, _ in stats.transactions}
        for route in sorted(routes):
            for outcome in OUTCOMES:
                txns.add_metric([name, route, outcome], stats.transactions.get((route, outcome), 0))
        for reason, n in sorted(stats.recipients_rejected.items()):
            rcpts.add_metric([name, reason], n)
        tls.add_metric([name], stats.starttls)
        tls_fail.add_metric([name], stats.starttls_failures)
        for route, n in sorted(stats.bytes_relayed.items()):
            relayed.add_metric([name, route], n)
        for pool, n in sorted(stats.backend_connect_failures.items()):
            connect_fail.add_metric([name, pool], n)
        timeouts.add_metric([name], stats.timeouts)
        for (pool, server), n in sorted(stats.xclient_refused.items()):
            xclient_refused.add_metric([name, pool, server], n)
    yield from (conns, refused, txns, rcpts, tls, tls_fail, relayed, connect_fail, timeouts, xclient_refused)
