"""Python work per proxied L4 connection or HTTP request, counted instead of timed.

    python -m bench.opcount [N]                  L4: N sequential connections through [[tcp]]
    python -m bench.opcount --http [N]           HTTP: N keep-alive GETs over one connection
    python -m bench.opcount --http --close [N]   HTTP: N `Connection: close` GETs, one connection each
    python -m bench.opcount --http --strace M    ... and the loop thread's syscalls over M requests
    python -m bench.opcount --parts              the keep-alive request's pieces, timed alone

L4: runs a `[[tcp]]` service in this process (uvloop) in front of a tiny HTTP
backend thread, makes N sequential `Connection: close` requests from another
thread, and counts with `sys.settrace` the bytecodes and calls that run on the
event loop's thread per connection. Unlike req/s on a shared, noisy machine
the count is exact, so it shows what a change to the L4 path saves; `python -m
bench` says what that is worth in throughput. Sequential connections mean no
batching: the per-wakeup parts (Poller._dispatch, the listener) count fully.

HTTP: an `[[http]]` listener (proxy.http.HttpFrontend behind proxy.listener.Listener,
from the [[http]] part of the bench's config) on this process's loop (uvloop), in front
of a keep-alive backend answering every request with nginx's `/small` answer (128 bytes,
nginx's nine fields); a client sends wrk's request. Backend and client run in a peer
process, so the loop thread shares no GIL with them. Requests are sequential, so nothing
is batched: every request pays its own wakeups. Per request it prints the loop thread's
CPU time (user + system) in an untraced pass, then, traced: bytecodes and Python calls
(`sys.settrace`), builtin C calls (`sys.setprofile`: list.append, regex searches ...),
the calls neither hook reports (uvloop's Cython methods such as transport.write and
loop.time, C types, slot wrappers; found by pairing each call instruction with what it
reached), and the callbacks the loop makes into Python; split by module (ours, h11,
asyncio/uvloop, stdlib) and by function (top `--top` by own bytecodes). The harness's
own callbacks (this file) are left out. The counts are exact and repeat run after run;
the CPU time is a measurement on a shared machine (the fifths of the pass show its spread).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dis
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import uvloop

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.tcp import TcpFrontend

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 128\r\nConnection: close\r\n\r\n" + b"x" * 128


def backend() -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while b"\r\n\r\n" not in conn.recv(4096):
                    pass
                conn.sendall(ANSWER)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def clients(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(REQUEST)
            while s.recv(65536):
                pass


async def count(n: int) -> tuple[collections.Counter[str], collections.Counter[str]]:
    srv, _ = backend()
    port = srv.getsockname()[1]
    pool = conf.Pool(
        "p", (conf.Server(conf.Address("127.0.0.1", port)),), health=conf.HealthCheck("none", interval=60.0)
    )
    service = conf.TcpService(listen=(conf.Address("127.0.0.1", 0),), pool="p")
    pools = PoolSet({"p": pool})
    address = service.listen[0]
    listener = Listener("tcp", address, bind(address), TcpFrontend(service, pools))
    listener.start()
    loop = asyncio.get_running_loop()
    ops: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}"
        if event == "call":
            calls[key] += 1
        elif event == "opcode":
            ops[key] += 1
        return tracer

    try:
        await loop.run_in_executor(None, clients, listener.bound[1], 20)  # warm up
        sys.settrace(tracer)  # this thread only: the loop's callbacks
        try:
            await loop.run_in_executor(None, clients, listener.bound[1], n)
        finally:
            sys.settrace(None)
    finally:
        await listener.stop_accepting()
        srv.close()
    harness = ("opcount.py", "futures.py", "base_events.py", "threading.py")  # awaiting the client thread
    for key in [k for k in ops if k.startswith(harness)]:
        del ops[key]
    return ops, calls


# ====================================================================== HTTP mode

REPO = Path(__file__).resolve().parent.parent
_STDLIB = sysconfig.get_paths()["stdlib"] + "/"
# nginx 1.22's answer to `GET /small` in the bench (bench/targets.py), byte for byte but
# for the fixed dates: the same fields (Connection: keep-alive included) take the same
# paths through the response reader.
HTTP_BODY = b"x" * 128
HTTP_ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 30 Nov 2026 07:45:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 128\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 07:40:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6a2b1c40-80"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n" + HTTP_BODY
)
# The [[http]] part of the config `python -m bench` gives sekisho (bench/targets.py).
HTTP_CONFIG = """
[global]
access_log = ""

