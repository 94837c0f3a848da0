"""Where the CPU goes, per unit of work: what `python -m bench` does not split.

    python -m bench.costs [--rounds N] [--duration S] [--no-haproxy-tuned]

Starts the bench's backends, sekisho and HAProxy with the bench's pinning (server
side on the first CPU, client side on the others) and runs, interleaved, a single
iperf3 stream (TCP_STREAM) and `wrk -c32` keep-alive through the L4 service
(L4_HTTP_ka) against each. For each run it reads, before and after:

* /proc/stat: busy time of each CPU, per GB or per request. It shows which CPU
  bounds a figure (the receiver and the relay share the server CPU);
* /proc/PID/stat: the proxy's user and system time apart. The system part is what
  the kernel spends on the proxy's behalf (the same syscalls cost the same in any
  language); the user part is the proxy's own code;
* /proc/PID/status: the proxy's involuntary context switches per request, i.e.
  how often the backend sharing its CPU preempts it.

Prints medians over the rounds. The issue-3 closing notes quote these figures.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import tools
from bench.cli import pinning
from bench.procs import BenchError, cpu_times, raise_nofile
from bench.targets import Backends, Target, direct, haproxy, sekisho

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
Sample = dict[str, float]


def cpu_busy_ms() -> list[float]:
    """Busy time of each CPU so far (user, nice, system, irq, softirq, steal), in ms."""
    busy = []
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
                busy.append((user + nice + system + irq + softirq + steal) * _TICK_MS)
    return busy


def proc_times_ms(pid: int) -> tuple[float, float, int]:
    """(user ms, system ms, involuntary context switches) of a process so far."""
    user, system = cpu_times(pid)
    with open(f"/proc/{pid}/status") as f:
        nonvol = next(int(line.split()[1]) for line in f if line.startswith("nonvoluntary_ctxt_switches"))
    return user * 1000, system * 1000, nonvol


def measure(target: Target, run: Callable[[], float]) -> Sample:
    """Run one load (`run` returns its units: GB or requests) and split the CPU it cost."""
    pid = target.proc.pid if target.proc is not None else None
    cpu0, p0 = cpu_busy_ms(), proc_times_ms(pid) if pid else (0.0, 0.0, 0)
    units = run()
    cpu1, p1 = cpu_busy_ms(), proc_times_ms(pid) if pid else (0.0, 0.0, 0)
    sample = {"units": units}
    for i, (a, b) in enumerate(zip(cpu0, cpu1, strict=True)):
        sample[f"cpu{i}"] = (b - a) / units
    if pid:
        sample["user"] = (p1[0] - p0[0]) / units
        sample["sys"] = (p1[1] - p0[1]) / units
        sample["preempted"] = (p1[2] - p0[2]) / units
    return sample


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    p.add_argument("--haproxy-tuned", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    iperf3, wrk = tools.which("iperf3"), tools.which("wrk")
    if iperf3 is None or wrk is None:
        print("bench.costs needs iperf3 and wrk", file=sys.stderr)
        return 2
    raise_nofile()
    server_cpus, client_cpus, pin_text = pinning(False)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    workdir = Path(tempfile.mkdtemp(prefix="sekisho-costs-"))
    backends = Backends(workdir, server_cpus)
    targets: list[Target] = []
    results: dict[tuple[str, str], list[Sample]] = {}
    try:
        backends.start()
        targets = [direct(backends), sekisho(workdir, backends, server_cpus)]
        if tools.which("haproxy"):
            targets.append(haproxy(workdir, backends, server_cpus, tuned=args.haproxy_tuned))
        targets = [t for t in targets if t.ok]
        time.sleep(0.3)

        def stream(t: Target) -> float:
            res = tools.run_iperf3(iperf3, t.endpoints["stream"], 1, args.duration, client_cpus)
            return res["bytes"] / 1e9

        def keepalive(t: Target) -> float:
            host, port = t.endpoints["l4http"]
            res = tools.run_wrk(
                wrk, f"http://{host}:{port}/small", 32, args.duration, close=False, cpus=client_cpus
            )
            return res["requests"]

        for rnd in range(args.rounds):
            for name, load in (("TCP_STREAM", stream), ("L4_HTTP_ka", keepalive)):
                for t in targets:
                    try:
                        sample = measure(t, functools.partial(load, t))
                    except BenchError as exc:
                        print(f"round {rnd + 1} {name} {t.name}: {exc}", file=sys.stderr)
                        continue
                    results.setdefault((name, t.name), []).append(sample)
    finally:
        for t in targets:
            t.stop()
        backends.stop()
    print(f"pinning: {pin_text}; {args.rounds} rounds x {args.duration:g} s; medians")
    for name, unit, scale, rate in (
        ("TCP_STREAM", "ms/GB", 1.0, "GB/s"),
        ("L4_HTTP_ka", "µs/req", 1e3, "req/s"),
    ):
        print(f"\n{name} (CPU per unit: {unit})")
        for t in targets:
            samples = results.get((name, t.name), [])
            if not samples:
                continue
            med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            per_cpu = "  ".join(f"{k} {v * scale:7.1f}" for k, v in med.items() if k.startswith("cpu"))
            line = f"  {t.name:8s} {med['units'] / args.duration:10.4g} {rate}  {per_cpu}"
            if "user" in med:
                line += f"  proxy user {med['user'] * scale:6.1f} sys {med['sys'] * scale:6.1f}"
                line += f"  preempted {med['preempted']:.3f}/{'GB' if name == 'TCP_STREAM' else 'req'}"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
