"""When to order which certificate: the deciding half of automatic HTTPS, no I/O, no clock.

Everything here takes `now` (epoch seconds) and, where it draws, a number in [0, 1) from the
caller, so tests drive it with a fake clock and fixed draws. The I/O side
(proxy/acme/service.py) asks `due(now)`, orders what it is told, and reports back with
`issued` or `failed`.

The rules are the ones Let's Encrypt asks clients to follow and Caddy and certbot follow:
- renew at two thirds of the lifetime (certbot: 30 days before the end of a 90-day
  certificate; Caddy: when a third of the lifetime is left), or at the time the CA's
  renewal information (ARI, RFC 9773) suggests, which wins when the CA has it;
- a failure is retried after a delay that doubles from `retry_min` up to `retry_max`,
  with jitter (half fixed, half drawn) so that many sekishos do not retry in step, and
  never before the CA's Retry-After.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import conf

RENEW_FRACTION = 2 / 3  # of the lifetime, from notBefore
RETRY_MIN = 60.0  # first retry after a failed order (Caddy: 1 minute)
RETRY_MAX = 6 * 3600.0  # then doubling up to this (Caddy's later retries: every 6 hours)
ARI_RECHECK = 6 * 3600.0  # RFC 9773 4.3.3: without Retry-After, ask again after six hours


@dataclass(frozen=True)
class Hosts:
    """The names of the ACME listeners: those we can order, and wildcards we cannot."""

    managed: tuple[str, ...]  # exact host names, lower-case, each once, in config order
    need_dns01: tuple[str, ...]  # "*.example.com": only DNS-01 proves them (out of scope)


def hosts_for(config: conf.Config) -> Hosts:
    """Every exact host named in a route of an HTTPS listener that says `acme = true`."""
    managed: dict[str, None] = {}
    wildcards: dict[str, None] = {}
    for listener in config.http:
        if not listener.acme:
            continue
        for route in listener.routes:
            if route.host is None:
                continue
            if route.host.startswith("*."):
                wildcards[route.host] = None
            else:
                managed[route.host] = None
    return Hosts(tuple(managed), tuple(wildcards))


def renewal_time(not_before: float, not_after: float, ari_time: float | None = None) -> float:
    """When to renew a certificate valid from `not_before` to `not_after`.

    `ari_time`: the moment the CA's renewal information picked (a random point of its
    suggested window, RFC 9773 4.2); it wins over the fixed fraction when given."""
    if ari_time is not None:
        return min(ari_time, not_after)
    return not_before + (not_after - not_before) * RENEW_FRACTION


def retry_delay(
    failures: int,
    draw: float,
    retry_after: float | None = None,
    retry_min: float = RETRY_MIN,
    retry_max: float = RETRY_MAX,
) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 for the first).

    Equal jitter: half of the doubled delay is fixed, the other half is `draw` of it;
    the CA's Retry-After (rate limits, RFC 8555 6.6) is a floor."""
    base = min(retry_max, retry_min * 2.0 ** max(0, failures - 1))
    delay = base / 2 + draw * base / 2
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


@dataclass
class Record:
    """What the planner knows about one host's certificate."""

    host: str
    not_before: float | None = None  # of the certificate being served, if any
    not_after: float | None = None
    renew_at: float = 0.0  # order when now >= renew_at (0: no certificate, order now)
    next_try: float = 0.0  # not before this (after a failure)
    failures: int = 0  # in a row, since the last success
    last_error: str = ""
    ari_check: float = math.inf  # when to ask the CA's renewal information again

    @property
    def has_certificate(self) -> bool:
        return self.not_after is not None

    def state(self, now: float) -> str:
        """One word for status pages: missing, valid, renewing, expired, failing."""
        if self.not_after is None:
            return "failing" if self.failures else "missing"
        if now >= self.not_after:
            return "expired"
        if self.failures:
            return "failing"
        return "renewing" if now >= self.renew_at else "valid"


class Planner:
    """The certificate state of every managed host and what to do next."""

    def __init__(self, retry_min: float = RETRY_MIN, retry_max: float = RETRY_MAX) -> None:
        self.records: dict[str, Record] = {}
        self.retry_min = retry_min
        self.retry_max = retry_max

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """The hosts to keep certificates for (a reload may add or drop some)."""
        wanted = list(hosts)
        self.records = {h: self.records.get(h) or Record(h) for h in wanted}

    def have(self, host: str, not_before: float, not_after: float, ari_time: float | None = None) -> None:
        """A certificate for `host` is being served (found on disk, or just issued)."""
        record = self.records.get(host)
        if record is None:
            return
        record.not_before, record.not_after = not_before, not_after
        record.renew_at = renewal_time(not_before, not_after, ari_time)

    def ari(self, host: str, ari_time: float | None, next_check: float) -> None:
        """The CA's renewal information for `host`'s certificate (None: the CA has none)."""
        record = self.records.get(host)
        if record is None or record.not_before is None or record.not_after is None:
            return
        record.renew_at = renewal_time(record.not_before, record.not_after, ari_time)
        record.ari_check = next_check

    def issued(self, host: str, not_before: float, not_after: float, now: float) -> None:
        record = self.records.get(host)
        if record is None:
            return
        self.have(host, not_before, not_after)
        record.failures = 0
        record.next_try = 0.0
        record.last_error = ""
        record.ari_check = now  # ask the CA about the new certificate at once

    def failed(
        self, host: str, now: float, draw: float, error: str, retry_after: float | None = None
    ) -> float:
        """An order for `host` failed: returns the delay before the next try."""
        record = self.records.get(host)
        if record is None:
            return 0.0
        record.failures += 1
        record.last_error = error
        delay = retry_delay(record.failures, draw, retry_after, self.retry_min, self.retry_max)
        record.next_try = now + delay
        return delay

    def due(self, now: float) -> list[str]:
        """Hosts to order now: no certificate or time to renew, and not backing off."""
        return [r.host for r in self.records.values() if now >= r.renew_at and now >= r.next_try]

    def ari_due(self, now: float) -> list[str]:
        """Hosts whose certificate's renewal information should be asked for now."""
        return [r.host for r in self.records.values() if r.has_certificate and now >= r.ari_check]

    def next_wake(self, now: float) -> float:
        """The earliest moment something becomes due (inf: nothing to do)."""
        wake = math.inf
        for r in self.records.values():
            wake = min(wake, max(r.renew_at, r.next_try), r.ari_check if r.has_certificate else math.inf)
        return max(wake, now)
