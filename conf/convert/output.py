"""What a converter produces: TOML sections written by hand (stdlib has no
TOML writer) and warnings that carry the source line they are about.

The writer keeps the layout of `spec/sekisho.toml`: pools as `[pool.NAME]`
with inline server tables, listeners as `[[http]]` with their routes as
indented `[[http.route]]` tables, and a comment naming the source line above
each section so an operator can check every piece against the old file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Note:
    line: int  # 0: about the whole file
    message: str
    error: bool = False  # cannot be translated without the result admitting or doing more

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {'error' if self.error else 'warning'}: {self.message}"


@dataclass
class Warnings:
    items: list[Note] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.items.append(Note(line, message))

    def refuse(self, line: int, message: str) -> None:
        """A construct the converter cannot translate without a silent widening (the result
        would admit clients or requests the original refused): `convert` writes nothing and
        exits 1. `message` says what to do."""
        self.items.append(Note(line, message, error=True))

    @property
    def errors(self) -> list[Note]:
        return [n for n in self.items if n.error]


@dataclass
class Section:
    """One TOML table: `[name]` or, with array=True, `[[name]]`."""

    name: str
    array: bool = False
    comments: list[str] = field(default_factory=list)
    items: list[tuple[str, Any, str | None]] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)

    def set(self, key: str, value: Any, comment: str | None = None) -> None:
        for i, (k, _, c) in enumerate(self.items):
            if k == key:
                self.items[i] = (key, value, comment or c)
                return
        self.items.append((key, value, comment))

    def get(self, key: str, default: Any = None) -> Any:
        for k, v, _ in self.items:
            if k == key:
                return v
        return default

    def render(self, indent: str = "") -> list[str]:
        lines = [f"{indent}# {c}" if c else f"{indent}#" for c in self.comments]
        header = ".".join(key(part) for part in _split_name(self.name))
        lines.append(f"{indent}[[{header}]]" if self.array else f"{indent}[{header}]")
        for k, v, comment in self.items:
            text = f"{indent}{key(k)} = {value(v, indent)}"
            lines.append(f"{text}  # {comment}" if comment else text)
        for child in self.children:
            lines.append("")
            lines.extend(child.render(indent + "  "))
        return lines


def _split_name(name: str) -> list[str]:
    """'pool.vs-1' -> ['pool', 'vs-1']: only the first dot separates (pool names may hold dots)."""
    head, _, rest = name.partition(".")
    return [head, rest] if rest else [head]


@dataclass
class Document:
    header: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def render(self) -> str:
        out = [f"# {c}" if c else "#" for c in self.header]
        for section in self.sections:
            if out:
                out.append("")
            out.extend(section.render())
        return "\n".join(out) + "\n"


def key(name: str) -> str:
    return name if _BARE_KEY.match(name) else string(name)


def string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def value(v: Any, indent: str = "") -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e16 else f"{v:.1f}"
    if isinstance(v, str):
        return string(v)
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        items = [value(x) for x in v]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) + len(indent) <= 96 and not any(isinstance(x, dict) for x in v[1:]):
            return one_line
        return "[\n" + "".join(f"{indent}  {item},\n" for item in items) + f"{indent}]"
    raise TypeError(f"no TOML form for {type(v).__name__}")
