"""proxy.process.tasks.Background and the daemon's use of it: no background failure goes unlogged."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

import conf
from proxy.process.daemon import Daemon
from proxy.process.serving import LocalServing
from proxy.process.tasks import Background


async def _settle(tasks: Background) -> None:
    for _ in range(100):
        if not tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(tasks)} background tasks still running")


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "background task" in r.getMessage()]


@pytest.mark.asyncio
async def test_a_failing_task_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="sekisho")
    tasks = Background()

    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("it broke")

    tasks.spawn(broken(), name="broken")
    await _settle(tasks)
    (record,) = _failures(caplog)
    assert record.levelno == logging.ERROR
    assert "'broken' failed" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


@pytest.mark.asyncio
async def test_success_and_cancellation_are_not_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sekisho")
    tasks = Background()
    done = tasks.spawn(asyncio.sleep(0, result=7), name="quick")
    forever = tasks.spawn(asyncio.Event().wait(), name="forever")
    assert await done == 7
    assert len(tasks) == 1  # the finished one is let go of
    await tasks.close()
    assert forever.cancelled()
    assert len(tasks) == 0
    assert _failures(caplog) == []


@pytest.mark.asyncio
async def test_close_waits_for_cleanup_and_for_tasks_spawned_meanwhile() -> None:
    tasks = Background()
    order: list[str] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # e.g. a VRRP instance sending priority 0
            order.append("cleaned up")
            tasks.spawn(asyncio.Event().wait(), name="late")
            raise

    tasks.spawn(slow_to_stop(), name="slow")
    await asyncio.sleep(0)
    await tasks.close()
    assert order == ["cleaned up"]
    assert len(tasks) == 0


class _BrokenFrontend:
    """A retired front end whose drain fails: the daemon drains it in the background."""

    max_connections = 0

    def retire(self) -> None:
        pass

    async def drain(self, timeout: float) -> None:
        raise RuntimeError("drain broke")


def _daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    path = tmp_path / "sekisho.toml"
    path.write_text('[global]\naccess_log = ""\nworkers = 1\n')
    return Daemon(str(path), conf.load_file(path))


@pytest.mark.asyncio
async def test_daemon_logs_a_failed_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="sekisho")
    daemon = _daemon(tmp_path, monkeypatch)
    serving = daemon.serving
    assert isinstance(serving, LocalServing)
    serving._retire(_BrokenFrontend())  # type: ignore[arg-type]
    await _settle(daemon.tasks)
    (record,) = _failures(caplog)
    assert "'drain' failed" in record.getMessage()
    assert record.exc_info is not None and "drain broke" in str(record.exc_info[1])
    assert not serving.retired  # the drain's own clean-up still ran
    await daemon.shutdown()


@pytest.mark.asyncio
async def test_daemon_logs_a_reload_that_sighup_started_and_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="sekisho")
    daemon = _daemon(tmp_path, monkeypatch)

    async def broken_reload() -> bool:
        raise OSError("unexpected")

    monkeypatch.setattr(daemon, "_reload", broken_reload)
    daemon.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if daemon.reloads["failure"] or _failures(caplog):
                break
            await asyncio.sleep(0.01)
        await _settle(daemon.tasks)
    finally:
        daemon.remove_signal_handlers()
    (record,) = _failures(caplog)
    assert "'reload' failed" in record.getMessage()
    await daemon.shutdown()


@pytest.mark.asyncio
async def test_daemon_shutdown_ends_every_background_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, monkeypatch)
    stuck = daemon.tasks.spawn(asyncio.Event().wait(), name="stuck")
    await daemon.shutdown()
    assert stuck.cancelled()
    assert len(daemon.tasks) == 0
