"""External generators: wrk (HTTP), h2load (HTTP over TLS, h2 and http/1.1) and iperf3
(TCP_STREAM), and their output parsers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.procs import BenchError, run
from bench.stats import percentile

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


# Every TLS target negotiates the same: TLS 1.3 with AES-128-GCM (h2load's first choice; a server
# that prefers its own order, as sekisho and HAProxy do, would otherwise pick AES-256-GCM, and
# nginx 1.22 without ssl_protocols stays on TLS 1.2). TLS 1.2, if it comes to that, alike.
H2LOAD_TLS = ["--tls13-ciphers=TLS_AES_128_GCM_SHA256", "--ciphers=ECDHE-ECDSA-AES128-GCM-SHA256"]


def parse_h2load(out: str) -> dict[str, Any]:
    """The summary of `h2load`: req/s over the main duration, succeeded requests, failures,
    status classes, and what TLS and ALPN gave."""
    fin = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    reqs = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not fin or not reqs or not codes:
        raise BenchError(f"unparsable h2load output: {out[-400:]}")
    res: dict[str, Any] = {
        "rate": float(fin.group(3)),
        "requests": int(reqs.group(4)),
        "errors": int(reqs.group(5)) + int(reqs.group(6)) + int(reqs.group(7)),
        "non2xx": int(codes.group(3)) + int(codes.group(4)),
    }
    tls = [re.search(rf"^{k}: (.+)$", out, re.M) for k in ("TLS Protocol", "Cipher", "Application protocol")]
    res["tls"] = " ".join(m.group(1).strip() for m in tls if m)
    return res


def log_percentiles(path: Path) -> dict[str, float]:
    """p50/p75/p90/p99 (µs) of the successful requests in an h2load --log-file
    (start µs, status, µs until the end of the response; status -1 for a failed stream)."""
    lat = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] != "-1":
                lat.append(int(parts[2]))
    lat.sort()
    keys = ((50, "p50_us"), (75, "p75_us"), (90, "p90_us"), (99, "p99_us"))
    return {key: percentile(lat, q) for q, key in keys}


def run_h2load(
    h2load: str,
    url: str,
    conns: int,
    streams: int,
    duration: float,
    *,
    h1: bool,
    cpus: frozenset[int] | None,
) -> dict[str, Any]:
    """`h2load -t1 -c conns -m streams -D duration` (timing-based), over h2 or, with h1,
    HTTP/1.1 keep-alive (`--h1`, -m 1: no pipelining). A run where ALPN did not give the
    protocol asked for fails: h2load would otherwise measure nothing or the other protocol."""
    ms = max(200, round(duration * 1000))
    cmd = [h2load, "-t1", f"-c{conns}", f"-m{streams}", f"-D{ms}ms", *H2LOAD_TLS]
    if h1:
        cmd.append("--h1")
    with tempfile.TemporaryDirectory(prefix="sekisho-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        out = run([*cmd, f"--log-file={log}", url], timeout=ms / 1000 + GRACE, cpus=cpus)
        text = out.stdout + out.stderr
        res = parse_h2load(text)
        want = "http/1.1" if h1 else "h2"
        got = re.search(r"^Application protocol: (\S+)", text, re.M)
        if got is None or got.group(1) != want:
            why = f"ALPN gave {got.group(1)}" if got else "no protocol negotiated"
            raise BenchError(f"h2load: {why}, wanted {want}: {text[-300:]}")
        if res["requests"] == 0:
            raise BenchError(f"h2load: no request succeeded ({res['errors']} failed): {text[-400:]}")
        if log.exists():
            res |= log_percentiles(log)
    if res["non2xx"] > 0.01 * res["requests"]:
        raise BenchError(f"h2load: {res['non2xx']} of {res['requests']} responses 4xx/5xx")
    if res["errors"] > 0.05 * res["requests"]:
        raise BenchError(f"h2load: {res['errors']} failed requests for {res['requests']} succeeded")
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
