"""Legitimate keep-alive throughput while slow clients hold connections open.

    python -m bench.slowloris [--rounds 7] [--duration 4] [--loris 2000] [--posts 200]
                              [--header-timeout 3] [--load quiet,busy] [--tree NAME=PATH ...]
                              [--profile]

Starts the bench's backends and, per `--tree` (a checkout: `--tree before=/tmp/sekisho-before`
runs that tree's code with `python -m proxy.cli`; the default is this checkout), two
identical sekisho processes: A, which gets attacked, and its twin B, which does not. The
active tree's A and B have the first CPU to themselves (`python -m bench`'s server side,
without the backend), so each gets about half of it; the backend, wrk, the attacker
(niced) and this process run on the others. Per round and tree:

    wrk -t1 -c32 GET /small against A and B at once (calibration) -> the attacker opens
    LORIS slowloris and POSTS slow-POST connections to A, while wrk runs against A and B
    (ramp-up) -> A's CPU with the attack alone (1 s) -> wrk against A and B (held) ->
    the attacker stops -> calibration again

ratio = (A/B during the attack) / (A/B in the calibrations): the attacked instance's
legitimate throughput against its baseline measured in the same seconds, on the same CPU,
by the same scheduler. A ratio of rates taken one after the other did not resolve a few
per cent on a shared machine (runs of no attack at all spread from 0.65 to 1.6); the twin
cancels that drift. `--load busy` adds a CPU burner (a bounded busy loop) on the twins'
CPU for the whole condition: each then gets about a third of it.

Slowloris connections send a partial head and one header line a second; each one that
sekisho closes is reopened (as the real tool does), so with a short header timeout the
runs include whole waves of 408s and reconnects. Slow-POST connections send
`Content-Length: 100000` and one body byte a second (to /upload, whose backend waits for
the whole body). Prints medians (min-max) over rounds; `--profile` samples A with py-spy
during round 1 (ramp-up, attack alone, held).

    python -m bench.slowloris attack PORT LORIS POSTS SECONDS    # the attacker alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile, tools
from bench.cli import pinning
from bench.procs import (
    REPO,
    BenchError,
    Proc,
    free_ports,
    raise_nofile,
    start,
    tree_cpu_seconds,
    wait_listening,
)
from bench.targets import LOCAL, Backends

OPEN_TIMEOUT = 60.0  # seconds the attacker may take to open its connections

# ---------------------------------------------------------------- the attacker (its own process)

LORIS_HEAD = b"GET /small HTTP/1.1\r\nHost: bench\r\n"
POST_HEAD = b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n"


class _Attacker:
    def __init__(self, port: int, until: float) -> None:
        self.port = port
        self.until = until
        self.running = True
        self.live: dict[str, set[_Slow]] = {"loris": set(), "post": set()}
        self.opened = {"loris": 0, "post": 0}
        self.connect_failed = 0
        self.got_408 = 0
        self.closed_by_peer = {"loris": 0, "post": 0}
        self.lifetimes: list[float] = []  # seconds a slowloris connection lived (closed by sekisho)

    async def open_one(self, kind: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Slow(self, kind), LOCAL, self.port)
        except OSError:
            self.connect_failed += 1

    def reopen(self, kind: str) -> None:
        if self.running and time.monotonic() < self.until:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: loop.create_task(self.open_one(kind)))

    async def drip(self) -> None:
        i = 0
        while self.running and time.monotonic() < self.until:
            await asyncio.sleep(1.0)
            i += 1
            line = b"X-%d: a\r\n" % i
            for c in list(self.live["loris"]):
                c.transport.write(line)
            for c in list(self.live["post"]):
                c.transport.write(b"x")

    def summary(self) -> dict[str, Any]:
        life = sorted(self.lifetimes)
        return {
            "event": "done",
            "opened": self.opened,
            "connect_failed": self.connect_failed,
            "got_408": self.got_408,
            "closed_by_peer": self.closed_by_peer,
            "loris_lifetime_min": life[0] if life else None,
            "loris_lifetime_median": statistics.median(life) if life else None,
            "loris_lifetime_max": life[-1] if life else None,
        }


class _Slow(asyncio.Protocol):
    def __init__(self, attacker: _Attacker, kind: str) -> None:
        self.attacker = attacker
        self.kind = kind
        self.transport: asyncio.Transport
        self.t0 = 0.0
        self.answered = False
        self.ours = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self.transport = transport  # type: ignore[assignment]
        self.t0 = time.monotonic()
        a = self.attacker
        a.opened[self.kind] += 1
        a.live[self.kind].add(self)
        self.transport.write(LORIS_HEAD if self.kind == "loris" else POST_HEAD)

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            if data.startswith(b"HTTP/1.1 408"):
                self.attacker.got_408 += 1

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        a = self.attacker
        a.live[self.kind].discard(self)
        if not self.ours:
            a.closed_by_peer[self.kind] += 1
            if self.kind == "loris":
                a.lifetimes.append(time.monotonic() - self.t0)
        a.reopen(self.kind)


async def _attack(port: int, n_loris: int, n_posts: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    a = _Attacker(port, time.monotonic() + seconds)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    kinds = ["loris"] * n_loris + ["post"] * n_posts
    t0 = time.monotonic()
    for i in range(0, len(kinds), 200):  # in batches, as a real tool ramps up
        await asyncio.gather(*(a.open_one(k) for k in kinds[i : i + 200]))
    drip = loop.create_task(a.drip())
    live = {k: len(v) for k, v in a.live.items()}
    print(json.dumps({"event": "open", "seconds": time.monotonic() - t0, "live": live}), flush=True)
    try:
        await asyncio.wait_for(stop.wait(), max(0.1, a.until - time.monotonic()))
    except TimeoutError:
        pass
    a.running = False
    drip.cancel()
    for conns in a.live.values():
        for c in list(conns):
            c.ours = True
            c.transport.abort()
    await asyncio.sleep(0.1)
    print(json.dumps(a.summary()), flush=True)


def attack_main(argv: list[str]) -> int:
    port, n_loris, n_posts, seconds = int(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    raise_nofile()
    import uvloop

    uvloop.run(_attack(port, n_loris, n_posts, min(seconds, 600.0)))
    return 0


# ---------------------------------------------------------------- the orchestrator


@dataclass
class Tree:
    name: str
    path: Path
    procs: dict[str, Proc] = field(default_factory=dict)  # "A" (attacked), "B" (its twin)
    ports: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # load -> samples
    profiles: dict[str, Any] = field(default_factory=dict)


def _config(workdir: Path, backends: Backends, port: int, header: float) -> str:
    lines = [
        "[global]",
        f'pidfile = "{workdir}/sekisho.pid"',
        'access_log = ""',
        'log_level = "warning"',
        "drain_timeout = 1.0",
        "",
    ]
    for key in ("http", "upload"):  # upload: reads a body of any size, answers at its end
        host, p = backends.endpoints[key]
        lines += [f"[pool.{key}]", 'scheduler = "rr"', f'servers = [{{ address = "{host}:{p}" }}]', ""]
    return "\n".join(
        [
            *lines,
            "[[http]]",
            f'listen = ["{LOCAL}:{port}"]',
            "max_connections = 30000",
            f"timeouts = {{ header = {header}, idle = 60.0, connect = 2.0, response = 60.0 }}",
            "",
            "  [[http.route]]",
            '  path = "/upload"',
            '  pool = "upload"',
            "",
            "  [[http.route]]",
            '  path = "/"',
            '  pool = "http"',
            "",
        ]
    )


def _start_tree(tree: Tree, workdir: Path, backends: Backends, header: float, cpus: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree.path))
    for twin in ("A", "B"):
        d = workdir / f"sekisho-{tree.name}-{twin}"
        d.mkdir()
        port = tree.ports[twin] = free_ports(1)[0]
        path = d / "sekisho.toml"
        path.write_text(_config(d, backends, port, header))
        # cwd first on sys.path (python -m): the tree's packages, not the installed checkout's
        cmd = [sys.executable, "-m", "proxy.cli", "run", "-c", str(path)]
        proc = tree.procs[twin] = start(f"sekisho-{tree.name}-{twin}", cmd, d, cpus, env=env, cwd=tree.path)
        wait_listening(proc, [port], 15.0)


def _burner(seconds: float, cpus: frozenset[int] | None, workdir: Path) -> Proc:
    """A bounded busy loop on sekisho's CPU: the machine is busy with someone else's work."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return start("burner", [sys.executable, "-c", code], workdir, cpus)


