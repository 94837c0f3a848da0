"""Counters for one [[smtp]] listener; they outlive reloads (the daemon keeps them)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("relayed", "rejected_relay", "temp_fail", "error")
NO_ROUTE = "-"


@dataclass
class SmtpStats:
    connections: int = 0  # accepted
    refused_connections: int = 0  # not in `allow`
    transactions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, outcome)
    recipients_rejected: Counter[str] = field(default_factory=Counter)  # reason
    starttls: int = 0
    starttls_failures: int = 0
    bytes_relayed: Counter[str] = field(default_factory=Counter)  # route -> message bytes
    backend_connect_failures: Counter[str] = field(default_factory=Counter)  # pool
    # (pool, server) -> times a server was skipped: the route asks for XCLIENT, it does not offer it
    xclient_refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    timeouts: int = 0
    rejected_commands: Counter[str] = field(default_factory=Counter)  # tag

    def outcome(self, route: str, outcome: str) -> None:
        self.transactions[(route, outcome)] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "refused_connections": self.refused_connections,
            "transactions": [
                {"route": r, "outcome": o, "count": n} for (r, o), n in sorted(self.transactions.items())
            ],
            "recipients_rejected": dict(self.recipients_rejected),
            "starttls": self.starttls,
            "starttls_failures": self.starttls_failures,
            "bytes_relayed": dict(self.bytes_relayed),
            "backend_connect_failures": dict(self.backend_connect_failures),
            "xclient_refused": [
                {"pool": p, "server": s, "count": n} for (p, s), n in sorted(self.xclient_refused.items())
            ],
            "timeouts": self.timeouts,
            "rejected_commands": dict(self.rejected_commands),
        }
