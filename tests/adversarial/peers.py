"""HAProxy and nginx as reference proxies in front of a recording backend (differential tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support import free_port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"peer exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"peer did not listen on {port}")


class Peer:
    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Peer:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        _wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this Popen created (nginx has a worker)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


def haproxy(binary: str, workdir: Path, backend_port: int) -> Peer:
    port = free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        f"""global
    maxconn 2000
defaults
    mode http
    timeout connect 3s
    timeout client 10s
    timeout server 10s
    timeout http-request 5s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{backend_port}
"""
    )
    return Peer("haproxy", [binary, "-db", "-f", str(conf)], port)


def nginx(binary: str, workdir: Path, backend_port: int) -> Peer:
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (workdir / d).mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
        }}
    }}
}}
"""
    )
    return Peer("nginx", [binary, "-c", str(conf), "-p", str(workdir)], port)
