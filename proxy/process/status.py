"""`sekisho status` and the /status page: one snapshot, two renderings.

The daemon serves its state as JSON at GET /api/status on the admin listener
(`global.metrics`, never a public one). `sekisho status` fetches it and
prints what `ipvsadm -Ln` and keepalived's log told the operator: listeners,
routes, every pool's servers with state, weights, connections and the last
check, and each VRRP instance's state and current master. `--json` prints the
snapshot itself for scripts. `render_html` turns the same snapshot into a
small self-contained page (no external assets, no script; a meta refresh
reloads it), in the spirit of HAProxy's stats page.

Every renderer tolerates missing keys: the snapshot grows over time and a
newer `sekisho status` must still read an older daemon.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

DEFAULT_CONFIG = "/etc/sekisho/sekisho.toml"
REFRESH_SECONDS = 5

# ----------------------------------------------------------------- fetching


def admin_url(address: str, path: str = "/api/status") -> str:
    """'127.0.0.1:9100' -> 'http://127.0.0.1:9100/api/status'; a wildcard means this host."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def fetch(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /api/status from the admin listener; raises OSError or ValueError."""
    url = admin_url(address)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    # The admin listener is local by design: never let an http_proxy variable reroute it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        data = json.loads(response.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return data


def _admin_from_config(path: str) -> str:
    import conf

    config = conf.load_file(path)
    if config.global_.metrics is None:
        raise LookupError(f"{path}: no global.metrics (the admin listener); pass --admin HOST:PORT")
    return str(config.global_.metrics)