[pool.http]
scheduler = "rr"
servers = [{{ address = "127.0.0.1:{port}" }}]

[[http]]
listen = ["127.0.0.1:1"]
max_connections = 30000

  [[http.route]]
  path = "/"
  pool = "http"
"""

GROUPS = ("sekisho", "h11", "asyncio/uvloop", "stdlib", "other")
WARM_UP = 50  # requests before anything is measured: the backend connection, caches
_HARNESS = frozenset((__file__, threading.__file__))


def http_request(port: int, close: bool) -> bytes:
    """wrk's request (`wrk -t1 -c32 http://127.0.0.1:PORT/small`), plus `Connection: close`."""
    extra = b"Connection: close\r\n" if close else b""
    return b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (port, extra)


# ---------------------------------------------------------------- the peer process
# The backend and the client live in another process, so that the loop thread
# measured here shares no GIL with them: its CPU time and syscalls are the proxy's.


def http_backend() -> socket.socket:
    """A keep-alive backend: a thread per connection, one answer per request head."""
    srv = socket.create_server(("127.0.0.1", 0))

    def conn_loop(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                heads = buf.count(b"\r\n\r\n")
                if heads:
                    buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
                    conn.sendall(HTTP_ANSWER * heads)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=conn_loop, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _read_answer(s: socket.socket) -> bytes:
    """Read one 200 response with a Content-Length body; return what came after it."""
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].lower()
            if not head.startswith(b"http/1.1 200 "):
                raise RuntimeError(f"unexpected answer: {buf[:200]!r}")
            i = head.find(b"content-length:")
            if i < 0:
                raise RuntimeError(f"answer without Content-Length: {buf[:200]!r}")
            total = end + 4 + int(head[i + 15 :].split(b"\r\n", 1)[0])
            if len(buf) >= total:
                return buf[total:]
        data = s.recv(65536)
        if not data:
            raise RuntimeError("proxy closed the connection before the answer was complete")
        buf += data


def _peer_main() -> None:
    """The peer process (`python -c "from bench.opcount import _peer_main; _peer_main()"`):
    start the backend, then run the phases of requests the parent asks for, one line each
    way on stdin/stdout."""
    srv = http_backend()
    out = sys.stdout
    out.write(f"backend {srv.getsockname()[1]}\n")
    out.flush()
    sock: socket.socket | None = None
    try:
        words = sys.stdin.readline().split()
        if not words or words[0] != "start":
            return
        port, close = int(words[1]), words[2] == "close"
        request = http_request(port, close)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] != "phase":
                return
            try:
                t0 = time.perf_counter()
                for _ in range(int(words[1])):
                    if close:
                        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                            s.sendall(request)
                            _read_answer(s)
                            while s.recv(65536):  # the proxy closes after the answer
                                pass
                        continue
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.sendall(request)
                    if _read_answer(sock):
                        raise RuntimeError("bytes after the answer")
                out.write(f"done {time.perf_counter() - t0!r}\n")
            except (OSError, RuntimeError, ValueError) as exc:
                out.write(f"error {type(exc).__name__}: {exc}\n".replace("\n", " ").rstrip() + "\n")
                return
            finally:
                out.flush()
    finally:
        if sock is not None:
            sock.close()
        srv.close()


