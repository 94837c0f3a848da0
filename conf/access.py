"""Client access lists: the `allow` key of `[[http]]`, `[[smtp]]` and `[[tcp]]`.

An entry is a CIDR (`"10.0.0.0/8"`, `"192.0.2.7"` = /32) that admits the clients in it, or
the same with `!` in front (`"!10.1.2.3"`), which refuses them. The entries are read in
order and the first one that holds the client's address decides; a client no entry holds is
refused. This is nginx's `allow`/`deny` (first match wins, in order) with an implied
`deny all` at the end, which nginx does not have (nginx admits what no rule names). An IPv6
client with an IPv4-mapped address (`::ffff:a.b.c.d`) is matched as the IPv4 address.

Two list shapes are refused by `check` because they cannot mean what their author meant:
an entry that earlier entries decide entirely with the opposite verdict (it never applies:
`["0.0.0.0/0", "!10.1.2.3"]` admits 10.1.2.3), and a deny entry that no later entry would
admit anything of (the implied end refuses those clients anyway; an nginx user who wrote
`["!10.1.2.3"]` expected everyone else to be admitted, and nobody is).

The model lives here; `proxy.access.ClientFilter` is the matcher the listeners use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Deny:
    """An entry that refuses the clients in `network` (written `"!CIDR"`)."""

    network: IPNetwork

    def __str__(self) -> str:
        return f"!{self.network}"


AccessEntry = IPNetwork | Deny
EVERYONE: tuple[AccessEntry, ...] = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0"))


def network_of(entry: AccessEntry) -> IPNetwork:
    return entry.network if isinstance(entry, Deny) else entry


def admits(entry: AccessEntry) -> bool:
    return not isinstance(entry, Deny)


def parse_entry(text: str) -> AccessEntry:
    """`"CIDR"` or `"!CIDR"`; raises ValueError with the reason."""
    deny = text.startswith("!")
    body = text[1:].strip() if deny else text
    net = ipaddress.ip_network(body, strict=True)
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        v4 = f"{ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)}/{max(net.prefixlen - 96, 0)}"
        raise ValueError(f"IPv4-mapped clients are matched as IPv4: write {'!' if deny else ''}{v4}")
    return Deny(net) if deny else net


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def client_address(ip: str) -> IPAddress | None:
    """The address a peer string is matched as (zone dropped, IPv4-mapped made IPv4)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", maxsplit=1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def decide(entries: Sequence[AccessEntry], addr: IPAddress) -> bool:
    """First match wins; no match refuses."""
    for entry in entries:
        if isinstance(entry, Deny):
            if addr in entry.network:
                return False
        elif addr in entry:
            return True
    return False


def _uncovered(net: IPNetwork, earlier: Sequence[IPNetwork]) -> list[IPNetwork]:
    """The parts of `net` that none of `earlier` holds."""
    rest = [net]
    for other in earlier:
        if other.version != net.version:
            continue
        pieces: list[IPNetwork] = []
        for piece in rest:
            if piece.subnet_of(other):  # type: ignore[arg-type]
                continue
            if other.subnet_of(piece):  # type: ignore[arg-type]
                pieces.extend(piece.address_exclude(other))  # type: ignore[arg-type]
            else:
                pieces.append(piece)
        rest = pieces
        if not rest:
            break
    return rest


def problems(entries: Sequence[AccessEntry]) -> list[tuple[int, str]]:
    """(index, reason) for each entry that cannot mean what it says (see the module doc)."""
    out: list[tuple[int, str]] = []
    nets = [network_of(e) for e in entries]
    for i, entry in enumerate(entries):
        net = nets[i]
        if not _uncovered(net, nets[:i]):
            opposite = next(
                (j for j in range(i) if admits(entries[j]) != admits(entry) and _overlap(nets[j], net)), None
            )
            if opposite is not None:
                verb = "admits" if admits(entries[opposite]) else "refuses"
                out.append(
                    (
                        i,
                        f"never applies: the entries before it decide every address of {net} "
                        f"(first match wins; [{opposite}] {entries[opposite]} {verb} them); "
                        f"put it before [{opposite}]",
                    )
                )
                continue
        if isinstance(entry, Deny) and not any(
            admits(entries[k]) and _overlap(nets[k], net) for k in range(i + 1, len(entries))
        ):
            everything = "0.0.0.0/0" if net.version == 4 else "::/0"
            out.append(
                (
                    i,
                    f"refuses nothing: no later entry admits any of {net}, and clients no entry "
                    f'admits are refused anyway; to admit everyone else, add "{everything}" after it',
                )
            )
    return out


def _overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


def without_idle_entries(entries: Sequence[AccessEntry]) -> list[AccessEntry]:
    """The same decisions with the entries `problems` names left out (those that never apply
    and deny entries that refuse nothing the end would not refuse): for converters, whose
    input may hold such entries and still mean exactly this."""
    kept = list(entries)
    while True:
        found = problems(kept)
        if not found:
            return kept
        del kept[found[0][0]]


__all__ = [
    "EVERYONE",
    "AccessEntry",
    "Deny",
    "admits",
    "client_address",
    "decide",
    "network_of",
    "parse_entry",
    "problems",
    "without_idle_entries",
]
