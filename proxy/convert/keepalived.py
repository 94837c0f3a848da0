"""keepalived.conf -> sekisho TOML: VRRP instances here, their vrrp_script / track_* in
`keepalived_track`, LVS virtual servers in `keepalived_lvs`.

Every statement is either converted or reported with its line number; the
messages say what sekisho does instead where it does something.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from proxy.convert import keepalived_track
from proxy.convert.common import is_ip, to_float, to_int
from proxy.convert.kaparse import Node, parse
from proxy.convert.output import Document, Section, Warnings

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
    "native_ipv6": "use version = 3 with IPv6 virtual addresses",
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
    from proxy.convert import keepalived_lvs

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


def _vrrp_instance(node: Node, ctx: Context) -> Section | None:
    w = ctx.w
    name = node.args[0] if node.args else f"VI_{node.line}"
    out: dict[str, object] = {"name": name}
    vips: list[str] = []
    families: set[int] = set()
    notify: dict[str, str] = {}
    tracks: list[Node] = []  # track_interface / track_script: once priority and interface are known
    auth_type = "PASS"
    auth_pass: str | None = None
    auth_line = 0
    state_line = 0
    nopreempt_line = 0
    for child in node.block():
        kw, args, line = child.keyword, child.args, child.line
        if kw in ("state", "interface", "virtual_router_id", "priority", "advert_int") and not args:
            w.add(line, f"{kw}: needs a value; ignored")
            continue
        if kw == "state":
            state = args[0].upper()
            if state in ("MASTER", "BACKUP"):
                out["initial_state"] = state
                state_line = line
            else:
                w.add(line, f"state {args[0]}: sekisho starts as MASTER or BACKUP; using BACKUP")
        elif kw == "interface":
            out["interface"] = args[0]
        elif kw == "virtual_router_id":
            vrid = to_int(args[0], line, kw, w, lo=1, hi=255)
            if vrid is not None:
                out["virtual_router_id"] = vrid
        elif kw == "priority":
            prio = to_int(args[0], line, kw, w, lo=1, hi=255)
            if prio is not None:
                out["priority"] = prio
        elif kw == "nopreempt":
            out["preempt"] = False
            nopreempt_line = line
        elif kw == "preempt":
            out["preempt"] = True
        elif kw == "preempt_delay" and args:
            delay = to_float(args[0], line, kw, w)
            if delay is not None:
                out["preempt_delay"] = min(delay, 1000.0)
        elif kw == "advert_int":
            adv = to_float(args[0], line, kw, w)
            if adv is not None and adv > 0:
                out["advert_int"] = adv
        elif kw == "version" and args:
            given = to_int(args[0], line, kw, w, lo=2, hi=3)
            if given is not None:
                out["version"] = given
        elif kw == "authentication":
            for a in child.block():
                if a.keyword == "auth_type" and a.args:
                    auth_type = a.args[0].upper()
                    auth_line = a.line
                elif a.keyword == "auth_pass" and a.args:
                    auth_pass = a.args[0]
                    auth_line = auth_line or a.line
                else:
                    unsupported(a, w, "authentication")
        elif kw == "virtual_ipaddress":
            for v in child.block():
                vip = _vip(v, out.get("interface"), w)
                if vip is not None:
                    vips.append(vip)
                    families.add(ipaddress.ip_interface(vip).version)
        elif kw == "garp_master_delay" and args:
            garp = to_float(args[0], line, kw, w)
            if garp is not None:
                out["garp_master_delay"] = garp
        elif kw in ("track_interface", "track_script"):
            tracks.append(child)
        elif kw in ("notify_master", "notify_backup", "notify_fault", "notify_stop") and args:
            notify[kw.removeprefix("notify_")] = keepalived_track.command(child)
        elif kw == "notify" and args:
            # keepalived's generic notify: INSTANCE name STATE priority after its own arguments
            notify["any"] = keepalived_track.command(child)
        elif kw == "unicast_peer":
            peers = []
            for p in child.block():
                if is_ip(p.keyword):
                    peers.append(p.keyword)
                    if len(p.words) > 1:
                        w.add(p.line, f"unicast_peer {' '.join(p.words)}: options ignored")
                else:
                    w.add(p.line, f"unicast_peer {p.keyword}: not an IP address; ignored")
            out["unicast_peer"] = peers
        elif kw == "unicast_src_ip" and args:
            if is_ip(args[0]):
                out["unicast_src_ip"] = args[0]
            else:
                w.add(line, f"unicast_src_ip {args[0]}: not an IP address; ignored")
        else:
            unsupported(child, w, f"vrrp_instance {name}")

    priority = int(out.get("priority", 100))  # type: ignore[call-overload]
    for child in tracks:
        if child.keyword == "track_script":
            got = keepalived_track.track_scripts(child, name, priority, ctx.tracking, w)
        else:
            got = keepalived_track.track_interfaces(
                child, name, priority, ctx.tracking, w, interface=out.get("interface")
            )
        if got:
            out[child.keyword] = got

    # The version follows keepalived: the instance's, else global_defs, else 2;
    # IPv6 addresses need VRRPv3 (keepalived switches on its own).
    version = int(out.get("version") or ctx.vrrp_version or 2)  # type: ignore[call-overload]
    if 6 in families:
        # sekisho's VRRP I/O is IPv4 only for now (conf refuses IPv6 virtual addresses).
        w.add(
            node.line,
            f"vrrp_instance {name}: IPv6 virtual addresses are not supported by sekisho yet; "
            "IPv6 addresses dropped",
        )
        vips = [v for v in vips if ipaddress.ip_interface(v).version == 4]
        families = {4}
    if version != 2 or "version" in out:
        out["version"] = version
    if version == 2 and "advert_int" in out:
        adv = float(out["advert_int"])  # type: ignore[arg-type]
        if adv != int(adv) or not 1 <= adv <= 255:
            fixed = float(min(255, max(1, round(adv))))
            w.add(node.line, f"advert_int {adv:g}: VRRPv2 advertises whole seconds; using {fixed:g}")
            out["advert_int"] = fixed
    if version == 3 and "advert_int" in out:
        adv = float(out["advert_int"])  # type: ignore[arg-type]
        out["advert_int"] = min(40.95, max(0.01, round(adv, 2)))
    if "garp_master_delay" not in out and ctx.garp_master_delay is not None:
        out["garp_master_delay"] = ctx.garp_master_delay

    if auth_pass is not None or auth_line:
        if auth_type != "PASS":
            w.add(
                auth_line,
                f"auth_type {auth_type}: sekisho speaks only simple password (PASS) "
                "authentication, as RFC 3768 leaves; dropped (set the same on the peer)",
            )
        elif version == 3:
            w.add(auth_line, "authentication: VRRPv3 has none (RFC 5798); dropped")
        elif auth_pass is not None:
            raw = auth_pass.encode()
            if len(raw) > 8:
                auth_pass = raw[:8].decode(errors="ignore")
                w.add(
                    auth_line,
                    f"auth_pass is longer than 8 bytes; keepalived sends the first 8: {auth_pass!r}",
                )
            out["auth_pass"] = auth_pass

    if state_line and out.get("initial_state") == "MASTER" and nopreempt_line:
        w.add(
            nopreempt_line,
            "nopreempt with state MASTER: keepalived ignores nopreempt unless the "
            'state is BACKUP; kept as preempt = false with initial_state = "MASTER"',
        )

    missing = [k for k in ("interface", "virtual_router_id") if k not in out]
    if not vips:
        missing.append("virtual_ipaddress")
    if missing:
        w.add(node.line, f"vrrp_instance {name}: no {', '.join(missing)}; instance not converted")
        return None
    if vips:
        out["virtual_ipaddress"] = vips

    section = Section("vrrp", array=True, comments=[f"{ctx.source}:{node.line} vrrp_instance {name}"])
    order = (
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
    for key in order:
        if key in out:
            section.set(key, out[key])
    if notify:
        section.set(
            "notify", {k: notify[k] for k in ("master", "backup", "fault", "stop", "any") if k in notify}
        )
    return section


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
