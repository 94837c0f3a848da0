"""Notify scripts: no shell, in order, with a timeout, never blocking the caller; keepalived's
calling convention for the generic notify (notify.any)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import pytest

from conf.model import VrrpNotify
from vrrp.notify import Notifier


def writer(path: Path, text: str) -> tuple[str, ...]:
    code = (
        "import os, sys; open(sys.argv[1], 'a').write(sys.argv[2] + ' ' "
        "+ os.environ['SEKISHO_VRRP_INSTANCE'] + ' ' + os.environ['SEKISHO_VRRP_STATE'] + '\\n')"
    )
    return (sys.executable, "-c", code, str(path), text)


@pytest.mark.asyncio
async def test_commands_run_in_order_without_blocking(tmp_path: Path) -> None:
    out = tmp_path / "log"
    n = Notifier("VI", VrrpNotify(master=writer(out, "m"), backup=writer(out, "b $HOME;"), timeout=10))
    started = time.monotonic()
    n.submit("backup", 100)
    n.submit("master", 100)
    n.submit("fault", 100)  # not configured: nothing to run
    assert time.monotonic() - started < 0.05  # submit never waits for the command
    await n.drain(10)
    assert out.read_text().splitlines() == ["b $HOME; VI BACKUP", "m VI MASTER"]  # argv, not a shell
    assert (n.started, n.failed) == (2, 0)


@pytest.mark.asyncio
async def test_timeout_kills_and_failures_are_counted(tmp_path: Path) -> None:
    n = Notifier(
        "VI",
        VrrpNotify(
            master=(sys.executable, "-c", "import time; time.sleep(30)"),
            backup=(sys.executable, "-c", "raise SystemExit(3)"),
            fault=(str(tmp_path / "missing"),),
            timeout=0.3,
        ),
    )
    started = time.monotonic()
    for kind in ("master", "backup", "fault"):
        n.submit(kind, 100)
    await n.drain(10)
    assert time.monotonic() - started < 5
    assert (n.started, n.failed) == (3, 3)


@pytest.mark.asyncio
async def test_close_cancels_a_running_command() -> None:
    n = Notifier("VI", VrrpNotify(stop=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=60))
    n.submit("stop", 100)
    await asyncio.sleep(0.2)
    await n.drain(0.1)  # bounded: gives up and cancels
    n.close()


def appender(path: Path, *args: str) -> tuple[str, ...]:
    """A shell script that appends "$@" (one line) to `path`: what an operator's notify does."""
    script = path.parent / "append.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {path}\necho "notified $*"\n')
    script.chmod(0o755)
    return (str(script), *args)


@pytest.mark.asyncio
async def test_generic_notify_gets_keepalived_arguments_after_the_specific_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "log"
    config = VrrpNotify(
        master=appender(out, "master"),
        backup=appender(out, "backup"),
        fault=appender(out, "fault"),
        stop=appender(out, "stop"),
        any=appender(out),
    )
    n = Notifier("VI_1", config)
    caplog.set_level(logging.INFO, "sekisho.vrrp")
    for kind, priority in (("backup", 100), ("master", 100), ("fault", 80), ("stop", 80)):
        n.submit(kind, priority)
    await n.drain(10)
    assert out.read_text().splitlines() == [
        "backup",
        "INSTANCE VI_1 BACKUP 100",
        "master",
        "INSTANCE VI_1 MASTER 100",
        "fault",
        "INSTANCE VI_1 FAULT 80",
        "stop",
        "INSTANCE VI_1 STOP 80",
    ]
    logged = [r.getMessage() for r in caplog.records]
    assert any("notify.master" in m and m.endswith("exit 0: notified master") for m in logged), logged
    assert any("notify.any" in m and m.endswith("notified INSTANCE VI_1 STOP 80") for m in logged), logged


@pytest.mark.asyncio
async def test_generic_notify_keeps_its_own_arguments_first(tmp_path: Path) -> None:
    out = tmp_path / "log"
    n = Notifier("VI", VrrpNotify(any=appender(out, "--site", "tokyo")))
    n.submit("master", 254)
    await n.drain(10)
    assert out.read_text() == "--site tokyo INSTANCE VI MASTER 254\n"


@pytest.mark.asyncio
async def test_failing_notify_output_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier("VI", VrrpNotify(fault=("/bin/sh", "-c", "echo disk full >&2; exit 2")))
    caplog.set_level(logging.INFO, "sekisho.vrrp")
    n.submit("fault", 100)
    await n.drain(10)
    (record,) = [r for r in caplog.records if "notify.fault" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith("exit 2: disk full")
    assert n.failed == 1
