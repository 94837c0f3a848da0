"""The workloads, named after netperf's tests, and how one run of each is made.

Every run returns a metrics dict whose "value" is the workload's headline figure
(see `Workload.unit` and `higher_is_better`); latency percentiles ride along.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bench.procs import BenchError
from bench.tools import run_gen, run_h2load, run_iperf3, run_wrk, which

Addr = tuple[str, int]


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # stream | rr | crr | http | rate | tls
    endpoint: str  # which endpoint of a target: stream | echo | http | l4http | https
    unit: str
    description: str
    higher_is_better: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "unit": self.unit,
            "description": self.description,
            "higher_is_better": self.higher_is_better,
            "params": self.params,
            "cpu_cost_unit": "proxy CPU ms/GB" if self.kind == "stream" else "proxy CPU µs/op",
        }


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "TCP_STREAM",
        "stream",
        "stream",
        "Gbit/s",
        "bulk throughput, 1 stream",
        params={"streams": 1},
        quick=True,
    ),
    Workload(
        "TCP_STREAM_4", "stream", "stream", "Gbit/s", "bulk throughput, 4 streams", params={"streams": 4}
    ),
    Workload(
        "TCP_RR",
        "rr",
        "echo",
        "trans/s",
        "1-byte request/response, 1 kept-alive connection",
        params={"conns": 1, "size": 1},
        quick=True,
    ),
    Workload(
        "TCP_RR_32",
        "rr",
        "echo",
        "trans/s",
        "1-byte request/response, 32 kept-alive connections",
        params={"conns": 32, "size": 1},
    ),
    Workload(
        "TCP_CRR",
        "crr",
        "echo",
        "conn/s",
        "connect, 1-byte request/response, close; 8 in parallel",
        params={"conns": 8, "size": 1},
        quick=True,
    ),
    Workload(
        "TCP_CRR_paced",
        "crr",
        "echo",
        "conn/s",
        "TCP_CRR at a fixed 1,000 new connections/s per worker (open loop): CPU per connection "
        "at equal load per worker",
        params={"conns": 0, "size": 1, "rate": 1000, "per_worker": True},
    ),
    Workload(
        "HTTP_small_ka",
        "http",
        "http",
        "req/s",
        "GET 128 B, keep-alive, 32 connections",
        params={"path": "/small", "conns": 32, "close": False},
        quick=True,
    ),
    Workload(
        "HTTP_small_close",
        "http",
        "http",
        "req/s",
        "GET 128 B, Connection: close, 32 in parallel",
        params={"path": "/small", "conns": 32, "close": True},
    ),
    Workload(
        "HTTP_1MiB_ka",
        "http",
        "http",
        "req/s",
        "GET 1 MiB, keep-alive, 4 connections",
        params={"path": "/1m", "conns": 4, "close": False},
    ),
    Workload(
        "HTTP_1MiB_close",
        "http",
        "http",
        "req/s",
        "GET 1 MiB, Connection: close, 4 in parallel",
        params={"path": "/1m", "conns": 4, "close": True},
    ),
    Workload(
        "L4_HTTP_ka",
        "http",
        "l4http",
        "req/s",
        "GET 128 B through the L4 relay ([[tcp]] / mode tcp / stream), keep-alive, 32 connections",
        params={"path": "/small", "conns": 32, "close": False},
        quick=True,
    ),
    Workload(
        "L4_HTTP_close",
        "http",
        "l4http",
        "req/s",
        "GET 128 B through the L4 relay, Connection: close (new connections/s), 32 in parallel",
        params={"path": "/small", "conns": 32, "close": True},
    ),
    Workload(
        "HTTP2_small_tls",
        "tls",
        "https",
        "req/s",
        "GET 128 B over HTTP/2 and TLS, 8 connections x 16 streams",
        params={"path": "/small", "conns": 8, "streams": 16, "h1": False},
    ),
    Workload(
        "HTTP11_small_tls",
        "tls",
        "https",
        "req/s",
        "GET 128 B over HTTP/1.1 keep-alive and TLS, 8 connections, no pipelining",
        params={"path": "/small", "conns": 8, "streams": 1, "h1": True},
    ),
    Workload(
        "HTTP_rate_2000",
        "rate",
        "http",
        "p50 µs",
        "GET 128 B at a fixed 2,000 req/s (open loop): latency, lower is better",
        higher_is_better=False,
        params={"path": "/small", "rate": 2000},
        quick=True,
    ),
)

BY_NAME = {w.name: w for w in WORKLOADS}


def at_workers(w: Workload, n: int) -> Workload:
    """The workload as run against n workers (threads): a per-worker pace is multiplied by n,
    so each worker carries the load one carries alone."""
    if not w.params.get("per_worker") or n == 1:
        return w
    return replace(w, params={**w.params, "rate": w.params["rate"] * n})


def tool_for(w: Workload) -> str:
    if w.kind == "stream":
        return "iperf3 -Z" if which("iperf3") else "built-in sendfile sender"
    if w.kind == "http":
        return "wrk -t1" if which("wrk") else "built-in closed-loop client"
    if w.kind == "tls":
        return ("h2load -t1 --h1" if w.params["h1"] else "h2load -t1") + (
            "" if which("h2load") else " (not installed: apt-get install nghttp2-client)"
        )
    if w.kind == "rate" or w.params.get("rate"):
        return "built-in open-loop client (uvloop, paced by a thread to tens of µs)"
    return "built-in client (uvloop)"


def run_one(w: Workload, addr: Addr, duration: float, cpus: frozenset[int] | None) -> dict[str, Any]:
    """One run of a workload against one endpoint; raises BenchError when it fails."""
    p = w.params
    target = f"{addr[0]}:{addr[1]}"
    if w.kind == "stream":
        iperf3 = which("iperf3")
        if iperf3:
            res = run_iperf3(iperf3, addr, p["streams"], duration, cpus)
        else:
            res = run_gen("stream", target, ["--streams", str(p["streams"])], duration, cpus)
        res["value"] = res["gbps"]
    elif w.kind in ("rr", "crr"):
        rate = p.get("rate")
        paced = ["--rate", str(rate)] if rate else []
        args = ["--conns", str(p["conns"]), "--size", str(p["size"]), *paced]
        res = run_gen(w.kind, target, args, duration, cpus)
        if rate:
            _check_paced(res, "connections", rate, duration)
        res["value"] = res["rate"]
    elif w.kind == "http":
        url = f"http://{target}{p['path']}"
        wrk = which("wrk")
        if wrk:
            res = run_wrk(wrk, url, p["conns"], duration, close=p["close"], cpus=cpus)
        else:
            args = ["--conns", str(p["conns"])] + (["--close"] if p["close"] else [])
            res = run_gen("http", url, args, duration, cpus)
            _check_http(res)
        res["value"] = res["rate"]
    elif w.kind == "tls":
        h2load = which("h2load")
        if not h2load:
            raise BenchError("h2load not installed (Debian: nghttp2-client)")
        url = f"https://{target}{p['path']}"
        res = run_h2load(h2load, url, p["conns"], p["streams"], duration, h1=p["h1"], cpus=cpus)
        res["value"] = res["rate"]
    elif w.kind == "rate":
        url = f"http://{target}{p['path']}"
        res = run_gen("http", url, ["--rate", str(p["rate"])], duration, cpus)
        _check_http(res)
        _check_paced(res, "requests", p["rate"], duration)
        res["value"] = res["p50_us"]
    else:  # pragma: no cover
        raise BenchError(f"unknown workload kind {w.kind}")
    return res


def _check_paced(res: dict[str, float], what: str, rate: float, duration: float) -> None:
    """An open-loop run counts only if the target kept up with the pace."""
    wanted = rate * duration
    if res[what] < 0.95 * wanted:
        raise BenchError(
            f"only {res[what]:.0f} of {wanted:.0f} {what} answered at {rate:g}/s "
            f"({res.get('errors', 0):.0f} errors)"
        )


def _check_http(res: dict[str, float]) -> None:
    if res.get("non2xx", 0) > 0.01 * res["requests"]:
        raise BenchError(f"{res['non2xx']:.0f} of {res['requests']:.0f} responses not 2xx/3xx")
    if res.get("errors", 0) > 0.05 * res["requests"]:
        raise BenchError(f"{res['errors']:.0f} errors for {res['requests']:.0f} requests")