def _wrk(wrk: str, port: int, duration: float, cpus: frozenset[int] | None) -> float:
    res = tools.run_wrk(wrk, f"http://{LOCAL}:{port}/small", 32, duration, close=False, cpus=cpus)
    return float(res["rate"])


def _pair(tree: Tree, wrk: str, duration: float, cpus: frozenset[int] | None) -> tuple[float, float]:
    """wrk against A and B at once: (A's rate, B's rate)."""
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(_wrk, wrk, tree.ports["A"], duration, cpus)
        b = pool.submit(_wrk, wrk, tree.ports["B"], duration, cpus)
        return a.result(), b.result()


def _round(
    tree: Tree,
    args: argparse.Namespace,
    *,
    load: str,
    wrk: str,
    cpus: frozenset[int] | None,
    workdir: Path,
    prof: bool,
) -> dict[str, float]:
    """calibration, attack on A (ramp-up run, 1 s of the attack alone, held run), calibration."""
    proc = tree.procs["A"]
    d = args.duration
    cal1 = _pair(tree, wrk, d, cpus)
    seconds = OPEN_TIMEOUT + 2 * d + 10.0
    cmd = [
        sys.executable,
        "-m",
        "bench.slowloris",
        "attack",
        str(tree.ports["A"]),
        str(args.loris),
        str(args.posts),
    ]
    attacker = start("attacker", [*cmd, str(seconds)], workdir, cpus)
    # The attacker is another machine on a real edge: here it must not take wrk's CPU.
    os.setpriority(os.PRIO_PROCESS, attacker.pid, 19)
    try:
        if prof:  # the attack's connections open during these runs
            summary, ramp = profile.record(proc, d, lambda: _pair(tree, wrk, d, cpus))
            tree.profiles[f"{load}, ramp-up, beside wrk"] = summary
        else:
            ramp = _pair(tree, wrk, d, cpus)
        opened = _wait_line(attacker, "open", OPEN_TIMEOUT)
        c1, t1 = tree_cpu_seconds(proc.pid), time.monotonic()
        if prof:
            summary, _ = profile.record(proc, d, lambda: time.sleep(d))
            tree.profiles[f"{load}, attack alone"] = summary
        else:
            time.sleep(1.0)
        alone = (tree_cpu_seconds(proc.pid) - c1) / (time.monotonic() - t1)
        if prof:
            summary, held = profile.record(proc, d, lambda: _pair(tree, wrk, d, cpus))
            tree.profiles[f"{load}, held, beside wrk"] = summary
        else:
            held = _pair(tree, wrk, d, cpus)
        attacker.popen.send_signal(signal.SIGTERM)
        done = _wait_line(attacker, "done", 15.0)
    finally:
        attacker.stop(2.0)
    time.sleep(0.5)
    cal2 = _pair(tree, wrk, d, cpus)
    cal = (cal1[0] / cal1[1] + cal2[0] / cal2[1]) / 2
    return {
        "cal1": cal1[0] / cal1[1],
        "cal2": cal2[0] / cal2[1],
        "base": (cal1[0] + cal2[0]) / 2,
        "ramp": ramp[0] / ramp[1] / cal,
        "held": held[0] / held[1] / cal,
        "held_rate": held[0],
        "attack_cpu_pct": 100.0 * alone,
        "open_s": float(opened["seconds"]),
        "got_408": float(done["got_408"]),
        "reopened": float(sum(done["opened"].values()) - args.loris - args.posts),
        "connect_failed": float(done["connect_failed"]),
    }


