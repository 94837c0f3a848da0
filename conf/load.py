"""TOML -> Config, with every problem reported by key path.

Checks here are the ones that need nothing but the file: types, ranges,
addresses, names that must refer to something, listeners used twice, routes
that can never match. What depends on the machine (certificate files,
interfaces, binds) is checked by `sekisho check --live` and at `run`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from conf.access import AccessEntry
from conf.access import problems as access_problems
from conf.acme import acme_item, acme_settings
from conf.errors import ConfigError, ConfigIssue
from conf.fields import (
    Issues,
    Table,
    access_item,
    address_item,
    interface_item,
    ip_item,
    network_item,
    parse_address,
    string_item,
)
from conf.model import (
    SCHEDULERS,
    AcmeSettings,
    Address,
    AnycastGroup,
    Config,
    GlobalSettings,
    HealthCheck,
    HttpListener,
    HttpRoute,
    HttpTimeouts,
    IPInterface,
    Pool,
    Server,
    SmtpListener,
    SmtpRoute,
    SmtpTimeouts,
    TcpService,
    TcpTimeouts,
    TlsCert,
    VrrpInstance,
    VrrpNotify,
    VrrpScript,
    VrrpTrack,
    VrrpTrackScript,
)

_POOL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2
_HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")
_HEADER_NAMES = (
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
)
_REDIRECT_CODES = (301, 302, 303, 307, 308)


def load_file(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read {path}: {exc.strerror}")]) from None
    return load_text(text, source=str(path))


def load_text(text: str, source: str = "<string>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"{source}: TOML syntax: {exc}")]) from None
    issues = Issues()
    config = _build(raw, issues, source)
    if issues.items:
        raise ConfigError(issues.items)
    return config


def _build(raw: dict[str, Any], issues: Issues, source: str) -> Config:
    top = Table(raw, "", issues)
    glob = _global(top.get_table("global"), issues)
    pools = _pools(top.get_table("pool"), issues)
    http = tuple(_array_of_tables(top, "http", issues, lambda t: _http(t, issues)))
    smtp = tuple(_array_of_tables(top, "smtp", issues, lambda t: _smtp(t, issues)))
    tcp = tuple(_array_of_tables(top, "tcp", issues, lambda t: _tcp(t, issues)))
    scripts = _vrrp_scripts(top.get_table("vrrp_script"), issues)
    vrrp = tuple(_array_of_tables(top, "vrrp", issues, lambda t: _vrrp(t, issues, scripts)))
    anycast = tuple(_array_of_tables(top, "anycast", issues, lambda t: _anycast(t, issues)))
    acme, http = acme_settings(top.get_table("acme"), http, issues)
    top.done()
    config = Config(glob, pools, http, smtp, tcp, vrrp, source, anycast=anycast, acme=acme)
    _cross_checks(config, issues)
    _anycast_checks(config, issues)
    return config


def _array_of_tables(top: Table, name: str, issues: Issues, build: Any) -> list[Any]:
    top.seen.add(name)
    if name not in top.raw:
        return []
    items = top.raw[name]
    if not isinstance(items, list):
        issues.add(name, f"expected an array of tables ([[{name}]]), got a single table")
        return []
    out = []
    for i, item in enumerate(items):
        built = build(Table(item, f"{name}[{i}]", issues))
        if built is not None:
            out.append(built)
    return out


# --------------------------------------------------------------------- global


def _global(t: Table | None, issues: Issues) -> GlobalSettings:
    if t is None:
        return GlobalSettings()
    d = GlobalSettings()
    metrics = None
    if t.has("metrics"):
        metrics = address_item(issues)(t.get_str("metrics", None), t.key("metrics"))
    metrics_allow = _allow(t, d.metrics_allow, "metrics_allow")
    if t.has("metrics_allow") and t.raw["metrics_allow"] == []:
        t.error("metrics_allow", "an empty list shuts everyone out; omit it to allow every client")
    token_file = t.get_str("admin_token_file", None)
    if token_file is not None and not token_file.strip():
        t.error("admin_token_file", "expected a file path, got an empty string")
        token_file = None
    settings = GlobalSettings(
        metrics=metrics,
        metrics_allow=metrics_allow,
        admin_token_file=token_file,
        pidfile=t.get_str("pidfile", d.pidfile),
        access_log=t.get_str("access_log", d.access_log),
        log_format=t.get_choice("log_format", ("combined", "json"), d.log_format),
        log_level=t.get_choice("log_level", ("debug", "info", "warning", "error"), d.log_level),
        drain_timeout=t.get_float("drain_timeout", d.drain_timeout, positive=True),
        workers=_workers(t),
    )
    t.done()
    return settings


MAX_WORKERS = 1024


def _workers(t: Table) -> int | Literal["auto"]:
    if not t.has("workers") or t.raw["workers"] == "auto":
        t.seen.add("workers")
        return "auto"
    if isinstance(t.raw["workers"], str):
        t.seen.add("workers")
        t.error("workers", f'expected a number of processes or "auto", got {t.raw["workers"]!r}')
        return "auto"
    n: int = t.get_int("workers", 1, lo=1, hi=MAX_WORKERS)
    return n


# ---------------------------------------------------------------------- pools


def _pools(t: Table | None, issues: Issues) -> dict[str, Pool]:
    if t is None:
        return {}
    pools: dict[str, Pool] = {}
    for name in t.raw:
        t.seen.add(name)
        if not _POOL_NAME.match(name):
            t.error(name, "pool names use letters, digits, '_', '-' and '.'")
        pool = _pool(name, Table(t.raw[name], t.key(name), issues), issues)
        if pool is not None:
            pools[name] = pool
    return pools


def _pool(name: str, t: Table, issues: Issues) -> Pool | None:
    d = Pool(name, ())
    servers = t.get_list("servers", lambda v, p: _server(v, p, issues))
    if t.has("servers") and isinstance(t.raw["servers"], list) and not t.raw["servers"]:
        t.error("servers", "a pool needs at least one server")
    health_table = t.get_table("health")
    health = _health(health_table) if health_table else HealthCheck()
    sorry = None
    if t.has("sorry_server"):
        sorry = address_item(issues)(t.get_str("sorry_server", None), t.key("sorry_server"))
    pool = Pool(
        name=name,
        servers=servers,
        scheduler=t.get_choice("scheduler", SCHEDULERS, d.scheduler),
        health=health,
        on_failure=t.get_choice("on_failure", ("inhibit", "remove"), d.on_failure),
        sorry_server=sorry,
        proxy_protocol=t.get_choice("proxy_protocol", ("v1", "v2"), None),
        resolve_interval=t.get_float("resolve_interval", d.resolve_interval, positive=True),
        slow_start=t.get_float("slow_start", d.slow_start, lo=0.0),
    )
    _script_commands(pool, t)
    seen: dict[Address, int] = {}
    for i, server in enumerate(servers):
        if server.address in seen:
            t.error(f"servers[{i}].address", f"{server.address} is also servers[{seen[server.address]}]")
        seen.setdefault(server.address, i)
    t.done()
    return pool


def _server(value: object, path: str, issues: Issues) -> Server | None:
    t = Table(value, path, issues)
    address = None
    if t.has("address") or not t.raw:
        raw = t.get_str("address")
        if raw is not None:
            address = address_item(issues)(raw, t.key("address"))
    else:
        t.error("address", "required")
    server = Server(
        address=address or Address("invalid", 1),
        weight=t.get_int("weight", 1, lo=0, hi=65535),
        max_connections=t.get_int("max_connections", 0, lo=0),
        health_command=_command(t, "health_command"),
    )
    t.done()
    return server if address is not None else None


_HEALTH_ONLY = {
    "path": "http",
    "expect_status": "http",
    "expect_body": "http",
    "host": "http",
    "command": "script",
}


def _health(t: Table) -> HealthCheck:
    d = HealthCheck()
    kind = t.get_choice("kind", ("tcp", "http", "smtp", "script", "none"), "tcp")
    for key, owner in _HEALTH_ONLY.items():
        if t.has(key) and kind != owner:
            t.error(key, f"only for kind = {owner!r}")
    command: tuple[str, ...] = ()
    if t.has("command"):
        raw = t.raw["command"]
        t.seen.add("command")
        if isinstance(raw, str):
            command = tuple(shlex.split(raw))
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            command = tuple(raw)
        else:
            t.error("command", "expected a string or an array of strings")
    path = t.get_str("path", d.path)
    if isinstance(path, str) and not path.startswith("/"):
        t.error("path", "must start with '/'")
    statuses = t.get_list("expect_status", _status_item(t), d.expect_status)
    check = HealthCheck(
        kind=kind,
        interval=t.get_float("interval", d.interval, positive=True),
        timeout=t.get_float("timeout", d.timeout, positive=True),
        rise=t.get_int("rise", d.rise, lo=1, hi=100),
        fall=t.get_int("fall", d.fall, lo=1, hi=100),
        port=t.get_int("port", None, lo=1, hi=65535),
        path=path,
        expect_status=statuses,
        expect_body=t.get_str("expect_body", None),
        host=t.get_str("host", None),
        command=command,
    )
    t.done()
    return check


def _script_commands(pool: Pool, t: Table) -> None:
    """A `script` check needs a command for every server: the pool's, or the server's own."""
    for i, server in enumerate(pool.servers):
        if server.health_command and pool.health.kind != "script":
            t.error(f"servers[{i}].health_command", "only for health.kind = 'script'")
    every = bool(pool.servers) and all(s.health_command for s in pool.servers)
    if pool.health.kind == "script" and not pool.health.command and not every:
        t.error("health.command", "required for kind = 'script'")


def _status_item(t: Table) -> Any:
    def convert(value: object, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            t.issues.add(path, "expected an HTTP status code (100-599)")
            return None
        return value

    return convert


# ----------------------------------------------------------------------- http


def _listen(t: Table) -> tuple[Address, ...]:
    listen: tuple[Address, ...] = t.get_list("listen", address_item(t.issues), allow_scalar=True)
    if t.has("listen") and not listen and not t.issues.items:
        t.error("listen", "needs at least one address")
    return listen


def _tls_item(issues: Issues, acme: bool = False) -> Any:
    def convert(value: object, path: str) -> TlsCert | AcmeSettings | None:
        t = Table(value, path, issues)
        if acme and isinstance(value, dict) and "acme" in value:
            return acme_item(t)  # { acme = true }: certificates ordered for the route hosts
        cert, key = t.get_str("cert"), t.get_str("key")
        t.done()
        return TlsCert(cert, key) if cert and key else None

    return convert


def _http(t: Table, issues: Issues) -> HttpListener:
    d = HttpListener(())
    timeouts = HttpTimeouts()
    tt = t.get_table("timeouts")
    if tt is not None:
        timeouts = HttpTimeouts(
            header=tt.get_float("header", timeouts.header, positive=True),
            idle=tt.get_float("idle", timeouts.idle, positive=True),
            connect=tt.get_float("connect", timeouts.connect, positive=True),
            response=tt.get_float("response", timeouts.response, positive=True),
        )
        tt.done()
    headers = t.get_list("forwarded_headers", string_item(issues), d.forwarded_headers)
    lowered = tuple(h.lower() for h in headers)
    for i, h in enumerate(lowered):
        if h not in _HEADER_NAMES:
            issues.add(
                f"{t.key('forwarded_headers')}[{i}]",
                f"unknown header {h!r}; one of {', '.join(_HEADER_NAMES)}",
            )
    routes_raw = t.raw.get("route", [])
    t.seen.add("route")
    routes: list[HttpRoute] = []
    if not isinstance(routes_raw, list):
        t.error("route", "expected an array of tables ([[http.route]])")
        routes_raw = []
    for i, r in enumerate(routes_raw):
        route = _http_route(Table(r, t.key(f"route[{i}]"), issues))
        if route is not None:
            routes.append(route)
    tls = t.get_list("tls", _tls_item(issues, acme=True), (), allow_scalar=True)
    listener = HttpListener(
        listen=_listen(t),
        routes=tuple(routes),
        tls=tuple(c for c in tls if isinstance(c, TlsCert)),
        acme=next((c for c in tls if isinstance(c, AcmeSettings)), None),
        allow=_allow(t, d.allow),
        trusted_proxies=t.get_list("trusted_proxies", network_item(issues), ()),
        forwarded_headers=lowered,
        max_connections=t.get_int("max_connections", d.max_connections, lo=1),
        max_header_bytes=t.get_int("max_header_bytes", d.max_header_bytes, lo=1024, hi=1048576),
        max_body_bytes=t.get_int("max_body_bytes", d.max_body_bytes, lo=0),
        http2=t.get_bool("http2", d.http2),
        h2c=t.get_bool("h2c", d.h2c),
        max_concurrent_streams=t.get_int("max_concurrent_streams", d.max_concurrent_streams, lo=1, hi=10000),
        timeouts=timeouts,
    )
    if not routes_raw:
        t.error("route", "an http listener needs at least one [[http.route]]")
    _check_shadowed_routes(listener, t)
    t.done()
    return listener


def _http_route(t: Table) -> HttpRoute | None:
    host = t.get_str("host", None)
    if host is not None:
        host = host.lower().rstrip(".")
        if not _HOST_PATTERN.match(host):
            t.error("host", f"{host!r} is not a host name or '*.suffix'")
    path = t.get_str("path", "/")
    if isinstance(path, str) and not path.startswith("/"):
        t.error("path", "must start with '/'")
    pool = t.get_str("pool", None)
    redirect = t.get_str("redirect", None)
    status = t.get_int("status", None, lo=100, hi=599)
    strip = t.get_bool("strip_prefix", False)
    rewrite = t.get_str("rewrite_prefix", None)
    upgrade = t.get_list("upgrade", _upgrade_item(t.issues), HttpRoute.upgrade)
    if pool is not None and redirect is not None:
        t.error("redirect", "a route has one target: pool or redirect, not both")
    if pool is not None and status is not None:
        t.error("status", "a route with a pool takes its status from the backend")
    if pool is None and redirect is None and status is None:
        t.error("pool", "a route needs a target: pool, redirect or status")
    if redirect is not None:
        if status is None:
            status = 301
        elif status not in _REDIRECT_CODES:
            t.error("status", f"a redirect status is one of {', '.join(map(str, _REDIRECT_CODES))}")
        if not re.match(r"^(https?://[^/\s]+)?/\S*$", redirect):
            t.error("redirect", "expected an absolute URL (https://host/path) or a path")
    if strip and pool is None:
        t.error("strip_prefix", "only for routes with a pool")
    if rewrite is not None:
        if pool is None:
            t.error("rewrite_prefix", "only for routes with a pool")
        elif strip:
            t.error("rewrite_prefix", 'strip_prefix = true is rewrite_prefix = "/": set one of them')
        elif not rewrite.startswith("/") or any(c in rewrite for c in "?# \t"):
            t.error("rewrite_prefix", "expected a path that starts with '/' (no query, no spaces)")
    if t.has("upgrade") and pool is None:
        t.error("upgrade", "only for routes with a pool")
    t.done()
    return HttpRoute(
        host, path, pool, status, redirect, bool(strip), tuple(dict.fromkeys(upgrade)), rewrite_prefix=rewrite
    )


def _upgrade_item(issues: Issues) -> Callable[[object, str], str | None]:
    """An Upgrade protocol name (RFC 9110 7.8: a token, compared case-insensitively)."""

    def convert(value: object, path: str) -> str | None:
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            issues.add(path, f"expected a protocol name such as 'websocket', got {value!r}")
            return None
        name = value.lower()
        if name == "h2c":
            issues.add(path, "h2c is never tunnelled: its requests would bypass routing and rules")
            return None
        return name

    return convert


def _host_covers(earlier: str | None, later: str | None) -> bool:
    """Does `earlier` match every host that `later` matches?"""
    if earlier is None:
        return True
    if later is None:
        return False
    if earlier == later:
        return True
    if earlier.startswith("*."):
        suffix = earlier[1:]  # ".example.com"
        return later.endswith(suffix) and later != suffix[1:]
    return False


def _check_shadowed_routes(listener: HttpListener, t: Table) -> None:
    for j, later in enumerate(listener.routes):
        for i, earlier in enumerate(listener.routes[:j]):
            if _host_covers(earlier.host, later.host) and later.path.startswith(earlier.path):
                t.error(
                    f"route[{j}]",
                    f"can never match: route[{i}] (host={earlier.host or '*'}, "
                    f"path={earlier.path}) takes every request it would",
                )
                break


def _allow(t: Table, default: tuple[AccessEntry, ...], key: str = "allow") -> tuple[AccessEntry, ...]:
    """A listener's `allow` (conf.access): entries in order, first match wins."""
    entries: tuple[AccessEntry, ...] = t.get_list(key, access_item(t.issues), default)
    if t.has(key) and isinstance(t.raw[key], list) and len(entries) == len(t.raw[key]):
        for i, reason in access_problems(entries):
            t.issues.add(f"{t.key(key)}[{i}]", f"{entries[i]} {reason}")
    return entries