class _Peer:
    """The loop side of the peer process: start a phase, await its end."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.opcount import _peer_main; _peer_main()"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        ready, _, _ = select.select([self.stdout], [], [], 30.0)
        words = self.stdout.readline().split() if ready else []
        if len(words) != 2 or words[0] != b"backend":
            self.stop()
            raise RuntimeError(f"the peer process did not start (said {words!r})")
        self.backend_port = int(words[1])
        self.buf = b""
        self.waiter: asyncio.Future[float] | None = None
        self.reading = False

    def _send(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\n")
        self.stdin.flush()

    def start(self, proxy_port: int, close: bool) -> None:
        self._send(f"start {proxy_port} {'close' if close else 'keep-alive'}")
        os.set_blocking(self.stdout.fileno(), False)
        asyncio.get_running_loop().add_reader(self.stdout.fileno(), self._readable)
        self.reading = True

    def _readable(self) -> None:
        try:
            data = os.read(self.stdout.fileno(), 4096)
        except BlockingIOError:
            return
        self.buf += data if data else b"error the peer process exited\n"
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            word, _, rest = line.decode().partition(" ")
            fut = self.waiter
            if fut is None or fut.done():
                continue
            if word == "done":
                fut.set_result(float(rest))
            else:
                fut.set_exception(RuntimeError(f"client: {rest}"))
        if not data:
            asyncio.get_running_loop().remove_reader(self.stdout.fileno())
            self.reading = False

    def _expire(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError("a phase of requests took too long"))

    async def phase(self, n: int, timeout: float) -> float:
        """n sequential requests; the client's wall time for them."""
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire)
        self._send(f"phase {n}")
        try:
            return await self.waiter
        finally:
            timer.cancel()

    def stop(self) -> None:
        if self.reading:
            asyncio.get_running_loop().remove_reader(self.stdout.fileno())
            self.reading = False
        try:
            self._send("stop")
            self.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(5)
        self.stdout.close()


# ---------------------------------------------------------------- counting


@dataclass
class HttpCount:
    """What `n` requests cost on the loop thread, as totals (the report divides by n)."""

    n: int
    close: bool
    cpu_n: int = 0  # requests in the untraced pass
    cpu_s: float = 0.0  # loop-thread CPU seconds for them (time.thread_time)
    wall_s: float = 0.0  # the client's wall time for them
    ops: collections.Counter[str] = field(default_factory=collections.Counter)  # own bytecodes
    calls: collections.Counter[str] = field(default_factory=collections.Counter)  # Python calls
    roots: collections.Counter[str] = field(default_factory=collections.Counter)  # loop -> Python
    ccalls: collections.Counter[str] = field(default_factory=collections.Counter)  # builtin C calls
    ccalls_by: collections.Counter[str] = field(default_factory=collections.Counter)  # caller group
    hidden: collections.Counter[str] = field(default_factory=collections.Counter)  # see _Tracer
    via: collections.Counter[str] = field(default_factory=collections.Counter)  # stdlib ops by caller
    cpu_chunks: list[float] = field(default_factory=list)  # µs per request, each fifth of the pass
    sys_s: float = 0.0  # the system (kernel) part of cpu_s (getrusage(RUSAGE_THREAD))
    group: dict[str, str] = field(default_factory=dict)  # function key -> GROUPS entry
    strace_n: int = 0  # requests in the strace pass
    syscalls: collections.Counter[str] = field(default_factory=collections.Counter)

    def by_group(self, counter: collections.Counter[str]) -> dict[str, float]:
        out = dict.fromkeys(GROUPS, 0.0)
        for key, v in counter.items():
            out[self.group.get(key, "other")] += v
        return out

    def per_request(self) -> dict[str, Any]:
        """The headline figures per request (what the smoke test and the docs quote)."""
        n = self.n
        hidden = sum(self.hidden.values())
        return {
            "cpu_us": 1e6 * self.cpu_s / self.cpu_n if self.cpu_n else None,
            "sys_us": 1e6 * self.sys_s / self.cpu_n if self.cpu_n else None,
            "bytecodes": sum(self.ops.values()) / n,
            "calls": sum(self.calls.values()) / n,
            "c_calls": (sum(self.ccalls.values()) + hidden) / n,
            "other_c_calls": hidden / n,
            "loop_callbacks": sum(self.roots.values()) / n,
            "bytecodes_by_module": {g: v / n for g, v in self.by_group(self.ops).items()},
            "calls_by_module": {g: v / n for g, v in self.by_group(self.calls).items()},
            "c_calls_by_module": {g: self.ccalls_by[g] / n for g in GROUPS},
            "syscalls": sum(self.syscalls.values()) / self.strace_n if self.strace_n else None,
        }


