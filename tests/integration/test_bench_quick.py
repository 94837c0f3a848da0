"""The bench harness's quick path works end to end: it runs, exits 0, and writes a JSON
report with the expected structure and real numbers for `direct`. No speed is asserted,
and a peer or sekisho that is missing or failing must be reported, not crash the run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
