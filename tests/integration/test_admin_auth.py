"""The admin listener of a running `sekisho run`: reading is open, changing state is not.

A drain (POST /servers/{pool}/{address}/weight) needs the bearer token of
`global.admin_token_file`, never from another Origin; without a token file it is
off; the token and `global.metrics_allow` are read again on SIGHUP. `sekisho check
--live` reads the token file as the daemon will.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "4f1c2a9e7b3d5c8e0a6f2b4d9c1e3a5b"
SERVER = "127.0.0.1:9"  # never connected to: the pool has no health check
DRAIN = f"/servers/site/{SERVER}/weight"


@dataclass
class Daemon:
    tmp: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.tmp / "sekisho.toml"

    @property
    def token_file(self) -> Path:
        return self.tmp / "admin.token"

    @property
    def log(self) -> Path:
        return self.tmp / "sekisho.log"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def write(self, extra: str = "", token: bool = True) -> None:
        token_line = f'admin_token_file = "{self.token_file}"\n' if token else ""
        self.config.write_text(
            f'[global]\nmetrics = "127.0.0.1:{self.port}"\npidfile = "{self.tmp / "sekisho.pid"}"\n'
            f'access_log = ""\ndrain_timeout = 1.0\n{token_line}{extra}'
            f'[pool.site]\nservers = [{{ address = "{SERVER}", weight = 3 }}]\n'
        )

    def reload(self, result: str = "success") -> None:
        before = self.reloads(result)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.reloads(result) <= before:
            assert time.monotonic() < deadline, f"reload {result} never counted: {self.log.read_text()}"
            time.sleep(0.05)

    def reloads(self, result: str) -> float:
        status, _, body = request(self.port, "GET", "/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith(f'sekisho_config_reloads_total{{result="{result}"}}'):
                return float(line.split()[-1])
        raise AssertionError("no reload counter")

    def weight(self) -> int:
        status, _, body = request(self.port, "GET", "/api/status")
        assert status == 200
        (pool,) = json.loads(body)["pools"]
        (server,) = [s for s in pool["servers"] if s["address"] == SERVER]
        return int(server["weight"])


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as response:
            return response.status, response.headers, bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, bytes(exc.read())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, free_port())
    d.token_file.write_text(f"  {TOKEN}\n")  # whitespace around the token is not part of it
    d.token_file.chmod(0o600)
    d.write()
    with d.log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "run", "-c", str(d.config)], cwd=ROOT, stderr=err
        )
    d.proc = proc
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"daemon exited: {d.log.read_text()}"
            try:
                request(d.port, "GET", "/metrics")
                break
            except OSError:
                assert time.monotonic() < deadline, f"admin never answered: {d.log.read_text()}"
                time.sleep(0.1)
        yield d
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def test_reading_is_open_and_a_drain_needs_the_token(daemon: Daemon) -> None:
    port = daemon.port
    for path in ("/metrics", "/status", "/api/status", "/"):
        assert request(port, "GET", path)[0] == 200, path
    assert request(port, "HEAD", "/metrics")[0] == 200
    assert daemon.weight() == 3

    status, headers, body = request(port, "POST", DRAIN, b"0")
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert daemon.weight() == 3

    status, headers, _ = request(port, "POST", DRAIN, b"0", bearer(TOKEN[:-1] + "0"))
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert request(port, "POST", DRAIN, b"0", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert daemon.weight() == 3

    # A page elsewhere cannot send the token, and with it would still be refused.
    for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "null"):
        status, _, body = request(port, "POST", DRAIN, b"0", {**bearer(TOKEN), "Origin": origin})
        assert status == 403, origin
        assert b"cross-origin" in body
    assert daemon.weight() == 3

    status, _, body = request(port, "POST", DRAIN, b"0", bearer(TOKEN))
    assert status == 200, body
    assert json.loads(body)["servers"][0]["weight"] == 0
    assert daemon.weight() == 0
    own = {**bearer(TOKEN), "Origin": f"http://127.0.0.1:{port}"}
    assert request(port, "POST", DRAIN, b"2", own)[0] == 200  # this listener's own page
    assert daemon.weight() == 2


def test_sighup_rereads_the_token_and_the_allow_list(daemon: Daemon) -> None:
    port = daemon.port
    daemon.token_file.write_text("second-token-0123456789abcdef\n")
    daemon.reload()
    assert request(port, "POST", DRAIN, b"1", bearer(TOKEN))[0] == 401
    assert request(port, "POST", DRAIN, b"1", bearer("second-token-0123456789abcdef"))[0] == 200
    assert daemon.weight() == 1

    # An empty token file is refused, and the running token stays.
    daemon.token_file.write_text("\n")
    daemon.reload("failure")
    assert "global.admin_token_file:" in daemon.log.read_text()
    assert request(port, "POST", DRAIN, b"4", bearer("second-token-0123456789abcdef"))[0] == 200

    # No token file configured: state changes are off, and the answer says how to turn them on.
    daemon.write(token=False)
    daemon.reload()
    status, _, body = request(port, "POST", DRAIN, b"0", bearer("second-token-0123456789abcdef"))
    assert status == 403
    assert b"global.admin_token_file" in body
    assert daemon.weight() == 4
    assert request(port, "GET", "/metrics")[0] == 200

    # An allow list without us: even the read-only pages are refused.
    daemon.write('metrics_allow = ["192.0.2.0/24"]\n', token=False)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (status := request(port, "GET", "/metrics")[0]) == 200:
        assert time.monotonic() < deadline, "metrics_allow never applied"
        time.sleep(0.05)
    assert status == 403
    _, headers, _ = request(port, "GET", "/api/status")
    assert headers["Connection"] == "close"


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", "--live", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_check_live_reads_the_token_file(tmp_path: Path) -> None:
    token, config = tmp_path / "admin.token", tmp_path / "sekisho.toml"
    config.write_text(
        f'[global]\nmetrics = "127.0.0.1:{free_port()}"\nadmin_token_file = "{token}"\n'
        '[pool.a]\nservers = [{ address = "127.0.0.1:9" }]\n'
    )
    result = _check(config)
    assert result.returncode == 2
    assert f"global.admin_token_file: cannot read {token}: No such file" in result.stderr

    token.write_text(" \n")
    result = _check(config)
    assert result.returncode == 2
    assert f"global.admin_token_file: {token} is empty" in result.stderr

    token.write_text(TOKEN)
    os.chmod(token, 0o644)
    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert "warning: global.admin_token_file:" in result.stderr
    assert "readable by group/other (mode 0644)" in result.stderr

    os.chmod(token, 0o600)
    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
