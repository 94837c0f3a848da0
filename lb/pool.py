"""Runtime backend pools: the one object HTTP, SMTP and TCP ask for a server.

The contract every front end uses (keep it stable):

    backend = pool.pick(client_ip, exclude=tried)   # None: nothing up, no sorry server
    pool.take(backend)                              # a connection/request is assigned
    ...                                             # connect with lb.dial.open_connection
    pool.connect_failed(backend)                    # passive health: counts as a failed check
    pool.drop(backend)                              # the connection/request is over

`PoolSet` holds every pool of one config and carries health state and
connection counts across reloads for pools whose servers did not change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import conf


@dataclass(eq=False)
class Backend:
    """One real server (or the sorry server) at run time."""

    host: str  # resolved IP literal
    port: int
    configured: str  # the address as written in the config ("www.example.com:80")
    weight: int = 1
    is_sorry: bool = False
    up: bool = True
    active: int = 0
    total: int = 0
    connect_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_weight(self) -> int:
        return self.weight if self.up else 0

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class BackendPool:
    """Minimal pool: the first up server. The lb issue replaces the internals."""

    def __init__(self, config: conf.Pool) -> None:
        self.config = config
        self.name = config.name
        self.backends = [
            Backend(s.address.host, s.address.port, str(s.address), s.weight) for s in config.servers
        ]
        self.sorry: Backend | None = None
        if config.sorry_server is not None:
            a = config.sorry_server
            self.sorry = Backend(a.host, a.port, str(a), 1, is_sorry=True)

    @property
    def proxy_protocol(self) -> str | None:
        return self.config.proxy_protocol

    def pick(self, client_ip: str | None = None, exclude: Collection[Backend] = ()) -> Backend | None:
        for b in self.backends:
            if b.up and b.weight > 0 and b not in exclude:
                return b
        if self.sorry is not None and self.sorry not in exclude:
            return self.sorry
        return None

    def take(self, backend: Backend) -> None:
        backend.active += 1
        backend.total += 1

    def drop(self, backend: Backend) -> None:
        backend.active -= 1

    def connect_failed(self, backend: Backend) -> None:
        backend.connect_failures += 1

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scheduler": self.config.scheduler,
            "servers": [
                {
                    "address": b.key,
                    "configured": b.configured,
                    "up": b.up,
                    "weight": b.weight,
                    "effective_weight": b.effective_weight,
                    "active": b.active,
                    "total": b.total,
                    "connect_failures": b.connect_failures,
                    "sorry": b.is_sorry,
                }
                for b in [*self.backends, *([self.sorry] if self.sorry else [])]
            ],
        }


class PoolSet(Mapping[str, BackendPool]):
    """Every pool of one config, keyed by name."""

    def __init__(self, pools: Mapping[str, conf.Pool]) -> None:
        self._pools = {name: BackendPool(p) for name, p in pools.items()}

    def __getitem__(self, name: str) -> BackendPool:
        return self._pools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def reconcile(self, pools: Mapping[str, conf.Pool]) -> None:
        """Apply a reloaded config: unchanged pools keep their runtime state."""
        fresh: dict[str, BackendPool] = {}
        for name, p in pools.items():
            old = self._pools.get(name)
            fresh[name] = old if old is not None and old.config == p else BackendPool(p)
        self._pools = fresh

    async def start(self) -> None:
        """Start health checks and name resolution (lb issue)."""

    async def stop(self) -> None:
        """Stop background work."""

    def stats(self) -> list[dict[str, Any]]:
        return [p.stats() for p in self._pools.values()]
