"""contrib/: the systemd unit, the Prometheus alerts and the Grafana dashboard, checked
by the tools that will read them (systemd-analyze, promtool) and by their own shape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.support import require_or_skip, require_tool

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
DATA = ROOT / "tests" / "data"


def _unit() -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> every value given (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (CONTRIB / "sekisho.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_file_contents() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["ExecStart"] == ["/opt/sekisho/bin/sekisho run -c /etc/sekisho/sekisho.toml"]
    assert "/bin/kill -HUP $MAINPID" in service["ExecReload"]
    assert float(service["WatchdogSec"][0]) > 0
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW"]
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW"]
    families = set(service["RestrictAddressFamilies"][0].split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_PACKET"}
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == [value], key
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    sekisho = shutil.which("sekisho") or str(ROOT / ".venv" / "bin" / "sekisho")
    require_or_skip(Path(sekisho).exists(), "needs the sekisho script (pip install -e .)")
    # verify wants ExecStart's binary to exist: point it at this checkout's script.
    unit = tmp_path / "sekisho.service"
    unit.write_text((CONTRIB / "sekisho.service").read_text().replace("/opt/sekisho/bin/sekisho", sekisho))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    problems = [line for line in done.stderr.splitlines() if str(unit) in line]
    assert done.returncode == 0 and not problems, done.stderr
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for sekisho.service: ([0-9.]+)", done.stdout)
    assert m is not None, done.stdout + done.stderr
    assert float(m[1]) <= 4.0, done.stdout  # "OK" in systemd's terms


def test_alert_rules_check_and_unit_tests(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(CONTRIB / "prometheus-alerts.yml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout
    shutil.copy(CONTRIB / "prometheus-alerts.yml", tmp_path)
    shutil.copy(DATA / "prometheus" / "alerts_test.yml", tmp_path)
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "alerts_test.yml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def dashboard_exprs() -> list[str]:
    dash = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(sekisho_[a-z0-9_]+)", expr))


def test_dashboard_shape() -> None:
    dash = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] == "sekisho"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert p["targets"], p["title"]
    titles = {p["title"] for p in dash["panels"]}
    assert {"Request rate by route", "Server state", "VRRP state"} <= titles
    names = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert "sekisho_http_requests_total" in names
    assert "sekisho_vrrp_state" in names
    assert "sekisho_server_up" in names
