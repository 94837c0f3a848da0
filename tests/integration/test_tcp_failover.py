"""The operator's failure test (CONTEXT.md section 2), on loopback.

Two backends behind a `[[tcp]]` service under a bounded load loop: stop one ->
its weight shows 0 in the metrics within fall x interval + timeout and the
client sees no failed connection; stop both -> the sorry server takes them
(without one: refused at once); start both -> traffic returns to both.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.process.metrics.lb import families
from proxy.tcp import TcpFrontend, TcpStats

# -------------------------------------------------------------- helpers (shared)


def run(coro: Coroutine[Any, Any, Any], loop: str = "asyncio") -> Any:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, 60))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Backend:
    """A restartable loopback server on a fixed port. The default handler
    answers each line with the server's name (after the first line read)."""

    def __init__(self, name: str, handler: Handler | None = None) -> None:
        self.name = name
        self.handler = handler or self._named
        self.server: asyncio.Server | None = None
        self.port = 0
        self.served = 0

    async def _named(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                self.served += 1
                writer.write(self.name.encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self.handler, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()  # stop listening; connections in progress finish
            self.server = None

    @property
    def address(self) -> conf.Address:
        return conf.Address("127.0.0.1", self.port)


class Service:
    """PoolSet + TcpFrontend behind a real Listener on 127.0.0.1 port 0."""

    def __init__(self, pool: conf.Pool, **tcp: Any) -> None:
        self.pools = PoolSet({pool.name: pool})
        self.config = conf.TcpService((conf.Address("127.0.0.1", 0),), pool.name, **tcp)
        self.stats = TcpStats()
        self.frontend = TcpFrontend(self.config, self.pools, self.stats)
        self.listener: Listener | None = None

    async def __aenter__(self) -> Service:
        await self.pools.start()
        self.listener = Listener("tcp", self.config.listen[0], bind(self.config.listen[0]), self.frontend)
        self.listener.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.listener is not None
        await self.listener.stop_accepting()
        await self.frontend.drain(2.0)
        self.frontend.close_all()
        await self.pools.stop()

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.bound[1]

    def weight(self, server: str) -> float:
        """Read sekisho_server_weight from the metrics families."""
        for family in families(self.pools):
            if family.name == "sekisho_server_weight":
                for s in family.samples:
                    if s.labels["server"] == server:
                        return float(s.value)
        raise KeyError(server)


async def ask(port: int, timeout: float = 3.0) -> str:
    """One client connection: send a line, return the answer ('' = failed)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"ping\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
        return line.decode().strip()
    except (OSError, TimeoutError):
        return ""


class Load:
    """A bounded load loop: `workers` clients back to back, at most `limit` total."""

    def __init__(self, port: int, workers: int = 4, limit: int = 20000) -> None:
        self.port = port
        self.workers = workers
        self.limit = limit
        self.answers: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def _worker(self) -> None:
        while not self.stop.is_set() and self.answers.total() < self.limit:
            self.answers[await ask(self.port)] += 1
            await asyncio.sleep(0.002)

    def start(self) -> None:
        self.tasks = [asyncio.get_running_loop().create_task(self._worker()) for _ in range(self.workers)]

    async def window(self, seconds: float) -> Counter[str]:
        """Answers seen during the next `seconds`."""
        before = self.answers.copy()
        await asyncio.sleep(seconds)
        return self.answers - before

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


def failover_pool(scheduler: str, a: Backend, b: Backend, sorry: Backend | None) -> conf.Pool:
    return conf.Pool(
        "squid",
        (conf.Server(a.address, 3 if scheduler == "wrr" else 1), conf.Server(b.address, 1)),
        scheduler=scheduler,  # type: ignore[arg-type]
        health=conf.HealthCheck("tcp", interval=0.2, timeout=0.2, rise=1, fall=2),
        on_failure="inhibit",
        sorry_server=sorry.address if sorry else None,
    )


INTERVAL, TIMEOUT, FALL = 0.2, 0.2, 2
DEADLINE = FALL * INTERVAL * 1.1 + TIMEOUT  # jitter: +10% per interval


async def wait_weight(svc: Service, server: str, want: float, limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit + 1.0:
        if svc.weight(server) == want:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server}: weight {svc.weight(server)} != {want} after {limit + 1.0}s")


# ------------------------------------------------------------------------ tests


async def _failure_test(scheduler: str) -> None:
    a = await Backend("A").start()
    b = await Backend("B").start()
    sorry = await Backend("SORRY").start()
    async with Service(failover_pool(scheduler, a, b, sorry)) as svc:
        load = Load(svc.port)
        load.start()
        seen = await load.window(0.6)
        assert seen["A"] > 0 and seen["B"] > 0 and not seen[""], seen

        # Stop one: its weight shows 0 in the metrics in time, clients see nothing.
        await a.stop()
        took = await wait_weight(svc, str(a.address), 0.0, DEADLINE)
        assert took <= DEADLINE, took
        seen = await load.window(0.5)
        assert seen["B"] > 0 and not seen["A"] and not seen["SORRY"], seen

        # Stop both: the sorry server takes them.
        await b.stop()
        await wait_weight(svc, str(b.address), 0.0, DEADLINE)
        seen = await load.window(0.5)
        assert set(seen) == {"SORRY"}, seen

        # Start both: traffic returns to both.
        await a.start()
        await b.start()
        await wait_weight(svc, str(a.address), 3.0 if scheduler == "wrr" else 1.0, 1.0)
        await wait_weight(svc, str(b.address), 1.0, 1.0)
        seen = await load.window(0.6)
        assert seen["A"] > 0 and seen["B"] > 0 and not seen["SORRY"], seen
        await load.finish()
        # Zero failed connections through the whole run.
        assert load.answers[""] == 0, load.answers
        assert svc.stats.refused == 0
    for x in (a, b, sorry):
        await x.stop()


async def _refused_without_sorry(scheduler: str) -> None:
    a = await Backend("A").start()
    b = await Backend("B").start()
    async with Service(failover_pool(scheduler, a, b, None)) as svc:
        assert await ask(svc.port) in ("A", "B")
        await a.stop()
        await b.stop()
        await wait_weight(svc, str(a.address), 0.0, DEADLINE)
        await wait_weight(svc, str(b.address), 0.0, DEADLINE)
        start = time.monotonic()
        answers = [await ask(svc.port) for _ in range(20)]
        assert answers == [""] * 20
        assert (time.monotonic() - start) / 20 < 0.05  # refused quickly, not hanging
        assert svc.stats.refused == 20
        # Come back: served again.
        await a.start()
        await wait_weight(svc, str(a.address), 3.0 if scheduler == "wrr" else 1.0, 1.0)
        assert await ask(svc.port) == "A"
    await a.stop()


@pytest.mark.parametrize("scheduler", ["wrr", "lc"])
def test_operator_failure_test(scheduler: str) -> None:
    run(_failure_test(scheduler))


@pytest.mark.parametrize("scheduler", ["wrr", "lc"])
def test_all_down_without_sorry_is_refused(scheduler: str) -> None:
    run(_refused_without_sorry(scheduler))


async def _lc_not_onto_dead() -> None:
    # The LVS failure: with lc, a dead server (0 connections) attracted everything.
    a = await Backend("A").start()
    b = await Backend("B").start()
    async with Service(failover_pool("lc", a, b, None)) as svc:
        await a.stop()
        answers = Counter([await ask(svc.port) for _ in range(30)])
        assert answers == Counter({"B": 30})  # retried on B, invisibly
        pool = svc.pools["squid"]
        dead = pool.find(str(a.address))[0]
        assert not dead.up  # passive health marked it down after `fall` failed connects
        assert dead.connect_failures <= FALL + 1
    await b.stop()


def test_lc_does_not_pile_onto_dead_server() -> None:
    run(_lc_not_onto_dead())