def _place(filename: str) -> tuple[str, str]:
    """(short path, group) of a code object's file."""
    if "/site-packages/" in filename:
        rel = filename.rsplit("/site-packages/", 1)[1]
        top = rel.split("/", 1)[0]
        return rel, {"h11": "h11", "uvloop": "asyncio/uvloop"}.get(top, "other")
    if filename.startswith(_STDLIB):
        rel = filename[len(_STDLIB) :]
        return rel, ("asyncio/uvloop" if rel.startswith("asyncio/") else "stdlib")
    if filename.startswith(f"{REPO}/"):
        rel = filename[len(str(REPO)) + 1 :]
        return rel, ("sekisho" if rel.split("/", 1)[0] in ("proxy", "lb", "conf") else "other")
    return filename, "other"


_CALLERS = frozenset(("sekisho", "h11"))  # stdlib work is charged to whichever of these called it
_CALL = "\0call"  # a call instruction in `_call_sites` (a name is never this)


def _call_sites(code: CodeType) -> dict[int, str]:
    """Offsets of a code object's call instructions (-> _CALL) and of the instructions
    that load what they call (-> a name: the method, the global, or what follows PUSH_NULL).

    In CPython 3.11 every call is bracketed: LOAD_METHOD, a NULL-pushing LOAD_GLOBAL or
    PUSH_NULL starts it, CALL or CALL_FUNCTION_EX ends it, nested calls inside. A stack
    per frame pairs each call with its name."""
    ins = list(dis.get_instructions(code))
    sites: dict[int, str] = {}
    for k, i in enumerate(ins):
        if i.opname == "LOAD_METHOD" or (i.opname == "LOAD_GLOBAL" and i.argrepr.startswith("NULL + ")):
            sites[i.offset] = str(i.argval)
        elif i.opname == "PUSH_NULL":
            sites[i.offset] = str(ins[k + 1].argval) if k + 1 < len(ins) else "?"
        elif i.opname in ("CALL", "CALL_FUNCTION_EX"):
            sites[i.offset] = _CALL
    return sites


