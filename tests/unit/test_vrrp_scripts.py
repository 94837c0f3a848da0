"""vrrp.scripts: running one command (timeout kills the group, output kept) and vrrp_script runners."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from conf.model import VrrpScript
from vrrp import scripts
from vrrp.scripts import OUTPUT_LIMIT, Outcome, ScriptRunner, run

PY = sys.executable


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.asyncio
async def test_exit_status_and_output() -> None:
    out = await run((PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"), 5)
    assert (out.rc, out.timed_out, out.ok) == (3, False, False)
    assert out.output.split() == ["out", "err"]
    assert out.describe(5) == "exit 3"
    ok = await run(("/bin/true",), 5)
    assert ok.ok and ok.describe(5) == "exit 0" and ok.shown_output() == ""


@pytest.mark.asyncio
async def test_output_is_bounded() -> None:
    out = await run((PY, "-c", "import sys; sys.stdout.write('x' * 1_000_000)"), 10)
    assert out.ok and len(out.output) == OUTPUT_LIMIT


@pytest.mark.asyncio
async def test_missing_command_is_an_outcome() -> None:
    out = await run(("/nonexistent/check",), 5)
    assert out.rc is None and not out.ok
    assert out.describe(5).startswith("could not start: ")


@pytest.mark.asyncio
async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    # a shell that forks a sleeper (same process group) and waits
    code = f"sleep 30 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    out = await run(("/bin/sh", "-c", code), 0.5)
    assert time.monotonic() - started < 3
    assert out.timed_out and not out.ok
    assert out.describe(0.5) == "timed out after 0.5s (process group killed)"
    child = int(pidfile.read_text())
    for _ in range(50):
        if not alive(child):
            break
        await asyncio.sleep(0.02)
    assert not alive(child)


@pytest.mark.asyncio
async def test_a_child_holding_the_pipe_does_not_hold_us() -> None:
    started = time.monotonic()
    out = await run(("/bin/sh", "-c", "echo hi; sleep 5 & exit 0"), 10)
    assert out.ok and out.output.strip() == "hi"
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_cancel_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(run(("/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"), 60))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(int(pidfile.read_text()))  # killed and reaped before the cancel returned


# ----------------------------------------------------------------- ScriptRunner


def test_runner_tells_listeners_only_on_changes(caplog: pytest.LogCaptureFixture) -> None:
    r = ScriptRunner(VrrpScript("chk", ("x",), fall=2))
    seen: list[tuple[str, bool]] = []
    r.subscribe(lambda name, up: seen.append((name, up)))
    caplog.set_level(logging.DEBUG, "sekisho.vrrp")
    r.result(Outcome(0), 1.0)
    r.result(Outcome(0), 2.0)
    r.result(Outcome(1, output="haproxy not running\n"), 3.0)
    r.result(Outcome(1), 4.0)
    assert seen == [("chk", True), ("chk", False)]
    infos = [m.getMessage() for m in caplog.records if m.levelno >= logging.INFO]
    assert infos == [
        "vrrp_script chk: exit 0",
        "vrrp_script chk: up",
        "vrrp_script chk: exit 1: haproxy not running",
        "vrrp_script chk: down (exit 1)",
    ]
    assert r.stats()["status"] == "down" and r.stats()["last_outcome"] == "exit 1"


@pytest.mark.asyncio
async def test_runner_runs_on_its_interval_and_is_shared(tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    flag.touch()
    config = VrrpScript("chk", ("/usr/bin/test", "-e", str(flag)), interval=0.1, timeout=1.0)
    a = scripts.acquire(config)
    b = scripts.acquire(config)
    assert a is b and a.users == 2
    events: list[bool] = []
    a.subscribe(lambda _, up: events.append(up))
    try:
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        assert events == [True]
        flag.unlink()
        for _ in range(100):
            if len(events) > 1:
                break
            await asyncio.sleep(0.02)
        assert events == [True, False]
        runs = a.check.runs
        await asyncio.sleep(0.35)
        assert 2 <= a.check.runs - runs <= 5  # every 0.1 s, not in a busy loop
    finally:
        await scripts.release(b)
        assert a._task is not None  # one user left: still running
        await scripts.release(a)
    assert a._task is None
    assert scripts.acquire(config) is not a  # a new one after the last release
    await scripts.release(scripts.acquire(config))
    c = scripts.acquire(config)
    await scripts.release(c)
    await scripts.release(c)  # released twice: harmless
