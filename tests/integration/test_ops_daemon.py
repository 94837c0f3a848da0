"""Operating a running sekisho: sd_notify, `sekisho status`, the /status page in
Chromium, promtool on a live scrape, the Grafana metric names, and a real
Prometheus server scraping it.

One daemon for the module (loopback ports): an HTTP listener in front of a pool
with one live backend (served here) and one dead address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.test_ops_contrib import dashboard_exprs, metric_names
from tests.integration.test_ops_status_page import chromium
from tests.support import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    proc: subprocess.Popen[str]
    config: Path
    admin: int
    http: int
    backend: int
    dead: int
    notify: socket.socket
    messages: list[str] = field(default_factory=list)

    def recv_until(self, wanted: str, seconds: float = 10) -> list[str]:
        """Collect notify datagrams until one contains `wanted`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(msg)
            if wanted in msg.split("\n"):
                return self.messages
        raise AssertionError(f"no {wanted} from the daemon; got {self.messages}")

    def drain(self) -> None:
        """Drop what is queued (watchdog pings), so the next messages find room."""
        self.notify.setblocking(False)
        try:
            while True:
                self.notify.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.notify.setblocking(True)
        self.messages.clear()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin}{path}"


def _get(url: str, timeout: float = 5) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return bytes(response.read())


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b"hello from the backend\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def daemon(backend: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("ops")
    admin, http, dead = free_port(), free_port(), free_port()
    config = tmp / "sekisho.toml"
    config.write_text(
        f'[global]\nmetrics = "127.0.0.1:{admin}"\npidfile = "{tmp / "sekisho.pid"}"\n'
        'access_log = ""\ndrain_timeout = 2.0\n\n'
        '[pool.web]\nscheduler = "rr"\n'
        f'servers = [{{ address = "127.0.0.1:{backend}" }}, {{ address = "127.0.0.1:{dead}" }}]\n'
        'health = { kind = "tcp", interval = 0.5, timeout = 0.5, rise = 1, fall = 1 }\n\n'
        f'[[http]]\nlisten = ["127.0.0.1:{http}"]\n\n'
        '  [[http.route]]\n  path = "/-/"\n  status = 404\n\n'
        '  [[http.route]]\n  path = "/"\n  pool = "web"\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WATCHDOG_PID", None)
    log = (tmp / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "run", "-c", str(config)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Running(proc, config, admin, http, backend, dead, notify)
    try:
        running.recv_until("READY=1", seconds=20)
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        notify.close()
        log.close()


def _pool_states(d: Running) -> dict[str, bool]:
    snapshot = json.loads(_get(d.url("/api/status")))
    (pool,) = [p for p in snapshot["pools"] if p["name"] == "web"]
    return {s["address"]: s["up"] for s in pool["servers"]}


def _wait_dead_down(d: Running) -> None:
    deadline = time.monotonic() + 10
    while _pool_states(d).get(f"127.0.0.1:{d.dead}", True):
        assert time.monotonic() < deadline, "the dead server never went down"
        time.sleep(0.1)


def _traffic(d: Running, n: int = 5) -> None:
    for _ in range(n):
        assert _get(f"http://127.0.0.1:{d.http}/") == b"hello from the backend\n"


def test_ready_after_listeners_are_bound_and_watchdog(daemon: Running) -> None:
    assert "READY=1" in daemon.messages[0].split("\n")  # the first thing said
    # READY means bound: both the public and the admin listener answer now
    socket.create_connection(("127.0.0.1", daemon.http), timeout=2).close()
    socket.create_connection(("127.0.0.1", daemon.admin), timeout=2).close()
    daemon.recv_until("WATCHDOG=1", seconds=3)  # WatchdogSec=1s: a ping every 0.5 s


def test_sekisho_status_table_and_json(daemon: Running) -> None:
    _traffic(daemon)
    _wait_dead_down(daemon)
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "status", "-c", str(daemon.config)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    live = next(line for line in lines if f"-> 127.0.0.1:{daemon.backend}" in line)
    dead = next(line for line in lines if f"-> 127.0.0.1:{daemon.dead}" in line)
    assert live.split()[2] == "UP" and dead.split()[2] == "DOWN"
    assert "  web  rr  health tcp  1/2 up" in lines
    assert any("pool:web" in line for line in lines)
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "status", "--admin", f"127.0.0.1:{daemon.admin}", "--json"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert {li["kind"] for li in snapshot["listeners"]} >= {"http", "admin"}


def test_status_page_in_chromium(daemon: Running, tmp_path: Path) -> None:
    _wait_dead_down(daemon)
    shot = tmp_path / "status.png"
    dom = chromium(daemon.url("/status"), tmp_path, screenshot=shot)
    assert shot.stat().st_size > 5_000
    assert f'data-server="127.0.0.1:{daemon.backend}" data-state="UP"' in dom
    assert f'data-server="127.0.0.1:{daemon.dead}" data-state="DOWN"' in dom
    assert 'data-pool="web"' in dom


def test_promtool_check_metrics_on_a_live_scrape(daemon: Running) -> None:
    promtool = require_tool("promtool")
    _traffic(daemon)
    scrape = _get(daemon.url("/metrics"))
    done = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, check=False, capture_output=True, timeout=60
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


def test_every_dashboard_and_alert_metric_is_exposed(daemon: Running) -> None:
    _traffic(daemon)
    text = _get(daemon.url("/metrics")).decode()
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    exposed = samples | {
        f + s for f in families for s in ("", "_total", "_bucket", "_count", "_sum", "_info")
    }
    wanted = set().union(*(metric_names(e) for e in dashboard_exprs()))
    alerts = (ROOT / "contrib" / "prometheus-alerts.yml").read_text()
    wanted |= metric_names(alerts)
    assert not sorted(wanted - exposed), f"not in a live scrape: {sorted(wanted - exposed)}"


def _prom_query(port: int, query: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    data = json.loads(_get(url))
    assert data["status"] == "success", data
    result: list[dict[str, object]] = data["data"]["result"]
    return result


def _wait_value(port: int, query: str, check: object, seconds: float = 30) -> float:
    deadline = time.monotonic() + seconds
    last: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            last = _prom_query(port, query)
        except OSError:
            last = []
        if last:
            value = float(last[0]["value"][1])  # type: ignore[index]
            if check(value):  # type: ignore[operator]
                return value
        time.sleep(0.5)
    raise AssertionError(f"{query}: {last}")


def test_real_prometheus_scrape(daemon: Running, tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: sekisho\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{daemon.admin}']\n"
    )
    _traffic(daemon)  # the request counter has a series before the first scrape
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        query = 'sum(sekisho_http_requests_total{job="sekisho"}) or vector(0)'
        try:
            _wait_value(port, 'up{job="sekisho"}', lambda v: v == 1.0, seconds=40)
        except AssertionError:
            targets = json.loads(_get(f"http://127.0.0.1:{port}/api/v1/targets"))["data"]["activeTargets"]
            raise AssertionError(f"sekisho not scraped: {[t['lastError'] for t in targets]}") from None
        before = _wait_value(port, query, lambda v: v >= 0)
        _traffic(daemon, 10)
        after = _wait_value(port, query, lambda v: v >= before + 10)
        assert after >= before + 10
        _wait_value(port, 'count_over_time(up{job="sekisho"}[1m])', lambda v: v >= 2)  # two scrapes at least
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_reload_and_stop_are_announced(daemon: Running) -> None:
    daemon.drain()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.recv_until("RELOADING=1")
    reloading = next(m for m in daemon.messages if "RELOADING=1" in m.split("\n"))
    assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
    daemon.recv_until("READY=1")
    daemon.drain()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.recv_until("STOPPING=1")
    assert daemon.proc.wait(15) == 0
