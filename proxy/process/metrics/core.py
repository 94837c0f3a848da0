"""The daemon's own metrics: build info, reloads, listeners, the process.

They read a `ProcessSnapshot`, plain data the daemon fills in at scrape time
(`Daemon.process_snapshot`); nothing here imports the daemon, so the metrics can
be loaded, tested and later aggregated across workers without it.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessSnapshot:
    version: str
    started: float  # unix time
    reloads: Mapping[str, int]  # {"success": n, "failure": n}
    last_reload_success: float  # unix time
    listeners: Sequence[Mapping[str, Any]]  # Listener.stats(): kind, address, active, accepted, accept_errors


def daemon_families(snapshot: ProcessSnapshot) -> Iterator[Metric]:
    yield InfoMetricFamily("sekisho_build", "sekisho version", value={"version": snapshot.version})
    reloads = CounterMetricFamily(
        "sekisho_config_reloads", "Configuration reloads by result", labels=["result"]
    )
    for result, n in snapshot.reloads.items():
        reloads.add_metric([result], n)
    yield reloads
    yield GaugeMetricFamily(
        "sekisho_config_last_reload_success_timestamp_seconds",
        "When the running configuration was loaded",
        value=snapshot.last_reload_success,
    )
    yield GaugeMetricFamily(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        value=snapshot.started,
    )
    active = GaugeMetricFamily(
        "sekisho_listener_connections", "Open client connections per listener", labels=["kind", "listener"]
    )
    accepted = CounterMetricFamily(
        "sekisho_listener_accepted_connections", "Accepted connections", labels=["kind", "listener"]
    )
    errors = CounterMetricFamily(
        "sekisho_listener_accept_errors",
        "accept() failures (fd exhaustion among them)",
        labels=["kind", "listener"],
    )
    for listener in snapshot.listeners:
        labels = [listener["kind"], listener["address"]]
        active.add_metric(labels, listener["active"])
        accepted.add_metric(labels, listener["accepted"])
        errors.add_metric(labels, listener["accept_errors"])
    yield active
    yield accepted
    yield errors
    yield from _process()


def _process() -> Iterator[Metric]:
    """The standard process_* metrics (prometheus-client's ProcessCollector names)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    yield CounterMetricFamily(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        value=usage.ru_utime + usage.ru_stime,
    )
    try:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", value=rss_pages * _PAGE
        )
        yield GaugeMetricFamily(
            "process_open_fds", "Number of open file descriptors.", value=len(os.listdir("/proc/self/fd"))
        )
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.", value=soft)
