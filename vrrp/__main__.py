"""`python -m vrrp -c CONFIG`: run only the [[vrrp]] sections of a config.

A small keepalived replacement for tests and for operators who want the VRRP
speaker alone. SIGTERM/SIGINT cancel every instance, which then sends
priority 0 and releases its VIPs. `--stats FILE` keeps a JSON snapshot of
every instance's `stats()` there (rewritten atomically a few times a second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

import conf

from .errors import VrrpError
from .service import VrrpService

STATS_PERIOD = 0.1


def _write_stats(path: str, services: list[VrrpService]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump([s.stats() for s in services], f, default=str)
    os.replace(tmp, path)


async def _stats_loop(path: str, services: list[VrrpService]) -> None:
    while True:
        _write_stats(path, services)
        await asyncio.sleep(STATS_PERIOD)


async def main_async(config: conf.Config, stats_path: str | None) -> int:
    services = [VrrpService(v) for v in config.vrrp]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [loop.create_task(s.run(), name=f"vrrp-{s.name}") for s in services]
    if stats_path:
        tasks.append(loop.create_task(_stats_loop(stats_path, services), name="vrrp-stats"))
    waiter = loop.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    rc = 0
    for task in done:
        if task is not waiter and not task.cancelled() and task.exception() is not None:
            logging.getLogger("sekisho.vrrp").error("%s failed: %s", task.get_name(), task.exception())
            rc = 1
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, VrrpError):
            await task
    waiter.cancel()
    if stats_path:
        _write_stats(stats_path, services)
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vrrp", description=__doc__)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--stats", help="keep a JSON stats snapshot in this file")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = conf.load_file(args.config)
    except conf.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not config.vrrp:
        print(f"{args.config}: no [[vrrp]] sections", file=sys.stderr)
        return 2
    if args.no_uvloop:
        return asyncio.run(main_async(config, args.stats))
    import uvloop

    return uvloop.run(main_async(config, args.stats))


if __name__ == "__main__":
    sys.exit(main())
