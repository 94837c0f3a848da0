"""proxy.process.sdnotify against a datagram socket the test owns (path and abstract)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.process.sdnotify import Notifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"sekisho-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    yield sock, "@" + name
    sock.close()


def _recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_unset_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.stopping() is False
    assert n.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(n.watchdog_loop(), 1))  # returns at once


def test_ready_reloading_stopping_status_on_a_path(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.ready("serving 3 listeners")
    assert _recv(sock) == {"READY": "1", "STATUS": "serving 3 listeners"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    msg = _recv(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    assert n.ready()
    assert _recv(sock) == {"READY": "1"}
    assert n.status("reloaded:\n  4 pools")
    assert _recv(sock) == {"STATUS": "reloaded: 4 pools"}
    assert n.stopping()
    assert _recv(sock) == {"STOPPING": "1"}
    n.close()


def test_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, name = abstract_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": name})
    assert n.ready()
    assert _recv(sock) == {"READY": "1"}
    n.close()


def test_send_failure_never_raises(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.ready() is False
    n.close()


def test_a_receiver_that_stops_reading_never_blocks_us(path_socket: tuple[socket.socket, str]) -> None:
    _, path = path_socket  # never read: its queue fills after a few datagrams
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    started = time.monotonic()
    results = [n.watchdog() for _ in range(500)]
    assert time.monotonic() - started < 2
    assert results[0] is True and results[-1] is False
    n.close()


def test_relative_path_is_ignored() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative.sock"}).enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/nothing", **env})
    assert n.watchdog_interval() == expected


def test_watchdog_needs_notify_socket() -> None:
    assert Notifier.from_env({"WATCHDOG_USEC": "1000000"}).watchdog_interval() is None


@pytest.mark.asyncio
async def test_watchdog_loop_pings_at_half_the_interval(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    sock.setblocking(False)
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # 0.2 s
    assert n.watchdog_interval() == pytest.approx(0.2)
    task = asyncio.create_task(n.watchdog_loop())
    await asyncio.sleep(0.45)  # pings at 0, 0.1, 0.2, 0.3, 0.4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pings = []
    while True:
        try:
            pings.append(sock.recv(100))
        except BlockingIOError:
            break
    assert set(pings) == {b"WATCHDOG=1"}
    assert 3 <= len(pings) <= 6
    n.close()
