"""The backends, and the targets measured in front of them.

Backends (pinned to the server-side CPU with the proxies, started once per bench run):
    stream  iperf3 server (built-in splice sink without iperf3)   TCP_STREAM
    echo    built-in echo server                                  TCP_RR, TCP_CRR
    sink    built-in splice sink                                  1 GiB L4 upload
    http    nginx serving /small (128 B) and /1m (1 MiB) static   HTTP (built-in server without nginx)
    https   the same nginx over TLS (h2 and http/1.1)             HTTP*_tls, direct only (no built-in)
    upload  built-in HTTP server discarding request bodies        1 GiB HTTP upload

TLS (HTTP*_tls): one self-signed certificate (EC P-256), made by the bench in its temp dir at
start, serves every TLS listener; each offers ALPN h2,http/1.1 in front of the `http` backend.

Targets (each proxy pinned to the server-side CPU, one worker/thread):
    direct   the backends themselves
    sekisho  `sekisho run -c` with [[tcp]] services, an [[http]] route per backend, and an
             [[http]] TLS listener (tls = [...], HTTP/2 by ALPN)
    haproxy  `haproxy -db -f`: mode tcp / mode http, http-reuse always, splice, tcp-smart-connect;
             `bind ... ssl crt ... alpn h2,http/1.1`
    nginx    `nginx` with daemon off: stream {} (load_module) and http {} with upstream keepalive;
             `listen ... ssl http2`
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import REPO, BenchError, Proc, free_ports, start, wait_listening
from bench.servers import BIG_BODY, SMALL_BODY
from bench.tools import version, which

LOCAL = "127.0.0.1"
Addr = tuple[str, int]
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# L4 services and the backend each relays to ("l4http": HTTP carried by the L4 relay)
TCP_KEYS = ("stream", "echo", "sink", "l4http")
TCP_BACKEND = {"stream": "stream", "echo": "echo", "sink": "sink", "l4http": "http"}
STARTUP_TIMEOUT = 15.0


@dataclass
class Target:
    name: str
    status: str = "pending"  # ok | missing | failed
    error: str = ""
    version: str = ""
    endpoints: dict[str, Addr] = field(default_factory=dict)
    proc: Proc | None = None
    config: str = ""
    notes: str = ""

    def probe(self) -> dict[str, str]:
        """Check the L4 path (echo) and the HTTP path now; {endpoint: error} for broken ones.
        A broken endpoint fails its workloads at once instead of timing out in each."""
        broken: dict[str, str] = {}
        if "echo" in self.endpoints:
            err = probe_echo(self.endpoints["echo"])
            if err:
                broken["echo"] = f"echo probe failed: {err}"
                if "stream" in self.endpoints and self.name != "direct":
                    broken["stream"] = f"L4 probe (echo service) failed: {err}"
        if "http" in self.endpoints:
            err = probe_http(self.endpoints["http"])
            if err:
                broken["http"] = f"HTTP probe failed: {err}"
        if "https" in self.endpoints:
            err = probe_http(self.endpoints["https"], tls=True)
            if err:
                broken["https"] = f"HTTPS probe (HTTP/1.1 over TLS) failed: {err}"
        return broken

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, error: str) -> None:
        self.status = "failed"
        self.error = error[-2000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def alive(self) -> bool:
        return self.proc is None or self.proc.alive()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "version": self.version,
            "endpoints": {k: f"{h}:{p}" for k, (h, p) in self.endpoints.items()},
            "cpus": sorted(self.proc.cpus) if self.proc and self.proc.cpus else None,
            "pid": self.proc.pid if self.proc else None,
            "config": self.config,
            "notes": self.notes,
            "log_tail": self.proc.tail(2000) if self.proc else "",
        }


def probe_echo(addr: Addr, timeout: float = 3.0) -> str | None:
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(b"probe")
            got = b""
            while len(got) < 5:
                data = s.recv(64)
                if not data:
                    return "closed without echoing"
                got += data
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _client_context() -> ssl.SSLContext:
    """The probe's TLS client: the bench's own self-signed certificate, so no verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def probe_http(addr: Addr, timeout: float = 3.0, tls: bool = False) -> str | None:
    req = f"GET /small HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nConnection: close\r\n\r\n".encode()
    try:
        raw = socket.create_connection(addr, timeout=timeout)
        # a failed handshake closes the socket (SSLSocket._create)
        with _client_context().wrap_socket(raw, server_hostname="localhost") if tls else raw as s:
            s.sendall(req)
            buf = b""
            while b"\r\n" not in buf:
                data = s.recv(4096)
                if not data:
                    return "closed without a response"
                buf += data
    except OSError as exc:  # ssl.SSLError is an OSError
        return f"{type(exc).__name__}: {exc}"
    status = buf.split(b"\r\n", 1)[0].decode("latin-1")
    return None if status.split(" ")[1:2] == ["200"] else f"answered {status!r}"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    pem: Path  # certificate then key in one file (HAProxy's crt)
    how: str


