"""Where sekisho's HTTP time goes under load: py-spy on the daemon while wrk drives it.

    python -m bench.profile_http [--seconds 10] [--rate 500] [--workload HTTP_small_ka]
    python -m bench.profile_http --summarize RAW      # summarise a saved py-spy raw file again

The setup is `python -m bench`'s (bench/targets.py, bench/workloads.py): the backends
(nginx serving /small, else the built-in server) and sekisho, run as its own process
(`sekisho run -c` with the bench's generated config), pinned to the server-side CPU;
wrk -t1 -c32 on the client side. First an unprofiled run gives req/s and sekisho's CPU
per request; then `py-spy record --format raw -r RATE -d SECONDS` (blocking: exact
stacks, at the price of pausing the process per sample; `--nonblocking` for the other
trade) samples sekisho while wrk runs again. Idle samples (the loop waiting in
epoll) are not recorded, so shares are of sekisho's busy time.

The summary: self time split by module (ours, h11, asyncio/stdlib, uvloop's C loop),
the top functions by self time grouped by module, the top source lines (a line that
calls into C, such as a transport write or a regex search, carries that C time), and
the top functions by inclusive time. A sample whose innermost Python frame is the loop
runner is time in uvloop's C code outside any Python callback: libuv, the reads that
precede data_received, epoll.
"""

from __future__ import annotations

import argparse
import linecache
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cli import pinning
from bench.procs import REPO, BenchError, _preexec, cpu_times, raise_nofile
from bench.profile import py_spy
from bench.targets import Backends, sekisho
from bench.workloads import BY_NAME, run_one, tool_for

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_LOOP_LEAF = ("Runner.run", "run_until_complete", "run", "run_forever")
C_LOOP = "uvloop C loop"
_IO_CALL = re.compile(r"transport\.(write|writelines|write_eof|close|abort|pause_reading|resume_reading)\(")
MODULES = ("sekisho", "h11", "asyncio/stdlib", C_LOOP, "other")


def short_path(path: str) -> str:
    """py-spy already writes paths relative to a sys.path entry; make absolute ones so too."""
    path = path.replace(f"{REPO}/", "")
    return re.sub(r"^.*/(site-packages|python3\.\d+)/", "", path)


def module_of(path: str) -> str:
    """Which part of the process a source file belongs to."""
    rel = short_path(path)
    top = rel.split("/", 1)[0]
    if top in ("proxy", "lb", "conf", "vrrp"):
        return "sekisho"
    if top == "h11":
        return "h11"
    if rel.startswith("<frozen") or (
        not path.startswith("/") and (top.endswith(".py") or top in sys.stdlib_module_names)
    ):
        return "asyncio/stdlib"
    return "other"


def source_line(path: str, line: int) -> str:
    """The text of a line of a file py-spy named relative to some sys.path entry."""
    if not line:
        return ""
    for base in ("", str(REPO), *sys.path):
        full = os.path.join(base, path) if base else path
        if os.path.isfile(full):
            return linecache.getline(full, line).strip()
    return ""


@dataclass
class Frame:
    func: str
    path: str  # as py-spy wrote it (absolute)
    line: int

    @property
    def name(self) -> str:
        return f"{short_path(self.path)}:{self.func}"


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text.strip())
    if not m:
        return Frame(text.strip(), "?", 0)
    return Frame(m.group("func"), m.group("file"), int(m.group("line") or 0))


@dataclass
class Summary:
    samples: int = 0
    by_module: Counter[str] = field(default_factory=Counter)  # self samples
    functions: Counter[str] = field(default_factory=Counter)  # self samples by function
    function_module: dict[str, str] = field(default_factory=dict)
    lines: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (function, path, line)
    inclusive: Counter[str] = field(default_factory=Counter)

    def share(self, n: float) -> float:
        return 100.0 * n / self.samples if self.samples else 0.0

    def io_lines(self) -> Counter[tuple[str, str, int]]:
        """The samples of source lines that make a syscall through a transport (writes,
        pauses, closes): their time is the kernel's, and a process preempted on return
        from one (when it woke a process on its CPU) is charged there too."""
        out: Counter[tuple[str, str, int]] = Counter()
        for key, n in self.lines.items():
            if _IO_CALL.search(source_line(key[1], key[2])):
                out[key] = n
        return out

    def python_functions(self) -> Counter[str]:
        """Self samples by function without the transport syscall lines and the C loop."""
        out = Counter(self.functions)
        del out[C_LOOP]
        for (name, _, _), n in self.io_lines().items():
            out[name] -= n
        return out

    def python_only(self) -> Counter[str]:
        """Self samples by module without the transport syscall lines and uvloop's C loop:
        how the interpreter's own work splits, which being off the CPU does not skew."""
        out = Counter(self.by_module)
        del out[C_LOOP]
        for (name, _, _), n in self.io_lines().items():
            out[self.function_module[name]] -= n
        return out


