"""The configuration model: frozen dataclasses, one per section of the TOML.

Defaults are the ones HAProxy, nginx and keepalived users expect; each is
documented next to its field. Validation lives in `conf.load`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from conf.access import EVERYONE, AccessEntry

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "mh", "lblc")
Scheduler = Literal["rr", "wrr", "lc", "wlc", "sh", "mh", "lblc"]
HealthKind = Literal["tcp", "http", "smtp", "script", "none"]


@dataclass(frozen=True, order=True)
class Address:
    """`host:port`; host is an IP literal or a name (resolved by lb at run time)."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class GlobalSettings:
    metrics: Address | None = None  # admin listener: /metrics, /status, admin API
    # Who may use the admin listener at all (others get 403); as [[http]] allow ("!CIDR" too).
    metrics_allow: tuple[AccessEntry, ...] = EVERYONE
    # A file holding the bearer token that state-changing admin requests (POST: drain,
    # weights) must send; read at start and on reload. None: those requests are off.
    admin_token_file: str | None = None
    pidfile: str | None = None
    access_log: str = "-"  # "-" stderr, "" off, else a file path
    log_format: Literal["combined", "json"] = "combined"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drain_timeout: float = 30.0  # SIGTERM: in-flight work gets this long to finish
    # Worker processes serving the front ends: a number, or "auto" (one per CPU this
    # process may run on, as nginx's `worker_processes auto`). 1 = one process, no supervisor.
    workers: int | Literal["auto"] = "auto"


@dataclass(frozen=True)
class Server:
    address: Address
    weight: int = 1  # 0 = quiesced (ipvsadm -w 0): never picked
    max_connections: int = 0  # 0 = unlimited
    # This server's own `script` check command (keepalived: MISC_CHECK per real_server);
    # empty: the pool's health.command. Placeholders as in health.command.
    health_command: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthCheck:
    kind: HealthKind = "none"
    interval: float = 3.0  # keepalived delay_loop
    timeout: float = 2.0  # keepalived connect_timeout
    rise: int = 2  # consecutive successes before up (HAProxy default)
    fall: int = 3  # consecutive failures before down (HAProxy default)
    port: int | None = None  # check another port than the server's (connect_port)
    # http
    path: str = "/"
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None
    host: str | None = None  # Host header; default the server address
    # script: argv; "{host}" "{port}" "{server}" "{pool}" in it are replaced per server (lb.health)
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pool:
    name: str
    servers: tuple[Server, ...]
    scheduler: Scheduler = "rr"
    health: HealthCheck = field(default_factory=HealthCheck)
    on_failure: Literal["inhibit", "remove"] = "inhibit"
    sorry_server: Address | None = None
    proxy_protocol: Literal["v1", "v2"] | None = None
    resolve_interval: float = 30.0  # re-resolve hostnames this often
    slow_start: float = 0.0  # seconds over which a returning server ramps its weight


@dataclass(frozen=True)
class TlsCert:
    cert: str
    key: str


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
ACME_CHALLENGES = ("http-01", "tls-alpn-01")


@dataclass(frozen=True)
class AcmeSettings:
    """[acme]: where automatic certificates come from (RFC 8555) and where they are kept."""

    directory: str = LETS_ENCRYPT  # the CA's directory URL (staging, or any RFC 8555 CA)
    email: str | None = None  # the account's contact; the CA's expiry mails go there
    state_dir: str = "/var/lib/sekisho/acme"  # account, certificates (mode 0600, atomic writes)
    account_key: str | None = None  # default: <state_dir>/account.key (made on first use)
    ca_file: str | None = None  # trust for the directory's HTTPS (a CA with a private root)
    # Challenge types in our order of preference; http-01 needs a plain [[http]] listener.
    challenges: tuple[str, ...] = ACME_CHALLENGES
    retry_min: float = 60.0  # first retry after a failed order; doubles up to 6 hours (jittered)


@dataclass(frozen=True)
class HttpTimeouts:
    header: float = 10.0  # request head must be complete within this: 408
    idle: float = 60.0  # keep-alive connection closed after this idle time
    connect: float = 3.0  # upstream connect: 502 (after a retry on another server)
    response: float = 60.0  # upstream response head / gaps in the body: 504


