"""The poller's timer wheel: arm / disarm, and arm_soon (armed at the next
tick, cancelled by setting `slot` to -1). Runs a real event loop, no sockets."""

from __future__ import annotations

import asyncio
import time

from lb.poller import PENDING, TICK, Poller


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


def test_arm_soon_fires_one_tick_later_once() -> None:
    async def body(p: Poller) -> None:
        obj = Clocked()
        start = time.monotonic()
        p.arm_soon(obj, 2 * TICK)
        p.arm_soon(obj, 2 * TICK)  # armed twice before the tick: still one timer
        assert obj.slot == PENDING
        await asyncio.sleep(1.5 * TICK)
        assert obj.slot >= 0 and obj.fired == []  # on the wheel now
        await asyncio.sleep(4 * TICK)
        assert len(obj.fired) == 1 and obj.fired[0] - start >= 2 * TICK

    _run(body)


def test_arm_soon_cancelled_before_the_tick_never_fires() -> None:
    async def body(p: Poller) -> None:
        obj = Clocked()
        p.arm_soon(obj, TICK)
        obj.slot = -1  # what FdRelay._end does for a connection over before the tick
        await asyncio.sleep(5 * TICK)
        assert obj.fired == [] and obj.slot == -1
        assert not p._wheel  # nothing was put on the wheel

    _run(body)
