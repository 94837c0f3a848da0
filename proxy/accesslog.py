"""The access log: one line per request, Apache "combined" (plus host, upstream, duration) or JSON;
one line per TCP or SMTP session in the same layout (`session`).

`AccessLog(path, fmt)`: path "-" writes to stderr, "" turns logging off, anything
else is a file opened for appending. Lines are buffered and flushed at most a
second later (and on close), so logging costs no syscall per request.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable
from typing import IO, Literal

_FLUSH_EVERY = 1.0


def _header(headers: Iterable[tuple[bytes, bytes, bytes]] | None, name: bytes) -> str:
    """A request field from (name as sent, lower-case name, value) triples."""
    if headers is None:
        return "-"
    for _, n, v in headers:
        if n == name:
            return v.decode("latin-1")
    return "-"


def _esc(value: str) -> str:
    """Apache-style escaping inside quoted fields: no raw quotes, backslashes or controls."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for ch in value:
        if ch in {'"', "\\"}:
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


class AccessLog:
    def __init__(self, path: str, fmt: Literal["combined", "json"] | str = "combined") -> None:
        self.path = path
        self.fmt = fmt
        self.enabled = path != ""
        self._file: IO[str] | None = None
        self._own = False
        if path == "-":
            self._file = sys.stderr
        elif path:
            self._file = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
            self._own = True
        self._flush_handle: asyncio.TimerHandle | None = None
        self._sec = -1
        self._stamp = ""

    def _time(self) -> tuple[float, str]:
        now = time.time()
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(sec))
        return now, self._stamp

    def log(
        self,
        *,
        client: str,
        host: str,
        method: bytes,
        target: bytes,
        version: bytes,
        status: int,
        size: int,
        upstream: str,
        duration: float,
        headers: Iterable[tuple[bytes, bytes, bytes]] | None = None,
    ) -> None:
        f = self._file
        if f is None:
            return
        now, stamp = self._time()
        request = f"{method.decode('latin-1')} {target.decode('latin-1')} HTTP/{version.decode('latin-1')}"
        if self.fmt == "json":
            line = json.dumps(
                {
                    "time": now,
                    "client": client,
                    "host": host,
                    "request": request,
                    "method": method.decode("latin-1"),
                    "target": target.decode("latin-1"),
                    "status": status,
                    "bytes": size,
                    "referer": _header(headers, b"referer"),
                    "user_agent": _header(headers, b"user-agent"),
                    "upstream": upstream,
                    "duration": round(duration, 6),
                },
                ensure_ascii=False,
            )
        else:
            line = (
                f'{client} - - [{stamp}] "{_esc(request)}" {status} {size or "-"} '
                f'"{_esc(_header(headers, b"referer"))}" "{_esc(_header(headers, b"user-agent"))}" '
                f'"{_esc(host or "-")}" {upstream} {duration:.6f}'
            )
        self._write(f, line)

    def session(
        self,
        *,
        protocol: Literal["TCP", "SMTP"],
        client: str,
        listener: str,
        status: int,
        route: str,
        upstream: str,
        bytes_out: int,
        bytes_in: int,
        duration: float,
        result: str,
        agent: str = "-",
        messages: int | None = None,
    ) -> None:
        """One line per TCP or SMTP session, in the HTTP lines' layout (DeleGate's LOGFILE
        logged every protocol): the request is "TCP|SMTP <listener>", the status nginx
        stream's (200 relayed, 403 not in allow, 502 no server, 499 client gone first) for
        TCP and the last reply sent for SMTP (221 after QUIT, 421, 554 ...), the size the
        bytes relayed in the main direction (TCP: to the client; SMTP: message data to the
        servers), the user-agent slot the SMTP client's HELO name, the host slot the
        pool (TCP) or the routes (SMTP), then the server(s) and the duration. JSON has both
        byte counts and the result word."""
        f = self._file
        if f is None:
            return
        now, stamp = self._time()
        size = bytes_out if protocol == "TCP" else bytes_in
        if self.fmt == "json":
            line = json.dumps(
                {
                    "time": now,
                    "protocol": protocol.lower(),
                    "client": client,
                    "listener": listener,
                    "status": status,
                    "result": result,
                    "route": route,
                    "upstream": upstream,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "helo": agent,
                    "duration": round(duration, 6),
                    **({"messages": messages} if messages is not None else {}),
                },
                ensure_ascii=False,
            )
        else:
            line = (
                f'{client} - - [{stamp}] "{protocol} {_esc(listener)}" {status} {size or "-"} '
                f'"-" "{_esc(agent or "-")}" "{_esc(route or "-")}" {upstream or "-"} {duration:.6f}'
            )
        self._write(f, line)

    def _write(self, f: IO[str], line: str) -> None:
        try:
            f.write(line + "\n")
        except (OSError, ValueError):
            return
        if self._own:
            self._schedule_flush()
        else:
            self.flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_handle = loop.call_later(_FLUSH_EVERY, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.flush()
        if self._own and self._file is not None:
            self._file.close()
        self._file = None
