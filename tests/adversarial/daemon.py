"""`sekisho run` as a subprocess (what an operator runs), for load, exhaustion and reload tests."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def daemon_config(
    backends: list[str],
    *,
    header: float = 10.0,
    response: float = 60.0,
    max_connections: int = 10000,
    extra_global: str = "",
    pool_extra: str = "",
) -> tuple[str, int]:
    port = free_port()
    servers = ", ".join(f'{{ address = "{b}" }}' for b in backends)
    toml = (
        # One process: these tests watch its fds, memory and CPU (workers: tests/integration/test_workers.py)
        f'[global]\naccess_log = ""\nworkers = 1\n{extra_global}\n'
        f'[pool.alpha]\nscheduler = "rr"\nservers = [{servers}]\n{pool_extra}\n'
        f'[[http]]\nlisten = ["127.0.0.1:{port}"]\nforwarded_headers = []\n'
        f"max_connections = {max_connections}\n"
        f"timeouts = {{ header = {header}, idle = 30.0, connect = 2.0, response = {response} }}\n"
        '[[http.route]]\npath = "/"\npool = "alpha"\n'
    )
    return toml, port


class Daemon:
    """sekisho run -c CONFIG; stderr is collected in `log` by a reader thread."""

    def __init__(self, config_path: Path, port: int, nofile: int | None = None) -> None:
        self.config_path = config_path
        self.port = port
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> Daemon:
        nofile = self.nofile

        def limit() -> None:
            if nofile is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "run", "-c", str(self.config_path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=limit,  # noqa: PLW1509 (single-threaded enough: setrlimit only)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekisho exited {self.proc.returncode}: {''.join(self.log)}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"sekisho did not listen: {''.join(self.log)}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()
        return proc.returncode


def start_daemon(tmp: Path, toml: str, port: int, nofile: int | None = None) -> Daemon:
    path = tmp / "sekisho.toml"
    path.write_text(toml)
    return Daemon(path, port, nofile).start()


def env_pythonpath() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env
