"""The bench harness's quick path works end to end: it runs, exits 0, and writes a JSON
report with the expected structure and real numbers for `direct`. No speed is asserted,
and a peer or sekisho that is missing or failing must be reported, not crash the run."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quick_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--duration",
        "0.5",
        "--workloads",
        "TCP_RR,TCP_CRR,HTTP_small_ka,HTTP_rate_2000,TCP_STREAM",
        "--idle-conns",
        "50",
        "--upload-mib",
        "8",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "workload" in proc.stdout and "sekisho/direct" in proc.stdout  # the table

    reports = list(out.glob("*.json"))
    assert len(reports) == 1, list(out.iterdir())
    doc = json.loads(reports[0].read_text())
    assert (out / reports[0].with_suffix(".md").name).exists()
    assert (out / reports[0].with_suffix(".png").name).exists()

    for key in ("machine", "settings", "targets", "workloads", "memory", "backends", "started", "finished"):
        assert key in doc, key
    m = doc["machine"]
    assert m["cores"] >= 1 and m["kernel"] and m["python"] and m["cpu_model"] and m["uvloop"]
    assert doc["settings"]["rounds"] == 1

    # every target is reported, whatever became of it
    assert set(doc["targets"]) == {"direct", "sekisho", "haproxy", "nginx"}
    for t in doc["targets"].values():
        assert t["status"] in ("ok", "missing", "failed")
    assert doc["targets"]["direct"]["status"] == "ok"

    assert set(doc["workloads"]) == {"TCP_RR", "TCP_CRR", "HTTP_small_ka", "HTTP_rate_2000", "TCP_STREAM"}
    for name, w in doc["workloads"].items():
        assert w["unit"] and w["tool"] and isinstance(w["higher_is_better"], bool)
        direct_runs = [r for r in w["runs"] if r["target"] == "direct"]
        assert len(direct_runs) == 1, name
        run = direct_runs[0]
        assert run["ok"], (name, run["error"])
        value = run["metrics"]["value"]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, value)
        summary = w["summary"]["direct"]
        assert summary["status"] == "ok" and summary["value"]["n"] == 1
        assert summary["value"]["median"] == value
        if w["kind"] in ("rr", "crr", "http", "rate"):
            assert run["metrics"]["p99_us"] >= run["metrics"]["p50_us"] > 0
        for t in doc["targets"]:
            assert t in w["summary"]
        # a ratio exists exactly when sekisho and the peer both measured in the same round
        for peer in ("direct", "haproxy", "nginx"):
            both = all(any(r["target"] == x and r["ok"] for r in w["runs"]) for x in ("sekisho", peer))
            assert (f"sekisho/{peer}" in w["ratios"]) == both, (name, peer)


@pytest.mark.slow
def test_bench_reports_missing_peers_and_uses_builtin_generators(tmp_path: Path) -> None:
    """Without haproxy, nginx, wrk and iperf3 the bench still measures direct with its own
    backends and generators, and says the peers are missing."""
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--duration",
        "0.5",
        "--workloads",
        "TCP_STREAM,HTTP_small_ka",
        "--targets",
        "direct,haproxy,nginx",
        "--out",
        str(out),
    ]
    env = dict(os.environ, SEKISHO_BENCH_HIDE="haproxy,nginx,wrk,iperf3")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(next(out.glob("*.json")).read_text())
    assert doc["targets"]["haproxy"]["status"] == "missing"
    assert doc["targets"]["nginx"]["status"] == "missing"
    assert "missing" in proc.stdout
    assert "built-in" in doc["backends"]["http"]["what"]
    for name in ("TCP_STREAM", "HTTP_small_ka"):
        w = doc["workloads"][name]
        assert "built-in" in w["tool"]
        assert w["summary"]["direct"]["status"] == "ok", w["runs"]
        assert w["summary"]["direct"]["value"]["median"] > 0
        assert w["summary"]["haproxy"]["status"] == "missing"


@pytest.mark.slow
def test_bench_quick_tls_workloads(tmp_path: Path) -> None:
    """HTTP2_small_tls and HTTP11_small_tls: h2load over TLS through every target, each on the
    protocol asked for (ALPN), with latency percentiles from h2load's log, the proxies' CPU per
    request, and the issue 18 target lines."""
    for tool in ("h2load", "openssl", "nginx", "haproxy"):
        require_tool(tool)
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench", "--quick", "--duration", "0.5", "--no-memory", "--out", str(out)]
    cmd += ["--workloads", "HTTP2_small_tls,HTTP11_small_tls"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(next(out.glob("*.json")).read_text())
    assert any("TLS certificate" in n for n in doc["notes"]), doc["notes"]
    measured = [t for t, v in doc["targets"].items() if v["status"] == "ok"]
    assert {"direct", "sekisho", "haproxy"} <= set(measured), doc["targets"]
    for name, proto in (("HTTP2_small_tls", "h2"), ("HTTP11_small_tls", "http/1.1")):
        w = doc["workloads"][name]
        assert w["tool"].startswith("h2load")
        for t in measured:
            runs = [r for r in w["runs"] if r["target"] == t]
            assert len(runs) == 1 and runs[0]["ok"], (name, t, runs)
            m = runs[0]["metrics"]
            assert m["value"] > 0 and m["requests"] > 0, (name, t, m)
            assert m["tls"].startswith("TLSv1.3 TLS_AES_128_GCM_SHA256") and m["tls"].endswith(proto), m[
                "tls"
            ]
            assert m["p99_us"] >= m["p50_us"] > 0, (name, t, m)
            if t != "direct":
                assert m["cpu_cost"] > 0, (name, t, m)
        assert "sekisho/haproxy" in w["ratios"]
    assert "issue 18: HTTP/2 over TLS" in proc.stdout
    assert "issue 18: sekisho HTTP/2 req/s >= its own HTTP/1.1" in proc.stdout
    assert "HTTP2_small_tls / HTTP11_small_tls: direct " in proc.stdout


def test_ratios_pair_runs_within_a_round() -> None:
    """Ratios are sekisho/peer per round, then the median of those; a round where either
    side failed contributes no ratio; latency workloads also carry the added microseconds."""
    from bench import report

    def run(rnd: int, target: str, value: float | None) -> dict[str, object]:
        ok = value is not None
        return {
            "round": rnd,
            "target": target,
            "ok": ok,
            "metrics": {"value": value} if ok else {},
            "error": "",
        }

    doc = {
        "targets": {t: {"status": "ok"} for t in ("direct", "sekisho", "haproxy")}
        | {"nginx": {"status": "missing"}},
        "workloads": {
            "X": {
                "higher_is_better": True,
                "runs": [
                    run(0, "direct", 100.0),
                    run(0, "sekisho", 50.0),
                    run(0, "haproxy", 25.0),
                    run(1, "direct", 200.0),
                    run(1, "sekisho", 50.0),
                    run(1, "haproxy", None),
                    run(2, "direct", 10.0),
                    run(2, "sekisho", None),
                    run(2, "haproxy", 40.0),
                ],
            },
            "L": {
                "higher_is_better": False,
                "runs": [run(0, "direct", 100.0), run(0, "sekisho", 150.0)],
            },
        },
    }
    report.summarize(doc)
    x = doc["workloads"]["X"]
    assert x["ratios"]["sekisho/direct"]["ratio"] == {"median": 0.375, "min": 0.25, "max": 0.5, "n": 2}
    assert x["ratios"]["sekisho/haproxy"]["ratio"]["n"] == 1
    assert x["ratios"]["sekisho/haproxy"]["ratio"]["median"] == 2.0
    assert "sekisho/nginx" not in x["ratios"]
    assert x["summary"]["direct"]["value"]["median"] == 100.0
    assert x["summary"]["haproxy"]["failures"] == 1
    assert x["summary"]["nginx"]["status"] == "missing"
    lat = doc["workloads"]["L"]["ratios"]["sekisho/direct"]
    assert lat["ratio"]["median"] == 1.5 and lat["delta"]["median"] == 50.0


def test_wrk_and_iperf3_parsers() -> None:
    from bench import tools

    wrk_out = """Running 1s test @ http://127.0.0.1:1/small
  1 threads and 32 connections
  Latency Distribution
     50%  179.00us
     75%  320.00us
     90%    1.25ms
     99%    2.00s
  61596 requests in 1.00s, 12.22MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  61562.08
