"""keepalived's tracking -> sekisho: `vrrp_script` blocks become `[vrrp_script.NAME]` tables,
an instance's `track_script` / `track_interface` become its `track_script` / `track_interface`
lists with the same weights, and sync-group membership is read for the one thing it changes
here (keepalived ignores tracking weights of grouped instances).

keepalived's rules kept (vrrp.c, vrrp_complete_instance): in a `vrrp_sync_group` without
`sync_group_tracking_weight` (or the deprecated `global_tracking`), weighted interfaces count
as unweighted and weighted scripts are not tracked at all; the address owner (priority 255)
tracks neither weighted interfaces nor weighted scripts. A track_script naming no vrrp_script,
or a vrrp_script without `script`, is dropped ("not found, ignoring").
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from conf.convert.common import pool_name, to_float, to_int
from conf.convert.kaparse import Node
from conf.convert.output import Section, Warnings

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_WEIGHT = 253


@dataclass
class Script:
    name: str  # the sekisho name (keepalived's, or made valid)
    section: Section
    weight: int = 0
    reverse: bool = False


@dataclass
class Tracking:
    """What the whole file says about tracking, read before the instances."""

    scripts: dict[str, Script] = field(default_factory=dict)  # by keepalived name
    dropped: set[str] = field(default_factory=set)  # vrrp_script blocks not converted
    grouped: dict[str, str] = field(default_factory=dict)  # instance -> its sync group, if weights are off


def command(node: Node) -> str:
    """`script`, `notify*`: one quoted string or the rest of the line is the command."""
    if len(node.args) == 1:
        return node.args[0]
    return shlex.join(node.args)


def read(nodes: list[Node], source: str, w: Warnings) -> Tracking:
    tracking = Tracking()
    for node in nodes:
        if node.keyword == "vrrp_script":
            script = _vrrp_script(node, source, w, {s.name for s in tracking.scripts.values()})
            if script is not None:
                tracking.scripts[node.args[0]] = script
            elif node.args:
                tracking.dropped.add(node.args[0])
        elif node.keyword == "vrrp_sync_group" and node.args:
            kws = {c.keyword for c in node.block()}
            if kws & {"sync_group_tracking_weight", "global_tracking"}:
                continue
            for child in node.block():
                if child.keyword == "group":
                    for member in child.block():
                        tracking.grouped[member.keyword] = node.args[0]
    return tracking


def _weight(words: list[str], line: int, what: str, w: Warnings) -> tuple[int, bool] | None:
    """`weight N [reverse|noreverse|no_reverse]` -> (N, reverse); None if malformed."""
    if not words or words[0] != "weight" or len(words) < 2:
        w.add(line, f"{what} {' '.join(words)}: expected 'weight N [reverse]'; ignored")
        return None
    weight = to_int(words[1], line, f"{what} weight", w, lo=-_WEIGHT, hi=_WEIGHT)
    if weight is None:
        return None
    reverse = False
    for extra in words[2:]:
        if extra == "reverse":
            reverse = True
        elif extra in ("noreverse", "no_reverse"):
            reverse = False
        else:
            w.add(line, f"{what} {extra}: unknown weight option; ignored")
    return weight, reverse


def _vrrp_script(node: Node, source: str, w: Warnings, taken: set[str]) -> Script | None:
    if not node.args:
        w.add(node.line, "vrrp_script without a name; ignored")
        return None
    ka_name = node.args[0]
    name = ka_name
    if not _NAME.match(name):
        name = pool_name(name)
        while name in taken:
            name += "_"
        w.add(node.line, f"vrrp_script {ka_name}: named {name!r} in sekisho")
    section = Section(f"vrrp_script.{name}", comments=[f"{source}:{node.line} vrrp_script {ka_name}"])
    script = Script(name, section)
    items: dict[str, object] = {}
    for child in node.block():
        kw, args, line = child.keyword, child.args, child.line
        if kw in ("script", "interval", "timeout", "rise", "fall", "weight") and not args:
            w.add(line, f"{kw}: needs a value; ignored")
        elif kw == "script":
            items["command"] = command(child)
        elif kw in ("interval", "timeout"):
            seconds = to_float(args[0], line, kw, w)
            if seconds is not None and seconds > 0:
                items[kw] = seconds
            elif seconds is not None:
                w.add(line, f"{kw} {args[0]}: keepalived uses 1 second; so does sekisho")
        elif kw in ("rise", "fall"):
            n = to_int(args[0], line, kw, w, lo=1, hi=100)
            if n is not None:
                items[kw] = n
        elif kw == "weight":
            got = _weight(child.words, line, f"vrrp_script {ka_name}", w)
            if got is not None:
                script.weight, script.reverse = got
                items["weight"] = script.weight
                if script.reverse:
                    items["reverse"] = True
        elif kw == "init_fail":
            items["init_fail"] = True
        elif kw == "user":
            w.add(
                line,
                f"vrrp_script {ka_name}: user {' '.join(args)}: sekisho runs checks as its own user; ignored",
            )
        else:
            w.add(line, f"vrrp_script {ka_name}: {' '.join(child.words)}: no sekisho equivalent; ignored")
    if "command" not in items:
        w.add(node.line, f"vrrp_script {ka_name}: no script; keepalived removes it; not converted")
        return None
    for key in ("command", "interval", "timeout", "rise", "fall", "weight", "reverse", "init_fail"):
        if key in items:
            section.set(key, items[key])
    return script


def track_scripts(node: Node, instance: str, priority: int, tracking: Tracking, w: Warnings) -> list[object]:
    """An instance's track_script block -> sekisho's track_script list."""
    out: list[object] = []
    group = tracking.grouped.get(instance)
    for t in node.block():
        script = tracking.scripts.get(t.keyword)
        if script is None:
            why = (
                "was not converted"
                if t.keyword in tracking.dropped
                else "does not exist (keepalived ignores it)"
            )
            w.add(t.line, f"track_script {t.keyword}: the vrrp_script {why}; dropped")
            continue
        weight, reverse = script.weight, script.reverse
        if len(t.words) > 1:
            got = _weight(t.words[1:], t.line, f"track_script {t.keyword}", w)
            if got is not None:
                weight, reverse = got
        if weight and (group or priority == 255):
            why = f"in sync group {group}" if group else "the address owner (priority 255)"
            w.add(
                t.line,
                f"track_script {t.keyword}: keepalived does not track weighted scripts of {why}; dropped",
            )
            continue
        if weight == script.weight and reverse == script.reverse:
            out.append(script.name)
        else:
            entry: dict[str, object] = {"name": script.name, "weight": weight}
            if reverse:
                entry["reverse"] = True
            out.append(entry)
    return out


def track_interfaces(
    node: Node, instance: str, priority: int, tracking: Tracking, w: Warnings, *, interface: object
) -> list[object]:
    """An instance's track_interface block -> sekisho's track_interface list."""
    out: list[object] = []
    group = tracking.grouped.get(instance)
    for t in node.block():
        name = t.keyword
        if len(t.words) == 1:
            out.append(name)
            continue
        got = _weight(t.words[1:], t.line, f"track_interface {name}", w)
        if got is None:
            out.append(name)
            continue
        weight, reverse = got
        if not weight and not reverse:
            out.append(name)
        elif name == interface:
            w.add(
                t.line,
                f"track_interface {' '.join(t.words)}: the instance's own interface always puts it in "
                "FAULT when down (keepalived too, without dont_track_primary); weight dropped",
            )
            out.append(name)
        elif priority == 255:
            w.add(
                t.line,
                f"track_interface {' '.join(t.words)}: keepalived ignores weighted "
                "interfaces of the address owner (priority 255); dropped",
            )
        elif group:
            w.add(
                t.line,
                f"track_interface {' '.join(t.words)}: keepalived ignores the weight in sync group "
                f"{group} (no sync_group_tracking_weight); tracked without it (down: FAULT)",
            )
            out.append(name)
        else:
            entry: dict[str, object] = {"name": name, "weight": weight}
            if reverse:
                entry["reverse"] = True
            out.append(entry)
    return out