def _is_loop_leaf(frame: Frame) -> bool:
    """The innermost Python frame is the loop runner: uvloop's C code is running."""
    path = short_path(frame.path)
    return frame.func in _LOOP_LEAF and path in (
        "uvloop/__init__.py",
        "asyncio/runners.py",
        "asyncio/base_events.py",
    )


def summarize(text: str) -> Summary:
    """Collapsed stacks (py-spy --format raw: `f1;f2;...;leaf COUNT` per line) -> Summary."""
    s = Summary()
    for raw_line in text.splitlines():
        stack, _, count = raw_line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [parse_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        s.samples += n
        leaf = frames[-1]
        if _is_loop_leaf(leaf):
            s.by_module[C_LOOP] += n
            s.functions[C_LOOP] += n
            s.function_module[C_LOOP] = C_LOOP
        else:
            module = module_of(leaf.path)
            s.by_module[module] += n
            s.functions[leaf.name] += n
            s.function_module[leaf.name] = module
            s.lines[(leaf.name, leaf.path, leaf.line)] += n
        for name in {f.name for f in frames}:
            s.inclusive[name] += n
    return s


def report(s: Summary, top: int = 25, out: Any = print) -> None:
    if not s.samples:
        out("no samples (was sekisho busy? py-spy drops idle samples)")
        return
    out(f"{s.samples} busy samples")
    out("")
    io = sum(s.io_lines().values())
    out("self time by module:")
    for module in MODULES:
        out(f"  {module:<16}{s.share(s.by_module[module]):6.1f}%")
    out(f"  (lines that write to or pause a transport, one syscall each: {s.share(io):.1f}%, counted above)")
    py = s.python_only()
    total = sum(py.values())
    if total > 0:
        out("the Python work alone (without those lines and the C loop), by module:")
        for module in MODULES:
            if module != C_LOOP:
                out(f"  {module:<16}{100.0 * py[module] / total:6.1f}%")
    out("")
    out(f"top {top} functions by self time, grouped by module (% of busy samples):")
    chosen = s.functions.most_common(top)
    for module in MODULES:
        rows = [(k, v) for k, v in chosen if s.function_module[k] == module]
        if not rows:
            continue
        shown = sum(v for _, v in rows)
        out(f"  {module}: {s.share(shown):.1f}% in these, {s.share(s.by_module[module]):.1f}% in all")
        for key, v in rows:
            out(f"    {s.share(v):5.1f}%  {key}")
    fns = s.python_functions()
    total = sum(fns.values())
    if total > 0:
        out("")
        out("top 15 functions of the Python work alone (without the transport syscall lines, the C loop):")
        for key, v in fns.most_common(15):
            out(f"    {100.0 * v / total:5.1f}%  {key}")
    out("")
    out("top source lines by self time (C called from a line is charged to it):")
    for (name, path, line), v in s.lines.most_common(15):
        src = source_line(path, line)
        out(f"  {s.share(v):5.1f}%  {name}:{line}  {src[:70]}")
    out("")
    out("top functions by inclusive time (frames on nearly every stack left out):")
    rows = [(k, v) for k, v in s.inclusive.most_common() if v < 0.9 * s.samples]
    for key, v in rows[:15]:
        out(f"  {s.share(v):5.1f}%  {key}")


# ---------------------------------------------------------------- the run


def _log(msg: str) -> None:
    print(f"[profile_http {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _measure(workload: Any, addr: tuple[str, int], seconds: float, pid: int, cpus: Any) -> dict[str, Any]:
    """One run; adds sekisho's CPU per request (user+system, and the system part) and its
    share of the wall time (how much of a sampled second it was on a CPU)."""
    (u0, s0), w0 = cpu_times(pid), time.monotonic()
    res = run_one(workload, addr, seconds, cpus)
    (u1, s1), wall = cpu_times(pid), time.monotonic() - w0
    n = res.get("requests") or float("nan")
    res["cpu_us_per_request"] = 1e6 * (u1 - u0 + s1 - s0) / n
    res["sys_us_per_request"] = 1e6 * (s1 - s0) / n
    res["on_cpu"] = (u1 - u0 + s1 - s0) / wall
    return res


def profile(args: argparse.Namespace) -> tuple[Summary, dict[str, Any]]:
    exe = py_spy()
    if exe is None:
        raise BenchError("py-spy not installed (pip install -e '.[dev]')")
    w = BY_NAME[args.workload]
    raise_nofile()
    server_cpus, load_cpus, pin_text = pinning(args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    facts: dict[str, Any] = {"workload": w.name, "tool": tool_for(w), "pinning": pin_text}
    workdir = Path(tempfile.mkdtemp(prefix="sekisho-profile-"))
    backends = Backends(workdir, server_cpus)
    target = None
    try:
        _log(f"workdir {workdir}; {pin_text}")
        backends.start()
        facts["backend"] = backends.kinds.get("http", "?")
        target = sekisho(workdir, backends, server_cpus)
        if not target.ok or target.proc is None:
            raise BenchError(f"sekisho did not start: {target.status} {target.error[-600:]}")
        broken = target.probe().get("http")
        if broken:
            raise BenchError(broken)
        addr = target.endpoints[w.endpoint]
        pid = target.proc.pid
        _log(f"warm-up and unprofiled run: {w.name} for {args.seconds:.0f} s")
        run_one(w, addr, 1.0, load_cpus)
        facts["unprofiled"] = _measure(w, addr, args.seconds, pid, load_cpus)
        _log(f"profiled run: py-spy -r {args.rate} -d {args.seconds:.0f} on pid {pid}")
        with tempfile.TemporaryDirectory() as d:
            raw = Path(args.raw) if args.raw else Path(d) / "raw.txt"
            result: dict[str, Any] = {}

            def load() -> None:
                try:
                    result["run"] = _measure(w, addr, args.seconds + 2, pid, load_cpus)
                except BenchError as exc:
                    result["error"] = str(exc)

            gen = threading.Thread(target=load, daemon=True)
            gen.start()
            time.sleep(0.7)  # wrk is connected and busy before the first sample
            cmd = [exe, "record", "--format", "raw", "-r", str(args.rate), "-d", str(round(args.seconds))]
            cmd += ["-p", str(pid), "-o", str(raw)]
            if args.nonblocking:
                cmd.append("--nonblocking")
            facts["py_spy"] = " ".join(["py-spy", *cmd[1:]])
            spy = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                text=True,
                timeout=args.seconds + 30,
                preexec_fn=_preexec(load_cpus),
                stdin=subprocess.DEVNULL,
            )
            gen.join(args.seconds + 30)
            if "error" in result:
                raise BenchError(result["error"])
            if not raw.exists():
                raise BenchError(f"py-spy wrote nothing: {(spy.stderr or spy.stdout).strip()[-400:]}")
            facts["profiled"] = result.get("run", {})
            summary = summarize(raw.read_text())
    finally:
        if target is not None:
            target.stop()
        backends.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # kept when the run failed: the logs say why
    return summary, facts


def _print_facts(facts: dict[str, Any]) -> None:
    print(f"{facts['workload']} through sekisho ({facts['tool']}; backend: {facts['backend']})")
    print(f"pinning: {facts['pinning']}")
    for key in ("unprofiled", "profiled"):
        r = facts.get(key) or {}
        if r:
            nan = float("nan")
            print(
                f"{key:>10}: {r.get('rate', nan):,.0f} req/s, p50 {r.get('p50_us', 0):.0f} µs; "
                f"sekisho CPU {r.get('cpu_us_per_request', nan):.1f} µs per request "
                f"(system {r.get('sys_us_per_request', nan):.1f}), "
                f"on a CPU {100 * r.get('on_cpu', 0):.0f}% of the time"
            )
    on_cpu = (facts.get("profiled") or {}).get("on_cpu")
    if on_cpu is not None:
        print(
            f"py-spy counts every sample in which sekisho is not waiting in epoll, on a CPU or not: "
            f"about {100 * max(0.0, 1 - on_cpu):.0f}% of the samples below are sekisho runnable but "
            "off the CPU (pinned, the backend it just woke shares its CPU; on a shared machine, anything "
            "else), charged to the line it was preempted at, mostly a transport write (a wakeup). "
            "'The Python work alone' is not skewed by this."
        )
    print(f"sampler: {facts.get('py_spy', '?')}")
    print("")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_http", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds sampled (10)")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second (500)")
    p.add_argument(
        "--workload",
        default="HTTP_small_ka",
        choices=[n for n, w in BY_NAME.items() if w.kind == "http" and w.endpoint == "http"],
    )
    p.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking (no pause per sample)")
    p.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    p.add_argument("--top", type=int, default=25, help="functions listed (25)")
    p.add_argument("--raw", help="keep py-spy's raw collapsed stacks in this file")
    p.add_argument("--summarize", metavar="RAW", help="only summarise this raw file (no run)")
    args = p.parse_args(argv)
    if args.summarize:
        report(summarize(Path(args.summarize).read_text()), top=args.top)
        return 0
    if not 1 <= args.seconds <= 120:
        p.error("--seconds must be between 1 and 120")
    try:
        summary, facts = profile(args)
    except BenchError as exc:
        print(f"profile_http: {exc}", file=sys.stderr)
        return 1
    _print_facts(facts)
    report(summary, top=args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
