"""Helpers shared by the converters: number parsing, names, address forms."""

from __future__ import annotations

import ipaddress
import math
import re

from conf.convert.output import Warnings

_NAME_JUNK = re.compile(r"[^A-Za-z0-9_.-]+")


def pool_name(text: str) -> str:
    """A valid sekisho pool name from arbitrary text ('VS group/1' -> 'VS-group-1')."""
    name = _NAME_JUNK.sub("-", text).strip("-.") or "pool"
    return name if re.match(r"^[A-Za-z0-9_]", name) else f"p{name}"


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def to_int(text: str, line: int, what: str, w: Warnings, *, lo: int, hi: int) -> int | None:
    try:
        value = int(text, 10)
    except ValueError:
        w.add(line, f"{what}: {text!r} is not a whole number; ignored")
        return None
    if not lo <= value <= hi:
        w.add(line, f"{what}: {value} is outside {lo}-{hi}; ignored")
        return None
    return value


def to_float(text: str, line: int, what: str, w: Warnings, lo: float = 0.0) -> float | None:
    try:
        value = float(text)
    except ValueError:
        w.add(line, f"{what}: {text!r} is not a number; ignored")
        return None
    if not math.isfinite(value) or value < lo:
        w.add(line, f"{what}: {text} is out of range; ignored")
        return None
    return value


def positive(value: float | None) -> float | None:
    """sekisho timeouts and intervals must be > 0."""
    return value if value is not None and value > 0 else None