# ----------------------------------------------------------------------- smtp


def _smtp(t: Table, issues: Issues) -> SmtpListener:
    d = SmtpListener((), "")
    timeouts = SmtpTimeouts()
    tt = t.get_table("timeouts")
    if tt is not None:
        timeouts = SmtpTimeouts(
            command=tt.get_float("command", timeouts.command, positive=True),
            connect=tt.get_float("connect", timeouts.connect, positive=True),
            data=tt.get_float("data", timeouts.data, positive=True),
        )
        tt.done()
    routes_raw = t.raw.get("route", [])
    t.seen.add("route")
    routes: list[SmtpRoute] = []
    seen: dict[str, int] = {}
    postmaster_at: int | None = None
    for i, r in enumerate(routes_raw if isinstance(routes_raw, list) else []):
        rt = Table(r, t.key(f"route[{i}]"), issues)
        domain = rt.get_str("domain")
        pool = rt.get_str("pool")
        xclient = rt.get_bool("xclient", False)
        postmaster = rt.get_bool("postmaster", False)
        rt.done()
        if domain is None or pool is None:
            continue
        domain = domain.lower().rstrip(".")
        if not _HOST_PATTERN.match(domain):
            rt.error("domain", f"{domain!r} is not a domain or '*.suffix'")
        if domain in seen:
            rt.error("domain", f"{domain!r} is already routed by route[{seen[domain]}]")
        seen.setdefault(domain, i)
        if postmaster and postmaster_at is not None:
            rt.error("postmaster", f"route[{postmaster_at}] already takes <Postmaster>")
        elif postmaster:
            postmaster_at = i
        routes.append(SmtpRoute(domain, pool, xclient, bool(postmaster)))
    if not routes_raw:
        t.error("route", "an smtp listener needs at least one [[smtp.route]]")
    tls = None
    if t.has("tls"):
        tls = _tls_item(issues)(t.raw["tls"], t.key("tls"))
        t.seen.add("tls")
    hostname = t.get_str("hostname", "localhost")
    if isinstance(hostname, str) and not _HOST_PATTERN.match(hostname.lower()):
        t.error("hostname", f"{hostname!r} is not a host name")
    listener = SmtpListener(
        listen=_listen(t),
        hostname=hostname,
        routes=tuple(routes),
        max_message_bytes=t.get_int("max_message_bytes", d.max_message_bytes, lo=1024),
        max_recipients=t.get_int("max_recipients", d.max_recipients, lo=1, hi=100000),
        max_unknown_commands=t.get_int("max_unknown_commands", d.max_unknown_commands, lo=1),
        bare_line_endings=t.get_choice("bare_line_endings", ("reject", "normalize"), d.bare_line_endings),
        tls=tls,
        allow=_allow(t, d.allow),
        max_connections=t.get_int("max_connections", d.max_connections, lo=1),
        timeouts=timeouts,
    )
    t.done()
    return listener


