"""keepalived's LVS half: virtual_server(_group), real_server and the checkers,
turned into a sekisho pool plus a [[tcp]] service.

Two differences shape the messages. sekisho is a full proxy: it terminates the
client's connection and opens its own to the real server, so lb_kind (NAT, DR,
TUN) has no equivalent and the real server sees sekisho's address (a pool's
proxy_protocol can pass the client's). And sekisho checks the servers of a
pool alike (one health check per pool), where keepalived configures a checker
per real server: a MISC_CHECK whose misc_path names its server becomes one pool
command with "{host}"/"{port}" placeholders, and one that differs otherwise is
carried as that server's own `health_command`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any

from conf.convert.common import host_port, is_ip, pool_name, positive, to_float, to_int
from conf.convert.kaparse import Node
from conf.convert.keepalived import Context, unsupported
from conf.convert.output import Section, Warnings

_SCHEDULERS = {"rr", "wrr", "lc", "wlc", "sh", "mh", "lblc"}
_CLOSEST = {  # ipvs schedulers sekisho lacks -> the nearest it has
    "lblcr": "lblc",
    "sed": "wlc",
    "nq": "wlc",
    "dh": "sh",
    "fo": "wrr",
    "ovf": "wlc",
    "twos": "wlc",
}
_LBLC = (
    "IPVS keys lblc on the destination address (cache clusters); sekisho keys it on the "
    "client's address (behind a VIP every destination is the same): a client stays on its "
    "server unless that one holds more than twice its weighted share of the connections"
)
_LB_KIND = {
    "DR": "direct routing has no equivalent: sekisho is a full proxy, so replies pass back "
    "through it and real servers need no VIP on a loopback nor arp_ignore",
    "TUN": "IP tunnelling has no equivalent: sekisho is a full proxy and connects to the real servers itself",
    "NAT": "sekisho is a full proxy, like NAT, but real servers see sekisho's address as the "
    "source; set proxy_protocol on the pool to pass the client's",
}
_VS_NOTES = {
    "persistence_timeout": 'no persistence table; scheduler = "sh" sends a client to the '
    "same server while it is up",
    "persistence_granularity": "no persistence table",
    "persistence_engine": "no persistence table",
    "ha_suspend": "the service listens on its address whether or not this machine is master",
    "alpha": "servers start up or down by their first check result (rise = 1)",
    "omega": "no quorum handling",
    "quorum": "no quorum handling",
    "quorum_up": "no quorum handling",
    "quorum_down": "no quorum handling",
    "hysteresis": "no quorum handling",
    "nat_mask": "sekisho is a full proxy",
    "sorry_server_inhibit": "the sorry server is used only while every server is down",
    "sorry_server_lvs_method": "sekisho is a full proxy",
    "ops": "one-packet scheduling is for UDP; sekisho relays TCP",
    "one_packet_scheduling": "one-packet scheduling is for UDP; sekisho relays TCP",
    "smtp_alert": "sekisho sends no mail",
    "ip_family": "the family follows the addresses",
    "lvs_flags": "no IPVS flags in a full proxy",
}
_CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "SMTP_CHECK", "MISC_CHECK")
_DEFAULT_RETRY = {"TCP_CHECK": 1, "HTTP_GET": 1, "SSL_GET": 1, "SMTP_CHECK": 1, "MISC_CHECK": 0}


def groups(nodes: list[Node], ctx: Context) -> dict[str, list[str]]:
    """virtual_server_group NAME -> its addresses ("ip:port")."""
    out: dict[str, list[str]] = {}
    for node in nodes:
        if node.keyword != "virtual_server_group":
            continue
        if not node.args:
            ctx.w.add(node.line, "virtual_server_group without a name; ignored")
            continue
        addresses: list[str] = []
        for entry in node.block():
            addresses.extend(_group_entry(entry, ctx.w))
        out[node.args[0]] = addresses
    return out


def _group_entry(entry: Node, w: Warnings) -> list[str]:
    words = entry.words
    if words[0] == "fwmark":
        w.add(
            entry.line, f"{' '.join(words)}: firewall marks have no equivalent; sekisho listens on addresses"
        )
        return []
    if len(words) < 2:
        w.add(entry.line, f"{words[0]}: needs an address and a port; ignored")
        return []
    port = to_int(words[1], entry.line, "port", w, lo=1, hi=65535)
    if port is None:
        return []
    head, dash, last = words[0].partition("-")
    if not is_ip(head) or (dash and not last.isdigit()):
        w.add(entry.line, f"{words[0]}: not an address or range; ignored")
        return []
    if not dash:
        return [host_port(head, port)]
    first = ipaddress.ip_address(head)
    base = int(first) - (int(first) & 0xFF if first.version == 4 else int(first) & 0xFFFF)
    end = base + int(last, 10 if first.version == 4 else 16)
    if end < int(first) or end - int(first) > 255:
        w.add(entry.line, f"{words[0]}: range not understood; ignored")
        return []
    return [host_port(str(ipaddress.ip_address(n)), port) for n in range(int(first), end + 1)]


def virtual_server(
    node: Node, ctx: Context, vs_groups: dict[str, list[str]], taken: set[str]
) -> tuple[Section, Section] | None:
    w = ctx.w
    args = node.args
    label = " ".join(node.words)
    listen: list[str] = []
    vs_port: int | None = None
    if len(args) >= 2 and args[0] == "group":
        if args[1] not in vs_groups:
            w.add(node.line, f"{label}: no virtual_server_group {args[1]}; not converted")
            return None
        listen = vs_groups[args[1]]
        name = pool_name(args[1])
        ports = {int(a.rsplit(":", 1)[1]) for a in listen}
        vs_port = ports.pop() if len(ports) == 1 else None
    elif len(args) >= 1 and args[0] == "fwmark":
        w.add(
            node.line,
            f"{label}: firewall-mark services have no equivalent; sekisho listens on "
            "addresses; not converted",
        )
        return None
    elif len(args) >= 2 and is_ip(args[0]):
        vs_port = to_int(args[1], node.line, "port", w, lo=0, hi=65535)
        if not vs_port:
            w.add(node.line, f"{label}: a service on every port has no equivalent; not converted")
            return None
        listen = [host_port(args[0], vs_port)]
        name = pool_name(f"vs-{args[0].replace(':', '-')}-{vs_port}")
    else:
        w.add(node.line, f"{label}: expected an address and a port, or group NAME; not converted")
        return None
    if not listen:
        w.add(node.line, f"{label}: no addresses to listen on; not converted")
        return None
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1

    pool: dict[str, Any] = {}
    scheduler = "wlc"  # ipvsadm's default
    interval: float | None = None
    defaults: dict[str, Any] = {}  # checker settings given at virtual_server level
    inhibit_all = False
    servers: list[tuple[Node, dict[str, Any]]] = []
    protocol_ok = True
    for child in node.block():
        kw, a, line = child.keyword, child.args, child.line
        if kw in ("lb_algo", "lvs_sched") and a:
            algo = a[0].lower()
            if algo in _SCHEDULERS:
                scheduler = algo
            else:
                scheduler = _CLOSEST.get(algo, "wlc")
                w.add(line, f"{kw} {a[0]}: sekisho has no such scheduler; using {scheduler}")
            if scheduler == "lblc":
                w.add(line, f"{kw} {a[0]}: {_LBLC}")
        elif kw in ("lb_kind", "lvs_method") and a:
            w.add(line, f"{kw} {a[0]}: {_LB_KIND.get(a[0].upper(), 'no equivalent')}")
        elif kw == "protocol" and a:
            if a[0].upper() != "TCP":
                w.add(line, f"protocol {a[0]}: sekisho relays TCP only; virtual server not converted")
                protocol_ok = False
        elif kw == "delay_loop" and a:
            interval = positive(to_float(a[0], line, kw, w))
        elif kw == "sorry_server":
            if len(a) >= 2 and is_ip(a[0]) and (port := to_int(a[1], line, kw, w, lo=1, hi=65535)):
                pool["sorry_server"] = host_port(a[0], port)
            else:
                w.add(line, f"{' '.join(child.words)}: expected an address and a port; ignored")
        elif kw == "inhibit_on_failure":
            inhibit_all = True
        elif kw in ("connect_timeout", "retry", "nb_get_retry", "delay_before_retry", "warmup") and a:
            defaults[kw] = (a[0], line)
        elif kw == "real_server":
            rs = _real_server(child, w, vs_port)
            if rs is not None:
                servers.append((child, rs))
        elif kw == "virtualhost" and a:
            defaults["virtualhost"] = (a[0], line)
        elif kw in _VS_NOTES:
            w.add(line, f"{' '.join(child.words)}: {_VS_NOTES[kw]}; ignored")
        else:
            unsupported(child, w, label)
    if not protocol_ok:
        return None
    if not servers:
        w.add(node.line, f"{label}: no real_server; not converted (a sekisho pool needs a server)")
        return None

    pool["scheduler"] = scheduler
    pool["servers"] = [
        {"address": rs["address"], "weight": rs["weight"]}
        | ({"max_connections": rs["max_connections"]} if rs.get("max_connections") else {})
        for _, rs in servers
    ]
    health, own_commands = _pool_health(servers, defaults, interval, w)
    if health is not None:
        pool["health"] = health
    for entry in pool["servers"]:
        if entry["address"] in own_commands:
            entry["health_command"] = own_commands[entry["address"]]
    flags = {bool(rs.get("inhibit")) or inhibit_all for _, rs in servers}
    if len(flags) > 1:
        w.add(
            node.line,
            f"{label}: inhibit_on_failure is set on some real servers only; sekisho "
            'decides per pool: on_failure = "inhibit"',
        )
    pool["on_failure"] = "inhibit" if True in flags else "remove"

    section = Section(f"pool.{name}", comments=[f"{ctx.source}:{node.line} {label}"])
    for key in ("scheduler", "servers", "health", "on_failure", "sorry_server"):
        if key in pool:
            section.set(key, pool[key])
    tcp = Section("tcp", array=True, comments=[f"{ctx.source}:{node.line} {label}"])
    tcp.set("listen", listen[0] if len(listen) == 1 else listen)
    tcp.set("pool", name)
    return section, tcp


def _real_server(node: Node, w: Warnings, vs_port: int | None) -> dict[str, Any] | None:
    a = node.args
    if not a or not is_ip(a[0]):
        w.add(node.line, f"{' '.join(node.words)}: expected an address and a port; ignored")
        return None
    port = to_int(a[1], node.line, "port", w, lo=0, hi=65535) if len(a) >= 2 else None
    if not port:
        if vs_port is None:
            w.add(node.line, f"{' '.join(node.words)}: no port; ignored")
            return None
        port = vs_port
        w.add(node.line, f"real_server {a[0]}: no port given (as with DR); using the service's port {port}")
    rs: dict[str, Any] = {"address": host_port(a[0], port), "port": port, "weight": 1, "checks": []}
    label = f"real_server {a[0]} {port}"
    for child in node.block():
        kw, args, line = child.keyword, child.args, child.line
        if kw == "weight" and args:
            weight = to_int(args[0], line, kw, w, lo=0, hi=65535)
            if weight is not None:
                rs["weight"] = weight
        elif kw == "inhibit_on_failure":
            rs["inhibit"] = True
        elif kw == "uthreshold" and args:
            limit = to_int(args[0], line, kw, w, lo=0, hi=1 << 31)
            if limit:
                rs["max_connections"] = limit
        elif kw in _CHECKERS:
            rs["checks"].append(_checker(child, w, port) | {"server_ip": a[0], "server_port": port})
        elif kw in ("notify_up", "notify_down"):
            w.add(
                line,
                f"{label} {kw}: sekisho logs and counts server state changes "
                "(sekisho_server_up); no command is run; ignored",
            )
        elif kw == "lthreshold":
            w.add(line, f"{label} lthreshold: max_connections has no low-water mark; ignored")
        else:
            unsupported(child, w, label)
    return rs


def _checker(node: Node, w: Warnings, rs_port: int) -> dict[str, Any]:
    kind = node.keyword
    check: dict[str, Any] = {"checker": kind, "line": node.line}
    label = kind
    if kind == "SSL_GET":
        w.add(node.line, "SSL_GET: sekisho's HTTP check speaks plain HTTP; checked as a TCP connect")
    for child in node.block():
        kw, a, line = child.keyword, child.args, child.line
        if kw == "connect_port" and a:
            port = to_int(a[0], line, kw, w, lo=1, hi=65535)
            if port is not None and port != rs_port:
                check["port"] = port
        elif kw == "connect_timeout" and a:
            check["timeout"] = positive(to_float(a[0], line, kw, w))
        elif kw in ("retry", "nb_get_retry") and a:
            check["retry"] = to_int(a[0], line, kw, w, lo=0, hi=99)
        elif kw == "delay_before_retry" and a:
            w.add(
                line,
                f"{label} delay_before_retry: sekisho retries at the check interval (delay_loop); ignored",
            )
        elif kw == "url" and kind in ("HTTP_GET", "SSL_GET"):
            if "path" in check:
                w.add(line, f"{label}: sekisho checks one URL per pool; this url block is ignored")
                continue
            _url(child, check, w)
        elif kw == "virtualhost" and a and kind in ("HTTP_GET", "SSL_GET"):
            check["host"] = a[0]
        elif kw == "misc_path" and a and kind == "MISC_CHECK":
            check["command"] = a[0] if len(a) == 1 else " ".join(a)
        elif kw == "misc_timeout" and a and kind == "MISC_CHECK":
            check["timeout"] = positive(to_float(a[0], line, kw, w))
        elif kw == "misc_dynamic":
            w.add(
                line,
                "MISC_CHECK misc_dynamic: exit codes do not set weights in sekisho "
                "(use the admin API: POST /servers/{pool}/{address}/weight); ignored",
            )
        elif kw == "host" and kind == "SMTP_CHECK":
            for h in child.block():
                if h.keyword == "connect_port" and h.args:
                    port = to_int(h.args[0], h.line, "connect_port", w, lo=1, hi=65535)
                    if port is not None and port != rs_port:
                        check["port"] = port
                else:
                    unsupported(h, w, "SMTP_CHECK host")
        elif kw == "helo_name":
            w.add(
                line,
                f"SMTP_CHECK helo_name {' '.join(a)}: sekisho's SMTP check reads the 220 "
                "banner and sends no HELO; ignored",
            )
        else:
            unsupported(child, w, kind)
    return check


def _url(node: Node, check: dict[str, Any], w: Warnings) -> None:
    check["path"] = "/"
    for child in node.block():
        kw, a, line = child.keyword, child.args, child.line
        if kw == "path" and a:
            check["path"] = a[0] if a[0].startswith("/") else "/" + a[0]
        elif kw == "status_code" and a:
            codes: list[int] = check.setdefault("expect_status", [])
            for item in a:
                lo, _, hi = item.partition("-")
                try:
                    first, last = int(lo), int(hi or lo)
                except ValueError:
                    w.add(line, f"status_code {item}: not a status code; ignored")
                    continue
                codes.extend(c for c in range(max(first, 100), min(last, 599) + 1) if c not in codes)
        elif kw == "digest":
            w.add(line, "url digest: sekisho does not compare a body digest; the status code is checked")
        elif kw == "regex":
            w.add(line, "url regex: sekisho matches a plain string (health.expect_body); ignored")
        else:
            unsupported(child, w, "url")


def _pool_health(
    servers: list[tuple[Node, dict[str, Any]]],
    defaults: dict[str, Any],
    interval: float | None,
    w: Warnings,
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The pool's check, and the MISC_CHECK command lines of the servers that run their own
    (keepalived has one checker per real server; sekisho one per pool, plus a server's own
    `health_command` for a script check)."""
    first: dict[str, Any] | None = None
    first_line = 0
    own: dict[str, str] = {}
    for rs_node, rs in servers:
        checks = rs["checks"]
        for extra in checks[1:]:
            w.add(
                extra["line"],
                f"{extra['checker']}: sekisho runs one health check per pool; "
                f"the first ({checks[0]['checker']}) is kept",
            )
        if not checks:
            if first is not None:
                w.add(
                    rs_node.line,
                    f"real_server {rs['address']} has no checker but others have; "
                    "sekisho checks it like them",
                )
            continue
        candidate = _health(checks[0], defaults, interval, w)
        if first is None:
            first, first_line = candidate, checks[0]["line"]
        elif candidate != first and _only_command_differs(candidate, first):
            own[rs["address"]] = checks[0]["command"]  # its own misc_path, as written
        elif candidate != first:
            w.add(
                checks[0]["line"],
                f"real_server {rs['address']}: its check differs from the one at "
                f"line {first_line}; sekisho checks a pool's servers alike, with that one",
            )
    if first is None and interval is not None:
        return None, own  # delay_loop without checkers: keepalived never checks either
    return first, own


