"""The daemon's own metrics: build info, reloads, listeners, the process."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

if TYPE_CHECKING:
    from proxy.daemon import Daemon

_PAGE = os.sysconf("SC_PAGE_SIZE")


def daemon_families(daemon: Daemon) -> Iterator[Metric]:
    from proxy import VERSION

    yield InfoMetricFamily("sekisho_build", "sekisho version", value={"version": VERSION})
    reloads = CounterMetricFamily(
        "sekisho_config_reloads", "Configuration reloads by result", labels=["result"]
    )
    for result, n in daemon.reloads.items():
        reloads.add_metric([result], n)
    yield reloads
    yield GaugeMetricFamily(
        "sekisho_config_last_reload_success_timestamp_seconds",
        "When the running configuration was loaded",
        value=daemon.last_reload_success,
    )
    yield GaugeMetricFamily(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        value=daemon.started,
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
    for listener in daemon.listeners.values():
        labels = [listener.kind, str(listener.address)]
        active.add_metric(labels, listener.active)
        accepted.add_metric(labels, listener.accepted)
        errors.add_metric(labels, listener.accept_errors)
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