# ------------------------------------------------------------------------ tcp


def _tcp(t: Table, issues: Issues) -> TcpService:
    timeouts = TcpTimeouts()
    tt = t.get_table("timeouts")
    if tt is not None:
        timeouts = TcpTimeouts(
            connect=tt.get_float("connect", timeouts.connect, positive=True),
            idle=tt.get_float("idle", timeouts.idle, positive=True),
        )
        tt.done()
    service = TcpService(
        listen=_listen(t),
        pool=t.get_str("pool") or "",
        max_connections=t.get_int("max_connections", 10000, lo=1),
        timeouts=timeouts,
        allow=_allow(t, TcpService((), "").allow),
    )
    t.done()
    return service


# ----------------------------------------------------------------------- vrrp


def _vrrp(t: Table, issues: Issues, scripts: dict[str, VrrpScript]) -> VrrpInstance:
    d = VrrpInstance("", "", 1, 100, ())
    vips = t.get_list("virtual_ipaddress", interface_item(issues))
    if t.has("virtual_ipaddress") and isinstance(t.raw["virtual_ipaddress"], list) and not vips:
        t.error("virtual_ipaddress", "needs at least one address")
    families = {v.version for v in vips}
    if len(families) > 1:
        t.error("virtual_ipaddress", "one instance carries one address family")
    version = t.get_choice("version", (2, 3), d.version)
    if 6 in families and version == 2:
        if t.has("version"):
            t.error("version", "VRRPv2 is IPv4 only (RFC 3768): IPv6 virtual addresses need version = 3")
        version = 3  # as keepalived, which switches an IPv6 instance to VRRPv3 by itself
    advert_int = t.get_float("advert_int", d.advert_int, positive=True)
    if isinstance(advert_int, float):
        if version == 2 and (advert_int != int(advert_int) or not 1 <= advert_int <= 255):
            t.error("advert_int", "VRRPv2 advertises whole seconds, 1 to 255")
        elif version == 3 and (
            abs(advert_int * 100 - round(advert_int * 100)) > 1e-6 or not 0.01 <= advert_int <= 40.95
        ):
            t.error("advert_int", "VRRPv3 advertises hundredths of a second, 0.01 to 40.95")
    auth = t.get_str("auth_pass", None)
    if auth is not None:
        if version == 3:
            t.error("auth_pass", "VRRPv3 has no authentication (RFC 5798); only for version = 2")
        elif not 1 <= len(auth.encode()) <= 8:
            t.error("auth_pass", "a VRRPv2 simple password is 1 to 8 bytes (keepalived truncates)")
    notify = VrrpNotify()
    nt = t.get_table("notify")
    if nt is not None:
        notify = VrrpNotify(
            master=_command(nt, "master"),
            backup=_command(nt, "backup"),
            fault=_command(nt, "fault"),
            stop=_command(nt, "stop"),
            any=_command(nt, "any"),
            timeout=nt.get_float("timeout", notify.timeout, positive=True),
        )
        nt.done()
    name = t.get_str("name")
    interface = t.get_str("interface")
    priority = t.get_int("priority", 100, lo=1, hi=255)
    tracked = _track_interfaces(t, issues, interface, priority)
    instance = VrrpInstance(
        name=name or "",
        interface=interface or "",
        virtual_router_id=t.get_int("virtual_router_id", None, lo=1, hi=255) or 1,
        priority=priority,
        virtual_ipaddress=vips,
        version=version,
        advert_int=advert_int,
        preempt=t.get_bool("preempt", True),
        preempt_delay=t.get_float("preempt_delay", 0.0, lo=0.0, hi=1000.0),
        auth_pass=auth,
        garp_master_delay=t.get_float("garp_master_delay", d.garp_master_delay, lo=0.0),
        track_interface=tuple(x.name for x in tracked),
        track_interface_weight=tuple(x for x in tracked if x.weight or x.reverse),
        track_script=_track_scripts(t, issues, scripts, priority),
        notify=notify,
        unicast_peer=t.get_list("unicast_peer", ip_item(issues), ()),
        unicast_src_ip=ip_item(issues)(t.raw["unicast_src_ip"], t.key("unicast_src_ip"))
        if t.has("unicast_src_ip")
        else None,
        initial_state=t.get_choice("initial_state", ("BACKUP", "MASTER"), "BACKUP"),
    )
    t.seen.add("unicast_src_ip")
    family = min(families) if len(families) == 1 else None
    for i, peer in enumerate(instance.unicast_peer):
        if family is not None and peer.version != family:
            path = f"{t.key('unicast_peer')}[{i}]"
            issues.add(path, f"an IPv{peer.version} peer for IPv{family} addresses")
    src = instance.unicast_src_ip
    if src is not None and family is not None and src.version != family:
        t.error("unicast_src_ip", f"an IPv{src.version} source for IPv{family} addresses")
    if not t.has("virtual_router_id"):
        t.error("virtual_router_id", "required")
    t.done()
    return instance


