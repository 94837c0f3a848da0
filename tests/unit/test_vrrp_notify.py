"""Notify scripts: no shell, in order, with a timeout, never blocking the caller."""

from __future__ import annotations

import asyncio
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
    n.submit("backup")
    n.submit("master")
    n.submit("fault")  # not configured: nothing to run
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
        n.submit(kind)
    await n.drain(10)
    assert time.monotonic() - started < 5
    assert (n.started, n.failed) == (3, 3)


@pytest.mark.asyncio
async def test_close_cancels_a_running_command() -> None:
    n = Notifier("VI", VrrpNotify(stop=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=60))
    n.submit("stop")
    await asyncio.sleep(0.2)
    await n.drain(0.1)  # bounded: gives up and cancels
    n.close()
