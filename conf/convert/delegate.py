"""DeleGate parameter files (`delegated +=FILE`) -> sekisho TOML.

A parameter file holds what would be on DeleGate's command line, one or more
parameters a line: `-P80`, `SERVER=http`, `MOUNT="vURL rURL options"`,
`HTTPCONF=...`, `RELIABLE=...`, `REACHABLE=...`. A whole `delegated ...`
command line (a start script) is read the same way.

How MOUNT becomes routes:
    MOUNT="/* http://server/* vhost=-alpha"   host = "alpha", path = "/", pool = (server)
    MOUNT="/app/* http://server/*"            path = "/app/", strip_prefix = true
    MOUNT="/a/* http://server/b/*"            path = "/a/", rewrite_prefix = "/b/"
    MOUNT="/-/* = rcode=404"                  path = "/-/", status = 404
    MOUNT="/old/* http://new/* rcode=301"     redirect = "http://new/"
Status routes go first (they hide things: DeleGate's own /-/ pages), then
routes of named hosts, then routes for any host, each group longest path
first; a route that an earlier one hides is reported and left out (sekisho
rejects routes that can never match).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from conf.access import AccessEntry, parse_entry, without_idle_entries
from conf.convert.common import host_port, is_ip, pool_name
from conf.convert.output import Document, Section, Warnings
from conf.convert.output import value as value_text

_DEFAULTS = {  # parameters whose usual value is what sekisho does anyway
    "RELAY": ("proxy", "no", "vhost,proxy", "delegate"),
    "CONNECT": ("d:*:*", "d", "direct", "d:*"),
    "CACHE": ("no",),
}
_NOTES = {
    "ADMIN": "sekisho's operator contact is not configured",
    "OWNER": "run sekisho as the user systemd starts it as (contrib/sekisho.service)",
    "DGROOT": "sekisho keeps no work directory",
    "TIMEOUT": "set http timeouts (header, idle, connect, response) instead",
    "MAXIMA": "set http max_connections instead",
    "STLS": "set tls on the listener (certificates) instead",
    "CERTDIR": "set tls on the listener (certificates) instead",
    "DGPATH": "sekisho reads one configuration file",
    "EXPIRE": "sekisho caches nothing",
    "LOGDIR": "set global.access_log instead",
    "ERRORLOG": "sekisho logs errors to stderr (the journal under systemd)",
    "PROTOLOG": "set global.access_log instead",
}
# Parameters that refuse clients or requests: dropping one would admit what the original refused.
_REFUSED = {
    "PERMIT": (
        "DeleGate admitted only the protocol/server/client combinations listed; sekisho cannot "
        "translate PERMIT. Write who may connect as RELIABLE (the servers are the MOUNTs), then convert again"
    ),
    "REJECT": (
        "DeleGate refused these protocol/server/client combinations; sekisho cannot translate REJECT. "
        'Write the refused clients as RELIABLE exclusions (RELIABLE="*,!192.0.2.7"), then convert again'
    ),
    "AUTHORIZER": (
        "DeleGate asked these clients for a password; sekisho has no client authentication and would "
        "serve them without one. Put the authentication on the servers, or limit the clients with "
        "RELIABLE, remove AUTHORIZER from a copy of the file and convert the copy"
    ),
}
# MountOptions that make a MOUNT conditional: without the condition the route serves everyone.
_CONDITIONS = ("from", "via", "path", "auth", "withssl", "sni", "odst", "dst", "udst")
_HEADERS = {"x-forwarded-for": "%a", "x-real-ip": "%a", "forwarded": "for=%a"}


@dataclass
class Mount:
    line: int
    host: str | None
    path: str
    exact: bool
    pool: str | None = None
    status: int | None = None
    redirect: str | None = None
    strip_prefix: bool = False
    rewrite_prefix: str | None = None


@dataclass
class State:
    source: str
    w: Warnings = field(default_factory=Warnings)
    listen: list[str] = field(default_factory=list)
    listen_line: int = 0
    server: tuple[str, int] | None = None  # (value, line)
    mounts: list[Mount] = field(default_factory=list)
    pools: dict[str, tuple[str, int]] = field(default_factory=dict)  # address -> (name, line)
    origins: dict[str, str] = field(default_factory=dict)  # pool name -> the parameter it came from
    headers: list[str] = field(default_factory=list)
    httpconf_seen: bool = False
    allow: list[str] | None = None
    allow_line: int = 0
    reachable: list[tuple[str, int]] = field(default_factory=list)
    access_log: str | None = None
    notes: list[str] = field(default_factory=list)


def convert(text: str, source: str) -> tuple[Document, Warnings]:
    st = State(source)
    for line, words in _lines(text, st.w):
        for word in words:
            _param(word, line, st)
    return _build(st), st.w


def _lines(text: str, w: Warnings) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        joined, pending = pending + raw, ""
        try:
            words = shlex.split(joined, comments=True)
        except ValueError as exc:
            w.add(start, f"cannot read this line ({exc}); ignored")
            continue
        if words:
            out.append((start, words))
    return out


def _param(word: str, line: int, st: State) -> None:
    w = st.w
    base = word.rsplit("/", 1)[-1]
    if base in ("delegated", "delegate", "dg") or re.match(r"^dg\d", base):
        return  # the program name of a start script
    if word.startswith("+="):
        w.add(line, f"{word}: parameter files are not followed; convert {word[2:]} separately")
        return
    if word.startswith("-P"):
        _ports(word[2:], line, st)
        return
    if word.startswith("-"):
        hint = " (stop the daemon with `sekisho stop`)" if word.startswith("-Fkill") else ""
        w.add(line, f"{word}: DeleGate command option with no equivalent{hint}; ignored")
        return
    name, eq, value = word.partition("=")
    if not eq:
        w.add(line, f"{word}: not a NAME=value parameter; ignored")
        return
    name = name.upper()
    if name == "SERVER":
        st.server = (value, line)
    elif name == "MOUNT":
        _mount(value, line, st)
    elif name == "HTTPCONF":
        _httpconf(value, line, st)
    elif name == "RELIABLE":
        st.allow = _reliable(value, line, st.w)
        st.allow_line = line
    elif name in _REFUSED:
        w.refuse(line, f"{name}={value}: {_REFUSED[name]}")
    elif name == "REACHABLE":
        st.reachable.extend((item, line) for item in _split_list(value))
    elif name == "LOGFILE":
        if "$" in value or "[" in value:
            w.add(line, f"LOGFILE={value}: no date or port patterns in sekisho's access_log; ignored")
        else:
            st.access_log = value
            if value:
                st.notes.append(f"LOGFILE={value}: sekisho writes the combined (Apache) format there")
    elif name in _DEFAULTS:
        if value.lower() in _DEFAULTS[name]:
            st.notes.append(
                f"{name}={value}: what sekisho does anyway (plain reverse proxy, "
                "direct connections, no cache)"
            )
        else:
            w.add(
                line,
                f"{name}={value}: sekisho is a plain reverse proxy (direct connections, no cache); ignored",
            )
    else:
        reason = _NOTES.get(name, "no sekisho equivalent")
        w.add(line, f"{name}={value}: {reason}; ignored")


def _ports(spec: str, line: int, st: State) -> None:
    for raw in _split_list(spec):
        item, _, opts = raw.partition("/")
        if opts:
            st.w.add(line, f"-P{item}/{opts}: port options ignored")
        host, _, port_text = item.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            st.w.add(line, f"-P{item}: not a port; ignored")
            continue
        if host != "0.0.0.0" and not is_ip(host):
            st.w.add(line, f"-P{item}: sekisho listens on IP addresses; using 0.0.0.0")
            host = "0.0.0.0"
        address = host_port(host, int(port_text))
        if address not in st.listen:
            st.listen.append(address)
            st.listen_line = st.listen_line or line


def _split_list(value: str) -> list[str]:
    """Split at commas outside braces: 'a,{b,c},d' -> ['a', '{b,c}', 'd']."""
    items, depth, cur = [], 0, ""
    for c in value:
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += (c == "{") - (c == "}")
        cur += c
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


def _unbrace(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("{") and value.endswith("}"):
        return _split_list(value[1:-1])
    return [value]


def _mount(value: str, line: int, st: State) -> None:
    w = st.w
    parts = value.split()
    if len(parts) < 2:
        w.add(line, f'MOUNT="{value}": expected a virtual URL and a real URL; ignored')
        return
    vurl, rurl = parts[0], parts[1]
    options: dict[str, str] = {}
    for opt in _split_list(",".join(parts[2:])):
        key, _, arg = opt.partition("=")
        options[key.lower()] = arg
    hosts: list[str | None] = [None]
    vhost = options.pop("vhost", None) or options.pop("nvhost", None) or options.pop("avhost", None)
    if vhost is not None:
        hosts = []
        for h in _unbrace(vhost):
            name = h.lstrip("-").split(":")[0].lower().rstrip(".")
            if name in ("*", ""):
                hosts.append(None)
            elif re.match(r"^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$", name):
                hosts.append(name)
            else:
                w.add(line, f"vhost {h}: sekisho matches exact names and '*.suffix'; ignored")
        if not hosts:
            return
    # The virtual URL: "/path*", "/path", or "http://host/path*" (a virtual host).
    if "://" in vurl:
        split = urllib.parse.urlsplit(vurl)
        if split.hostname and split.hostname not in ("-", "="):
            hosts = [split.hostname.lower()]
        vurl = split.path or "/"
    exact = not vurl.endswith("*")
    path = vurl.rstrip("*") or "/"
    if not path.startswith("/"):
        w.add(line, f"MOUNT {vurl}: not a path; ignored")
        return
    rcode_text = options.pop("rcode", None)
    rcode = int(rcode_text) if rcode_text and rcode_text.isdigit() else None
    if rcode_text is not None and (rcode is None or not 100 <= rcode <= 599):
        w.add(line, f"rcode={rcode_text}: not an HTTP status; ignored")
        rcode = None
    for key, arg in options.items():
        shown = f"{key}{'=' + arg if arg else ''}"
        if key in _CONDITIONS:
            w.refuse(
                line,
                f"MOUNT option {shown}: DeleGate applied this MOUNT only when the condition held; a "
                "sekisho route applies to every client and request. Give these clients a listener "
                "of their own (its allow list) or drop the condition from a copy of the file and "
                "convert the copy",
            )
        else:
            w.add(line, f"MOUNT option {shown}: no equivalent; the route applies without it")
    exact_only = exact and path != "/"
    base = Mount(line, None, path, exact)
    if rurl == "=" or rurl.startswith("=:"):
        if rcode is None:
            w.add(line, f'MOUNT="{value}": DeleGate\'s own pages have no equivalent; ignored')
            return
        base.status = rcode
    else:
        target = urllib.parse.urlsplit(rurl)
        scheme = target.scheme.lower()
        if scheme not in ("http", "https") or not target.hostname:
            w.add(line, f"MOUNT {rurl}: sekisho forwards HTTP to servers only; ignored")
            return
        if rcode is not None and 300 <= rcode <= 399:
            base.redirect = rurl.rstrip("*")
            base.status = rcode if rcode in (301, 302, 303, 307, 308) else 302
            if base.status != rcode:
                w.add(line, f"rcode={rcode}: sekisho redirects with 301/302/303/307/308; using 302")
        else:
            if exact_only:
                # A prefix route would hand the server every path under this one.
                w.refuse(
                    line,
                    f"MOUNT {vurl}: DeleGate forwarded only this exact path to {rurl}; a sekisho "
                    f"route forwards every path under {path}. If the whole subtree is meant, write "
                    f"{vurl}* (and the server side with *) in a copy of the file and convert the copy",
                )
                return
            if rcode is not None:
                w.add(line, f"rcode={rcode} with a server: the server's status is passed on; ignored")
            if scheme == "https":
                w.add(
                    line,
                    f"{rurl}: sekisho connects to servers in plain HTTP (TCP); check that "
                    "the server listens without TLS there",
                )
            port = target.port or (443 if scheme == "https" else 80)
            address = host_port(target.hostname, port)
            rpath = target.path.rstrip("*") or "/"
            if rpath == path:
                pass
            elif rpath == "/" and path.endswith("/"):
                base.strip_prefix = True
            else:
                base.rewrite_prefix = rpath  # "/a/x" reaches the server as "/b/x"
            if rpath != path:
                w.add(
                    line,
                    "DeleGate also rewrote URLs in responses (Location, links) for this "
                    "MOUNT; sekisho forwards responses unchanged",
                )
            first_host = next((h for h in hosts if h), None)
            base.pool = _pool_for(address, first_host or target.hostname, line, st)
            if not is_ip(target.hostname) or first_host:
                shown = first_host or "the client's Host"
                if shown != target.hostname:
                    w.add(
                        line,
                        f'DeleGate sent "Host: {target.hostname}" to the server; sekisho '
                        f"passes the client's Host header ({shown})",
                    )
    if exact_only:  # a status or a redirect: covering more refuses or redirects more
        w.add(
            line,
            f"MOUNT {vurl}: DeleGate matched this path exactly; sekisho matches "
            f"prefixes, so it covers everything under {path}",
        )
    for host in hosts:
        st.mounts.append(
            Mount(
                line,
                host,
                base.path,
                exact,
                base.pool,
                base.status,
                base.redirect,
                base.strip_prefix,
                base.rewrite_prefix,
            )
        )


def _pool_for(address: str, hint: str, line: int, st: State) -> str:
    if address in st.pools:
        return st.pools[address][0]
    name = pool_name(hint)
    taken = {n for n, _ in st.pools.values()}
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    st.pools[address] = (name, line)
    return name


def _httpconf(value: str, line: int, st: State) -> None:
    st.httpconf_seen = True
    op, _, rest = value.partition(":")
    if op.lower() != "add-qhead":
        st.w.add(line, f"HTTPCONF={value}: no equivalent; ignored")
        return
    header, _, fmt = rest.partition(":")
    name = header.strip().lower()
    if name in _HEADERS and fmt.strip() == _HEADERS[name]:
        if name not in st.headers:
            st.headers.append(name)
    else:
        st.w.add(
            line,
            f"HTTPCONF={value}: sekisho adds only the client address headers "
            f"({', '.join(_HEADERS)}); ignored",
        )


def _reliable(value: str, line: int, w: Warnings) -> list[str]:
    """RELIABLE as a sekisho allow list.

    DeleGate reads a HostList from the first entry to the last and the last one that holds
    the client decides ("*.dom,!*.xx.dom,*.yy.xx.dom": host.yy.xx.dom is in); a list that
    starts with "!" starts from everyone ("!h" is "*,!h"). sekisho's allow is first match
    wins, so the same entries in reverse order decide the same. An admitting entry that
    sekisho cannot match (a name, user@host) is left out, which refuses those clients (never
    admits more); an excluding one that it cannot match is an error, unless no entry before it
    admits anything sekisho can match.
    """
    items: list[tuple[bool, list[str]]] = []  # (admits, CIDRs) in DeleGate's order
    entries = [e for item in _split_list(value) for e in _unbrace(item)]
    if entries and entries[0].startswith("!"):
        items.append((True, ["0.0.0.0/0", "::/0"]))
    for entry in entries:
        deny = entry.startswith("!")
        spec = entry[1:] if deny else entry
        nets = None if "@" in spec else _network(spec)
        if nets is not None:
            items.append((not deny, nets))
        elif deny and not any(admits for admits, _ in items):
            w.add(line, f"RELIABLE {entry}: no entry before it admits anyone sekisho can match; left out")
        elif deny:
            what = "a user (Ident)" if "@" in spec else "a name"
            w.refuse(
                line,
                f"RELIABLE {entry}: excludes {what}; sekisho matches client addresses only and "
                f"cannot exclude it. Replace {spec} with its address or network (!192.0.2.7, "
                "!192.0.2.0/24) and convert again",
            )
        else:
            w.add(
                line,
                f"RELIABLE {entry}: sekisho matches client addresses, not names or users; left "
                "out (those clients are refused unless another entry admits them)",
            )
    allow: list[AccessEntry] = []
    # Without exclusions the order decides nothing: kept as written.
    for admits, nets in reversed(items) if not all(a for a, _ in items) else items:
        allow.extend(parse_entry(n if admits else f"!{n}") for n in nets)
    kept = [str(e) for e in without_idle_entries(allow)]
    if not kept:
        w.add(line, "RELIABLE admits no client sekisho can match: allow = [] refuses every client")
    return list(dict.fromkeys(kept))


def _network(entry: str) -> list[str] | None:
    if entry in ("*", "*.*.*.*"):
        return ["0.0.0.0/0", "::/0"]
    if entry.lower() in ("localhost", "127.0.0.1"):
        return ["127.0.0.1/32", "::1/128"] if entry.lower() == "localhost" else ["127.0.0.1/32"]
    octets = entry.split(".")
    if any(o.startswith("[") for o in octets):
        return _octet_range(octets)
    if octets[-1] == "*" and 1 < len(octets) < 4:
        octets += ["*"] * (4 - len(octets))  # "192.168.*" is "192.168.*.*"
    if len(octets) == 4 and "*" in octets:
        fixed = []
        for o in octets:
            if o == "*":
                break
            fixed.append(o)
        if all(o == "*" for o in octets[len(fixed) :]) and all(o.isdigit() for o in fixed):
            text = ".".join(fixed + ["0"] * (4 - len(fixed)))
            try:
                return [str(ipaddress.ip_network(f"{text}/{8 * len(fixed)}"))]
            except ValueError:
                return None
        return None
    try:
        return [str(ipaddress.ip_network(entry, strict=False))]
    except ValueError:
        return None


def _octet_range(octets: list[str]) -> list[str] | None:
    """192.168.1.[32-63] or 10.[0-3].* (fixed octets, one range, then wildcards) as CIDRs."""
    octets = octets + ["*"] * (4 - len(octets))
    if len(octets) != 4:
        return None
    at = next(i for i, o in enumerate(octets) if o.startswith("["))
    m = re.fullmatch(r"\[(\d{1,3})-(\d{1,3})\]", octets[at])
    fixed, rest = octets[:at], octets[at + 1 :]
    if m is None or not all(o.isdigit() for o in fixed) or not all(o in ("*", "[0-255]") for o in rest):
        return None
    lo, hi = int(m[1]), int(m[2])
    if not 0 <= lo <= hi <= 255 or any(int(o) > 255 for o in fixed):
        return None
    first = ipaddress.IPv4Address(".".join([*fixed, str(lo)] + ["0"] * len(rest)))
    last = ipaddress.IPv4Address(".".join([*fixed, str(hi)] + ["255"] * len(rest)))
    return [str(n) for n in ipaddress.summarize_address_range(first, last)]


def _covers(earlier: Mount, later: Mount) -> bool:
    host_ok = (
        earlier.host is None
        or earlier.host == later.host
        or (
            earlier.host.startswith("*.") and later.host is not None and later.host.endswith(earlier.host[1:])
        )
    )
    return host_ok and later.path.startswith(earlier.path)


def _build(st: State) -> Document:
    w = st.w
    doc = Document()
    if st.access_log is not None:
        g = Section("global")
        g.set("access_log", st.access_log)
        doc.sections.append(g)

    server_value, server_line = st.server or ("", 0)
    scheme = server_value.split("://")[0].lower()
    if st.server is None:
        w.add(0, "no SERVER parameter: converted as SERVER=http")
        scheme = "http"
    if scheme == "smtp":
        return _smtp(st, server_value, server_line, doc)
    if scheme != "http":
        w.add(server_line, f"SERVER={server_value}: sekisho serves http and smtp; nothing converted")
        return doc
    if "://" in server_value:
        target = urllib.parse.urlsplit(server_value)
        if target.hostname:
            address = host_port(target.hostname, target.port or 80)
            pool = _pool_for(address, target.hostname, server_line, st)
            st.origins.setdefault(pool, f"SERVER={server_value}")
            st.mounts.append(Mount(server_line, None, "/", False, pool))
    if not st.listen:
        w.add(0, "no -P: DeleGate's default port 8080 used")
        st.listen = ["0.0.0.0:8080"]

    ordered = sorted(
        st.mounts,
        key=lambda m: (
            m.status is None or m.redirect is not None,
            m.host is None,
            # status routes shortest first (one hides all below it), the others longest first
            len(m.path) if m.status is not None and m.redirect is None else -len(m.path),
        ),
    )
    routes: list[Mount] = []
    for m in ordered:
        hidden = next((r for r in routes if _covers(r, m)), None)
        if hidden is not None:
            what = "the same" if (hidden.pool, hidden.status) == (m.pool, m.status) else "another"
            w.add(
                m.line,
                f"MOUNT {m.path} (host {m.host or 'any'}) is covered by the MOUNT at line "
                f"{hidden.line} ({hidden.path}, {what} target); left out",
            )
            continue
        routes.append(m)
    if not routes:
        w.add(0, "no MOUNT with a target: an http listener needs a route; nothing converted")
        return doc

    used = {m.pool for m in routes if m.pool}
    for address, (name, line) in st.pools.items():
        if name not in used:
            continue
        origin = st.origins.get(name, f"MOUNT ... {address}")
        p = Section(f"pool.{name}", comments=[f"{st.source}:{line} {origin}"])
        p.set("scheduler", "rr")
        p.set("servers", [{"address": address}])
        doc.sections.append(p)
    _reachable(st)

    http = Section(
        "http", array=True, comments=[f"{st.source}:{st.listen_line or server_line} -P, SERVER=http"]
    )
    http.comments.extend(st.notes)
    http.set("listen", st.listen)
    if st.allow is not None:
        http.set(
            "allow",
            st.allow,
            f"{st.source}:{st.allow_line} RELIABLE"
            + (", last entry first (first match wins)" if any(a.startswith("!") for a in st.allow) else ""),
        )
    else:
        w.add(0, "no RELIABLE: sekisho serves every client (allow = 0.0.0.0/0, ::/0)")
    if not st.headers:
        http.set("forwarded_headers", [], "DeleGate added none (no HTTPCONF add-qhead)")
    else:
        http.set("forwarded_headers", st.headers)
    for m in routes:
        r = Section("http.route", array=True, comments=[f"{st.source}:{m.line} MOUNT"])
        if m.host:
            r.set("host", m.host)
        r.set("path", m.path)
        if m.pool:
            r.set("pool", m.pool)
        if m.redirect:
            r.set("redirect", m.redirect)
        if m.status is not None:
            r.set("status", m.status)
        if m.strip_prefix:
            r.set("strip_prefix", True)
        if m.rewrite_prefix:
            r.set("rewrite_prefix", m.rewrite_prefix)
        http.children.append(r)
    doc.sections.append(http)
    return doc


def _reachable(st: State) -> None:
    if not st.reachable:
        return
    nets: list[Any] = []
    line = st.reachable[0][1]
    for entry, entry_line in st.reachable:
        found = _network(entry)
        if found is None:
            st.w.add(entry_line, f"REACHABLE {entry}: names cannot be compared with pool servers; ignored")
        else:
            nets.extend(ipaddress.ip_network(n) for n in found)
    for address, (_, pline) in st.pools.items():
        host = address.rsplit(":", 1)[0].strip("[]")
        if not is_ip(host):
            st.w.add(
                pline, f"{address}: a name; sekisho cannot tell whether REACHABLE (line {line}) allowed it"
            )
            continue
        ip = ipaddress.ip_address(host)
        if not any(ip in n for n in nets if n.version == ip.version):
            st.w.add(
                pline,
                f"{address} is not in REACHABLE (line {line}): DeleGate refused to "
                "connect to it; sekisho will",
            )
    st.notes.append("REACHABLE: sekisho only ever connects to pool servers")


def _smtp(st: State, value: str, line: int, doc: Document) -> Document:
    target = urllib.parse.urlsplit(value) if "://" in value else None
    if target is None or not target.hostname:
        st.w.add(line, f"SERVER={value}: no mail server named; nothing converted")
        return doc
    address = host_port(target.hostname, target.port or 25)
    name = _pool_for(address, target.hostname, line, st)
    p = Section(
        f"pool.{name}",
        comments=[
            f"{st.source}:{line} SERVER={value}",
            "sekisho routes mail by recipient domain: add an [[smtp]] listener with one",
            '[[smtp.route]] (domain = ..., pool = "' + name + '") per domain you receive',
        ],
    )
    p.set("scheduler", "rr")
    p.set("servers", [{"address": address}])
    p.set("health", {"kind": "smtp"})
    # The listener is written by hand, so RELIABLE goes with the instructions: without it the
    # new [[smtp]] would admit every client (its default).
    allow = ""
    if st.allow is not None:
        allow = f" with allow = {value_text(st.allow)} (RELIABLE, line {st.allow_line})"
        p.comments.append(f"the listener's allow = {value_text(st.allow)} (RELIABLE, line {st.allow_line})")
    doc.sections.append(p)
    st.w.add(
        line,
        f"SERVER={value}: sekisho routes mail by recipient domain, which this file does "
        f"not name; the pool is converted, add the [[smtp]] listener{allow} and its routes by hand",
    )
    return doc