def _only_command_differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["kind"] == b["kind"] == "script" and {**a, "command": None} == {**b, "command": None}


def _generalise(command: str, ip: str | None, port: int | None) -> list[str] | None:
    """misc_path with the real server's address and port as sekisho's placeholders ("{host}",
    "{port}"), so that one pool command checks each server as its own misc_path did; None
    when the command names neither (or cannot be split)."""
    if ip is None:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    address = re.compile(rf"(?<![\w.:]){re.escape(ip)}(?![\w.])")
    out, changed = [], False
    for word in words:
        new = address.sub("{host}", word)
        if port is not None:
            new = new.replace("{host}:" + str(port), "{host}:{port}")
            if new == str(port):
                new = "{port}"
        changed |= new != word
        out.append(new)
    return out if changed else None


def _health(
    check: dict[str, Any], defaults: dict[str, Any], interval: float | None, w: Warnings
) -> dict[str, Any]:
    checker = check["checker"]
    kind = {
        "TCP_CHECK": "tcp",
        "HTTP_GET": "http",
        "SSL_GET": "tcp",
        "SMTP_CHECK": "smtp",
        "MISC_CHECK": "script",
    }[checker]
    health: dict[str, Any] = {"kind": kind}
    if kind == "http":
        health["path"] = check.get("path", "/")
        health["expect_status"] = check.get("expect_status", [200])
        host = check.get("host") or (defaults["virtualhost"][0] if "virtualhost" in defaults else None)
        if host:
            health["host"] = host
    if kind == "script":
        if "command" not in check:
            w.add(check["line"], "MISC_CHECK without misc_path; checked as a TCP connect")
            health["kind"] = "tcp"
        else:
            general = _generalise(check["command"], check.get("server_ip"), check.get("server_port"))
            health["command"] = general if general is not None else check["command"]
    if "port" in check and kind != "script":
        health["port"] = check["port"]
    health["interval"] = interval or 60.0  # keepalived's default delay_loop
    timeout = check.get("timeout")
    if timeout is None and "connect_timeout" in defaults:
        value, line = defaults["connect_timeout"]
        timeout = positive(to_float(value, line, "connect_timeout", w))
    health["timeout"] = timeout or (10.0 if checker == "MISC_CHECK" else 5.0)  # keepalived's defaults
    retry = check.get("retry")
    if retry is None:
        given = defaults.get("retry") or defaults.get("nb_get_retry")
        retry = to_int(given[0], given[1], "retry", w, lo=0, hi=99) if given else None
    if retry is None:
        retry = _DEFAULT_RETRY[checker]
    health["rise"] = 1  # keepalived brings a server back after one good check
    health["fall"] = retry + 1
    return health
