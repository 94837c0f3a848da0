"""Typed reads from a TOML table that record every problem with its key path.

`Table` wraps one TOML table: each `get_*` call returns the value or the
default, and on a wrong value records an issue and returns the default, so a
single pass finds every error. `done()` reports keys nobody asked for.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeVar

from conf.access import AccessEntry, parse_entry
from conf.errors import ConfigIssue
from conf.model import Address, IPAddress, IPInterface, IPNetwork

T = TypeVar("T")

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*\.?$",
    re.I,
)

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


class Issues:
    """The list of issues found so far, shared by every Table of one load."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(ConfigIssue(path, message))


_MISSING: Any = object()


class Table:
    def __init__(self, raw: object, path: str, issues: Issues) -> None:
        self.path = path
        self.issues = issues
        if not isinstance(raw, dict):
            issues.add(path, f"expected a table, got {_toml_type(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> None:
        self.issues.add(self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.raw

    def _get(self, name: str, kinds: tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.raw:
            if default is _MISSING:
                self.error(name, "required")
                return None
            return default
        value = self.raw[name]
        # TOML booleans are ints in Python: never accept one for the other.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.error(name, f"expected {want}, got {_toml_type(value)}")
            return None if default is _MISSING else default
        return value

    def get_str(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, (str,), default)

    def get_bool(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, (bool,), default)

    def get_int(
        self, name: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None
    ) -> Any:
        value = self._get(name, (int,), default)
        if isinstance(value, int) and name in self.raw and not _in_range(value, lo, hi):
            self.error(name, _range_message(lo, hi))
            return default if default is not _MISSING else None
        return value

    def get_float(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        lo: float | None = None,
        hi: float | None = None,
        positive: bool = False,
    ) -> Any:
        value = self._get(name, (int, float), default)
        if value is None or name not in self.raw:
            return value
        value = float(value)
        if positive and value <= 0:
            self.error(name, "must be > 0")
            return default if default is not _MISSING else None
        if not _in_range(value, lo, hi):
            self.error(name, _range_message(lo, hi))
            return default if default is not _MISSING else None
        return value

    def get_choice(self, name: str, choices: tuple[Any, ...], default: Any = _MISSING) -> Any:
        kinds = (int,) if all(isinstance(c, int) for c in choices) else (str,)
        value = self._get(name, kinds, default)
        if name in self.raw and value is not None and value not in choices:
            shown = " | ".join(repr(c) if isinstance(c, str) else str(c) for c in choices)
            self.error(name, f"must be one of {shown}, got {value!r}")
            return default if default is not _MISSING else None
        return value

    def get_table(self, name: str) -> Table | None:
        self.seen.add(name)
        if name not in self.raw:
            return None
        return Table(self.raw[name], self.key(name), self.issues)

    def get_list(
        self,
        name: str,
        item: Callable[[object, str], T | None],
        default: Any = _MISSING,
        *,
        allow_scalar: bool = False,
    ) -> Any:
        """A list whose items are converted by `item(value, path)`; bad items are dropped."""
        self.seen.add(name)
        if name not in self.raw:
            if default is _MISSING:
                self.error(name, "required")
                return ()
            return default
        raw = self.raw[name]
        if allow_scalar and not isinstance(raw, list):
            converted = item(raw, self.key(name))
            return () if converted is None else (converted,)
        if not isinstance(raw, list):
            self.error(name, f"expected an array, got {_toml_type(raw)}")
            return default if default is not _MISSING else ()
        out: list[T] = []
        for i, value in enumerate(raw):
            converted = item(value, f"{self.key(name)}[{i}]")
            if converted is not None:
                out.append(converted)
        return tuple(out)

    def done(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.error(name, "unknown key")


def _in_range(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _range_message(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}"
    if lo is not None:
        return f"must be >= {lo}"
    return f"must be <= {hi}"


# ------------------------------------------------------------- item converters
# Each takes (raw value, key path, issues) and returns the value or None.


def parse_address(text: str) -> Address:
    """`ip:port`, `[ipv6]:port` or `hostname:port`; raises ValueError."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("want [ipv6]:port")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError("want host:port")
        if ":" in host:
            raise ValueError("an IPv6 address needs brackets: [ipv6]:port")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} must be 1-65535")
    return Address(host.lower(), int(port))


def address_item(issues: Issues) -> Callable[[object, str], Address | None]:
    def convert(value: object, path: str) -> Address | None:
        if not isinstance(value, str):
            issues.add(path, f'expected a string "host:port", got {_toml_type(value)}')
            return None
        try:
            return parse_address(value)
        except ValueError as exc:
            issues.add(path, f"bad address {value!r}: {exc}")
            return None

    return convert


def network_item(issues: Issues) -> Callable[[object, str], IPNetwork | None]:
    def convert(value: object, path: str) -> IPNetwork | None:
        if not isinstance(value, str):
            issues.add(path, f"expected a CIDR string, got {_toml_type(value)}")
            return None
        try:
            return ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            issues.add(path, f"bad CIDR {value!r}: {exc}")
            return None

    return convert


def access_item(issues: Issues) -> Callable[[object, str], AccessEntry | None]:
    """An `allow` entry: "CIDR" admits, "!CIDR" refuses (conf.access)."""

    def convert(value: object, path: str) -> AccessEntry | None:
        if not isinstance(value, str):
            issues.add(path, f'expected a CIDR string ("10.0.0.0/8", "!10.1.2.3"), got {_toml_type(value)}')
            return None
        try:
            return parse_entry(value)
        except ValueError as exc:
            issues.add(path, f"bad CIDR {value!r}: {exc}")
            return None

    return convert


def interface_item(issues: Issues) -> Callable[[object, str], IPInterface | None]:
    def convert(value: object, path: str) -> IPInterface | None:
        if not isinstance(value, str):
            issues.add(path, f'expected "ip/prefix", got {_toml_type(value)}')
            return None
        try:
            return ipaddress.ip_interface(value)
        except ValueError as exc:
            issues.add(path, f"bad address {value!r}: {exc}")
            return None

    return convert


def ip_item(issues: Issues) -> Callable[[object, str], IPAddress | None]:
    def convert(value: object, path: str) -> IPAddress | None:
        if not isinstance(value, str):
            issues.add(path, f"expected an IP address string, got {_toml_type(value)}")
            return None
        try:
            return ipaddress.ip_address(value)
        except ValueError as exc:
            issues.add(path, f"bad IP address {value!r}: {exc}")
            return None

    return convert


def string_item(issues: Issues) -> Callable[[object, str], str | None]:
    def convert(value: object, path: str) -> str | None:
        if not isinstance(value, str):
            issues.add(path, f"expected a string, got {_toml_type(value)}")
            return None
        return value

    return convert
