"""keepalived.conf -> sekisho TOML: VRRP instances here, their vrrp_script / track_* in
`keepalived_track`, LVS virtual servers in `keepalived_lvs`.

Every statement is either converted or reported with its line number; the
messages say what sekisho does instead where it does something.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from conf.convert import keepalived_track
from conf.convert.common import is_ip, to_float, to_int
from conf.convert.kaparse import Node, parse
from conf.convert.output import Document, Section, Warnings

# Statements that have no sekisho equivalent, with the reason an operator needs.
_NO_EQUIVALENT = {
    "script_user": "sekisho runs check and notify commands as its own user",
    "enable_script_security": "sekisho runs check and notify commands as its own user, without a shell",
    "vrrp_track_process": "sekisho has no process tracking; use a vrrp_script running "
    "pgrep (converted to [vrrp_script.NAME] and track_script)",
    "track_process": "sekisho has no process tracking; track a vrrp_script running pgrep",
    "track_file": "sekisho has no file tracking; track a vrrp_script that reads the file",
    "track_bfd": "sekisho has no BFD",
    "vrrp_sync_group": "sekisho has no sync groups: each [[vrrp]] instance fails over on its own",
    "static_ipaddress": "static addresses belong to the system's network configuration",
    "static_routes": "static routes belong to the system's network configuration",
    "static_rules": "static rules belong to the system's network configuration",
    "virtual_routes": "sekisho adds no routes with the virtual addresses",
    "virtual_rules": "sekisho adds no policy rules with the virtual addresses",
    "virtual_ipaddress_excluded": "sekisho carries every virtual address in its adverts; "
    "add it to virtual_ipaddress or configure it on the system",
    "use_vmac": "sekisho announces the interface's own MAC address, not a VRRP virtual MAC",
    "vmac_xmit_base": "sekisho uses no VRRP virtual MAC",
    "smtp_alert": "sekisho sends no mail; use notify commands",
    "mcast_src_ip": "sekisho sends adverts from the interface's primary address",
    "dont_track_primary": "sekisho always watches the instance's own interface",
    "lvs_sync_daemon_interface": "sekisho has no LVS connection sync (it is a full proxy)",
    "native_ipv6": "an instance with IPv6 virtual addresses speaks VRRPv3 over IPv6 by itself",
    "notify": "sekisho runs notify commands per [[vrrp]] instance (notify.master/backup/fault/stop/any)",
    "debug": "use global.log_level",
    "strict_mode": "sekisho always follows the RFC",
    "garp_master_refresh": "sekisho repeats gratuitous ARP once, after garp_master_delay",
    "garp_master_repeat": "sekisho sends one gratuitous ARP burst per transition",
    "accept": "sekisho does not install or remove firewall rules for the virtual addresses",
    "no_accept": "sekisho does not install or remove firewall rules for the virtual addresses",
    "skip_check_adv_addr": "sekisho checks every advert",
    "include": "included files are not followed; convert them separately",
}


@dataclass
class Context:
    source: str  # the file name shown in comments
    w: Warnings = field(default_factory=Warnings)
    vrrp_version: int | None = None  # global_defs vrrp_version
    garp_master_delay: float | None = None  # global_defs vrrp_garp_master_delay
    tracking: keepalived_track.Tracking = field(default_factory=keepalived_track.Tracking)


def convert(text: str, source: str) -> tuple[Document, Warnings]:
    from conf.convert import keepalived_lvs

    ctx = Context(source)
    doc = Document()
    nodes = parse(text)
    for node in nodes:
        if node.keyword == "global_defs":
            _global_defs(node, ctx)
    ctx.tracking = keepalived_track.read(nodes, source, ctx.w)
    pools: list[Section] = []
    tcp: list[Section] = []
    vrrp: list[Section] = []
    groups = keepalived_lvs.groups(nodes, ctx)
    for node in nodes:
        kw = node.keyword
        if kw in ("global_defs", "virtual_server_group", "vrrp_script"):
            continue
        if kw == "vrrp_instance":
            section = _vrrp_instance(node, ctx)
            if section is not None:
                vrrp.append(section)
        elif kw == "virtual_server":
            built = keepalived_lvs.virtual_server(node, ctx, groups, {p.name for p in pools})
            if built is not None:
                pools.append(built[0])
                tcp.append(built[1])
        else:
            unsupported(node, ctx.w)
    scripts = [s.section for s in ctx.tracking.scripts.values()]
    doc.sections = pools + tcp + scripts + vrrp
    return doc, ctx.w


def unsupported(node: Node, w: Warnings, where: str = "") -> None:
    reason = _NO_EQUIVALENT.get(node.keyword, "no sekisho equivalent")
    prefix = f"{where}: " if where else ""
    text = " ".join(node.words)
    if len(text) > 60:
        text = text[:57] + "..."
    w.add(node.line, f"{prefix}{text}: {reason}; ignored")


def _global_defs(node: Node, ctx: Context) -> None:
    for child in node.block():
        kw, args = child.keyword, child.args
        if kw == "vrrp_version" and args:
            ctx.vrrp_version = to_int(args[0], child.line, kw, ctx.w, lo=2, hi=3)
        elif kw == "vrrp_garp_master_delay" and args:
            ctx.garp_master_delay = to_float(args[0], child.line, kw, ctx.w)
        elif kw in ("router_id", "lvs_id"):
            ctx.w.add(child.line, f"{kw}: sekisho needs no router name; ignored")
        else:
            unsupported(child, ctx.w, "global_defs")


@dataclass
class _Instance:
    """What one vrrp_instance block says, gathered by the keyword handlers below."""

    name: str
    w: Warnings
    out: dict[str, object] = field(default_factory=dict)
    vips: list[str] = field(default_factory=list)
    notify: dict[str, str] = field(default_factory=dict)
    tracks: list[Node] = field(default_factory=list)  # once priority and interface are known
    auth_type: str = "PASS"
    auth_pass: str | None = None
    auth_line: int = 0
    state_line: int = 0
    nopreempt_line: int = 0


def _state(it: _Instance, node: Node) -> None:
    state = node.args[0].upper()
    if state in ("MASTER", "BACKUP"):
        it.out["initial_state"] = state
        it.state_line = node.line
    else:
        it.w.add(node.line, f"state {node.args[0]}: sekisho starts as MASTER or BACKUP; using BACKUP")


def _setter(key: str, parse: Callable[[_Instance, Node], object | None]) -> Callable[[_Instance, Node], None]:
    def handle(it: _Instance, node: Node) -> None:
        value = parse(it, node)
        if value is not None:
            it.out[key] = value

    return handle


def _int(lo: int, hi: int) -> Callable[[_Instance, Node], int | None]:
    return lambda it, node: to_int(node.args[0], node.line, node.keyword, it.w, lo=lo, hi=hi)


def _float(it: _Instance, node: Node) -> float | None:
    return to_float(node.args[0], node.line, node.keyword, it.w)


def _nopreempt(it: _Instance, node: Node) -> None:
    it.out["preempt"] = False
    it.nopreempt_line = node.line


def _preempt_delay(it: _Instance, node: Node) -> float | None:
    delay = _float(it, node)
    return None if delay is None else min(delay, 1000.0)


def _advert_int(it: _Instance, node: Node) -> float | None:
    adv = _float(it, node)
    return adv if adv is not None and adv > 0 else None


def _authentication(it: _Instance, node: Node) -> None:
    for a in node.block():
        if a.keyword == "auth_type" and a.args:
            it.auth_type = a.args[0].upper()
            it.auth_line = a.line
        elif a.keyword == "auth_pass" and a.args:
            it.auth_pass = a.args[0]
            it.auth_line = it.auth_line or a.line
        else:
            unsupported(a, it.w, "authentication")


def _virtual_ipaddress(it: _Instance, node: Node) -> None:
    for v in node.block():
        vip = _vip(v, it.out.get("interface"), it.w)
        if vip is not None:
            it.vips.append(vip)


def _track(it: _Instance, node: Node) -> None:
    it.tracks.append(node)


def _notify(it: _Instance, node: Node) -> None:
    # notify_master|backup|fault|stop, and keepalived's generic `notify` (INSTANCE name STATE
    # priority after its own arguments) as notify.any
    it.notify[node.keyword.removeprefix("notify").removeprefix("_") or "any"] = keepalived_track.command(node)


def _unicast_peer(it: _Instance, node: Node) -> None:
    peers = []
    for p in node.block():
        if is_ip(p.keyword):
            peers.append(p.keyword)
            if len(p.words) > 1:
                it.w.add(p.line, f"unicast_peer {' '.join(p.words)}: options ignored")
        else:
            it.w.add(p.line, f"unicast_peer {p.keyword}: not an IP address; ignored")
    it.out["unicast_peer"] = peers


def _unicast_src_ip(it: _Instance, node: Node) -> str | None:
    if is_ip(node.args[0]):
        return node.args[0]
    it.w.add(node.line, f"unicast_src_ip {node.args[0]}: not an IP address; ignored")
    return None


# vrrp_instance keyword -> (needs an argument, handler), as keepalived's own parser keeps a
# keyword table per block (vector_t of keywords and handlers, vrrp_parser.c).
_INSTANCE_KEYWORDS: dict[str, tuple[bool, Callable[[_Instance, Node], None]]] = {
    "state": (True, _state),
    "interface": (True, _setter("interface", lambda it, node: node.args[0])),
    "virtual_router_id": (True, _setter("virtual_router_id", _int(1, 255))),
    "priority": (True, _setter("priority", _int(1, 255))),
    "nopreempt": (False, _nopreempt),
    "preempt": (False, _setter("preempt", lambda it, node: True)),
    "preempt_delay": (True, _setter("preempt_delay", _preempt_delay)),
    "advert_int": (True, _setter("advert_int", _advert_int)),
    "version": (True, _setter("version", _int(2, 3))),
    "authentication": (False, _authentication),
    "virtual_ipaddress": (False, _virtual_ipaddress),
    "garp_master_delay": (True, _setter("garp_master_delay", _float)),
    "track_interface": (False, _track),
    "track_script": (False, _track),
    "notify_master": (True, _notify),
    "notify_backup": (True, _notify),
    "notify_fault": (True, _notify),
    "notify_stop": (True, _notify),
    "notify": (True, _notify),
    "unicast_peer": (False, _unicast_peer),
    "unicast_src_ip": (True, _setter("unicast_src_ip", _unicast_src_ip)),
}
_REQUIRED_VALUE = ("state", "interface", "virtual_router_id", "priority", "advert_int")
_ORDER = (
    "name",
    "interface",
    "virtual_router_id",
    "priority",
    "initial_state",
    "preempt",
    "preempt_delay",
    "advert_int",
    "version",
    "auth_pass",
    "garp_master_delay",
    "virtual_ipaddress",
    "track_interface",
    "track_script",
    "unicast_src_ip",
    "unicast_peer",
)


def _vrrp_instance(node: Node, ctx: Context) -> Section | None:
    w = ctx.w
    it = _Instance(node.args[0] if node.args else f"VI_{node.line}", w)
    it.out["name"] = it.name
    for child in node.block():
        entry = _INSTANCE_KEYWORDS.get(child.keyword)
        if entry is not None and entry[0] and not child.args and child.keyword in _REQUIRED_VALUE:
            w.add(child.line, f"{child.keyword}: needs a value; ignored")
        elif entry is None or (entry[0] and not child.args):
            unsupported(child, w, f"vrrp_instance {it.name}")
        else:
            entry[1](it, child)
    _tracked(it, ctx)
    version = _version(it, node, ctx)
    if "garp_master_delay" not in it.out and ctx.garp_master_delay is not None:
        it.out["garp_master_delay"] = ctx.garp_master_delay
    _auth(it, version)
    if it.state_line and it.out.get("initial_state") == "MASTER" and it.nopreempt_line:
        w.add(
            it.nopreempt_line,
            "nopreempt with state MASTER: keepalived ignores nopreempt unless the "
            'state is BACKUP; kept as preempt = false with initial_state = "MASTER"',
        )
    missing = [k for k in ("interface", "virtual_router_id") if k not in it.out]
    if not it.vips:
        missing.append("virtual_ipaddress")
    if missing:
        w.add(node.line, f"vrrp_instance {it.name}: no {', '.join(missing)}; instance not converted")
        return None
    it.out["virtual_ipaddress"] = it.vips
    section = Section("vrrp", array=True, comments=[f"{ctx.source}:{node.line} vrrp_instance {it.name}"])
    for key in _ORDER:
        if key in it.out:
            section.set(key, it.out[key])
    if it.notify:
        kinds = ("master", "backup", "fault", "stop", "any")
        section.set("notify", {k: it.notify[k] for k in kinds if k in it.notify})
    return section


def _tracked(it: _Instance, ctx: Context) -> None:
    priority = int(it.out.get("priority", 100))  # type: ignore[call-overload]
    for child in it.tracks:
        if child.keyword == "track_script":
            got = keepalived_track.track_scripts(child, it.name, priority, ctx.tracking, it.w)
        else:
            got = keepalived_track.track_interfaces(
                child, it.name, priority, ctx.tracking, it.w, interface=it.out.get("interface")
            )
        if got:
            it.out[child.keyword] = got


def _version(it: _Instance, node: Node, ctx: Context) -> int:
    """The instance's version, else global_defs', else 2 (as keepalived); advert_int fitted to it."""
    out = it.out
    version: int = int(out.get("version") or ctx.vrrp_version or 2)  # type: ignore[call-overload]
    families = {ipaddress.ip_interface(v).version for v in it.vips}
    if len(families) > 1:
        v6 = [v for v in it.vips if ipaddress.ip_interface(v).version == 6]
        it.w.refuse(
            node.line,
            f"vrrp_instance {it.name}: IPv4 and IPv6 virtual addresses in one instance; a sekisho "
            f"instance carries one family. Move {', '.join(v6)} to a vrrp_instance of its own (its "
            "own virtual_router_id, on both routers) and convert again",
        )
        it.vips = [v for v in it.vips if v not in v6]
    elif families == {6} and version == 2:
        if "version" in out:
            it.w.add(
                node.line, f"vrrp_instance {it.name}: version 2 with IPv6 addresses: VRRPv3, as keepalived"
            )
        version = 3  # keepalived switches an IPv6 instance to VRRPv3 by itself
        out["version"] = 3
    if version != 2 or "version" in out:
        out["version"] = version
    if "advert_int" in out:
        adv = float(out["advert_int"])  # type: ignore[arg-type]
        if version == 2 and (adv != int(adv) or not 1 <= adv <= 255):
            fixed = float(min(255, max(1, round(adv))))
            it.w.add(node.line, f"advert_int {adv:g}: VRRPv2 advertises whole seconds; using {fixed:g}")
            out["advert_int"] = fixed
        elif version == 3:
            out["advert_int"] = min(40.95, max(0.01, round(adv, 2)))
    return version


def _auth(it: _Instance, version: int) -> None:
    if it.auth_pass is None and not it.auth_line:
        return
    if it.auth_type != "PASS":
        it.w.add(
            it.auth_line,
            f"auth_type {it.auth_type}: sekisho speaks only simple password (PASS) "
            "authentication, as RFC 3768 leaves; dropped (set the same on the peer)",
        )
    elif version == 3:
        it.w.add(it.auth_line, "authentication: VRRPv3 has none (RFC 5798); dropped")
    elif it.auth_pass is not None:
        auth_pass = it.auth_pass
        raw = auth_pass.encode()
        if len(raw) > 8:
            auth_pass = raw[:8].decode(errors="ignore")
            it.w.add(
                it.auth_line,
                f"auth_pass is longer than 8 bytes; keepalived sends the first 8: {auth_pass!r}",
            )
        it.out["auth_pass"] = auth_pass


def _vip(node: Node, interface: object, w: Warnings) -> str | None:
    words = node.words
    try:
        iface = ipaddress.ip_interface(words[0])
    except ValueError:
        w.add(node.line, f"virtual_ipaddress {words[0]}: not an address; ignored")
        return None
    opts = words[1:]
    i = 0
    while i < len(opts):
        opt = opts[i]
        arg = opts[i + 1] if i + 1 < len(opts) else ""
        if opt == "dev":
            if interface is not None and arg != interface:
                w.add(
                    node.line,
                    f"{words[0]} dev {arg}: sekisho adds virtual addresses on the "
                    f"instance's interface ({interface}); put the instance on {arg} if that is meant",
                )
            elif interface is None:
                w.add(
                    node.line,
                    f"{words[0]} dev {arg}: sekisho adds virtual addresses on the instance's interface",
                )
            i += 2
        elif opt in ("brd", "broadcast", "label", "scope", "track_group", "preferred_lft"):
            w.add(node.line, f"{words[0]} {opt} {arg}: address option ignored")
            i += 2
        else:
            w.add(node.line, f"{words[0]} {opt}: address option ignored")
            i += 1
    return words[0] if "/" in words[0] else str(iface)