def make_cert(d: Path) -> TlsFiles:
    """A self-signed EC P-256 certificate for localhost and 127.0.0.1, valid two days: openssl req,
    else trustme (a test dependency). Raises BenchError when neither is there."""
    d.mkdir(parents=True, exist_ok=True)
    cert, key, pem = d / "cert.pem", d / "key.pem", d / "haproxy.pem"
    openssl = shutil.which("openssl")
    if openssl:
        cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        cmd += ["-nodes", "-days", "2", "-subj", "/CN=localhost"]
        cmd += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        cmd += ["-keyout", str(key), "-out", str(cert)]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise BenchError(f"openssl req failed: {out.stderr[-400:]}")
        how = "openssl req -x509 -newkey ec (P-256), self-signed"
    else:
        try:
            import trustme
        except ImportError as exc:
            raise BenchError("no certificate: neither openssl nor trustme is installed") from exc
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        how = "trustme (test CA, not trusted by anyone)"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    for p in (d, cert, key, pem):
        p.chmod(0o755 if p.is_dir() else 0o644)  # nginx workers run as nobody; a throwaway key
    return TlsFiles(cert, key, pem, how)


class Backends:
    def __init__(self, workdir: Path, cpus: frozenset[int] | None) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.procs: dict[str, Proc] = {}
        self.endpoints: dict[str, Addr] = {}
        self.kinds: dict[str, str] = {}
        self.iperf3 = which("iperf3")
        self.nginx = which("nginx")
        self.tls: TlsFiles | None = None
        self.tls_error = ""

    def start(self) -> None:
        py = sys.executable
        ports = dict(zip(("stream", "echo", "sink", "http", "upload"), free_ports(5), strict=True))
        self.endpoints = {k: (LOCAL, p) for k, p in ports.items()}
        try:
            self.tls = make_cert(self.workdir / "tls")
        except (BenchError, OSError, subprocess.TimeoutExpired) as exc:
            self.tls_error = f"no TLS listeners: {exc}"
        self._start_stream()
        self.procs["echo"] = start(
            "backend-echo",
            [py, "-m", "bench.servers", "echo", f"{LOCAL}:{ports['echo']}"],
            self.workdir,
            self.cpus,
        )
        self.kinds["echo"] = "built-in echo (uvloop)"
        self.procs["sink"] = start(
            "backend-sink",
            [py, "-m", "bench.servers", "sink", f"{LOCAL}:{ports['sink']}"],
            self.workdir,
            self.cpus,
        )
        self.kinds["sink"] = "built-in splice sink"
        self.procs["upload"] = start(
            "backend-upload",
            [py, "-m", "bench.servers", "http", f"{LOCAL}:{ports['upload']}"],
            self.workdir,
            self.cpus,
        )
        self.kinds["upload"] = "built-in HTTP server (bodies discarded)"
        if self.nginx:
            self._start_nginx_backend(ports["http"])
        else:
            self.procs["http"] = start(
                "backend-http",
                [py, "-m", "bench.servers", "http", f"{LOCAL}:{ports['http']}"],
                self.workdir,
                self.cpus,
            )
            self.kinds["http"] = "built-in HTTP server (nginx not installed)"
        for key, proc in self.procs.items():
            extra = [self.endpoints["https"][1]] if key == "http" and "https" in self.endpoints else []
            wait_listening(proc, [self.endpoints[key][1], *extra], STARTUP_TIMEOUT)

    def _start_stream(self) -> None:
        port = self.endpoints["stream"][1]
        if self.iperf3:
            cmd = [self.iperf3, "-s", "-B", LOCAL, "-p", str(port)]
            self.kinds["stream"] = version([self.iperf3, "-v"]) + " server"
        else:
            cmd = [sys.executable, "-m", "bench.servers", "sink", f"{LOCAL}:{port}"]
            self.kinds["stream"] = "built-in splice sink (iperf3 not installed)"
        self.procs["stream"] = start("backend-stream", cmd, self.workdir, self.cpus)

    def restart_stream(self) -> None:
        """iperf3's server can be left waiting on a half-done test: start a fresh one."""
        old = self.procs.get("stream")
        if old is not None:
            old.stop(2)
        self._start_stream()
        wait_listening(self.procs["stream"], [self.endpoints["stream"][1]], STARTUP_TIMEOUT)

    def _start_nginx_backend(self, port: int) -> None:
        assert self.nginx is not None
        d = self.workdir / "nginx-backend"
        (d / "www").mkdir(parents=True, exist_ok=True)
        for p in (self.workdir, d, d / "www"):
            p.chmod(0o755)  # nginx workers run as nobody
        (d / "www" / "small").write_bytes(SMALL_BODY)
        (d / "www" / "1m").write_bytes(BIG_BODY)
        tls_server = ""
        if self.tls is not None:
            # direct over TLS: the generator's ceiling for the HTTP*_tls workloads
            https = free_ports(1)[0]
            self.endpoints["https"] = (LOCAL, https)
            self.kinds["https"] = "the http backend's nginx over TLS (h2, http/1.1), no proxy"
            tls_server = f"""
    server {{
        listen {LOCAL}:{https} ssl http2 backlog=4096;
{nginx_tls_lines(self.tls)}
        root {d}/www;
        location / {{ }}
    }}"""
        conf = f"""
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {LOCAL}:{port} backlog=4096;
        root {d}/www;
        location / {{ }}
    }}{tls_server}
}}
"""
        (d / "nginx.conf").write_text(conf)
        cmd = [self.nginx, "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"]
        self.procs["http"] = start("backend-nginx", cmd, self.workdir, self.cpus)
        self.kinds["http"] = version([self.nginx, "-v"]) + " static files, 1 worker"

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def to_json(self) -> dict[str, Any]:
        return {
            key: {
                "endpoint": f"{h}:{p}",
                "what": self.kinds.get(key, "?"),
                "cpus": sorted(self.cpus) if self.cpus else None,
            }
            for key, (h, p) in self.endpoints.items()
        }

    def tls_text(self) -> str:
        return f"TLS certificate: {self.tls.how}" if self.tls else self.tls_error


