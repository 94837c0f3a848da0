"""Automatic HTTPS metric families: certificate expiry (every certificate the TLS listeners
serve, ACME or files) and the ACME service's orders, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

import conf
from proxy.http.tls import file_certificates, served_certificates


def families(acme: Mapping[str, Any] | None, config: conf.Config | None = None) -> Iterator[Metric]:
    """`acme`: the ACME service's stats() (None when no listener uses ACME); `config`: its
    certificate files are read when this process serves none (the supervisor of workers)."""
    expiry = GaugeMetricFamily(
        "sekisho_tls_certificate_expiry_timestamp_seconds",
        "When the certificate served for a host expires (notAfter, Unix time).",
        labels=["host"],
    )
    served = served_certificates()  # this process's listeners (none here under workers)
    if not served and config is not None:
        served = file_certificates(c for h in config.http for c in h.tls)
    for cert in acme["certificates"] if acme is not None else ():
        if cert.get("not_after") is not None:
            served.setdefault(cert["host"], cert["not_after"])  # what the workers load too
    for host, not_after in sorted(served.items()):
        expiry.add_metric([host], not_after)
    yield expiry
    orders = CounterMetricFamily(
        "sekisho_acme_orders", "ACME certificate orders, by result (success, failure).", labels=["result"]
    )
    failing = GaugeMetricFamily(
        "sekisho_acme_certificate_failures",
        "Failed orders in a row for a host since its last certificate (0: fine).",
        labels=["host"],
    )
    if acme is not None:  # (else the families stand empty: the shipped alerts still parse)
        for result in ("success", "failure"):
            orders.add_metric([result], acme["orders"].get(result, 0))
        for cert in acme["certificates"]:
            failing.add_metric([cert["host"]], cert["failures"])
    yield orders
    yield failing