class _Tracer:
    """settrace + setprofile hooks for the loop thread, counting only the proxy's callbacks.

    A callback the loop makes into Python has the frame that runs the loop (`anchor`)
    as its f_back (C frames are not in the chain). Each such callback starts a new
    root; a root in this file or in threading.py is the harness and is not counted,
    nor is anything it calls.

    Calls: a Python call shows as a "call" event, a builtin C function or method
    (list.append, bytes.find, Pattern.search) as a "c_call" profile event. A call
    instruction followed by neither reached C code the hooks do not report: uvloop's
    Cython methods (transport.write, loop.time, loop.call_at, handle.cancel), C types
    (type(x), bytearray()) and slot wrappers (object.__setattr__). Those are `hidden`,
    by the name the call site loaded.
    """

    def __init__(self, result: HttpCount) -> None:
        self.r = result
        self.anchor: FrameType | None = None
        self.counting = False  # the current root is the proxy's
        self.info: dict[CodeType, tuple[str, dict[int, str], bool]] = {}
        self.stacks: dict[FrameType, list[str]] = {}  # names of the calls under way
        self.via: dict[FrameType, str] = {}  # stdlib/other frame -> the group that called it
        self.pending: str | None = None  # a call instruction just ran: what did it reach?

    def _info(self, code: CodeType) -> tuple[str, dict[int, str], bool]:
        info = self.info.get(code)
        if info is None:
            rel, group = _place(code.co_filename)
            key = f"{rel}:{code.co_qualname}"
            self.r.group[key] = group
            info = self.info[code] = (key, _call_sites(code), group not in _CALLERS)
        return info

    def _caller(self, frame: FrameType) -> str:
        """The nearest of sekisho / h11 up the stack: whose work a stdlib frame does."""
        f = frame.f_back
        while f is not None and f is not self.anchor:
            info = self.info.get(f.f_code)
            if info is not None and not info[2]:
                return self.r.group[info[0]]
            f = f.f_back
        return "other"

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call":
            return None
        self.pending = None  # (a call from Python, or a callback from the loop)
        code = frame.f_code
        if frame.f_back is self.anchor:
            self.counting = code.co_filename not in _HARNESS
            if not self.counting:
                return None
            self.r.roots[self._info(code)[0]] += 1
        elif not self.counting:
            return None
        key, _, foreign = self._info(code)
        self.r.calls[key] += 1
        if foreign:
            self.via[frame] = self._caller(frame)
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self.local

    def local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            r = self.r
            if self.pending is not None:  # the last call ran C code no hook reported
                r.hidden[self.pending] += 1
                self.pending = None
            key, sites, foreign = self.info[frame.f_code]
            r.ops[key] += 1
            if foreign:
                r.via[self.via.get(frame, "other")] += 1
            site = sites.get(frame.f_lasti)
            if site is not None:
                stack = self.stacks.get(frame)
                if stack is None:
                    stack = self.stacks[frame] = []
                if site is _CALL:
                    self.pending = stack.pop() if stack else "?"
                else:
                    stack.append(site)
        elif event == "return":
            self.stacks.pop(frame, None)
            self.via.pop(frame, None)
        return self.local

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "c_call" or not self.counting:
            return
        self.pending = None
        r = self.r
        bare = getattr(arg, "__name__", "?")
        own = getattr(arg, "__self__", None)
        if own is None or isinstance(own, type):
            name = getattr(arg, "__qualname__", bare)
        elif type(own).__name__ == "module":
            name = bare if own.__name__ == "builtins" else f"{own.__name__}.{bare}"
        else:
            name = f"{type(own).__name__}.{bare}"
        r.ccalls[name] += 1
        info = self.info.get(frame.f_code)
        r.ccalls_by[r.group.get(info[0], "other") if info else "other"] += 1


def _strace_start(tid: int, out: Path) -> subprocess.Popen[str] | None:
    """`strace -c` on one thread of this process; None without strace. Waits until attached."""
    exe = shutil.which("strace")
    if exe is None:
        return None
    proc = subprocess.Popen(
        [exe, "-c", "-p", str(tid), "-o", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 10.0)
    line = proc.stderr.readline() if ready else ""
    if "attached" not in line:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"strace did not attach: {line.strip() or 'no answer in 10 s'}")
    return proc


def _strace_stop(proc: subprocess.Popen[str], out: Path) -> collections.Counter[str]:
    proc.send_signal(signal.SIGINT)  # detach and write the summary
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    counts: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) in (5, 6) and parts[3].isdigit() and parts[-1] != "total":
            counts[parts[-1]] += int(parts[3])
    return counts


async def _http_run(  # noqa: PLR0917
    n: int, close: bool, untraced: int, strace: int, tracer: _Tracer, result: HttpCount, timeout: float
) -> None:
    from proxy.http import HttpFrontend, HttpStats

    peer = _Peer()
    listener: Listener | None = None
    frontend: HttpFrontend | None = None
    try:
        config = conf.load_text(HTTP_CONFIG.format(port=peer.backend_port))
        frontend = HttpFrontend(config.http[0], PoolSet(config.pools), HttpStats(), None)
        address = conf.Address("127.0.0.1", 0)
        listener = Listener("http", address, bind(address), frontend)
        listener.start()
        peer.start(listener.bound[1], close)
        await peer.phase(WARM_UP, timeout)
        if untraced:
            chunk = max(1, untraced // 5)
            for _ in range(5):  # five parts: a shared machine's noise shows as their spread
                t0, ru0 = time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD)
                result.wall_s += await peer.phase(chunk, timeout)
                cpu = time.thread_time() - t0
                result.sys_s += resource.getrusage(resource.RUSAGE_THREAD).ru_stime - ru0.ru_stime
                result.cpu_s += cpu
                result.cpu_n += chunk
                result.cpu_chunks.append(1e6 * cpu / chunk)
        if strace:
            with tempfile.TemporaryDirectory() as d:
                out = Path(d) / "strace.txt"
                spy = _strace_start(threading.get_native_id(), out)
                if spy is not None:
                    try:
                        await peer.phase(strace, timeout)
                    finally:
                        result.syscalls = _strace_stop(spy, out)
                    result.strace_n = strace
        sys.setprofile(tracer.profile)
        sys.settrace(tracer.trace)  # this thread only: the loop's callbacks
        try:
            await peer.phase(n, timeout)
        finally:
            sys.settrace(None)
            sys.setprofile(None)
    finally:
        peer.stop()
        if listener is not None:
            await listener.stop_accepting()
        if frontend is not None:
            frontend.retire()
            await frontend.drain(2.0)


