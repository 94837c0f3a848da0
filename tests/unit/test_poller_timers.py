"""The poller's timer wheel: arm / disarm. Runs a real event loop, no sockets."""

from __future__ import annotations

import asyncio
import time

from lb.poller import TICK, Poller


class Clocked:
    def __init__(self) -> None:
        self.slot = -1
        self.fired: list[float] = []

    def expired(self, now: float) -> None:
        self.slot = -1
        self.fired.append(now)


def _run(coro_fn) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        try:
            await coro_fn(poller)
        finally:
            poller.close()

    asyncio.run(main())


def test_arm_fires_after_delay_and_disarm_cancels() -> None:
    async def body(p: Poller) -> None:
        kept, dropped = Clocked(), Clocked()
        start = time.monotonic()
        kept.slot = p.arm(kept, 2 * TICK)
        dropped.slot = p.arm(dropped, 2 * TICK)
        p.disarm(dropped, dropped.slot)
        await asyncio.sleep(5 * TICK)
        assert len(kept.fired) == 1 and kept.fired[0] - start >= 2 * TICK
        assert dropped.fired == []

    _run(body)