def nginx_tls_lines(tls: TlsFiles) -> str:
    """nginx 1.22's defaults leave TLS 1.3 out (1.23.4 added it): ask for what the others do."""
    return (
        f"        ssl_certificate {tls.cert};\n"
        f"        ssl_certificate_key {tls.key};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;"
    )


# ---------------------------------------------------------------- targets


def direct(backends: Backends) -> Target:
    endpoints = dict(backends.endpoints) | {"l4http": backends.endpoints["http"]}
    t = Target("direct", status="ok", version="backends themselves", endpoints=endpoints)
    return t


def sekisho_config(workdir: Path, backends: Backends, ports: dict[str, int], workers: int = 1) -> str:
    be = backends.endpoints
    lines = [
        "# generated by python -m bench",
        "[global]",
        f'pidfile = "{workdir}/sekisho.pid"',
        'access_log = ""',
        'log_level = "warning"',
        "drain_timeout = 1.0",
        f"workers = {workers}  # 1: one process, as HAProxy nbthread 1 and nginx worker_processes 1",
        "",
    ]
    for key in ("stream", "echo", "sink", "http", "upload"):
        h, p = be[key]
        lines += [f"[pool.{key}]", 'scheduler = "rr"', f'servers = [{{ address = "{h}:{p}" }}]', ""]
    routes = [
        "  [[http.route]]",
        '  path = "/upload"',
        '  pool = "upload"',
        "",
        "  [[http.route]]",
        '  path = "/"',
        '  pool = "http"',
        "",
    ]
    lines += ["[[http]]", f'listen = ["{LOCAL}:{ports["http"]}"]', "max_connections = 30000", "", *routes]
    if "https" in ports and backends.tls is not None:
        # HTTP/2 is the default of a TLS listener (ALPN h2,http/1.1)
        lines += [
            "[[http]]",
            f'listen = ["{LOCAL}:{ports["https"]}"]',
            f'tls = [{{ cert = "{backends.tls.cert}", key = "{backends.tls.key}" }}]',
            "max_connections = 30000",
            "",
            *routes,
        ]
    for key in TCP_KEYS:
        lines += [
            "[[tcp]]",
            f'listen = "{LOCAL}:{ports[key]}"',
            f'pool = "{TCP_BACKEND[key]}"',
            "max_connections = 30000",
            "",
        ]
    return "\n".join(lines)