def count_http(
    n: int, close: bool = False, untraced: int = 2000, strace: int = 0, timeout: float = 120.0
) -> HttpCount:
    """Measure the [[http]] path on a fresh uvloop loop run by this thread."""
    result = HttpCount(n=n, close=close)
    tracer = _Tracer(result)
    loop = uvloop.new_event_loop()

    def drive(coro: Any) -> None:
        tracer.anchor = sys._getframe()  # the frame the loop's callbacks hang from
        loop.run_until_complete(coro)

    try:
        drive(_http_run(n, close, untraced, strace, tracer, result, timeout))
    finally:
        loop.close()
    return result


def report_http(r: HttpCount, top: int = 30, out: Callable[[str], None] = print) -> None:
    n = r.n
    pr = r.per_request()
    kind = (
        "`Connection: close` GETs, one connection each" if r.close else "keep-alive GETs over one connection"
    )
    out(f"HTTP: {n} sequential {kind} (wrk's request, nginx's 128-byte answer); the loop thread only")
    if pr["cpu_us"] is not None:
        chunks = sorted(r.cpu_chunks)
        out(
            f"loop-thread CPU, untraced: {pr['cpu_us']:.1f} µs per request over {r.cpu_n} "
            f"(fifths: min {chunks[0]:.1f}, median {chunks[len(chunks) // 2]:.1f}, max {chunks[-1]:.1f})"
        )
        out(
            f"  of which system (syscalls, loopback TCP): {pr['sys_us']:.1f} µs; "
            f"{1e6 * r.wall_s / r.cpu_n:.0f} µs wall per request at the client"
        )
    out(
        f"per request: {pr['bytecodes']:.0f} bytecodes, {pr['calls']:.1f} Python calls, "
        f"{pr['c_calls']:.1f} C calls ({pr['other_c_calls']:.1f} of them into uvloop, C types, slots), "
        f"{pr['loop_callbacks']:.2f} callbacks from the loop"
    )
    out("")
    out(f"{'module':<16}{'bytecodes':>11}{'share':>8}{'calls':>9}{'C calls':>10}")
    total_ops = max(1.0, pr["bytecodes"])
    by_ops, by_calls, by_c = pr["bytecodes_by_module"], pr["calls_by_module"], pr["c_calls_by_module"]
    for g in GROUPS:
        share = 100 * by_ops[g] / total_ops
        out(f"{g:<16}{by_ops[g]:>11.1f}{share:>7.1f}%{by_calls[g]:>9.1f}{by_c[g]:>10.1f}")
    via = ", ".join(f"{v / n:.1f} for {g}" for g, v in sorted(r.via.items()))
    out(f"(stdlib/other bytecodes by the code that called them: {via or 'none'};")
    out(" builtin C calls by the module that makes them; the calls below are not split by caller)")
    out("")
    out("callbacks from the loop into Python, per request:")
    for key, v in r.roots.most_common():
        out(f"{v / n:8.2f}  {key}")
    out("")
    out("calls into uvloop (loop, transports, timer handles), C types and slot wrappers, by name:")
    for key, v in r.hidden.most_common():
        out(f"{v / n:8.2f}  {key}()")
    out("")
    out("builtin C calls per request (top 20):")
    for key, v in r.ccalls.most_common(20):
        out(f"{v / n:8.2f}  {key}")
    if r.strace_n:
        out("")
        total = sum(r.syscalls.values()) / r.strace_n
        out(f"syscalls of the loop thread per request (strace -c, {r.strace_n} requests): {total:.2f}")
        for key, v in r.syscalls.most_common():
            out(f"{v / r.strace_n:8.2f}  {key}")
    out("")
    out(f"top {top} functions by own bytecodes, per request:")
    out(f"{'bytecodes':>9} {'calls':>6}  {'module':<15} function")
    for key, v in r.ops.most_common(top):
        out(f"{v / n:9.1f} {r.calls[key] / n:6.2f}  {r.group.get(key, '?'):<15} {key}")


