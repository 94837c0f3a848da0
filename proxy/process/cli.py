"""The `sekisho` command: check, run, stop, reload, status, convert, version.

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage (as
`nginx -t` and `haproxy -c` users expect a non-zero status on a bad config).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import conf
from proxy import VERSION

DEFAULT_CONFIG = "/etc/sekisho/sekisho.toml"
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

log = logging.getLogger("sekisho")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # status and convert parse their own arguments.
    if argv and argv[0] == "status":
        from proxy.process import status

        return status.main(argv[1:])
    if argv and argv[0] == "convert":
        from conf import convert

        return convert.main(argv[1:])

    parser = argparse.ArgumentParser(prog="sekisho", description="edge proxy and L4 load balancer")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("check", "validate a config file (exit 2 with every error when invalid)"),
        ("run", "run in the foreground, logging to stderr"),
        ("stop", "stop the running daemon (SIGTERM to the pid in global.pidfile) and wait"),
        ("reload", "reload the running daemon's config (SIGHUP)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"config file ({DEFAULT_CONFIG})")
        if name == "check":
            p.add_argument("--live", action="store_true", help="also check certificates, binds, interfaces")
            p.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
        if name in ("stop", "reload"):
            p.add_argument("--pidfile", help="override global.pidfile")
    sub.add_parser("status", help="show listeners, pools, servers and VRRP state")
    sub.add_parser("convert", help="convert a keepalived.conf or DeleGate config to sekisho TOML")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(f"sekisho {VERSION}")
        return 0
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.command == "check":
        return _check(config, args.live, args.quiet)
    if args.command == "run":
        return _run(args.config, config)
    return _signal(config, args.command, args.pidfile)


def _load(path: str) -> conf.Config | None:
    try:
        return conf.load_file(path)
    except conf.ConfigError as exc:
        print(f"sekisho: {path}: configuration is invalid:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


def _check(config: conf.Config, live: bool, quiet: bool) -> int:
    from proxy.process.admin import exposure_warnings

    # Warnings never change the exit status, and -q does not hide them (nginx -t -q).
    warnings = exposure_warnings(config.global_)
    problems = live_problems(config, warnings) if live else []
    for w in warnings:
        print(f"sekisho: warning: {w}", file=sys.stderr)
    if problems:
        print(f"sekisho: {config.source}: not runnable on this machine:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return EXIT_CONFIG
    if not quiet:
        print(f"{config.source}: ok: {config.summary()}")
    return 0


def live_problems(config: conf.Config, warnings: list[str] | None = None) -> list[str]:
    """What only this machine can tell: certificates, the admin token file, binds,
    interfaces, scripts. Warnings (a token file others can read) go to `warnings`."""
    from proxy.process.admin import TokenError, admin_policy
    from proxy.process.frontends import check_runtimes

    problems = check_runtimes(config)
    try:
        _, token_warnings = admin_policy(config.global_)
    except TokenError as exc:
        problems.append(str(exc))
    else:
        if warnings is not None:
            warnings += token_warnings
    for i, h in enumerate(config.http):
        for j, tls in enumerate(h.tls):
            problems += _tls_problem(f"http[{i}].tls[{j}]", tls)
    for i, s in enumerate(config.smtp):
        if s.tls is not None:
            problems += _tls_problem(f"smtp[{i}].tls", s.tls)
    listens = [
        *((f"http[{i}].listen[{k}]", a) for i, h in enumerate(config.http) for k, a in enumerate(h.listen)),
        *((f"smtp[{i}].listen[{k}]", a) for i, s in enumerate(config.smtp) for k, a in enumerate(s.listen)),
        *((f"tcp[{i}].listen[{k}]", a) for i, t in enumerate(config.tcp) for k, a in enumerate(t.listen)),
    ]
    if config.global_.metrics is not None:
        listens.append(("global.metrics", config.global_.metrics))
    for path, address in listens:
        problems += _bind_problem(path, address)
    for name, pool in config.pools.items():
        for k, server in enumerate(pool.servers):
            if not server.address.is_ip:
                try:
                    socket.getaddrinfo(server.address.host, server.address.port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    problems.append(f"pool.{name}.servers[{k}].address: cannot resolve: {exc}")
        if pool.health.kind == "script" and not _executable(pool.health.command[0]):
            problems.append(f"pool.{name}.health.command: {pool.health.command[0]} is not executable")
    for i, v in enumerate(config.vrrp):
        for key, iface in [
            ("interface", v.interface),
            *((f"track_interface[{k}]", t) for k, t in enumerate(v.track_interface)),
        ]:
            try:
                socket.if_nametoindex(iface)
            except OSError:
                problems.append(f"vrrp[{i}].{key}: no interface named {iface!r}")
        for which in ("master", "backup", "fault", "stop"):
            argv = getattr(v.notify, which)
            if argv and not _executable(argv[0]):
                problems.append(f"vrrp[{i}].notify.{which}: {argv[0]} is not executable")
    return problems


def _tls_problem(path: str, tls: conf.TlsCert) -> list[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        return [f"{path}: cannot load certificate {tls.cert} / key {tls.key}: {exc}"]
    return []


def _bind_problem(path: str, address: conf.Address) -> list[str]:
    from proxy.listener import bind

    try:
        bind(address).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return [f"{path}: {address} is in use (a running sekisho holds it?)"]
        return [f"{path}: cannot bind {address}: {exc.strerror}"]
    return []


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _executable(path: str) -> bool:
    return (
        os.access(path, os.X_OK)
        if "/" in path
        else any(os.access(os.path.join(d, path), os.X_OK) for d in os.environ.get("PATH", "").split(":"))
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s sekisho[%(process)d] %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def _run(path: str, config: conf.Config) -> int:
    setup_logging(config.global_.log_level)
    from proxy.process.daemon import serve

    try:
        import uvloop

        return uvloop.run(serve(path, config))
    except KeyboardInterrupt:
        return 0


def _signal(config: conf.Config, command: str, pidfile: str | None) -> int:
    path = pidfile or config.global_.pidfile
    if not path:
        print("sekisho: global.pidfile is not set (or pass --pidfile)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError) as exc:
        print(f"sekisho: no running daemon: cannot read pid from {path}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    sig = signal.SIGHUP if command == "reload" else signal.SIGTERM
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        print(f"sekisho: no process {pid} (stale pidfile {path})", file=sys.stderr)
        return EXIT_RUNTIME
    if command == "reload":
        print(f"sekisho: reload requested (pid {pid}); the daemon logs the result")
        return 0
    deadline = time.monotonic() + config.global_.drain_timeout + 5
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"sekisho: stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"sekisho: pid {pid} still running after the drain timeout", file=sys.stderr)
    return EXIT_RUNTIME


if __name__ == "__main__":
    raise SystemExit(main())