def sekisho(workdir: Path, backends: Backends, cpus: frozenset[int] | None, workers: int = 1) -> Target:
    t = Target("sekisho")
    exe = Path(sys.executable).with_name("sekisho")
    if not exe.exists():
        t.status = "missing"
        t.error = f"{exe} not found (pip install -e . first)"
        return t
    d = workdir / f"sekisho-{workers}"
    d.mkdir(exist_ok=True)
    names = ("http", *TCP_KEYS) + (("https",) if backends.tls else ())
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    t.config = sekisho_config(d, backends, ports, workers)
    path = d / "sekisho.toml"
    path.write_text(t.config)
    t.version = _sekisho_version()
    try:
        import conf

        conf.load_text(t.config, source=str(path))
    except Exception as exc:  # a config the model refuses: report it, do not crash
        t.fail(f"generated config refused: {exc}")
        return t
    t.endpoints = {k: (LOCAL, ports[k]) for k in (*TCP_KEYS, "http", "https") if k in ports} | {
        "upload": (LOCAL, ports["http"]),
    }
    t.notes = "L4 workloads through [[tcp]] services; HTTP through an [[http]] route" + (
        "; TLS through an [[http]] listener with tls = [...] (ALPN h2,http/1.1)" if "https" in ports else ""
    )
    _launch(t, [str(exe), "run", "-c", str(path)], workdir, cpus, list(ports.values()))
    return t


def _sekisho_version() -> str:
    try:
        import proxy

        version_text = str(proxy.VERSION)
    except ImportError:
        version_text = "?"
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return f"sekisho {version_text}" + (f" ({rev})" if rev else "")


TUNED_HAPROXY = ["    option splice-request", "    option splice-response", "    option tcp-smart-connect"]


def haproxy_config(backends: Backends, ports: dict[str, int], tuned: bool = True, threads: int = 1) -> str:
    be = backends.endpoints
    out = [
        "global",
        "    maxconn 2000",
        f"    nbthread {threads}",
        "",
        "defaults",
        "    timeout connect 5s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-keep-alive 120s",
        # Tuned: splice for bulk, and the handshake's last ACK carries the request
        # (sekisho's [[tcp]] does the latter always).
        *(TUNED_HAPROXY if tuned else []),
        "",
        "frontend fe_http",
        "    mode http",
        f"    bind {LOCAL}:{ports['http']}",
        "    default_backend be_http",
        "",
        "backend be_http",
        "    mode http",
        "    http-reuse always",
        f"    server s1 {be['http'][0]}:{be['http'][1]}",
        "",
    ]
    if "https" in ports and backends.tls is not None:
        out += [
            "frontend fe_https",
            "    mode http",
            f"    bind {LOCAL}:{ports['https']} ssl crt {backends.tls.pem} alpn h2,http/1.1",
            "    default_backend be_http",
            "",
        ]
    for key in ("stream", "echo", "l4http"):
        target = be[TCP_BACKEND[key]]
        out += [
            f"frontend fe_{key}",
            "    mode tcp",
            f"    bind {LOCAL}:{ports[key]}",
            f"    default_backend be_{key}",
            "",
            f"backend be_{key}",
            "    mode tcp",
            f"    server s1 {target[0]}:{target[1]}",
            "",
        ]
    return "\n".join(out)