def main(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`sekisho status [-c FILE] [--admin HOST:PORT] [--json]`; argv follows `status`.

    Exit status: 0 shown, 1 the daemon did not answer, 2 the config could not be read.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="sekisho status",
        description="Show listeners, routes, pools and VRRP state of a running sekisho.",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the daemon's config, read for its admin listener, global.metrics ({DEFAULT_CONFIG})",
    )
    parser.add_argument("--admin", metavar="HOST:PORT", help="the admin listener, instead of reading -c")
    parser.add_argument("--json", action="store_true", help="print the JSON snapshot")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon")
    args = parser.parse_args(list(argv))
    address = args.admin
    if address is None:
        import conf

        try:
            address = _admin_from_config(args.config)
        except conf.ConfigError as exc:
            print(f"sekisho status: {args.config}:\n{exc}", file=err)
            if not os.path.exists(args.config):
                print(
                    "name the running daemon's config with -c FILE, or its admin listener"
                    " (global.metrics) with --admin HOST:PORT",
                    file=err,
                )
            return 2
        except LookupError as exc:
            print(f"sekisho status: {exc.args[0]}", file=err)
            return 2
    try:
        snapshot = fetch(address, args.timeout)
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"sekisho status: no answer from {admin_url(address)}: {reason}", file=err)
        print("is sekisho running? (systemctl status sekisho)", file=err)
        return 1
    if args.json:
        json.dump(snapshot, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(render_text(snapshot))
    return 0


# ------------------------------------------------------------- shared views


def _list(snapshot: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = snapshot.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _num(value: Any, default: float = 0) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


def duration(seconds: float) -> str:
    """12 -> '12s', 754 -> '12m34s', 93784 -> '1d2h03m'."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h{s % 3600 // 60:02d}m"


def server_state(server: Mapping[str, Any]) -> str:
    """UP, DOWN, or for a server in the table with weight 0 by hand, DRAIN."""
    if not server.get("up", False):
        return "DOWN"
    if _num(server.get("weight"), 1) == 0:
        return "DRAIN"
    return "UP"


def check_text(server: Mapping[str, Any], now: float) -> str:
    check = server.get("last_check")
    if not isinstance(check, dict):
        return "-"
    parts = ["ok" if check.get("ok") else "failed"]
    message = check.get("message") or check.get("reason")
    if message and not check.get("ok"):
        parts.append(str(message))
    if isinstance(check.get("duration"), int | float):
        parts.append(f"{check['duration'] * 1000:.1f}ms")
    if isinstance(check.get("time"), int | float):
        parts.append(f"{duration(now - check['time'])} ago")
    return " ".join(parts)


def route_match(route: Mapping[str, Any]) -> str:
    kind = route.get("kind")
    if kind == "smtp":
        return f"rcpt @{route.get('domain') or '*'}"
    if kind == "tcp":
        return "*"
    return f"{route.get('host') or '*'} {route.get('path') or '/'}"


def vrrp_master(instance: Mapping[str, Any]) -> str:
    if instance.get("state") == "MASTER":
        own = instance.get("primary_address")
        return f"this node ({own})" if own else "this node"
    return str(instance.get("master_address") or "-")


def pool_summary(pool: Mapping[str, Any]) -> tuple[int, int]:
    """(servers up, real servers): the sorry server is not counted."""
    servers = [s for s in _list(pool, "servers") if not s.get("sorry")]
    return sum(1 for s in servers if s.get("up")), len(servers)


# ------------------------------------------------------------------- text


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    right = {i for i, h in enumerate(headers) if h in _NUMERIC}

    def line(cells: Sequence[str]) -> str:
        text = "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return (indent + text).rstrip()

    return [line(headers), *(line(r) for r in rows)]


_NUMERIC = {"ACTIVE", "ACCEPTED", "WEIGHT", "EFF", "CONNS", "TOTAL", "FAILS", "VRID", "PRIO"}


def render_text(snapshot: Mapping[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []
    head = f"sekisho {snapshot.get('version', '?')}"
    if snapshot.get("config"):
        head += f"  config {snapshot['config']}"
    if isinstance(snapshot.get("started"), int | float):
        head += f"  up {duration(now - snapshot['started'])}"
    head += f"  reloads {snapshot.get('reloads', 0)}"
    lines.append(head)

    listeners = _list(snapshot, "listeners")
    lines += ["", "Listeners"]
    rows = [
        [str(li.get("kind", "?")), str(li.get("address", "?")), _opt(li, "active"), _opt(li, "accepted")]
        for li in listeners
    ]
    lines += _table(["KIND", "ADDRESS", "ACTIVE", "ACCEPTED"], rows) if rows else ["  (none)"]
    if workers := worker_rows(_list(snapshot, "workers")):
        lines += ["", "Workers", *_table(WORKER_HEADERS, workers)]

    routes = _list(snapshot, "routes")
    lines += ["", "Routes (first match wins)"]
    rows = [
        [str(r.get("listener", "?")), str(r.get("kind", "?")), route_match(r), str(r.get("target", "?"))]
        for r in routes
    ]
    lines += _table(["LISTENER", "KIND", "MATCH", "TARGET"], rows) if rows else ["  (none)"]

    pools = _list(snapshot, "pools")
    lines += ["", "Pools"]
    if not pools:
        lines.append("  (none)")
    for pool in pools:
        up, total = pool_summary(pool)
        extra = f"  health {pool['health']}" if pool.get("health") else ""
        flag = "  ALL SERVERS DOWN" if total and not up else ""
        lines.append(f"  {pool.get('name', '?')}  {pool.get('scheduler', '?')}{extra}  {up}/{total} up{flag}")
        rows = []
        for s in _list(pool, "servers"):
            address = str(s.get("address", "?"))
            if s.get("configured") and s["configured"] != address:
                address += f" ({s['configured']})"
            state = server_state(s) + (" sorry" if s.get("sorry") else "")
            if s.get("in_table") is False:
                state += " removed"
            rows.append(
                [
                    f"-> {address}",
                    state,
                    _opt(s, "weight"),
                    _opt(s, "effective_weight"),
                    _opt(s, "active"),
                    _opt(s, "total"),
                    _opt(s, "connect_failures"),
                    check_text(s, now),
                ]
            )
        lines += _table(
            ["-> SERVER", "STATE", "WEIGHT", "EFF", "CONNS", "TOTAL", "FAILS", "LAST CHECK"], rows, "    "
        )

    vrrp = _list(snapshot, "vrrp")
    lines += ["", "VRRP"]
    rows = []
    for v in vrrp:
        since = "-"
        if isinstance(v.get("last_transition"), int | float) and v["last_transition"] > 0:
            since = f"{duration(now - v['last_transition'])} ago"
        rows.append(
            [
                str(v.get("name", "?")),
                str(v.get("interface", "?")),
                _opt(v, "virtual_router_id"),
                str(v.get("state", "?")),
                _opt(v, "priority"),
                vrrp_master(v),
                since,
            ]
        )
    lines += (
        _table(["NAME", "INTERFACE", "VRID", "STATE", "PRIO", "MASTER", "SINCE"], rows)
        if rows
        else ["  (none)"]
    )
    lines += anycast_lines(_list(snapshot, "anycast"), now)
    if certs := certificate_rows(snapshot.get("acme"), now):
        header = ["HOST", "STATE", "EXPIRES", "RENEWAL", "LAST ERROR"]
        lines += ["", "CERTIFICATES (ACME)", *_table(header, certs)]
    return "\n".join(lines) + "\n"


def certificate_rows(acme: Mapping[str, Any] | None, now: float) -> list[list[str]]:
    """One row per ACME-managed host: state, expiry, next renewal or retry, last error."""
    if not acme:
        return []

    def when(t: Any) -> str:
        if not isinstance(t, int | float):
            return "-"
        return f"in {duration(t - now)}" if t >= now else f"{duration(now - t)} ago"

    rows = [
        [
            str(c.get("host")),
            str(c.get("state")),
            when(c.get("not_after")),
            f"retry {when(c['next_try'])}" if c.get("next_try") else when(c.get("renew_at")),
            str(c.get("last_error") or "-")[:80],
        ]
        for c in acme.get("certificates", ())
    ]
    rows += [[h, "needs DNS-01 (not supported)", "-", "-", "-"] for h in acme.get("need_dns01", ())]
    return rows


WORKER_HEADERS = ["WORKER", "PID", "GENERATION", "STATE", "CONNS", "REQUESTS", "UP"]


def worker_rows(workers: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The worker processes (global.workers > 1): one row each, a draining one too."""
    return [
        [
            _opt(w, "index"),
            _opt(w, "pid"),
            _opt(w, "generation"),
            str(w.get("state", "?")),
            _opt(w, "connections"),
            _opt(w, "requests"),
            duration(_num(w.get("uptime"))),
        ]
        for w in workers
    ]


def anycast_lines(groups: Sequence[Mapping[str, Any]], now: float) -> list[str]:
    """The ANYCAST table (none when no group is configured): announced or not, why, since."""
    rows = anycast_rows(groups, now)
    return ["", "ANYCAST", *_table(["GROUP", "VIPS", "STATE", "WHY", "SINCE"], rows)] if rows else []


def anycast_rows(groups: Sequence[Mapping[str, Any]], now: float) -> list[list[str]]:
    return [
        [
            str(g.get("name", "?")),
            " ".join(g.get("vips", ())),
            "announced" if g.get("announced") else "withdrawn",
            str(g.get("reason", "")),
            f"{duration(now - g['since'])} ago" if isinstance(g.get("since"), int | float) else "-",
        ]
        for g in groups
    ]


def _opt(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    return "-" if value is None else str(value)


# ------------------------------------------------------------------- html

_CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 .2em}h2{font-size:15px;margin:1.4em 0 .4em}
.meta{color:#555}table{border-collapse:collapse;margin-bottom:.6em;min-width:40em}
th,td{border:1px solid #bbb;padding:2px 8px;text-align:left;white-space:nowrap}
th{background:#dde3ea}td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0}
tr.up td{background:#c8f0c8}tr.down td{background:#f4b8b8}tr.drain td{background:#f5deb0}
tr.sorry td{font-style:italic}tr.removed td{color:#777}
.badge{display:inline-block;padding:0 6px;border-radius:3px;font-weight:600}
.MASTER{background:#3a3;color:#fff}.BACKUP{background:#79c;color:#fff}
.FAULT{background:#c33;color:#fff}.INIT{background:#999;color:#fff}
.alert{color:#b00;font-weight:600}
""".strip()


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def render_html(snapshot: dict[str, Any], now: float | None = None) -> str:
    """A self-contained status page: inline CSS, no script, a meta refresh."""
    now = time.time() if now is None else now
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>sekisho status - {_e(snapshot.get('version', '?'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>sekisho status</h1>",
    ]
    meta = [f"version {_e(snapshot.get('version', '?'))}"]
    if snapshot.get("config"):
        meta.append(f"config {_e(snapshot['config'])}")
    if isinstance(snapshot.get("started"), int | float):
        meta.append(f"up {duration(now - snapshot['started'])}")
    meta.append(f"reloads {_e(snapshot.get('reloads', 0))}")
    meta.append(f"as of {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}")
    meta.append(f"refreshed every {REFRESH_SECONDS}s")
    out.append(f'<p class="meta">{" &middot; ".join(meta)}</p>')

    # VRRP first: whether this node holds the address is the first question.
    vrrp = _list(snapshot, "vrrp")
    out.append(
        '<h2>VRRP</h2><table id="vrrp"><tr><th>Instance</th><th>Interface</th><th>VRID</th>'
        "<th>State</th><th>Priority</th><th>Master</th><th>Since</th></tr>"
    )
    for v in vrrp:
        state = str(v.get("state", "?"))
        since = "-"
        if isinstance(v.get("last_transition"), int | float) and v["last_transition"] > 0:
            since = f"{duration(now - v['last_transition'])} ago"
        out.append(
            f'<tr data-instance="{_e(v.get("name"))}"><td>{_e(v.get("name"))}</td>'
            f"<td>{_e(v.get('interface'))}</td><td class=n>{_e(v.get('virtual_router_id'))}</td>"
            f'<td><span class="badge {_e(state)}">{_e(state)}</span></td>'
            f"<td class=n>{_e(v.get('priority'))}</td><td>{_e(vrrp_master(v))}</td><td>{_e(since)}</td></tr>"
        )
    if not vrrp:
        out.append('<tr><td colspan="7">no VRRP instance</td></tr>')
    out.append("</table>")
    if workers := worker_rows(_list(snapshot, "workers")):
        out.append('<h2>Workers</h2><table id="workers"><tr>')
        out.append("".join(f"<th>{_e(h.title())}</th>" for h in WORKER_HEADERS) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in workers]
        out.append("</table>")
    if anycast := anycast_rows(_list(snapshot, "anycast"), now):
        out.append('<h2>Anycast</h2><table id="anycast"><tr><th>Group</th><th>VIPs</th><th>State</th>')
        out.append("<th>Why</th><th>Since</th></tr>")
        out += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in anycast]
        out.append("</table>")
    if certs := certificate_rows(snapshot.get("acme"), now):
        out.append('<h2>Certificates (ACME)</h2><table id="certificates"><tr><th>Host</th><th>State</th>')
        out.append("<th>Expires</th><th>Renewal</th><th>Last error</th></tr>")
        out += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in certs]
        out.append("</table>")

    out.append("<h2>Pools</h2>")
    pools = _list(snapshot, "pools")
    if not pools:
        out.append("<p>no pool</p>")
    for pool in pools:
        up, total = pool_summary(pool)
        alert = ' <span class="alert">all servers down</span>' if total and not up else ""
        health = f" &middot; health {_e(pool['health'])}" if pool.get("health") else ""
        out.append(
            f'<table class="pool" data-pool="{_e(pool.get("name"))}"><caption>{_e(pool.get("name"))} '
            f"&middot; {_e(pool.get('scheduler'))}{health} &middot; {up}/{total} up{alert}</caption>"
            "<tr><th>Server</th><th>State</th><th>Weight</th><th>Effective</th><th>Active</th>"
            "<th>Total</th><th>Connect failures</th><th>Last check</th></tr>"
        )
        for s in _list(pool, "servers"):
            state = server_state(s)
            classes = [state.lower()]
            label = state
            if s.get("sorry"):
                classes.append("sorry")
                label += " (sorry)"
            if s.get("in_table") is False:
                classes.append("removed")
                label += " (removed)"
            name = _e(s.get("address"))
            if s.get("configured") and s["configured"] != s.get("address"):
                name += f" <small>({_e(s['configured'])})</small>"
            out.append(
                f'<tr class="{" ".join(classes)}" data-server="{_e(s.get("address"))}" data-state="{state}">'
                f"<td>{name}</td><td>{_e(label)}</td>"
                f"<td class=n>{_e(s.get('weight'))}</td><td class=n>{_e(s.get('effective_weight'))}</td>"
                f"<td class=n>{_e(s.get('active'))}</td><td class=n>{_e(s.get('total'))}</td>"
                f"<td class=n>{_e(s.get('connect_failures'))}</td><td>{_e(check_text(s, now))}</td></tr>"
            )
        out.append("</table>")

    out.append(
        '<h2>Listeners</h2><table id="listeners"><tr><th>Kind</th><th>Address</th>'
        "<th>Active</th><th>Accepted</th></tr>"
    )
    for li in _list(snapshot, "listeners"):
        out.append(
            f"<tr><td>{_e(li.get('kind'))}</td><td>{_e(li.get('address'))}</td>"
            f"<td class=n>{_e(li.get('active'))}</td><td class=n>{_e(li.get('accepted'))}</td></tr>"
        )
    out.append("</table>")

    out.append(
        '<h2>Routes</h2><table id="routes"><tr><th>Listener</th><th>Kind</th><th>Match</th>'
        "<th>Target</th></tr>"
    )
    for r in _list(snapshot, "routes"):
        out.append(
            f"<tr><td>{_e(r.get('listener'))}</td><td>{_e(r.get('kind'))}</td>"
            f"<td>{_e(route_match(r))}</td><td>{_e(r.get('target'))}</td></tr>"
        )
    out.append("</table>")
    out.append(
        '<p class="meta">JSON: <a href="/api/status">/api/status</a> &middot; '
        'Prometheus: <a href="/metrics">/metrics</a></p>'
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


__all__ = ["admin_url", "fetch", "main", "render_html", "render_text"]
