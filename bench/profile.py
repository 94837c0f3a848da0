"""Where sekisho's time goes: py-spy samples the running daemon during one workload run.

The raw (collapsed-stack) output is reduced to the functions with the most samples on
top of the stack (self) and anywhere on it (inclusive), as shares of all non-idle samples.
Samples whose top Python frame is the loop runner are time inside uvloop's C code.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import REPO, BenchError, Proc

_PREFIX = re.compile(r"^.*/(site-packages|python3\.\d+)/")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else None


def _short(frame: str, line: bool = False) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    path = _PREFIX.sub("", path.replace(f"{REPO}/", ""))
    if line and m.group("line"):
        path = f"{path}:{m.group('line')}"
    return f"{m.group('func')} ({path})"


def summarize_raw(text: str, top: int = 12) -> dict[str, Any]:
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        raw = [f for f in stack.split(";") if f]
        if not raw:
            continue
        frames = [_short(f) for f in raw]
        total += n
        leaf = _short(raw[-1], line=True)  # self time by line: C calls show as their Python line
        if frames[-1].startswith(("Runner.run (", "run (uvloop")):
            leaf = "[uvloop's C loop: transports, syscalls]"
        self_c[leaf] += n
        for f in set(frames):
            incl_c[f] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}

    def share(c: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in c.most_common(top)]

    # frames on (nearly) every stack (the module, main, the loop runner) say nothing
    for name in [k for k, n in incl_c.items() if n >= 0.9 * total]:
        del incl_c[name]
    return {"samples": total, "self": share(self_c), "inclusive": share(incl_c)}


def record(proc: Proc, duration: float, run: Any) -> tuple[dict[str, Any], Any]:
    """Sample `proc` with py-spy while `run()` drives load; (profile summary, run's result)."""
    exe = py_spy()
    if exe is None:
        raise BenchError("py-spy not installed (pip install -e '.[dev]')")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "raw.txt"
        cmd = [exe, "record", "--format", "raw", "--nonblocking", "-r", "250", "-p", str(proc.pid)]
        cmd += ["-d", str(max(1, round(duration))), "-o", str(out)]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            result = run()
        finally:
            try:
                _, err = spy.communicate(timeout=duration + 20)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
        if not out.exists():
            raise BenchError(f"py-spy wrote nothing: {err.strip()[-300:]}")
        return summarize_raw(out.read_text()), result