@dataclass(frozen=True)
class HttpRoute:
    """One route; exactly one of pool, redirect or a bare status is its target."""

    host: str | None = None  # exact, "*.suffix", or None for any host (lower-cased)
    path: str = "/"
    pool: str | None = None
    status: int | None = None
    redirect: str | None = None
    strip_prefix: bool = False
    # Upgrade protocols tunnelled to the backend (lower-case names); others are stripped and
    # the request is answered as plain HTTP/1.1. h2c is never allowed (a tunnel of requests
    # that would bypass routing).
    upgrade: tuple[str, ...] = ("websocket",)
    # The matched `path` prefix is replaced with this before the request goes to the pool
    # (nginx `location /a/ { proxy_pass http://h/b/; }`, DeleGate MOUNT="/a/* http://h/b/*");
    # strip_prefix = true is rewrite_prefix = "/".
    rewrite_prefix: str | None = None

    @property
    def target(self) -> Literal["pool", "redirect", "status"]:
        if self.pool is not None:
            return "pool"
        if self.redirect is not None:
            return "redirect"
        return "status"


@dataclass(frozen=True)
class HttpListener:
    listen: tuple[Address, ...]
    routes: tuple[HttpRoute, ...] = ()
    tls: tuple[TlsCert, ...] = ()
    acme: AcmeSettings | None = None  # tls = [{ acme = true }]: certificates for the route hosts
    # Not a key: set by conf.acme on plain listeners when some listener uses ACME (they answer
    # HTTP-01 before routing; without ACME a request pays nothing for it).
    answers_http01: bool = False
    # Who may connect, first match wins: "CIDR" admits, "!CIDR" refuses, none: refused (conf.access).
    allow: tuple[AccessEntry, ...] = EVERYONE
    trusted_proxies: tuple[IPNetwork, ...] = ()
    forwarded_headers: tuple[str, ...] = (
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    )
    max_connections: int = 10000
    max_header_bytes: int = 16384
    max_body_bytes: int = 0  # 0 = unlimited
    timeouts: HttpTimeouts = field(default_factory=HttpTimeouts)
    http2: bool = True  # TLS listeners offer h2 by ALPN (nginx `http2 on`, HAProxy `alpn h2,http/1.1`)
    h2c: bool = False  # plain listeners take HTTP/2 with prior knowledge (RFC 9113 3.3)
    max_concurrent_streams: int = 100  # HTTP/2 streams per connection (HAProxy's default)


@dataclass(frozen=True)
class SmtpTimeouts:
    command: float = 300.0  # RFC 5321 4.5.3.2: server waits 5 minutes for a command
    connect: float = 5.0  # backend connect and banner
    data: float = 600.0  # gaps in the DATA stream (RFC 5321: 10 minutes for the final dot)


@dataclass(frozen=True)
class SmtpRoute:
    domain: str  # exact or "*.suffix", lower-cased
    pool: str
    # Tell the backend who the client is (XCLIENT, as Postfix does). A server that does not
    # offer XCLIENT is not used for this route (451 4.3.0 when none does), unless the pool
    # sends a PROXY protocol header, which carries the client's address already.
    xclient: bool = False
    # RCPT TO:<Postmaster> without a domain (RFC 5321 4.5.1) goes to this route; at most one
    # route per listener says so, and without one the first route takes it.
    postmaster: bool = False


@dataclass(frozen=True)
class SmtpListener:
    listen: tuple[Address, ...]
    hostname: str
    routes: tuple[SmtpRoute, ...] = ()
    max_message_bytes: int = 10240000  # Postfix message_size_limit default
    max_recipients: int = 100  # RFC 5321 4.5.3.1.8 minimum
    max_unknown_commands: int = 20  # Postfix smtpd_hard_error_limit
    bare_line_endings: Literal["reject", "normalize"] = "reject"  # SMTP smuggling defence
    tls: TlsCert | None = None
    allow: tuple[AccessEntry, ...] = EVERYONE  # as [[http]] allow
    max_connections: int = 1000
    timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)


@dataclass(frozen=True)
class TcpTimeouts:
    connect: float = 3.0
    idle: float = 900.0  # LVS' default TCP established timeout


@dataclass(frozen=True)
class TcpService:
    listen: tuple[Address, ...]
    pool: str
    max_connections: int = 10000
    timeouts: TcpTimeouts = field(default_factory=TcpTimeouts)
    allow: tuple[AccessEntry, ...] = EVERYONE  # as [[http]] allow; others are reset at accept


