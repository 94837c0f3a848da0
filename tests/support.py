"""Shared test helpers: requirements that skip locally and fail in CI.

`SEKISHO_REQUIRE_ALL=1` (set by .ci/run) turns every "skip because X is
missing" into a failure, so CI can never go green by not running a test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

REQUIRE_ALL = os.environ.get("SEKISHO_REQUIRE_ALL") == "1"


def require_or_skip(ok: bool, reason: str) -> None:
    """A missing tool or privilege: a failure in CI (SEKISHO_REQUIRE_ALL=1), a skip only on
    a developer's machine that lacks it."""
    if ok:
        return
    if not REQUIRE_ALL:
        pytest.skip(reason)
    pytest.fail(f"required in CI (SEKISHO_REQUIRE_ALL=1): {reason}")


def require_root() -> None:
    require_or_skip(os.geteuid() == 0, "needs root (network namespaces, raw sockets)")


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )
    require_or_skip(path is not None, f"needs {name} (make deps installs it as root)")
    assert path is not None
    return path


def unique_name(prefix: str) -> str:
    """A short unique name for namespaces and interfaces (IFNAMSIZ is 16)."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for peers that cannot bind port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def send_then_read(port: int, data: bytes, pause: float = 0.0) -> tuple[str, bytes, str]:
    """A client on 127.0.0.1:`port` that sends all of `data` (whatever the server answers
    meanwhile), waits `pause` seconds, then reads to the end: (how the sending went, "sent"
    or "reset"; what came back; how the stream ended, "fin" or "reset")."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        try:
            s.sendall(data)
            sent = "sent"
        except (BrokenPipeError, ConnectionResetError):
            sent = "reset"
        time.sleep(pause)
        got = bytearray()
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            return sent, bytes(got), "reset"
        return sent, bytes(got), "fin"
