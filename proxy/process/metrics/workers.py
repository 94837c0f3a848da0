"""Worker process metrics: how many serve, how often one had to be restarted, the spread."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


def families(workers: Sequence[Mapping[str, Any]], restarts: int) -> Iterator[Metric]:
    """`workers`: Workers.status() rows (index, pid, generation, state, connections, ...)."""
    states = GaugeMetricFamily("sekisho_workers", "Worker processes by state", labels=["state"])
    by_state = {"starting": 0, "serving": 0, "draining": 0}
    for w in workers:
        by_state[w["state"]] = by_state.get(w["state"], 0) + 1
    for state, n in by_state.items():
        states.add_metric([state], n)
    yield states
    yield CounterMetricFamily(
        "sekisho_worker_restarts",
        "Worker processes that died unasked and were started again",
        value=restarts,
    )
    # Per worker only the gauge: how evenly the kernel spreads connections over them.
    connections = GaugeMetricFamily(
        "sekisho_worker_connections", "Open client connections per serving worker", labels=["worker"]
    )
    for w in workers:
        if w["state"] == "serving":
            connections.add_metric([str(w["index"])], w["connections"])
    yield connections