@dataclass(frozen=True)
class VrrpNotify:
    """Commands run (without a shell) on each transition; argv already split."""

    master: tuple[str, ...] = ()
    backup: tuple[str, ...] = ()
    fault: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    # keepalived's generic `notify`: run on every transition, after the one above, with four
    # more arguments: INSTANCE <name> MASTER|BACKUP|FAULT|STOP <effective priority>.
    any: tuple[str, ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class VrrpTrack:
    """What a tracked interface or script does to an instance (keepalived's `weight`).

    weight 0: the instance is in FAULT while it is down. weight > 0: added to the priority
    while it is up; weight < 0: subtracted while it is down. reverse flips the direction
    (weight 0 reverse: FAULT while it is up). The priority stays within 1..254.
    """

    name: str
    weight: int = 0  # -253..253
    reverse: bool = False


@dataclass(frozen=True)
class VrrpScript:
    """A `[vrrp_script.NAME]` check (keepalived's vrrp_script), run every `interval` seconds;
    exit 0 is success, anything else (or running past `timeout`) is failure."""

    name: str
    command: tuple[str, ...]
    interval: float = 1.0  # keepalived's default
    timeout: float = 1.0  # keepalived: the interval unless set
    rise: int = 1  # consecutive successes before a failed script counts as up again
    fall: int = 1  # consecutive failures before it counts as down
    weight: int = 0  # the default for instances tracking it (their track_script may override)
    reverse: bool = False
    init_fail: bool = False  # down until it first succeeds (else: unknown until its first run)


@dataclass(frozen=True)
class VrrpTrackScript:
    """One entry of a [[vrrp]] track_script: the script and its weight for this instance."""

    script: VrrpScript
    weight: int = 0
    reverse: bool = False


@dataclass(frozen=True)
class VrrpInstance:
    name: str
    interface: str
    virtual_router_id: int
    priority: int
    virtual_ipaddress: tuple[IPInterface, ...]
    version: Literal[2, 3] = 2
    advert_int: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    auth_pass: str | None = None
    garp_master_delay: float = 5.0
    track_interface: tuple[str, ...] = ()  # every tracked link (names); down: FAULT unless weighted
    track_interface_weight: tuple[VrrpTrack, ...] = ()  # those of track_interface with a weight
    track_script: tuple[VrrpTrackScript, ...] = ()
    notify: VrrpNotify = field(default_factory=VrrpNotify)
    unicast_peer: tuple[IPAddress, ...] = ()  # empty = multicast 224.0.0.18 / ff02::12
    unicast_src_ip: IPAddress | None = None
    initial_state: Literal["BACKUP", "MASTER"] = "BACKUP"  # keepalived `state`


@dataclass(frozen=True)
class AnycastGroup:
    """VIPs this node announces over BGP (through the host's BGP daemon) while healthy.

    sekisho keeps a host route per VIP in kernel table `table` through `device`, a TUN
    device that lives exactly as long as the process: the routes vanish with it, however
    it dies. The BGP daemon (BIRD's kernel protocol with `learn`) exports that table.
    """

    name: str
    vips: tuple[IPInterface, ...]  # host addresses (/32 or /128)
    pools: tuple[str, ...] = ()  # each needs at least one server up
    interface: str = "lo"  # where the VIP is kept locally, so this node accepts it
    table: int = 100  # kernel routing table the BGP daemon learns from
    route_protocol: int = 252  # rtm_protocol of our routes ("proto 252" in `ip route`)
    device: str = ""  # the TUN device owning the routes; "" = "sk-" + name
    hold_down: float = 10.0  # healthy this long before announcing again after a withdrawal
    withdraw_grace: float = 2.0  # stop: the route is withdrawn this long before listeners close
    check_interval: float = 0.2  # how often pool health and listeners are looked at


@dataclass(frozen=True)
class Config:
    global_: GlobalSettings = field(default_factory=GlobalSettings)
    pools: Mapping[str, Pool] = field(default_factory=dict)
    http: tuple[HttpListener, ...] = ()
    smtp: tuple[SmtpListener, ...] = ()
    tcp: tuple[TcpService, ...] = ()
    vrrp: tuple[VrrpInstance, ...] = ()
    source: str = "<string>"
    acme: AcmeSettings | None = None  # [acme], when any listener uses it (or it is given)
    anycast: tuple[AnycastGroup, ...] = ()

    def summary(self) -> str:
        routes = sum(len(h.routes) for h in self.http) + sum(len(s.routes) for s in self.smtp)
        servers = sum(len(p.servers) for p in self.pools.values())
        return (
            f"{len(self.pools)} pools ({servers} servers), {len(self.http)} http, "
            f"{len(self.smtp)} smtp, {len(self.tcp)} tcp listeners, {routes} routes, "
            f"{len(self.vrrp)} vrrp instances"
        )
