"""`ClientFilter`: the one matcher for every listener's `allow` (HTTP, SMTP, TCP) and for
`trusted_proxies`.

The rule is conf.access's (entries in order, first match wins, no match refuses); this adds
what a listener needs on its accept path: a list that admits everyone answers at once, and
a verdict is cached per peer string (bounded), so a client that reconnects costs one dict
lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

from conf.access import AccessEntry, Deny, client_address, decide

_CACHE_LIMIT = 4096


class ClientFilter:
    __slots__ = ("_cache", "entries", "everyone")

    def __init__(self, entries: Sequence[AccessEntry]) -> None:
        self.entries = tuple(entries)
        # Everyone is admitted when 0.0.0.0/0 and ::/0 both come before any deny entry.
        whole: set[int] = set()
        for entry in self.entries:
            if isinstance(entry, Deny):
                break
            if entry.prefixlen == 0:
                whole.add(entry.version)
        self.everyone = whole == {4, 6}
        self._cache: dict[str, bool] = {}

    def admits(self, ip: str) -> bool:
        """May the peer with this address string (as the socket gives it) connect?"""
        if self.everyone:
            return True
        verdict = self._cache.get(ip)
        if verdict is None:
            addr = client_address(ip)
            verdict = addr is not None and decide(self.entries, addr)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[ip] = verdict
        return verdict


__all__ = ["ClientFilter"]
