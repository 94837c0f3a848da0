"""`make demo`: sekisho on loopback in front of real demo backends, no root needed.

Starts small backends (two sites, one of them on two servers, an echo service
for the L4 balancer, a mail server when aiosmtpd is installed), writes a config
for them, runs the daemon in this process and prints what to try. Ctrl-C (or
SIGTERM) stops everything and removes the demo's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import conf
from proxy.process.cli import setup_logging
from proxy.process.daemon import Daemon
from proxy.process.serving import StartupError

log = logging.getLogger("sekisho.demo")
PREFERRED = {"http": 8080, "tcp": 8088, "smtp": 8025, "metrics": 9100}


def _port(preferred: int) -> int:
    """The preferred port when it is free, else any free one."""
    for candidate in (preferred, 0):
        with socket.socket() as s:
            # As the daemon binds: a port left in TIME_WAIT by the last run is free to use.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


async def _http_site(name: str) -> tuple[asyncio.Server, int]:
    """A tiny HTTP/1.1 backend that says who it is and what it was told."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                length = int(headers.get("content-length", "0") or 0)
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as servers do; curl waits 1 s without
                if length:
                    await reader.readexactly(length)
                body = (
                    f"hello from {name}\n"
                    f"request: {lines[0]}\n"
                    f"x-forwarded-for: {headers.get('x-forwarded-for', '-')}\n"
                    f"x-forwarded-host: {headers.get('x-forwarded-host', '-')}\n"
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\nX-Backend: {name}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _echo() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class _Mailbox:
    """aiosmtpd handler of a demo mail server: logs each message it takes."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        rcpts = ", ".join(envelope.rcpt_tos)
        log.info("%s took a message from %s for %s", self.name, envelope.mail_from, rcpts)
        return "250 2.0.0 Ok: queued"


async def _mail_server(name: str) -> tuple[asyncio.Server, int] | None:
    """A demo mail server (aiosmtpd, from the test extras); None when it is not installed."""
    try:
        from aiosmtpd.smtp import SMTP
    except ImportError:
        return None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(_Mailbox(name), hostname=name), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _smtp_config(ports: dict[str, int], backends: dict[str, int]) -> str:
    return f"""
[pool.mail-a]
scheduler = "rr"
servers = [{{ address = "127.0.0.1:{backends["mail-a"]}" }}]
health = {{ kind = "smtp", interval = 5.0, timeout = 2.0 }}

[pool.mail-b]
scheduler = "rr"
servers = [{{ address = "127.0.0.1:{backends["mail-b"]}" }}]
health = {{ kind = "smtp", interval = 5.0, timeout = 2.0 }}

[[smtp]]
listen = ["127.0.0.1:{ports["smtp"]}"]
hostname = "mx.demo.test"

  [[smtp.route]]
  domain = "example.com"
  pool = "mail-a"

  [[smtp.route]]
  domain = "example.net"
  pool = "mail-b"
"""


def _config(ports: dict[str, int], backends: dict[str, int], state: Path) -> str:
    smtp = _smtp_config(ports, backends) if "mail-a" in backends else ""
    return f"""\
# Written by `make demo`.
[global]
metrics = "127.0.0.1:{ports["metrics"]}"
pidfile = "{state}/sekisho.pid"
access_log = "-"

[pool.alpha]
scheduler = "wrr"
servers = [
  {{ address = "127.0.0.1:{backends["alpha-1"]}", weight = 3 }},
  {{ address = "127.0.0.1:{backends["alpha-2"]}", weight = 1 }},
]
health = {{ kind = "http", path = "/healthz", interval = 2.0, timeout = 1.0, rise = 1, fall = 2 }}

[pool.beta]
scheduler = "lc"
servers = [{{ address = "127.0.0.1:{backends["beta"]}" }}]
health = {{ kind = "tcp", interval = 2.0, timeout = 1.0 }}

[pool.echo]
scheduler = "rr"
servers = [{{ address = "127.0.0.1:{backends["echo"]}" }}]
health = {{ kind = "tcp", interval = 2.0, timeout = 1.0 }}

[[http]]
listen = ["127.0.0.1:{ports["http"]}"]

  [[http.route]]
  path = "/-/"
  status = 404

  [[http.route]]
  host = "www.example.com"
  pool = "alpha"

  [[http.route]]
  host = "beta.example.com"
  path = "/app/"
  pool = "beta"
  strip_prefix = true

  [[http.route]]
  host = "old.example.com"
  redirect = "http://www.example.com/"

[[tcp]]
listen = "127.0.0.1:{ports["tcp"]}"
pool = "echo"
{smtp}"""


def sekisho_command() -> str:
    """How to run `sekisho` from a shell: the script beside this Python (the venv's
    .venv/bin/sekisho, or where pip put it), else the one on PATH, else `python -m`."""
    beside = Path(sys.executable).with_name("sekisho")
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(str(beside))
    found = shutil.which("sekisho")
    if found is not None:
        return shlex.quote(found)
    return f"{shlex.quote(sys.executable)} -m proxy.process.cli"


async def main() -> int:
    """The demo until Ctrl-C or SIGTERM; its temporary directory is removed however it ends."""
    state = Path(tempfile.mkdtemp(prefix="sekisho-demo-"))
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    # Until the daemon installs its own handlers (graceful stop), a signal cancels the start-up.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    servers: list[asyncio.Server] = []
    try:
        return await _demo(state, servers)
    except asyncio.CancelledError:
        return 0
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(state, ignore_errors=True)


async def _demo(state: Path, servers: list[asyncio.Server]) -> int:
    backends: dict[str, int] = {}
    for name in ("alpha-1", "alpha-2", "beta"):
        server, backends[name] = await _http_site(name)
        servers.append(server)
    server, backends["echo"] = await _echo()
    servers.append(server)
    for name in ("mail-a", "mail-b"):
        mail = await _mail_server(name)
        if mail is not None:
            server, backends[name] = mail
            servers.append(server)
    ports = {kind: _port(p) for kind, p in PREFERRED.items()}
    path = state / "sekisho.toml"
    path.write_text(_config(ports, backends, state))
    config = conf.load_file(path)

    daemon = Daemon(str(path), config)
    try:
        await daemon.start()
    except StartupError as exc:
        print(f"demo: cannot start: {exc}", file=sys.stderr)
        return 1
    h, t, m, s = ports["http"], ports["tcp"], ports["metrics"], ports["smtp"]
    letter = "--mail-from me@client.test --crlf -T - <<< 'Subject: hi'"
    mail_help = (
        f"  curl smtp://127.0.0.1:{s} --mail-rcpt bob@example.com {letter}\n"
        "        # mail-a takes it (example.com; mail-b has example.net): see the log\n"
        f"  curl smtp://127.0.0.1:{s} --mail-rcpt eve@elsewhere.test {letter}\n"
        "        # 550: another domain, never relayed\n"
        if "mail-a" in backends
        else "  (pip install aiosmtpd for the mail part of the demo)\n"
    )
    print(
        f"""
sekisho demo is running (pid {os.getpid()}); config: {path}

  curl -H 'Host: www.example.com' http://127.0.0.1:{h}/        # alpha-1/alpha-2, weights 3:1
  curl -H 'Host: beta.example.com' http://127.0.0.1:{h}/app/x  # beta sees /x (strip_prefix)
  curl -i -H 'Host: old.example.com' http://127.0.0.1:{h}/a    # 301 to www.example.com/a
  curl -i http://127.0.0.1:{h}/-/admin                          # 404: admin paths never exposed
  exec 3<>/dev/tcp/127.0.0.1/{t}; echo hi >&3; head -1 <&3      # L4 balancer to an echo server
{mail_help}  curl http://127.0.0.1:{m}/metrics                             # Prometheus exposition
  curl http://127.0.0.1:{m}/api/status                          # state as JSON (also /status)
  {sekisho_command()} status -c {shlex.quote(str(path))}
        # the same state as a table: pools, servers, health (ipvsadm -Ln)
  kill -HUP {os.getpid()}                                       # reload {path.name}

Ctrl-C stops the demo and removes {state}.
""",
        flush=True,
    )
    daemon.install_signal_handlers()
    await daemon.wait()
    await daemon.shutdown()
    return 0


if __name__ == "__main__":
    setup_logging("info")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    logging.getLogger("sekisho").info("starting the demo")
    import uvloop

    raise SystemExit(uvloop.run(main()))
