"""Facts about the machine a result came from, stored with the raw runs."""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from bench.tools import version, which


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def mem_total_mib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def facts() -> dict[str, Any]:
    try:
        from importlib.metadata import version as dist_version

        uvloop_version = dist_version("uvloop")
    except ImportError:  # PackageNotFoundError is an ImportError
        uvloop_version = "not installed"
    tools = {}
    for name, cmd in (
        ("haproxy", ["-v"]),
        ("nginx", ["-v"]),
        ("wrk", ["-v"]),
        ("iperf3", ["-v"]),
    ):
        exe = which(name)
        tools[name] = version([exe, *cmd]) if exe else "missing"
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "mem_total_mib": mem_total_mib(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "uvloop": uvloop_version,
        "tools": tools,
        "sysctl": {
            k: _read(f"/proc/sys/{k.replace('.', '/')}").strip()
            for k in ("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range", "net.core.somaxconn")
        },
        "loadavg_start": loadavg(),
    }
