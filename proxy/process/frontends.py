"""Build the front ends of one config: which runtime serves which section.

Each area (http, smtp, tcp) lives in its own module; this is the one place that
knows them all. A section whose runtime is not in this build is refused with a
clear message instead of being ignored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import conf
from lb.pool import PoolSet
from proxy.listener import Frontend


class RuntimeMissing(Exception):
    """A config section whose runtime this build does not have."""


@dataclass(frozen=True)
class Section:
    kind: str  # "http" | "smtp" | "tcp"
    index: int
    config: Any  # conf.HttpListener | conf.SmtpListener | conf.TcpService

    @property
    def path(self) -> str:
        return f"{self.kind}[{self.index}]"

    @property
    def name(self) -> str:
        """The stable name of a listener across reloads: its first address."""
        return str(self.config.listen[0])


def sections(config: conf.Config) -> Iterator[Section]:
    for kind, items in (("http", config.http), ("smtp", config.smtp), ("tcp", config.tcp)):
        for i, item in enumerate(items):
            yield Section(kind, i, item)


# kind -> (module, frontend class, stats class)
_RUNTIMES = {
    "http": ("proxy.http", "HttpFrontend", "HttpStats"),
    "smtp": ("proxy.smtp", "SmtpFrontend", "SmtpStats"),
    "tcp": ("proxy.tcp", "TcpFrontend", "TcpStats"),
}


def _runtime(kind: str) -> tuple[Callable[..., Frontend], Callable[[], Any]]:
    module_name, frontend_name, stats_name = _RUNTIMES[kind]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, frontend_name), getattr(module, stats_name)
    except (ImportError, AttributeError):
        raise RuntimeMissing(f"[[{kind}]] sections are not supported by this build yet") from None


def check_runtimes(config: conf.Config) -> list[str]:
    """Every section this build cannot run, as 'path: reason'."""
    problems = []
    for section in sections(config):
        try:
            _runtime(section.kind)
        except RuntimeMissing as exc:
            problems.append(f"{section.path}: {exc}")
    return problems


class StatsBook:
    """Per-listener counters that outlive reloads, keyed by kind and listener name."""

    def __init__(self) -> None:
        self.by_kind: dict[str, dict[str, Any]] = {"http": {}, "smtp": {}, "tcp": {}}

    def get(self, section: Section) -> Any:
        book = self.by_kind[section.kind]
        if section.name not in book:
            _, stats_cls = _runtime(section.kind)
            book[section.name] = stats_cls()
        return book[section.name]

    def prune(self, names: set[tuple[str, str]]) -> None:
        for kind, book in self.by_kind.items():
            for name in list(book):
                if (kind, name) not in names:
                    del book[name]


def build_frontend(section: Section, pools: PoolSet, stats: StatsBook, access_log: Any) -> Frontend:
    frontend_cls, _ = _runtime(section.kind)
    if section.kind == "http":
        return frontend_cls(section.config, pools, stats.get(section), access_log)
    return frontend_cls(section.config, pools, stats.get(section), access_log=access_log)  # session lines