# ---------------------------------------------------------------- the pieces, timed


def _best_us(fn: Callable[[], object], number: int) -> float:
    """Best of 15 timeit repeats, µs of this thread's CPU per call: on a shared machine the
    CPU clock does not count the time other processes have the CPU, and the best repeat
    is the least disturbed one."""
    return min(timeit.repeat(fn, number=number, repeat=15, timer=time.thread_time)) / number * 1e6


def parts(number: int = 1000) -> list[tuple[str, float, str]]:
    """The keep-alive request's pieces, each run alone on the same bytes (µs of CPU per call,
    best of 15): what each costs the loop, and sketches of what a rebuilt path would cost.
    The sketches (`_sketch_*`) are timing stand-ins only, not parsers to use."""
    import h11

    from lb.pool import PoolSet
    from proxy.http.headers import RequestPolicy, head_end, precheck_head
    from proxy.http.response import ResponseReader, parse_head
    from proxy.http.routing import RouteTable
    from proxy.http.stats import HttpStats

    config = conf.load_text(HTTP_CONFIG.format(port=9))
    listener = config.http[0]
    req = http_request(12345, close=False)
    resp_head = HTTP_ANSWER[: HTTP_ANSWER.index(b"\r\n\r\n") + 2]
    limit = listener.max_header_bytes

    def h11_new() -> object:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=limit)

    def h11_parse() -> object:
        c = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        c.receive_data(req)
        ev = c.next_event()
        c.trailing_data  # noqa: B018 - what _next_cycle reads
        return ev

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(req)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    items = request.headers._full_items  # as proxy/http/h11glue.header_triples reads them

    def h11_request_event() -> object:
        return h11.Request(method=b"GET", target=b"/small", headers=[(b"host", b"127.0.0.1:12345")])

    policy = RequestPolicy(listener.forwarded_headers)
    routes = RouteTable(listener.routes)
    stats = HttpStats()
    pools = PoolSet(config.pools)
    pool = pools["http"]
    backend = pool.pick("127.0.0.1")
    assert backend is not None
    reader = ResponseReader()

    def response_reader() -> object:
        reader.start(b"GET")
        reader.receive_data(HTTP_ANSWER)
        head = reader.next_event()
        body = reader.next_event()
        reader.next_event()  # END
        return head, body

    loop = uvloop.new_event_loop()
    try:
        loop_time = loop.time
        pieces: list[tuple[str, Callable[[], object], str]] = [
            ("h11: new Connection", h11_new, "one per request (_next_cycle)"),
            ("h11: Connection + receive_data + next_event + trailing_data", h11_parse, "the whole h11 share"),
            ("h11: Request(...) event alone (validation)", h11_request_event, "inside the line above"),
            ("head_end + precheck_head", lambda: (head_end(req), precheck_head(req)), "our gate"),
            ("RouteTable.match", lambda: routes.match("127.0.0.1", b"/small"), ""),
            (
                "RequestPolicy.request_head",
                lambda: policy.request_head(
                    b"GET", b"/small", items, peer="127.0.0.1", proto=b"http", trusted=False, chunked=False
                ),
                "backend request head",
            ),
            ("parse_head (nginx's 9 fields)", lambda: parse_head(resp_head), "inside the line below"),
            ("ResponseReader: start, feed, head + body + END", response_reader, "backend response"),
            ("pool.pick + drop", lambda: pool.drop(pool.pick("127.0.0.1") or backend), ""),
            ("HttpStats.observe", lambda: stats.observe("*/", 200, 0.0001), "metrics per request"),
            ("loop.time() (uvloop)", loop_time, "8 per request"),
            ("sketch: strict request recogniser, 3 regex passes", lambda: _sketch_request(req), "fast path"),
            ("sketch: client head by one hop-by-hop removal pass", lambda: _sketch_response(resp_head), ""),
        ]
        return [(name, _best_us(fn, number), note) for name, fn, note in pieces]
    finally:
        loop.close()


