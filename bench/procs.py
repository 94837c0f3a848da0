"""Child processes of the bench: start pinned with a raised fd limit, wait for ports, stop, RSS.

Every process is started in its own session, so stopping one means signalling
the process group whose id is the pid we started: nothing else on the machine
is ever touched.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NOFILE = 65536
REPO = Path(__file__).resolve().parent.parent  # child pythons run here so `-m bench.*` resolves


class BenchError(Exception):
    """A target or a run failed; the message says why (the bench reports it and goes on)."""


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise this process' RLIMIT_NOFILE as far as allowed; return the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new in ((limit, max(hard, limit)), (min(limit, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            return new[0]
        except (ValueError, OSError):
            continue
    return soft


def _preexec(cpus: frozenset[int] | None) -> Callable[[], None]:
    def run() -> None:
        raise_nofile()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return run


@dataclass
class Proc:
    name: str
    cmd: list[str]
    popen: subprocess.Popen[bytes]
    log: Path
    cpus: frozenset[int] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, limit: int = 1500) -> str:
        try:
            data = self.log.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait, then SIGKILL our own process group (pgid == our pid)."""
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            pass

    def rss_kib(self) -> int:
        """VmRSS of the process and all its descendants (nginx/haproxy workers), in KiB."""
        return tree_rss_kib(self.pid)


def start(  # noqa: PLR0917
    name: str,
    cmd: Sequence[str],
    logdir: Path,
    cpus: frozenset[int] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    log = logdir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_preexec(cpus),  # noqa: PLW1509 - the bench starts children from one thread
            env=env,
            cwd=cwd or REPO,
        )
    return Proc(name, list(cmd), popen, log, cpus)


def run(
    cmd: Sequence[str], timeout: float, cpus: frozenset[int] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a generator to completion (bounded by timeout); pinned like the backends."""
    try:
        return subprocess.run(
            list(cmd),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_preexec(cpus),
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise BenchError(f"{cmd[0]}: {exc}") from exc


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening_ports() -> set[int]:
    """Ports in LISTEN state on this host (read from /proc: no probe connection is made,
    which matters for iperf3, whose server treats a stray connection as a failed test)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def wait_listening(proc: Proc | None, ports: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = set(ports) - listening_ports()
        if not missing:
            return
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode}: {proc.tail()}")
        if time.monotonic() > deadline:
            where = f": {proc.tail()}" if proc is not None else ""
            raise BenchError(f"not listening on {sorted(missing)} after {timeout:.0f} s{where}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                continue
    except OSError:
        pass
    return kids


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += rss_kib(p)
        stack.extend(_children(p))
    return total


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds; zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_times(pid))


def tree_cpu_seconds(pid: int) -> float:
    total, stack, seen = 0.0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += cpu_seconds(p)
        stack.extend(_children(p))
    return total