def haproxy(
    workdir: Path, backends: Backends, cpus: frozenset[int] | None, tuned: bool = True, workers: int = 1
) -> Target:
    """HAProxy tuned (splice both ways, tcp-smart-connect), or as configured by default (`tuned=False`)."""
    t = Target("haproxy")
    exe = which("haproxy")
    if not exe:
        t.status = "missing"
        t.error = "haproxy not installed (make deps installs it as root)"
        return t
    t.version = version([exe, "-v"])
    names = ("http", "stream", "echo", "l4http") + (("https",) if backends.tls else ())
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    t.config = haproxy_config(backends, ports, tuned, workers)
    path = workdir / f"haproxy-{workers}.cfg"
    path.write_text(t.config)
    t.endpoints = {k: (LOCAL, p) for k, p in ports.items()}
    t.notes = f"nbthread {workers}, maxconn 2000, http-reuse always, " + (
        "option splice-request, splice-response, tcp-smart-connect" if tuned else "default options"
    )
    if "https" in ports:
        t.notes += "; TLS: bind ssl crt alpn h2,http/1.1"
    _launch(t, [exe, "-db", "-f", str(path)], workdir, cpus, list(ports.values()))
    return t


def nginx_config(d: Path, backends: Backends, ports: dict[str, int], workers: int = 1) -> str:
    be = backends.endpoints
    proxy = """location / {
            proxy_pass http://UPSTREAM;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }"""
    tls_server = ""
    if "https" in ports and backends.tls is not None:
        tls_server = f"""
    server {{
        listen {LOCAL}:{ports["https"]} ssl http2 backlog=4096;
{nginx_tls_lines(backends.tls)}
        {proxy.replace("UPSTREAM", "be_https")}
    }}"""
    return f"""load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream be_http {{
        server {be["http"][0]}:{be["http"][1]};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    # h2 multiplexes 8 x 16 requests at once: enough idle upstream connections for all of them
    # (HAProxy keeps what it opened), else nginx opens and closes the ones over 64 each time
    upstream be_https {{
        server {be["http"][0]}:{be["http"][1]};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen {LOCAL}:{ports["http"]} backlog=4096;
        {proxy.replace("UPSTREAM", "be_http")}
    }}{tls_server}
}}
stream {{
    upstream be_stream {{ server {be["stream"][0]}:{be["stream"][1]}; }}
    upstream be_echo {{ server {be["echo"][0]}:{be["echo"][1]}; }}
    upstream be_l4http {{ server {be["http"][0]}:{be["http"][1]}; }}
    server {{ listen {LOCAL}:{ports["stream"]}; proxy_pass be_stream; }}
    server {{ listen {LOCAL}:{ports["echo"]}; proxy_pass be_echo; }}
    server {{ listen {LOCAL}:{ports["l4http"]}; proxy_pass be_l4http; }}
}}
"""


def nginx(workdir: Path, backends: Backends, cpus: frozenset[int] | None, workers: int = 1) -> Target:
    t = Target("nginx")
    exe = which("nginx")
    if not exe:
        t.status = "missing"
        t.error = "nginx not installed (make deps installs it as root)"
        return t
    if not Path(NGINX_STREAM_MODULE).exists():
        t.status = "missing"
        t.error = f"{NGINX_STREAM_MODULE} missing (Debian: libnginx-mod-stream)"
        return t
    t.version = version([exe, "-v"])
    d = workdir / f"nginx-proxy-{workers}"
    d.mkdir(exist_ok=True)
    names = ("http", "stream", "echo", "l4http") + (("https",) if backends.tls else ())
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    t.config = nginx_config(d, backends, ports, workers)
    (d / "nginx.conf").write_text(t.config)
    t.endpoints = {k: (LOCAL, p) for k, p in ports.items()}
    t.notes = (
        f"{workers} worker(s), upstream keepalive 64, proxy_max_temp_file_size 0"
        " (stream module has no splice)"
    )
    if "https" in ports:
        t.notes += "; TLS: listen ssl http2, ssl_protocols TLSv1.2 TLSv1.3, upstream keepalive 256"
    cmd = [exe, "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"]
    _launch(t, cmd, workdir, cpus, list(ports.values()))
    return t


def _launch(t: Target, cmd: list[str], workdir: Path, cpus: frozenset[int] | None, ports: list[int]) -> None:
    try:
        t.proc = start(t.name, cmd, workdir, cpus)
        wait_listening(t.proc, ports, STARTUP_TIMEOUT)
    except (BenchError, OSError) as exc:
        t.fail(str(exc))
        if t.proc is not None:
            t.proc.stop()
        return
    t.status = "ok"


BUILDERS: dict[str, Callable[..., Target]] = {"sekisho": sekisho, "haproxy": haproxy, "nginx": nginx}
ALL_TARGETS = ("direct", "sekisho", "haproxy", "nginx")