def _command(t: Table, name: str) -> tuple[str, ...]:
    """A command as one string (split like a shell would, but run without one) or an array."""
    t.seen.add(name)
    if name not in t.raw:
        return ()
    raw = t.raw[name]
    if isinstance(raw, str):
        try:
            argv = tuple(shlex.split(raw))
        except ValueError as exc:
            t.error(name, f"cannot split {raw!r}: {exc}")
            return ()
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        argv = tuple(raw)
    else:
        t.error(name, "expected a string or an array of strings")
        return ()
    if not argv or not argv[0]:
        t.error(name, "empty command")
        return ()
    return argv


_WEIGHT = 253  # keepalived: -253..253


def _vrrp_scripts(t: Table | None, issues: Issues) -> dict[str, VrrpScript]:
    """`[vrrp_script.NAME]` tables: keepalived's vrrp_script blocks, tracked by name."""
    if t is None:
        return {}
    scripts: dict[str, VrrpScript] = {}
    for name in t.raw:
        st = t.get_table(name)
        assert st is not None
        if not _POOL_NAME.match(name):
            issues.add(st.path, "a script name is letters, digits, '_', '.', '-'")
        d = VrrpScript(name, ())
        interval = st.get_float("interval", d.interval, positive=True)
        command = _command(st, "command")
        if not st.has("command"):
            st.error("command", "required")
        script = VrrpScript(
            name=name,
            command=command,
            interval=interval,
            timeout=st.get_float("timeout", interval, positive=True),
            rise=st.get_int("rise", d.rise, lo=1, hi=100),
            fall=st.get_int("fall", d.fall, lo=1, hi=100),
            weight=st.get_int("weight", d.weight, lo=-_WEIGHT, hi=_WEIGHT),
            reverse=st.get_bool("reverse", d.reverse),
            init_fail=st.get_bool("init_fail", d.init_fail),
        )
        st.done()
        scripts[name] = script
    return scripts


