"""`python -m bench`: start the backends and the targets, run the rounds, write the report."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import machine, memory, profile, report
from bench.procs import REPO, BenchError, raise_nofile, tree_cpu_seconds
from bench.targets import ALL_TARGETS, BUILDERS, Backends, Target, direct, haproxy
from bench.workloads import BY_NAME, WORKLOADS, Workload, run_one, tool_for

RESULTS = REPO / "bench" / "results"
PROFILED = ("HTTP_small_ka", "L4_HTTP_ka", "TCP_CRR", "HTTP2_small_tls")


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="netperf-style benchmark: sekisho beside the backend (direct) and beside HAProxy/nginx",
    )
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run: 1 round, ~1 s per figure")
    p.add_argument("--workloads", help=f"comma list (default all; quick: a few): {','.join(BY_NAME)}")
    p.add_argument("--targets", help=f"comma list (default {','.join(ALL_TARGETS)})")
    p.add_argument("--rounds", type=int, help="interleaved rounds per figure (default 5; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per run (default 3; quick 1)")
    p.add_argument("--out", type=Path, help="result directory (default bench/results; quick: a temp dir)")
    p.add_argument("--no-pin", action="store_true", help="do not pin proxies and load to separate CPUs")
    p.add_argument("--no-memory", action="store_true", help="skip the sekisho memory measurements")
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"py-spy sekisho during one extra run of {', '.join(PROFILED)} (default: on unless --quick)",
    )
    p.add_argument(
        "--idle-conns", type=int, help="idle keep-alive connections to hold (default 10000; quick 500)"
    )
    p.add_argument("--upload-mib", type=int, help="streamed upload size in MiB (default 1024; quick 64)")
    p.add_argument(
        "--haproxy-tuned",
        "--haproxy-splice",  # the earlier name, when tuned meant splice only
        dest="haproxy_tuned",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="HAProxy tuned (option splice-request/-response and tcp-smart-connect; default), "
        "or as configured by default",
    )
    a = p.parse_args(argv)
    q = a.quick
    a.rounds = max(1, a.rounds or (1 if q else 5))
    if a.profile is None:
        a.profile = not q
    a.duration = max(0.2, min(a.duration or (1.0 if q else 3.0), 300.0))
    a.idle_conns = max(1, a.idle_conns or (500 if q else 10000))
    a.upload_mib = max(1, a.upload_mib or (64 if q else 1024))
    if a.workloads:
        unknown = [n for n in a.workloads.split(",") if n not in BY_NAME]
        if unknown:
            p.error(f"unknown workloads {unknown}; known: {', '.join(BY_NAME)}")
        a.workload_list = [BY_NAME[n] for n in a.workloads.split(",")]
    else:
        a.workload_list = [w for w in WORKLOADS if w.quick or not q]
    if a.targets:
        unknown = [n for n in a.targets.split(",") if n not in ALL_TARGETS]
        if unknown:
            p.error(f"unknown targets {unknown}; known: {', '.join(ALL_TARGETS)}")
        a.target_list = [t for t in ALL_TARGETS if t in a.targets.split(",")]
    else:
        a.target_list = list(ALL_TARGETS)
    return a


def pinning(no_pin: bool) -> tuple[frozenset[int] | None, frozenset[int] | None, str]:
    """(server-side CPUs, client-side CPUs, description).

    The server side (backends and the proxy under test) gets one CPU, the client side
    (generators and the bench itself) the others, as if they were two machines: `direct`
    and every proxy then run with the same CPU budget, and the proxy's work competes
    with the backend's, which is what it costs on a real host.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        why = "--no-pin" if no_pin else f"only {len(cpus)} CPU"
        return None, None, f"none ({why}): every process floats"
    server, client = frozenset(cpus[:1]), frozenset(cpus[1:])
    return (
        server,
        client,
        f"server side (backends: nginx, iperf3 -s, echo/sink; the proxy under test: sekisho / haproxy / "
        f"nginx) on CPU {sorted(server)}; client side (wrk, h2load, iperf3 -c, built-in generators, "
        f"the bench itself) on CPU {sorted(client)}",
    )


def run_rounds(
    args: argparse.Namespace,
    targets: list[Target],
    backends: Backends,
    load_cpus: frozenset[int] | None,
    doc: dict[str, Any],
) -> None:
    total = args.rounds * len(args.workload_list) * len(targets)
    done = 0
    for rnd in range(args.rounds):
        broken: dict[str, dict[str, str]] = {}
        for t in targets:
            if t.ok:
                broken[t.name] = t.probe()
                for endpoint, err in broken[t.name].items():
                    _log(f"round {rnd + 1}: {t.name} {endpoint}: {err}")
        doc["probes"].append(broken)
        for w in args.workload_list:
            for t in targets:
                done += 1
                if not t.ok:
                    continue
                entry = _run(
                    w, t, rnd, args.duration, backends=backends, cpus=load_cpus, broken=broken.get(t.name, {})
                )
                doc["workloads"][w.name]["runs"].append(entry)
                figure = (
                    f"{report._num(entry['metrics']['value'])} {w.unit}"
                    if entry["ok"]
                    else f"FAILED: {entry['error'][:160]}"
                )
                _log(f"[{done}/{total}] round {rnd + 1} {w.name:<16} {t.name:<8} {figure}")