_SKETCH_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SKETCH_LINE = re.compile(rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS) (/[!-~]*) HTTP/1\.([01])\r\n")
_SKETCH_BLOCK = re.compile(
    rb"(?:" + _SKETCH_TOKEN + rb":[ \t]*[!-~\x80-\xff]?(?:[ -~\x80-\xff\t]*[!-~\x80-\xff])?\r\n)*"
)
_SKETCH_FIELD = re.compile(rb"(" + _SKETCH_TOKEN + rb"):[ \t]*([^\r]*?)[ \t]*\r\n")


def _sketch_request(head: bytes) -> object:
    """Timing stand-in for a stricter fast path: the request line, every field line
    validated in one pass (no CTL, no obs-fold, no bare CR/LF), then split into pairs."""
    m = _SKETCH_LINE.match(head)
    if m is None or _SKETCH_BLOCK.fullmatch(head, m.end(), len(head) - 2) is None:
        return None
    fields = _SKETCH_FIELD.findall(head, m.end(), len(head) - 2)
    return m.group(1), m.group(2), [(n.lower(), v) for n, v in fields]


_SKETCH_DROP = re.compile(
    rb"\r\n(?:connection|keep-alive|transfer-encoding|te|upgrade|proxy-connection):[^\r]*", re.I
)


def _sketch_response(head: bytes) -> object:
    """Timing stand-in: the client's head from the backend's by removing hop-by-hop lines."""
    return _SKETCH_DROP.sub(b"", head)


def report_parts(rows: list[tuple[str, float, str]], out: Callable[[str], None] = print) -> None:
    out("the keep-alive request's pieces, each alone (µs of CPU per call, best of 15 timeit repeats):")
    for name, us, note in rows:
        out(f"{us:8.2f}  {name}" + (f"  ({note})" if note else ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.opcount", description=__doc__.split("\n\n")[0])
    p.add_argument("n", nargs="?", type=int, default=500, help="connections / requests counted (500)")
    p.add_argument("--http", action="store_true", help="count the [[http]] path per request")
    p.add_argument("--close", action="store_true", help="with --http: Connection: close requests")
    p.add_argument("--top", type=int, default=30, help="functions listed (30)")
    p.add_argument(
        "--untraced",
        type=int,
        default=2000,
        help="with --http: requests in the untraced CPU-time pass (0: skip it)",
    )
    p.add_argument(
        "--strace",
        type=int,
        default=0,
        metavar="M",
        help="with --http: also count the loop thread's syscalls over M requests with strace -c",
    )
    p.add_argument("--parts", action="store_true", help="time the keep-alive request's pieces alone")
    args = p.parse_args(argv)
    if args.parts:
        report_parts(parts())
        return
    if args.n < 1:
        p.error("N must be at least 1")
    if args.close and not args.http:
        p.error("--close goes with --http (the L4 mode always closes)")
    if args.http:
        report_http(count_http(args.n, args.close, args.untraced, args.strace), top=args.top)
        return
    n = args.n
    ops, calls = uvloop.run(count(n))
    print(f"{sum(ops.values()) / n:.0f} bytecodes per connection ({n} sequential connections)")
    for key, v in ops.most_common(25):
        print(f"{v / n:8.1f} bytecodes {calls[key] / n:5.2f} calls  {key}")


if __name__ == "__main__":
    main()