def _track_items(t: Table, key: str, issues: Issues) -> list[tuple[str, str, Table | None]]:
    """(path, name, table or None) for each of `key = ["name", { name = "...", weight = N }]`."""
    t.seen.add(key)
    raw = t.raw.get(key, [])
    if not isinstance(raw, list):
        t.error(key, "expected an array")
        return []
    out: list[tuple[str, str, Table | None]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"{t.key(key)}[{i}]"
        if isinstance(item, str):
            name, it = item, None
        elif isinstance(item, dict):
            it = Table(item, path, issues)
            name = it.get_str("name")  # records "required" or the wrong type
            if not isinstance(name, str):
                continue
        else:
            issues.add(path, 'expected a name or a table { name = "...", weight = N }')
            continue
        if not name:
            issues.add(path if it is None else f"{path}.name", "empty name")
            continue
        if name in seen:
            issues.add(path, f"{name!r} is listed twice")
            continue
        seen.add(name)
        out.append((path, name, it))
    return out


def _weight(it: Table | None, weight: int, reverse: bool) -> tuple[int, bool]:
    if it is None:
        return weight, reverse
    weight = it.get_int("weight", weight, lo=-_WEIGHT, hi=_WEIGHT)
    reverse = it.get_bool("reverse", reverse)
    it.done()
    return weight, reverse


_OWNER = "the address owner (priority 255) keeps its priority (keepalived ignores the weight); use weight = 0"


def _track_interfaces(
    t: Table, issues: Issues, interface: str | None, priority: int
) -> tuple[VrrpTrack, ...]:
    out = []
    for path, name, it in _track_items(t, "track_interface", issues):
        weight, reverse = _weight(it, 0, False)
        if (weight or reverse) and name == interface:
            issues.add(
                path, "the instance's own interface is always tracked (down: FAULT); it takes no weight"
            )
        elif weight and priority == 255:
            issues.add(f"{path}.weight", _OWNER)
        out.append(VrrpTrack(name, weight, reverse))
    return tuple(out)


def _track_scripts(
    t: Table, issues: Issues, scripts: dict[str, VrrpScript], priority: int
) -> tuple[VrrpTrackScript, ...]:
    out = []
    for path, name, it in _track_items(t, "track_script", issues):
        script = scripts.get(name)
        weight, reverse = _weight(it, script.weight if script else 0, script.reverse if script else False)
        if script is None:
            issues.add(path, f"no vrrp_script named {name!r}")
            continue
        if weight and priority == 255:
            given = it is not None and "weight" in it.raw
            issues.add(
                f"{path}.weight" if given else path,
                _OWNER + ("" if given else f" (vrrp_script.{name} has {weight})"),
            )
        out.append(VrrpTrackScript(script, weight, reverse))
    return tuple(out)


# -------------------------------------------------------------------- anycast

_IFNAMSIZ = 15  # longest Linux interface name


def _anycast(t: Table, issues: Issues) -> AnycastGroup:
    d = AnycastGroup("", ())
    name = t.get_str("name") or ""
    if name and not _POOL_NAME.match(name):
        t.error("name", "a name is letters, digits, '_', '.', '-'")
    vips = t.get_list("vips", interface_item(issues))
    if t.has("vips") and isinstance(t.raw["vips"], list) and not t.raw["vips"]:
        t.error("vips", "needs at least one address")
    for i, vip in enumerate(vips):
        if vip.network.prefixlen != vip.max_prefixlen:
            issues.add(f"{t.key('vips')}[{i}]", f"{vip} is not a host address (/32 or /128)")
    device = t.get_str("device", "")
    if not device and name:
        device = f"sk-{name}"[:_IFNAMSIZ]
    if device and (len(device) > _IFNAMSIZ or "/" in device or device.strip() != device):
        t.error("device", f"{device!r} is not a Linux interface name (at most {_IFNAMSIZ} characters)")
    group = AnycastGroup(
        name=name,
        vips=vips,
        pools=t.get_list("pools", string_item(issues), ()),
        interface=t.get_str("interface", d.interface),
        table=t.get_int("table", d.table, lo=1, hi=2**32 - 1),
        route_protocol=t.get_int("route_protocol", d.route_protocol, lo=5, hi=255),
        device=device,
        hold_down=t.get_float("hold_down", d.hold_down, lo=0.0, hi=3600.0),
        withdraw_grace=t.get_float("withdraw_grace", d.withdraw_grace, lo=0.0, hi=600.0),
        check_interval=t.get_float("check_interval", d.check_interval, lo=0.01, hi=60.0),
    )
    if group.table in (253, 254, 255):
        t.error("table", "253-255 are the kernel's default, main and local tables: use a table of its own")
    t.done()
    return group


def _anycast_checks(config: Config, issues: Issues) -> None:
    names: dict[str, int] = {}
    devices: dict[str, int] = {}
    vips: dict[IPInterface, int] = {}
    for i, g in enumerate(config.anycast):
        for j, pool in enumerate(g.pools):
            if pool not in config.pools:
                issues.add(f"anycast[{i}].pools[{j}]", f"no pool named {pool!r}")
        if g.name in names:
            issues.add(f"anycast[{i}].name", f"{g.name!r} is also anycast[{names[g.name]}]")
        names.setdefault(g.name, i)
        if g.device in devices:
            issues.add(f"anycast[{i}].device", f"{g.device!r} is also anycast[{devices[g.device]}]")
        devices.setdefault(g.device, i)
        for j, vip in enumerate(g.vips):
            if vip in vips and vips[vip] != i:
                issues.add(f"anycast[{i}].vips[{j}]", f"{vip.ip} is also announced by anycast[{vips[vip]}]")
            vips.setdefault(vip, i)


# --------------------------------------------------------------- cross checks


def _cross_checks(config: Config, issues: Issues) -> None:
    def need_pool(path: str, name: str) -> None:
        if name and name not in config.pools:
            issues.add(path, f"no pool named {name!r}")

    for i, h in enumerate(config.http):
        for j, r in enumerate(h.routes):
            if r.pool is not None:
                need_pool(f"http[{i}].route[{j}].pool", r.pool)
    for i, s in enumerate(config.smtp):
        for j, sr in enumerate(s.routes):
            need_pool(f"smtp[{i}].route[{j}].pool", sr.pool)
    for i, c in enumerate(config.tcp):
        need_pool(f"tcp[{i}].pool", c.pool)

    # One socket per address: the same ip:port twice (or a wildcard and a
    # specific address of the same family on one port) cannot both bind.
    owners: dict[Address, str] = {}
    sections: list[tuple[str, tuple[Address, ...]]] = [
        *((f"http[{i}].listen", h.listen) for i, h in enumerate(config.http)),
        *((f"smtp[{i}].listen", s.listen) for i, s in enumerate(config.smtp)),
        *((f"tcp[{i}].listen", c.listen) for i, c in enumerate(config.tcp)),
    ]
    if config.global_.metrics is not None:
        sections.append(("global.metrics", (config.global_.metrics,)))
    for base, addresses in sections:
        for k, addr in enumerate(addresses):
            path = base if base == "global.metrics" else f"{base}[{k}]"
            clash = owners.get(addr) or _wildcard_clash(addr, owners)
            if clash:
                issues.add(path, f"{addr} is already used by {clash}")
            else:
                owners[addr] = path

    names: dict[str, int] = {}
    vrids: dict[tuple[str, int, int], int] = {}
    for i, v in enumerate(config.vrrp):
        if v.name in names:
            issues.add(f"vrrp[{i}].name", f"{v.name!r} is also vrrp[{names[v.name]}]")
        names.setdefault(v.name, i)
        family = v.virtual_ipaddress[0].version if v.virtual_ipaddress else 4
        key = (v.interface, v.virtual_router_id, family)
        if key in vrids:
            issues.add(
                f"vrrp[{i}].virtual_router_id",
                f"{v.virtual_router_id} on {v.interface} is also vrrp[{vrids[key]}]",
            )
        vrids.setdefault(key, i)


def _wildcard_clash(addr: Address, owners: dict[Address, str]) -> str | None:
    try:
        ip = ipaddress.ip_address(addr.host)
    except ValueError:
        return None
    wildcard = "0.0.0.0" if ip.version == 4 else "::"
    for other, path in owners.items():
        if other.port != addr.port or not other.is_ip:
            continue
        other_ip = ipaddress.ip_address(other.host)
        if other_ip.version == ip.version and wildcard in (addr.host, other.host):
            return path
    return None


__all__ = ["load_file", "load_text", "parse_address"]
