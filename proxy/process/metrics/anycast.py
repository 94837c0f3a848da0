"""Anycast metric families from each `AnycastService.stats()` snapshot (read at scrape time)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


def families(groups: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    announced = GaugeMetricFamily(
        "sekisho_anycast_announced",
        "1 while this node announces the group's VIPs over BGP, 0 while withdrawn.",
        labels=["group"],
    )
    reason = GaugeMetricFamily(
        "sekisho_anycast_reason_info",
        "Why the group is announced or withdrawn (always 1).",
        labels=["group", "reason"],
    )
    since = GaugeMetricFamily(
        "sekisho_anycast_since_seconds",
        "Unix time of the last announcement or withdrawal (absent before the first).",
        labels=["group"],
    )
    announcements = CounterMetricFamily(
        "sekisho_anycast_announcements", "Times the group's VIPs were announced.", labels=["group"]
    )
    withdrawals = CounterMetricFamily(
        "sekisho_anycast_withdrawals", "Times the group's VIPs were withdrawn.", labels=["group"]
    )
    for g in groups:
        name = str(g["name"])
        announced.add_metric([name], 1.0 if g["announced"] else 0.0)
        reason.add_metric([name, str(g["reason"])], 1.0)
        if g.get("since") is not None:
            since.add_metric([name], float(g["since"]))
        announcements.add_metric([name], float(g["announcements"]))
        withdrawals.add_metric([name], float(g["withdrawals"]))
    yield from (announced, reason, since, announcements, withdrawals)
