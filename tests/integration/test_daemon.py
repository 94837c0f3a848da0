"""The daemon as a user runs it: check, run, reload (good and bad), stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "conf" / "examples" / "contract.toml"


def sekisho(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_check_accepts_the_contract() -> None:
    result = sekisho("check", "-c", str(SPEC))
    assert result.returncode == 0, result.stderr
    assert "ok: 5 pools (7 servers), 2 http, 1 smtp, 1 tcp listeners" in result.stdout


def test_check_reports_every_error_with_its_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[pool.a]\nservers = [{ address = "127.0.0.1:1", weight = 0.5 }]\n'
        '[[http]]\nlisten = "127.0.0.1:2"\n[[http.route]]\npool = "gamma"\n'
    )
    result = sekisho("check", "-c", str(bad))
    assert result.returncode == 2
    assert "pool.a.servers[0].weight: expected an integer, got float" in result.stderr
    assert "http[0].route[0].pool: no pool named 'gamma'" in result.stderr


def test_check_missing_file() -> None:
    result = sekisho("check", "-c", "/nonexistent/sekisho.toml")
    assert result.returncode == 2
    assert "cannot read /nonexistent/sekisho.toml" in result.stderr


def test_check_live_reports_what_the_machine_lacks(tmp_path: Path) -> None:
    cfg = tmp_path / "live.toml"
    cfg.write_text(
        '[pool.a]\nservers = [{ address = "127.0.0.1:1" }]\n'
        '[[vrrp]]\nname = "v"\ninterface = "nosuchif0"\nvirtual_router_id = 9\npriority = 100\n'
        'virtual_ipaddress = ["192.0.2.1/24"]\n'
    )
    result = sekisho("check", "--live", "-c", str(cfg))
    assert result.returncode == 2
    assert "vrrp[0].interface: no interface named 'nosuchif0'" in result.stderr


def _write(path: Path, metrics_port: int, pidfile: Path, extra: str = "") -> None:
    path.write_text(
        f'[global]\nmetrics = "127.0.0.1:{metrics_port}"\npidfile = "{pidfile}"\ndrain_timeout = 2.0\n'
        '[pool.a]\nservers = [{ address = "127.0.0.1:9" }]\n' + extra
    )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _wait_for(url: str, proc: subprocess.Popen[str], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int, Path]]:
    port = free_port()
    cfg, pidfile = tmp_path / "sekisho.toml", tmp_path / "sekisho.pid"
    _write(cfg, port, pidfile)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "run", "-c", str(cfg)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/metrics", proc)
        yield proc, cfg, port, pidfile
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _reloads(port: int, result: str) -> float:
    for line in _get(f"http://127.0.0.1:{port}/metrics").splitlines():
        if line.startswith(f'sekisho_config_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    raise AssertionError("no reload counter")


def _wait_reloads(port: int, result: str, value: float) -> None:
    deadline = time.monotonic() + 10
    while _reloads(port, result) < value:
        assert time.monotonic() < deadline, f"reload {result} never counted"
        time.sleep(0.05)


def test_run_reload_stop(daemon: tuple[subprocess.Popen[str], Path, int, Path]) -> None:
    proc, cfg, port, pidfile = daemon
    assert pidfile.read_text().strip() == str(proc.pid)
    metrics = _get(f"http://127.0.0.1:{port}/metrics")
    assert 'sekisho_build_info{version="' in metrics
    assert "process_resident_memory_bytes" in metrics

    # A broken file on SIGHUP: the daemon keeps running on the old config.
    good = cfg.read_text()
    cfg.write_text(good + "[[tcp]]\nlisten = 'nope'\n")
    result = sekisho("reload", "-c", str(SPEC), "--pidfile", str(pidfile))
    assert result.returncode == 0, result.stderr
    _wait_reloads(port, "failure", 1)
    assert proc.poll() is None

    cfg.write_text(good.replace("127.0.0.1:9", "127.0.0.1:10"))
    os.kill(proc.pid, signal.SIGHUP)
    _wait_reloads(port, "success", 1)
    status = _get(f"http://127.0.0.1:{port}/api/status")
    assert "127.0.0.1:10" in status

    result = sekisho("stop", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert proc.wait(10) == 0
    assert not pidfile.exists()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert (
        "reload refused, keeping the running config: tcp[0].listen: bad address 'nope': want host:port; "
        "tcp[0].pool: required" in stderr
    )


def test_run_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "busy.toml"
        _write(cfg, port, tmp_path / "pid")
        result = sekisho("run", "-c", str(cfg))
    assert result.returncode == 1
    assert f"global.metrics: cannot bind 127.0.0.1:{port}: Address already in use" in result.stderr


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[global]\nlog_format = 'xml'\n")
    result = sekisho("run", "-c", str(cfg))
    assert result.returncode == 2
    assert "global.log_format: must be one of 'combined' | 'json', got 'xml'" in result.stderr


def test_stop_without_a_daemon(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    _write(cfg, free_port(), tmp_path / "nope.pid")
    result = sekisho("stop", "-c", str(cfg))
    assert result.returncode == 1
    assert "no running daemon" in result.stderr