def _wait_line(proc: Proc, event: str, timeout: float) -> dict[str, Any]:
    """The attacker's JSON line `event`, read from its log (its stdout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.tail(1 << 20).splitlines():
            if line.startswith("{") and f'"event": "{event}"' in line:
                doc: dict[str, Any] = json.loads(line)
                return doc
        if not proc.alive():
            raise BenchError(f"attacker exited: {proc.tail(600)}")
        time.sleep(0.05)
    raise BenchError(f"attacker: no {event!r} within {timeout:.0f} s")


def _fmt(values: list[float], spec: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["attack"]:
        return attack_main(argv[1:])
    signal.signal(signal.SIGTERM, _interrupt)  # a killed bench still stops what it started
    p = argparse.ArgumentParser(prog="python -m bench.slowloris", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    p.add_argument("--loris", type=int, default=2000)
    p.add_argument("--posts", type=int, default=200)
    p.add_argument("--header-timeout", type=float, default=3.0)
    p.add_argument("--load", default="quiet,busy", help="comma list of quiet, busy")
    p.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout (repeatable)")
    p.add_argument("--profile", action="store_true", help="py-spy A during round 1 (attack alone, held)")
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args(argv)
    args.rounds = max(1, min(args.rounds, 50))
    args.duration = max(1.0, min(args.duration, 60.0))
    loads = [x for x in args.load.split(",") if x]
    if set(loads) - {"quiet", "busy"}:
        p.error("--load: quiet, busy")
    wrk = tools.which("wrk")
    if wrk is None:
        print("bench.slowloris needs wrk", file=sys.stderr)
        return 2
    trees = [Tree(*(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve())) for t in args.tree]
    trees = trees or [Tree("this", REPO)]
    raise_nofile()
    server_cpus, client_cpus, _ = pinning(args.no_pin)
    pin_text = (
        f"sekisho A and B (and the burner) on CPU {sorted(server_cpus)}; backends, wrk, the attacker "
        f"and this process on CPU {sorted(client_cpus)}"
        if server_cpus and client_cpus
        else "none: every process floats"
    )
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    workdir = Path(tempfile.mkdtemp(prefix="sekisho-slowloris-"))
    # The twins alone on the server CPU (each has about half of it; a third with the
    # burner); the backend with the load generators.
    backends = Backends(workdir, client_cpus)
    per_round = 4 * args.duration + 10.0
    try:
        backends.start()
        for t in trees:
            _start_tree(t, workdir, backends, args.header_timeout, server_cpus)
        for load in loads:
            burner = None
            if load == "busy":
                burner = _burner(per_round * args.rounds * len(trees) + 60.0, server_cpus, workdir)
            try:
                for rnd in range(args.rounds):
                    for t in trees:
                        try:
                            s = _round(
                                t,
                                args,
                                load=load,
                                wrk=wrk,
                                cpus=client_cpus,
                                workdir=workdir,
                                prof=args.profile and rnd == 0,
                            )
                        except BenchError as exc:
                            print(f"{load} round {rnd + 1} {t.name}: {exc}", file=sys.stderr)
                            continue
                        t.samples.setdefault(load, []).append(s)
                        print(
                            f"[{time.strftime('%H:%M:%S')}] {load} round {rnd + 1} {t.name}: "
                            f"A/B calibration {s['cal1']:.2f}/{s['cal2']:.2f}, A {s['base']:.0f} req/s; "
                            f"under attack: ramp-up {s['ramp']:.2f}, held {s['held']:.2f} "
                            f"({s['held_rate']:.0f} req/s); attack alone {s['attack_cpu_pct']:.1f}% CPU; "
                            f"{s['got_408']:.0f} 408s, {s['reopened']:.0f} reopened, "
                            f"{s['connect_failed']:.0f} connects failed",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                if burner is not None:
                    burner.stop(1.0)
    finally:
        for t in trees:
            for proc in t.procs.values():
                proc.stop()
        backends.stop()
    print(
        f"\n{args.loris} slowloris + {args.posts} slow-POST, header timeout {args.header_timeout:g} s; "
        f"wrk -t1 -c32 keep-alive GET /small against A and its twin B at once, {args.duration:g} s per "
        f"run, {args.rounds} rounds; ratio = (A/B under attack) / (A/B calibrated); median (min-max)"
        f"\npinning: {pin_text}"
    )
    print(
        f"{'load':6} {'tree':8} {'ratio, ramp-up':18} {'ratio, held':18} {'A alone req/s':20} "
        f"{'A held req/s':20} {'attack alone, CPU %':18}"
    )
    for load in loads:
        for t in trees:
            ss = t.samples.get(load, [])

            def col(key: str, spec: str = ".2f", ss: list[dict[str, float]] = ss) -> str:
                return _fmt([s[key] for s in ss], spec)

            print(
                f"{load:6} {t.name:8} {col('ramp'):18} {col('held'):18} {col('base', '.0f'):20} "
                f"{col('held_rate', '.0f'):20} {col('attack_cpu_pct', '.1f'):18}"
            )
    for t in trees:
        for load, prof in t.profiles.items():
            print(f"\npy-spy, {t.name}, {load} ({prof.get('samples', 0)} samples): self %")
            for name, share in prof.get("self", []):
                print(f"  {share:5.1f}  {name}")
            print("  inclusive %")
            for name, share in prof.get("inclusive", []):
                print(f"  {share:5.1f}  {name}")
    subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