def _run(
    w: Workload,
    t: Target,
    rnd: int,
    duration: float,
    *,
    backends: Backends,
    cpus: frozenset[int] | None,
    broken: dict[str, str],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "round": rnd,
        "target": t.name,
        "ok": False,
        "metrics": {},
        "error": "",
        "loadavg": machine.loadavg(),
    }
    t0 = time.monotonic()
    addr = t.endpoints.get(w.endpoint)
    try:
        if addr is None:
            raise BenchError(f"{t.name} has no {w.endpoint} endpoint")
        if w.endpoint in broken:
            raise BenchError(broken[w.endpoint])
        if not t.alive():
            assert t.proc is not None
            msg = f"{t.name} exited with {t.proc.popen.returncode}: {t.proc.tail(600)}"
            t.fail(msg)
            raise BenchError(msg)
        cpu0 = tree_cpu_seconds(t.proc.pid) if t.proc else 0.0
        w0 = time.monotonic()
        metrics = run_one(w, addr, duration, cpus)
        if t.proc is not None:
            add_cpu_cost(metrics, tree_cpu_seconds(t.proc.pid) - cpu0, time.monotonic() - w0)
        entry["metrics"] = metrics
        entry["ok"] = True
    except BenchError as exc:
        entry["error"] = str(exc)
        if w.kind == "stream" and backends.iperf3 and w.endpoint not in broken:
            try:
                backends.restart_stream()
            except BenchError as exc2:
                entry["error"] += f"; iperf3 server restart failed: {exc2}"
    entry["seconds"] = round(time.monotonic() - t0, 2)
    return entry


def profile_sekisho(
    args: argparse.Namespace, targets: list[Target], cpus: frozenset[int] | None, doc: dict[str, Any]
) -> None:
    sek = next((t for t in targets if t.name == "sekisho" and t.ok and t.proc is not None), None)
    if sek is None or sek.proc is None:
        return
    for w in args.workload_list:
        if w.name not in PROFILED or not sek.proc.alive():
            continue
        addr = sek.endpoints[w.endpoint]
        _log(f"profile: py-spy on sekisho during {w.name}")
        try:
            prof, metrics = profile.record(
                sek.proc, args.duration, lambda w=w, a=addr: run_one(w, a, args.duration, cpus)
            )
            prof["value_under_profiler"] = metrics["value"]
        except BenchError as exc:
            prof = {"error": str(exc)}
        doc["profile"][w.name] = prof


def add_cpu_cost(metrics: dict[str, Any], cpu: float, wall: float) -> None:
    """The proxy's own CPU per unit of work: far steadier than a rate on a shared machine."""
    metrics["proxy_cpu_s"] = round(cpu, 4)
    metrics["proxy_cpu_pct"] = round(100.0 * cpu / wall, 1) if wall > 0 else None
    if "gbps" in metrics and metrics.get("bytes"):
        metrics["cpu_cost"] = cpu * 1000.0 / (metrics["bytes"] / 1e9)  # ms per GB
    else:
        ops = metrics.get("requests") or metrics.get("transactions") or metrics.get("connections")
        if ops:
            metrics["cpu_cost"] = cpu * 1e6 / ops  # µs per operation