Transfer/sec:     12.21MB
"""
    r = tools.parse_wrk(wrk_out)
    assert r["rate"] == 61562.08 and r["requests"] == 61596
    assert (r["p50_us"], r["p90_us"], r["p99_us"]) == (179.0, 1250.0, 2_000_000.0)
    assert r["errors"] == 4 and r["non2xx"] == 5
    ip = tools.parse_iperf3(
        json.dumps({"end": {"sum_received": {"bits_per_second": 2.5e10, "bytes": 10, "seconds": 1.0}}})
    )
    assert ip["gbps"] == 25.0
    with pytest.raises(tools.BenchError):
        tools.parse_iperf3(json.dumps({"error": "unable to connect"}))


def test_h2load_parser_and_log_percentiles(tmp_path: Path) -> None:
    from bench import tools

    h2_out = """TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 1.00s, 8000.00 req/s, 1.93MB/s
requests: 8087 total, 8120 started, 8087 done, 8000 succeeded, 87 failed, 80 errored, 2 timeout
status codes: 8000 2xx, 0 3xx, 3 4xx, 4 5xx
"""
    r = tools.parse_h2load(h2_out)
    assert r["rate"] == 8000.0 and r["requests"] == 8000
    assert r["errors"] == 87 + 80 + 2 and r["non2xx"] == 7
    assert r["tls"] == "TLSv1.3 TLS_AES_128_GCM_SHA256 h2"
    with pytest.raises(tools.BenchError):
        tools.parse_h2load("connect failed")
    log = tmp_path / "log.tsv"
    log.write_text("".join(f"1796517604942379\t200\t{i}\n" for i in range(1, 201)) + "1\t-1\t999999\n")
    p = tools.log_percentiles(log)
    assert (p["p50_us"], p["p90_us"], p["p99_us"]) == (100.0, 180.0, 198.0)  # the failed one left out


def test_self_ratio_pairs_one_target_across_workloads() -> None:
    """issue 18's 'h2 >= its own HTTP/1.1 over TLS': sekisho against itself, round by round."""
    from bench import report

    def run(rnd: int, value: float | None) -> dict[str, object]:
        return {"round": rnd, "target": "sekisho", "ok": value is not None, "metrics": {"value": value}}

    doc = {
        "targets": {"sekisho": {"status": "ok"}},
        "workloads": {
            "HTTP2_small_tls": {"runs": [run(0, 300.0), run(1, 100.0), run(2, 50.0)]},
            "HTTP11_small_tls": {"runs": [run(0, 100.0), run(1, 200.0), run(2, None)]},
        },
    }
    r = report.self_ratio(doc, "HTTP2_small_tls", "HTTP11_small_tls", "sekisho")
    assert r == {"median": 1.75, "min": 0.5, "max": 3.0, "n": 2}
    (line,) = report.self_target_lines(doc)
    assert "1.750x (min-max 0.50-3.00) -> met" in line


