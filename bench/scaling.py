"""`python -m bench.scaling`: what more workers give sekisho, beside more HAProxy threads and
more nginx workers, in one run.

Every target runs at each count (sekisho `workers = N`, HAProxy `nbthread N`, nginx
`worker_processes N`), unpinned (the point is to use the cores), on the same backends.
Rounds interleave targets and counts, so a busy moment of a shared machine hits all of
them; the figures are medians of per-round ratios:

- gain: req/s (or conn/s) at N over the same target at 1, paired by round;
- CPU per request at N over at 1 (the cost of crossing workers on the hot path);
- for sekisho, each worker's share of the tree's CPU: how evenly the kernel spread the
  connections over the workers (one SO_REUSEPORT socket each).

A closed-loop workload on a machine without idle cores (the load generator shares them) runs
N workers each 1/N as busy as one, so each wakes for fewer events and pays its wakeup
(context switch, loop turn, cold caches) over fewer requests: CPU per request rises whatever
the design. `TCP_CRR_paced` holds the load per worker instead (1,000 new connections/s per
worker, open loop: N x 1,000 at N), which is what a machine with a core per worker sees; its
CPU per connection at N over at 1 is the cost of crossing workers alone.

    python -m bench.scaling                       # 1 and 2, HTTP_small_ka L4_HTTP_ka TCP_CRR, 3 rounds
    python -m bench.scaling --workers 1,2,4 --rounds 5 --duration 3
    python -m bench.scaling --workloads TCP_CRR,TCP_CRR_paced
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cli import add_cpu_cost
from bench.procs import REPO, BenchError, _children, cpu_seconds, raise_nofile, tree_cpu_seconds
from bench.targets import BUILDERS, Backends, Target
from bench.workloads import BY_NAME, at_workers, run_one

RESULTS = REPO / "bench" / "results"
DEFAULT_WORKLOADS = ("HTTP_small_ka", "L4_HTTP_ka", "TCP_CRR")


def _log(msg: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2", help="comma list of counts (default 1,2)")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS), help="comma list of bench workloads")
    p.add_argument("--targets", default="sekisho,haproxy,nginx")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    a.counts = sorted({int(n) for n in a.workers.split(",")})
    a.workload_list = [BY_NAME[n] for n in a.workloads.split(",")]
    a.target_names = [n for n in a.targets.split(",") if n in BUILDERS]
    return a


def _worker_cpu(t: Target) -> dict[int, float]:
    """CPU seconds of each direct child (sekisho's workers) of a target's process."""
    if t.proc is None:
        return {}
    return {pid: cpu_seconds(pid) for pid in _children(t.proc.pid)}


def measure(args: argparse.Namespace, targets: dict[tuple[str, int], Target]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for w in args.workload_list:
            for (name, n), t in targets.items():
                entry: dict[str, Any] = {"round": rnd, "workload": w.name, "target": name, "workers": n}
                addr = t.endpoints.get(w.endpoint)
                if not t.ok or addr is None or not t.alive():
                    entry["error"] = t.error or f"no {w.endpoint} endpoint, or not running"
                    _log(f"round {rnd + 1} {w.name:<14} {name}-w{n}: {entry['error'][:200]}")
                    runs.append(entry)
                    continue
                cpu0, per0 = tree_cpu_seconds(t.proc.pid) if t.proc else 0.0, _worker_cpu(t)
                w0 = time.monotonic()
                try:
                    metrics = run_one(at_workers(w, n), addr, args.duration, None)
                except BenchError as exc:
                    entry["error"] = str(exc)
                    runs.append(entry)
                    continue
                wall = time.monotonic() - w0
                if t.proc is not None:
                    add_cpu_cost(metrics, tree_cpu_seconds(t.proc.pid) - cpu0, wall)
                if name == "sekisho" and n > 1:
                    per1 = _worker_cpu(t)
                    used = [per1[p] - per0.get(p, 0.0) for p in per1]
                    if sum(used) > 0:
                        entry["worker_cpu_share"] = sorted((u / sum(used) for u in used), reverse=True)
                entry["metrics"] = metrics
                runs.append(entry)
                _log(f"round {rnd + 1} {w.name:<14} {name}-w{n:<3} {metrics['value']:.0f} {w.unit}")
    return runs


def summarize(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = {(r["workload"], r["target"], r["workers"], r["round"]): r for r in runs if "metrics" in r}
    out: dict[str, Any] = {}
    base = args.counts[0]
    for w in args.workload_list:
        rows: dict[str, Any] = {}
        for name in args.target_names:
            for n in args.counts:
                key = f"{name}-w{n}"
                mine = [ok[(w.name, name, n, r)] for r in range(args.rounds) if (w.name, name, n, r) in ok]
                if not mine:
                    continue
                row: dict[str, Any] = {
                    "value": statistics.median(m["metrics"]["value"] for m in mine),
                    "cpu_us": _median([m["metrics"].get("cpu_cost") for m in mine]),
                }
                pairs = [
                    (ok[(w.name, name, n, r)], ok[(w.name, name, base, r)])
                    for r in range(args.rounds)
                    if (w.name, name, n, r) in ok and (w.name, name, base, r) in ok
                ]
                if n != base and pairs:
                    if not w.params.get("per_worker"):  # a paced workload's gain is n by construction
                        row["gain"] = statistics.median(
                            a["metrics"]["value"] / b["metrics"]["value"] for a, b in pairs
                        )
                    row["cpu_ratio"] = _median(
                        [
                            a["metrics"]["cpu_cost"] / b["metrics"]["cpu_cost"]
                            for a, b in pairs
                            if a["metrics"].get("cpu_cost") and b["metrics"].get("cpu_cost")
                        ]
                    )
                shares = [m["worker_cpu_share"] for m in mine if "worker_cpu_share" in m]
                if shares:
                    row["busiest_worker_share"] = statistics.median(s[0] for s in shares)
                rows[key] = row
        out[w.name] = rows
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def verdicts(args: argparse.Namespace, summary: dict[str, Any]) -> list[str]:
    """Issue 19's targets, for each workload and each count above the first."""
    lines = []
    for workload, rows in summary.items():
        for n in args.counts[1:]:
            sek, hap = rows.get(f"sekisho-w{n}", {}), rows.get(f"haproxy-w{n}", {})
            if "gain" in sek and "gain" in hap:
                met = "met" if sek["gain"] >= hap["gain"] else "NOT met"
                lines.append(
                    f"{workload}: sekisho gain 1->{n} {sek['gain']:.2f}x, HAProxy {hap['gain']:.2f}x ({met})"
                )
            if sek.get("cpu_ratio") is not None:
                met = "met" if sek["cpu_ratio"] <= 1.1 else "NOT met"
                lines.append(f"{workload}: sekisho CPU/request at {n} = {sek['cpu_ratio']:.2f}x at 1 ({met})")
    return lines


def markdown(args: argparse.Namespace, doc: dict[str, Any]) -> str:
    lines = [
        f"# sekisho scaling, {doc['started']}",
        "",
        f"`{' '.join(doc['command'])}` on {doc['host']} ({doc['cpus']} CPUs), unpinned; "
        f"{args.rounds} rounds x {args.duration:.0f} s; medians; gains paired by round.",
        "",
        "| workload | target | rate | CPU µs/op | gain | CPU/op vs 1 | busiest worker's CPU share |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for workload, rows in doc["summary"].items():
        for key, row in rows.items():
            gain = f"{row['gain']:.2f}x" if "gain" in row else "-"
            cpu_ratio = f"{row['cpu_ratio']:.2f}x" if row.get("cpu_ratio") else "-"
            cpu = f"{row['cpu_us']:.1f}" if row.get("cpu_us") else "-"
            share = f"{row['busiest_worker_share']:.0%}" if "busiest_worker_share" in row else "-"
            lines.append(
                f"| {workload} | {key} | {row['value']:.0f} | {cpu} | {gain} | {cpu_ratio} | {share} |"
            )
    lines += ["", "## Against issue 19's targets", "", *(f"- {v}" for v in doc["verdicts"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    started = dt.datetime.now().astimezone()
    workdir = Path(tempfile.mkdtemp(prefix="sekisho-scaling-"))
    backends = Backends(workdir, None)
    targets: dict[tuple[str, int], Target] = {}
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench.scaling", *(argv if argv is not None else sys.argv[1:])],
        "host": socket.gethostname(),
        "cpus": len(__import__("os").sched_getaffinity(0)),
    }
    try:
        backends.start()
        for n in args.counts:
            for name in args.target_names:
                t = BUILDERS[name](workdir, backends, None, workers=n)
                _log(f"{name}-w{n}: {t.status} {t.error[:200]}")
                targets[(name, n)] = t
        time.sleep(0.3)
        doc["runs"] = measure(args, targets)
    finally:
        for t in targets.values():
            t.stop()
        backends.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    doc["summary"] = summarize(args, doc["runs"])
    doc["verdicts"] = verdicts(args, doc["summary"])
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{started.strftime('%Y-%m-%d-%H%M')}-{doc['host']}-scaling"
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    text = markdown(args, doc)
    base.with_suffix(".md").write_text(text)
    print(text)
    print(f"results: {base}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
