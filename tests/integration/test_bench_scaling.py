"""The workers dimension of the bench (`python -m bench --workers 1,2`, bench/scaling.py) runs end
to end and reports gains, CPU per request and each worker's share; a per-worker paced workload
runs N times the pace at N workers. No speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import require_tool

REPO = Path(__file__).resolve().parents[2]


def test_scaling_bench_reports_gains_and_spread(tmp_path: Path) -> None:
    require_tool("nginx")  # the bench's HTTP backend
    cmd = [sys.executable, "-m", "bench", "--workers", "1,2", "--rounds", "1", "--duration", "0.5"]
    cmd += ["--workloads", "HTTP_small_ka,TCP_CRR_paced", "--targets", "sekisho", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (report,) = tmp_path.glob("*-scaling.json")
    doc = json.loads(report.read_text())
    rows = doc["summary"]["HTTP_small_ka"]
    assert rows["sekisho-w1"]["value"] > 0 and rows["sekisho-w2"]["value"] > 0
    assert rows["sekisho-w2"]["gain"] > 0 and rows["sekisho-w2"]["cpu_ratio"] > 0
    assert 0.5 <= rows["sekisho-w2"]["busiest_worker_share"] <= 1.0  # of two workers
    paced = doc["summary"]["TCP_CRR_paced"]
    assert "gain" not in paced["sekisho-w2"]  # n by construction
    assert paced["sekisho-w2"]["cpu_ratio"] > 0
    paced_runs = [r for r in doc["runs"] if r["workload"] == "TCP_CRR_paced"]
    assert all("metrics" in r for r in paced_runs), paced_runs  # (a failed run says why)
    made = {r["workers"]: r["metrics"]["connections"] for r in paced_runs}
    assert 450 <= made[1] <= 500 and 950 <= made[2] <= 1000  # 1,000/s per worker for 0.5 s
    assert "sekisho-w2" in (tmp_path / report.name.replace(".json", ".md")).read_text()
