"""Prometheus exposition: components' `stats()` snapshots become metric families.

Cores never import prometheus-client and never pay for its locks on the hot
path: they keep plain counters, and a scrape asks each registered source for
fresh families. Each area has its own module here (http, lb, smtp, vrrp) with
a `families(...)` function; the daemon registers them as sources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

Source = Callable[[], Iterable[Metric]]


class Exposition(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources: dict[str, Source] = {}
        self.registry.register(self)

    def add_source(self, name: str, source: Source) -> None:
        self._sources[name] = source

    def remove_source(self, name: str) -> None:
        self._sources.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        for source in list(self._sources.values()):
            yield from source()

    def render(self) -> bytes:
        return generate_latest(self.registry)