def measure_memory(args: argparse.Namespace, targets: list[Target], doc: dict[str, Any]) -> None:
    sek = next((t for t in targets if t.name == "sekisho"), None)
    mem = doc["memory"]
    if sek is None:
        mem["error"] = "sekisho not among the targets"
        return
    if not sek.ok or sek.proc is None or not sek.proc.alive():
        mem["error"] = f"sekisho not running ({sek.status}): {sek.error[:300]}"
        return
    err = sek.probe().get("http")
    if err:
        mem["error"] = f"sekisho HTTP route not answering: {err}"
        return
    _log(f"memory: holding {args.idle_conns} idle keep-alive connections through sekisho")
    try:
        mem["idle_connections"] = memory.idle_connections(sek.endpoints["http"], args.idle_conns, sek.proc)
    except OSError as exc:
        mem["idle_connections"] = {"error": str(exc)}
    total = args.upload_mib << 20
    for key, endpoint, path in (("upload_http", "upload", "/upload"), ("upload_tcp", "sink", None)):
        if not sek.proc.alive():
            mem["error"] = f"sekisho exited: {sek.proc.tail(400)}"
            return
        _log(f"memory: {args.upload_mib} MiB upload through sekisho ({key})")
        try:
            mem[key] = memory.upload(
                sek.endpoints[endpoint], total, sek.proc, path, timeout=20.0 if args.quick else 120.0
            )
        except OSError as exc:
            mem[key] = {"error": str(exc)}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a killed bench still stops what it started
    started = dt.datetime.now().astimezone()
    raise_nofile()
    server_cpus, load_cpus, pin_text = pinning(args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    workdir = Path(tempfile.mkdtemp(prefix="sekisho-bench-"))
    host = socket.gethostname()
    stamp = started.strftime("%Y-%m-%d-%H%M")
    out_dir = args.out or (Path(tempfile.gettempdir()) / "sekisho-bench-quick" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine.facts(),
        "settings": {
            "rounds": args.rounds,
            "duration": args.duration,
            "quick": args.quick,
            "pinning": pin_text,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "client_cpus": sorted(load_cpus) if load_cpus else None,
        },
        "backends": {},
        "targets": {},
        "workloads": {w.name: w.to_json() | {"tool": tool_for(w), "runs": []} for w in args.workload_list},
        "memory": {},
        "probes": [],
        "profile": {},
        "notes": [
            "Generator, backends and proxy share the machine's cores (and, on a shared box, other "
            "people's work): only ratios measured within one round mean much.",
        ],
    }
    _log(f"workdir {workdir}; {pin_text}")
    backends = Backends(workdir, server_cpus)
    targets: list[Target] = []
    rc = 0
    try:
        try:
            backends.start()
        except (BenchError, OSError) as exc:
            _log(f"backends failed to start: {exc}")
            doc["error"] = f"backends failed to start: {exc}"
            rc = 1
        doc["backends"] = backends.to_json()
        if any(w.kind == "tls" for w in args.workload_list) and backends.tls_text():
            doc["notes"].append(backends.tls_text())
        if rc == 0:
            builders = BUILDERS | {"haproxy": functools.partial(haproxy, tuned=args.haproxy_tuned)}
            for name in args.target_list:
                t = direct(backends) if name == "direct" else builders[name](workdir, backends, server_cpus)
                targets.append(t)
                _log(f"target {name}: {t.status} {t.version} {t.error[:300]}")
            time.sleep(0.3)
            doc["memory"]["idle_rss_kib_by_target"] = {
                t.name: t.proc.rss_kib() for t in targets if t.proc is not None and t.ok
            }
            doc["memory"]["idle_rss_kib"] = doc["memory"]["idle_rss_kib_by_target"].get("sekisho")
            run_rounds(args, targets, backends, load_cpus, doc)
            if args.profile:
                profile_sekisho(args, targets, load_cpus, doc)
            if not args.no_memory:
                measure_memory(args, targets, doc)
    except KeyboardInterrupt:
        _log("interrupted: reporting what was measured")
        doc["notes"].append("interrupted before the end")
        rc = 130
    except Exception:  # a bug in the bench itself: still stop everything and report what we have
        doc["error"] = traceback.format_exc()
        _log(f"bench error, reporting what was measured:\n{doc['error']}")
        rc = 1
    finally:
        for t in targets:
            t.stop()
        backends.stop()
        for t in targets:
            doc["targets"][t.name] = t.to_json()
        for name in args.target_list:
            doc["targets"].setdefault(name, {"status": "not started", "error": "", "version": ""})
        doc["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        doc["loadavg_end"] = machine.loadavg()
    report.summarize(doc)
    base = out_dir / f"{stamp}-{host}"
    chart_error = report.chart(doc, base.with_suffix(".png"))
    if chart_error:
        doc["notes"].append(chart_error)
    chart_name = None if chart_error else base.with_suffix(".png").name
    report.write_json(doc, base.with_suffix(".json"))
    base.with_suffix(".md").write_text(report.markdown(doc, chart_name))
    # latest.* is the last full run: a run of chosen workloads (--workloads) leaves it alone
    if not args.quick and out_dir == RESULTS and rc == 0 and not args.workloads:
        if chart_name:
            shutil.copyfile(base.with_suffix(".png"), out_dir / "latest.png")
        (out_dir / "latest.md").write_text(report.markdown(doc, "latest.png" if chart_name else None))
    print(report.stdout_report(doc))
    print(f"\nresults: {base}.json  {base}.md" + (f"  {base}.png" if chart_name else ""))
    shutil.rmtree(workdir, ignore_errors=True)
    return rc
