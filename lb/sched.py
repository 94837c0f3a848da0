"""Schedulers: which server gets the next connection (ipvsadm's -s names).

Plain classes, no asyncio, after HAProxy's `struct lb_ops`: the pool tells a
scheduler about membership, up/down and weight changes; `take`/`drop` tell it
a connection was assigned or finished (the live count is `Backend.active`);
`pick(client, exclude)` chooses. Weights here are the pool's *scheduling*
weights (configured weight x `SCALE`, ramped during slow start); a server with
weight 0, marked down, excluded or at its `max_connections` is never picked.

    rr    round robin
    wrr   smooth weighted round robin (nginx): 3:1 gives A A B A, not A A A B
    lc    least active connections (ties rotate)
    wlc   least (active + 1) / weight
    sh    source hash over a 256-bucket weighted table; falls back to the next
          bucket when the hashed server is unusable (ipvsadm sh-fallback)
    mh    Maglev consistent hashing; table of prime size >= 100 x servers
    lblc  the same client to the same server unless it is unusable or holds
          more than twice its weighted share of the connections; else wlc

lblc differs from IPVS's on purpose. IPVS keys its table on the *destination*
address (it was made for transparent cache clusters, where each client asks for
many origin servers and one cache should hold each origin); behind a reverse
proxy every connection has the same destination, the VIP, so that key would send
everything to one server. sekisho keys on the *client* address: a client stays on
its server, which keeps a cache warm for it. Also unlike IPVS: "overloaded" is
twice the server's weighted share of the pool's active connections (IPVS: more
active connections than its weight while another server is at half its own), and
the table is the 65,536 most recent clients (IPVS expires entries after
lblc_expiration, 24 h). `sekisho convert keepalived` says so for lblc and lblcr.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb.pool import Backend

SCALE = 16  # scheduling weight units per configured weight (slow start granularity)


def _hash(text: str, salt: bytes = b"") -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, salt=salt).digest(), "big")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def next_prime(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n


class Scheduler:
    """Membership, weights and up state; subclasses implement `pick`."""

    name = "first"
    uses_counts = False  # picks by `Backend.active` (lc, wlc, lblc)

    def __init__(self) -> None:
        self.members: list[Backend] = []
        self.weights: dict[Backend, int] = {}
        self.up: dict[Backend, bool] = {}

    # -- membership and state (called by the pool) -------------------------
    def add(self, backend: Backend, weight: int | None = None, up: bool = True) -> None:
        if backend in self.weights:
            return
        self.members.append(backend)
        self.weights[backend] = backend.weight * SCALE if weight is None else weight
        self.up[backend] = up
        self._changed()

    def remove(self, backend: Backend) -> None:
        if backend not in self.weights:
            return
        self.members.remove(backend)
        del self.weights[backend]
        del self.up[backend]
        self._changed()

    def set_up(self, backend: Backend) -> None:
        self.up[backend] = True
        self._changed()

    def set_down(self, backend: Backend) -> None:
        self.up[backend] = False
        self._changed()

    def set_weight(self, backend: Backend, weight: int) -> None:
        if self.weights.get(backend) != weight:
            self.weights[backend] = weight
            self._changed()

    def take(self, backend: Backend) -> None:
        """A connection was assigned (the count itself is `backend.active`)."""

    def drop(self, backend: Backend) -> None:
        """A connection finished."""

    def _changed(self) -> None:
        """Hook for schedulers that precompute tables."""

    # -- choosing ------------------------------------------------------------
    def weight(self, backend: Backend) -> int:
        return self.weights[backend] if self.up[backend] else 0

    def usable(self, b: Backend, exclude: Collection[Backend] = ()) -> bool:
        return (
            self.up[b]
            and self.weights[b] > 0
            and (b.max_connections == 0 or b.active < b.max_connections)
            and b not in exclude
        )

    def pick(self, client: str | None, exclude: Collection[Backend] = ()) -> Backend | None:
        for b in self.members:
            if self.usable(b, exclude):
                return b
        return None


class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def pick(self, client: str | None, exclude: Collection[Backend] = ()) -> Backend | None:
        members = self.members
        n = len(members)
        if n == 1:  # a pool of one server, picked per request: no turn to take
            b = members[0]
            if self.usable(b, exclude):
                self._next = 1  # as the loop leaves it
                return b
            return None
        for i in range(n):
            idx = (self._next + i) % n
            b = members[idx]
            if self.usable(b, exclude):
                self._next = idx + 1
                return b
        return None


class WeightedRoundRobin(Scheduler):
    """Smooth weighted round robin: every pick adds each weight to its server's
    current value, picks the highest and subtracts the total from it."""

    name = "wrr"

    def __init__(self) -> None:
        super().__init__()
        self._current: dict[Backend, int] = {}

    def _changed(self) -> None:
        self._current = {b: self._current.get(b, 0) for b in self.members}

    def set_weight(self, backend: Backend, weight: int) -> None:
        if self.weights.get(backend) != weight:
            self._current[backend] = 0
        super().set_weight(backend, weight)

    def pick(self, client: str | None, exclude: Collection[Backend] = ()) -> Backend | None:
        best: Backend | None = None
        best_cur = 0
        total = 0
        current = self._current
        for b in self.members:
            if not self.usable(b, exclude):
                continue
            w = self.weights[b]
            cur = current[b] + w
            current[b] = cur
            total += w
            if best is None or cur > best_cur:
                best, best_cur = b, cur
        if best is not None:
            current[best] -= total
        return best


class LeastConnection(Scheduler):
    name = "lc"
    uses_counts = True

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def _better(self, a: Backend, b: Backend) -> bool:
        """Is `a` strictly less loaded than `b`?"""
        return a.active < b.active

    def pick(self, client: str | None, exclude: Collection[Backend] = ()) -> Backend | None:
        members = self.members
        n = len(members)
        best: Backend | None = None
        best_idx = 0
        for i in range(n):
            idx = (self._next + i) % n
            b = members[idx]
            if self.usable(b, exclude) and (best is None or self._better(b, best)):
                best, best_idx = b, idx
        if best is not None:
            self._next = best_idx + 1
        return best


class WeightedLeastConnection(LeastConnection):
    name = "wlc"

    def _better(self, a: Backend, b: Backend) -> bool:
        return (a.active + 1) * self.weights[b] < (b.active + 1) * self.weights[a]


class _Table(Scheduler):
    """Schedulers with a lookup table rebuilt when usable members change."""

    def __init__(self) -> None:
        super().__init__()
        self.table: list[Backend] = []
        self._signature: tuple[tuple[int, int], ...] | None = None
        self._fallback = RoundRobin()

    def _eligible(self) -> list[Backend]:
        return [b for b in self.members if self.up[b] and self.weights[b] > 0]

    def _ensure(self) -> None:
        eligible = self._eligible()
        # Configured weights, not slow-start ramps: tables stay put while ramping.
        sig = tuple((id(b), max(1, b.weight)) for b in eligible)
        if sig != self._signature:
            self._signature = sig
            self.table = self._build(eligible) if eligible else []

    def _build(self, eligible: list[Backend]) -> list[Backend]:
        raise NotImplementedError

    def _changed(self) -> None:
        self._signature = None
        fb = self._fallback
        fb.members, fb.weights, fb.up = self.members, self.weights, self.up

    def _lookup(self, h: int, exclude: Collection[Backend]) -> Backend | None:
        if self._signature is None:
            self._ensure()
        table = self.table
        size = len(table)
        if not size:
            return None
        start = h % size
        for i in range(size):
            b = table[(start + i) % size]
            if self.usable(b, exclude):
                return b
        return None

    def pick(self, client: str | None, exclude: Collection[Backend] = ()) -> Backend | None:
        if client is None:
            return self._fallback.pick(None, exclude)
        return self._lookup(_hash(client), exclude)


class SourceHash(_Table):
    name = "sh"
    SIZE = 256

    def _build(self, eligible: list[Backend]) -> list[Backend]:
        table: list[Backend] = []
        while len(table) < self.SIZE:
            for b in eligible:
                table.extend([b] * max(1, b.weight))
        return table[: self.SIZE]


class Maglev(_Table):
    """Maglev (Eisenbud et al., NSDI 2016) with IPVS-style weights: in each
    round a server claims `weight / gcd` slots in a row."""

    name = "mh"
    MIN_SIZE = 1009

    def __init__(self) -> None:
        super().__init__()
        self.size = self.MIN_SIZE

    def _size_for(self, n: int) -> int:
        # Fixed while the member count does not outgrow it: a stable size is
        # what makes removals cheap.
        if self.size < 100 * n:
            self.size = next_prime(100 * n)
        return self.size

    def _build(self, eligible: list[Backend]) -> list[Backend]:
        m = self._size_for(len(self.members))
        weights = [max(1, b.weight) for b in eligible]
        g = 0
        for w in weights:
            g = _gcd(g, w)
        turns = [w // g for w in weights]
        offsets = []
        skips = []
        for b in eligible:
            offsets.append(_hash(b.key, b"offset") % m)
            skips.append(_hash(b.key, b"skip") % (m - 1) + 1)
        nxt = [0] * len(eligible)
        entry: list[int] = [-1] * m
        filled = 0
        while True:
            for i in range(len(eligible)):
                for _ in range(turns[i]):
                    c = (offsets[i] + nxt[i] * skips[i]) % m
                    while entry[c] >= 0:
                        nxt[i] += 1
                        c = (offsets[i] + nxt[i] * skips[i]) % m
                    entry[c] = i
                    nxt[i] += 1
                    filled += 1
                    if filled == m:
                        return [eligible[i] for i in entry]


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


class LocalityLeastConnection(WeightedLeastConnection):
    name = "lblc"
    MAX_ENTRIES = 65536

    def __init__(self) -> None:
        super().__init__()
        self.assigned: OrderedDict[str, Backend] = OrderedDict()

    def overloaded(self, b: Backend) -> bool:
        """More than twice its weighted share of the pool's active connections."""
        if b.active < 2:
            return False
        total_active = 0
        total_weight = 0
        for m in self.members:
            if self.up[m] and self.weights[m] > 0:
                total_active += m.active
                total_weight += self.weights[m]
        return b.active * total_weight > 2 * total_active * self.weights[b]

    def remove(self, backend: Backend) -> None:
        super().remove(backend)
        for client in [c for c, b in self.assigned.items() if b is backend]:
            del self.assigned[client]

    def pick(self, client: str | None, exclude: Collection[Backend] = ()) -> Backend | None:
        if client is None:
            return super().pick(None, exclude)
        b = self.assigned.get(client)
        if b is not None and self.usable(b, exclude) and not self.overloaded(b):
            self.assigned.move_to_end(client)
            return b
        b = super().pick(client, exclude)
        if b is not None:
            self.assigned[client] = b
            self.assigned.move_to_end(client)
            if len(self.assigned) > self.MAX_ENTRIES:
                self.assigned.popitem(last=False)
        return b


SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnection,
        WeightedLeastConnection,
        SourceHash,
        Maglev,
        LocalityLeastConnection,
    )
}


def make(name: str) -> Scheduler:
    return SCHEDULERS[name]()
