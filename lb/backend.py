"""One real server at run time (`Backend`), and name resolution for pools.

Kept apart from lb.pool so the state of a server reads in one place; lb.pool
re-exports both names.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from dataclasses import dataclass, field
from typing import Any

from lb import sched
from lb.health import HealthState


@dataclass(eq=False)
class Backend:
    """One real server (or the sorry server) at run time."""

    host: str  # resolved IP literal
    port: int
    configured: str  # the address as written in the config ("www.example.com:80")
    weight: int = 1  # current weight: configured, or set at run time by the admin API
    is_sorry: bool = False
    up: bool = True
    active: int = 0
    total: int = 0
    connect_failures: int = 0
    max_connections: int = 0  # 0 = unlimited
    config_weight: int = 1
    sched_weight: int = sched.SCALE  # what the scheduler uses (x SCALE, slow-start ramp)
    in_table: bool = True  # False while removed (on_failure = "remove")
    picks: int = 0
    bytes_in: int = 0  # client -> server
    bytes_out: int = 0  # server -> client
    checks: int = 0
    check_failures: int = 0
    check_duration: float = 0.0
    last_check: dict[str, Any] | None = None
    health: HealthState = field(default_factory=HealthState)
    up_since: float | None = None  # start of a slow-start ramp
    slot: int = -1  # column in the workers' shared connection counts (lb.shared); -1: none
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_weight(self) -> float:
        """The weight the scheduler applies, in configured units (0 when down)."""
        return self.sched_weight / sched.SCALE if self.up and self.in_table else 0.0

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # host and port never change (a server that moves becomes a new Backend):
    # the connect path reuses these instead of rebuilding them per connection.
    @functools.cached_property
    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @functools.cached_property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


async def resolve(host: str, port: int) -> list[str]:
    """Every address a name resolves to (A and AAAA), in resolver order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for *_, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip not in seen:
            seen.append(ip)
    return seen
