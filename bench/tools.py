"""External generators: wrk (HTTP) and iperf3 (TCP_STREAM), and their output parsers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.procs import BenchError, run

GRACE = 8.0  # seconds a generator may run past its duration before it counts as hung


def which(name: str) -> str | None:
    """A tool's path, or None. SEKISHO_BENCH_HIDE=haproxy,wrk,... pretends tools are missing
    (to exercise the built-in fallbacks and the "missing" reporting)."""
    if name in os.environ.get("SEKISHO_BENCH_HIDE", "").split(","):
        return None
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None
    )


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def _us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """The figures of `wrk --latency`: req/s, percentiles, errors, non-2xx."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not rate or not total:
        raise BenchError(f"unparsable wrk output: {out[-400:]}")
    res: dict[str, float] = {"rate": float(rate.group(1)), "requests": int(total.group(1))}
    for pct, key in (("50", "p50_us"), ("75", "p75_us"), ("90", "p90_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[key] = _us(m.group(1)) if m else float("nan")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return res


def run_wrk(
    wrk: str, url: str, conns: int, duration: float, *, close: bool, cpus: frozenset[int] | None
) -> dict[str, float]:
    secs = max(1, round(duration))
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "10s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = run([*cmd, url], timeout=secs + GRACE, cpus=cpus)
    if out.returncode != 0:
        raise BenchError(f"wrk exit {out.returncode}: {(out.stderr or out.stdout)[-400:]}")
    res = parse_wrk(out.stdout)
    if res["requests"] == 0:
        raise BenchError(f"wrk: no request completed ({res['errors']:.0f} socket errors)")
    # Close mode: a server-side close mid-read counts as a read error in wrk; only a
    # large share of errors or any wrong status makes the figure meaningless.
    if res["non2xx"] > 0.01 * res["requests"]:
        raise BenchError(f"wrk: {res['non2xx']:.0f} of {res['requests']:.0f} responses not 2xx/3xx")
    if res["errors"] > 0.05 * res["requests"]:
        raise BenchError(f"wrk: {res['errors']:.0f} socket errors for {res['requests']:.0f} requests")
    return res


def parse_iperf3(out: str) -> dict[str, float]:
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as exc:
        raise BenchError(f"unparsable iperf3 output: {out[-300:]}") from exc
    if doc.get("error"):
        raise BenchError(f"iperf3: {doc['error']}")
    end = doc.get("end", {})
    recv = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    if not recv.get("bits_per_second"):
        raise BenchError("iperf3: no throughput in the report")
    return {
        "gbps": recv["bits_per_second"] / 1e9,
        "bytes": recv.get("bytes", 0),
        "elapsed": recv.get("seconds", 0.0),
        "retransmits": sent.get("retransmits", 0),
    }


def run_iperf3(
    iperf3: str, addr: tuple[str, int], streams: int, duration: float, cpus: frozenset[int] | None
) -> dict[str, float]:
    secs = max(1, round(duration))
    cmd = [iperf3, "-c", addr[0], "-p", str(addr[1]), "-t", str(secs), "-P", str(streams), "-Z", "-J"]
    cmd += ["--connect-timeout", "3000"]
    out = run(cmd, timeout=secs + GRACE, cpus=cpus)
    return parse_iperf3(out.stdout or out.stderr)


def run_gen(
    kind: str, target: str, args: list[str], duration: float, cpus: frozenset[int] | None
) -> dict[str, Any]:
    """The built-in generator (bench/gen.py) in its own process."""
    cmd = [sys.executable, "-m", "bench.gen", kind, target, "--duration", f"{duration:g}", *args]
    out = run(cmd, timeout=duration + GRACE, cpus=cpus)
    try:
        doc = json.loads(out.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise BenchError(f"bench.gen {kind}: {(out.stderr or out.stdout)[-400:]}") from exc
    if "error" in doc:
        raise BenchError(f"bench.gen {kind}: {doc['error']}")
    return dict(doc)
