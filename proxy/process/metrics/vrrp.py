"""VRRP metric families from each `VrrpService.stats()` snapshot (read at scrape time)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

STATES = ("INIT", "BACKUP", "MASTER", "FAULT")


class _HasStats(Protocol):
    def stats(self) -> Mapping[str, Any]: ...


def _transitions(value: Any) -> Iterator[tuple[str, str, int]]:
    if isinstance(value, Mapping):
        for (old, new), n in value.items():
            yield str(old), str(new), int(n)
    else:
        for t in value or ():
            yield str(t["from"]), str(t["to"]), int(t["count"])


def families(services: Iterable[_HasStats]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "sekisho_vrrp_state",
        "VRRP instance state: 1 for the current state, 0 for the others.",
        labels=["instance", "state"],
    )
    info = GaugeMetricFamily(
        "sekisho_vrrp_instance_info",
        "VRRP instance configuration (always 1).",
        labels=["instance", "interface", "vrid", "version"],
    )
    priority = GaugeMetricFamily("sekisho_vrrp_priority", "Configured VRRP priority.", labels=["instance"])
    master = GaugeMetricFamily(
        "sekisho_vrrp_master_info",
        'The master as this instance sees it (always 1; master="" while unknown).',
        labels=["instance", "master"],
    )
    transitions = CounterMetricFamily(
        "sekisho_vrrp_transitions",
        "VRRP state transitions, by from and to state.",
        labels=["instance", "from", "to"],
    )
    sent = CounterMetricFamily("sekisho_vrrp_adverts_sent", "VRRP advertisements sent.", labels=["instance"])
    received = CounterMetricFamily(
        "sekisho_vrrp_adverts_received",
        "Valid VRRP advertisements received for this instance.",
        labels=["instance"],
    )
    dropped = CounterMetricFamily(
        "sekisho_vrrp_dropped_packets",
        "Received VRRP packets dropped, by reason (ttl, version, type, length, checksum, "
        "addresses, vrid, auth, interval, own).",
        labels=["instance", "reason"],
    )
    errors = CounterMetricFamily(
        "sekisho_vrrp_send_errors", "Advertisements or ARP frames the kernel refused.", labels=["instance"]
    )
    garps = CounterMetricFamily("sekisho_vrrp_garp_sent", "Gratuitous ARP frames sent.", labels=["instance"])
    last = GaugeMetricFamily(
        "sekisho_vrrp_last_transition_timestamp_seconds",
        "Unix time of the last state transition.",
        labels=["instance"],
    )
    for service in services:
        s = service.stats()
        name = str(s["name"])
        current = str(s.get("state", "INIT"))
        for st in STATES:
            state.add_metric([name, st], 1.0 if st == current else 0.0)
        info.add_metric(
            [
                name,
                str(s.get("interface", "")),
                str(s.get("virtual_router_id", "")),
                str(s.get("version", "")),
            ],
            1.0,
        )
        priority.add_metric([name], float(s.get("priority", 0)))
        master.add_metric([name, str(s.get("master_address") or "")], 1.0)
        for old, new, n in _transitions(s.get("transitions")):
            transitions.add_metric([name, old, new], n)
        sent.add_metric([name], float(s.get("adverts_sent", 0)))
        received.add_metric([name], float(s.get("adverts_received", 0)))
        for reason, n in sorted(dict(s.get("dropped") or {}).items()):
            dropped.add_metric([name, str(reason)], float(n))
        errors.add_metric([name], float(s.get("send_errors", 0)))
        garps.add_metric([name], float(s.get("garps_sent", 0)))
        if s.get("last_transition") is not None:
            last.add_metric([name], float(s["last_transition"]))
    yield from (state, info, priority, master, transitions, sent, received, dropped, errors, garps, last)