@pytest.mark.slow
def test_bench_costs_splits_the_cpu() -> None:
    """`python -m bench.costs`: per-CPU and user/system figures for each target, all real."""
    for tool in ("iperf3", "wrk", "haproxy"):
        require_tool(tool)
    cmd = [sys.executable, "-m", "bench.costs", "--rounds", "1", "--duration", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    sections = proc.stdout.split("\n\n")[1:]
    assert [s.splitlines()[0].split()[0] for s in sections] == ["TCP_STREAM", "L4_HTTP_ka"]
    for section in sections:
        rows = {line.split()[0]: line for line in section.splitlines()[1:]}
        assert set(rows) == {"direct", "sekisho", "haproxy"}, section
        for name, row in rows.items():
            cpus = [float(x) for x in re.findall(r"cpu\d+ +([\d.]+)", row)]
            assert len(cpus) == os.cpu_count() and max(cpus) > 0, row
            proxy = re.search(r"proxy user +([\d.]+) sys +([\d.]+)", row)
            assert (proxy is None) == (name == "direct"), row
            if proxy is not None:
                assert float(proxy.group(1)) + float(proxy.group(2)) > 0, row


def test_opcount_http_prints_per_request_figures() -> None:
    """`python -m bench.opcount --http 50`: the [[http]] path's work per keep-alive request,
    split by module, counted on the loop thread only (no harness frames)."""
    cmd = [sys.executable, "-m", "bench.opcount", "--http", "50"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    m = re.search(r"per request: (\d+) bytecodes, ([\d.]+) Python calls", out)
    assert m is not None, out[:2000]
    assert 500 < int(m.group(1)) < 50_000 and float(m.group(2)) > 10
    cpu = re.search(r"loop-thread CPU, untraced: ([\d.]+) µs per request", out)
    assert cpu is not None and float(cpu.group(1)) > 0, out[:2000]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:7] in ("sekisho", "h11    ")}
    assert float(rows["sekisho"][1]) > 0, out[:2000]
    # (h11's row is zero, or absent, when the request fast path took the request)
    assert "h11" not in rows or float(rows["h11"][1]) >= 0, out[:2000]
    # one callback per side of the exchange, and nothing of the harness counted
    assert "1.00  proxy/http/h1.py:H1Connection.data_received" in out
    assert "1.00  proxy/http/upstream.py:UpstreamConnection.data_received" in out
    assert "opcount.py:" not in out
