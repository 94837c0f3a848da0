"""The admin listener (`global.metrics`): /metrics, /status, the admin API.

Never bound on a public listener. Not a hot path, so it uses asyncio streams
and h11 plainly. Handlers are registered by method and path pattern; a
pattern segment `{name}` captures one path segment (percent-decoded).

Who may do what (`authorize`, a pure function; the policy comes from the
config and is swapped on reload):
- a client outside `global.metrics_allow` gets 403 and the connection closes;
- GET and HEAD (the read-only pages) are open to every other client;
- any other method changes state and needs `Authorization: Bearer <token>`,
  the token being the content of `global.admin_token_file` (401 without it or
  with another, compared in constant time). A request whose `Origin` is not
  this listener is refused with 403 whatever it carries: a web page an
  operator happens to open cannot post to it. Without a token file those
  requests are off (403 that says how to turn them on).
HAProxy gates its stats page the same way (`stats auth`, `stats admin if`);
Envoy's admin interface has no authentication and is meant for localhost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

from conf.access import EVERYONE, AccessEntry, admits, client_address, decide, network_of
from conf.model import Address, GlobalSettings

log = logging.getLogger("sekisho.admin")


@dataclass
class AdminRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    params: dict[str, str]
    body: bytes
    headers: Sequence[tuple[bytes, bytes]] = ()  # names lower-cased, as h11 gives them


@dataclass
class AdminResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> AdminResponse:
        return cls(status, json.dumps(data, indent=2).encode() + b"\n", "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> AdminResponse:
        return cls(status, text.encode())


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]
MAX_BODY = 1 << 20

# ---------------------------------------------------------------- who may do what

TOKEN_KEY = "global.admin_token_file"
READ_ONLY = frozenset({"GET", "HEAD"})
ALL_NETWORKS: tuple[AccessEntry, ...] = EVERYONE
MAX_TOKEN_FILE = 4096
SHORT_TOKEN = 16
Origin = tuple[str, str, int]  # (scheme, host, port), as browsers compare them
OFF = (
    "state-changing admin requests are off: put a token in a file "
    "((umask 077; openssl rand -hex 32 > /etc/sekisho/admin.token)), set "
    "global.admin_token_file to its path, reload, and send Authorization: Bearer <token>\n"
)


class TokenError(Exception):
    """The token file cannot be used; the message starts with the key path."""


@dataclass(frozen=True)
class AdminPolicy:
    token: bytes | None = field(default=None, repr=False)  # None: state changes are off
    allow: tuple[AccessEntry, ...] = ALL_NETWORKS  # as a listener's allow (conf.access)

    def allows(self, peer: str) -> bool:
        addr = client_address(peer)
        return addr is not None and decide(self.allow, addr)


def authorize(
    method: str,
    headers: Sequence[tuple[bytes, bytes]],
    peer: str,
    policy: AdminPolicy,
    own: Collection[Origin],
) -> AdminResponse | None:
    """The refusal for this request, or None to serve it. `headers` have lower-cased
    names (h11's); `own` are the origins of this listener (`own_origins`)."""
    if not policy.allows(peer):
        return AdminResponse(
            403, b"client not allowed (global.metrics_allow)\n", headers=[("Connection", "close")]
        )
    if method in READ_ONLY:
        return None
    if policy.token is None:
        return AdminResponse.text(OFF, 403)
    origins = [v for n, v in headers if n == b"origin"]
    if origins and (len(origins) > 1 or parse_origin(origins[0]) not in own):
        shown = ", ".join(repr(v.decode("latin-1")) for v in origins)
        return AdminResponse.text(
            f"cross-origin request refused: Origin {shown} is not this admin listener\n", 403
        )
    given = [v for n, v in headers if n == b"authorization"]
    scheme, _, credential = given[0].strip().partition(b" ") if len(given) == 1 else (b"", b"", b"")
    credential = credential.strip()
    if scheme.lower() != b"bearer" or not credential:
        return _unauthorized(
            'Bearer realm="sekisho admin"', "this request needs Authorization: Bearer <token>"
        )
    # Digests of equal length: compare_digest then leaks nothing, not even the length.
    if not hmac.compare_digest(hashlib.sha256(credential).digest(), hashlib.sha256(policy.token).digest()):
        return _unauthorized('Bearer realm="sekisho admin", error="invalid_token"', "wrong token")
    return None


def _unauthorized(challenge: str, text: str) -> AdminResponse:
    return AdminResponse(401, f"{text}\n".encode(), headers=[("WWW-Authenticate", challenge)])


def _host(text: str) -> str:
    host = text.strip("[]").split("%", maxsplit=1)[0].lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def parse_origin(value: bytes) -> Origin | None:
    """`Origin: http://127.0.0.1:9100` -> ("http", "127.0.0.1", 9100); None if not one."""
    try:
        url = urllib.parse.urlsplit(value.decode("ascii").strip())
        port = url.port
    except (UnicodeDecodeError, ValueError):
        return None
    if url.scheme not in ("http", "https") or not url.hostname or url.path or url.query or url.fragment:
        return None
    return url.scheme, _host(url.hostname), port or (443 if url.scheme == "https" else 80)


def own_origins(local: Any, configured: Address | None) -> frozenset[Origin]:
    """The origins a page served by this listener has: the address the client reached
    (`local`, the socket's own address) and the configured one when it is a name.
    The Host header is not one of them: under DNS rebinding the page sets it."""
    out: set[Origin] = set()
    if isinstance(local, tuple) and len(local) >= 2:
        host, port = _host(str(local[0])), int(local[1])
        out.add(("http", host, port))
        if _loopback(host):
            out.add(("http", "localhost", port))
    if configured is not None and not configured.is_ip:
        out.add(("http", _host(configured.host), configured.port))
    return frozenset(out)


def load_token(path: str) -> tuple[bytes, list[str]]:
    """The token in `path`, stripped, and warnings; raises TokenError."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"{TOKEN_KEY}: {path} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise TokenError(f"{TOKEN_KEY}: cannot read {path}: {exc.strerror}") from None
    token = raw.strip()
    if not token:
        raise TokenError(f"{TOKEN_KEY}: {path} is empty (it holds the admin API token)")
    if len(raw) > MAX_TOKEN_FILE or not all(0x21 <= b <= 0x7E for b in token):
        raise TokenError(f"{TOKEN_KEY}: {path} must hold one token: printable ASCII, no spaces, under 4 kB")
    warnings = []
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(f"{TOKEN_KEY}: {path} is readable by group/other (mode {mode:04o}); chmod 600 it")
    if len(token) < SHORT_TOKEN:
        warnings.append(f"{TOKEN_KEY}: the token is {len(token)} characters; use more (openssl rand -hex 32)")
    return token, warnings


def admin_policy(settings: GlobalSettings) -> tuple[AdminPolicy, list[str]]:
    """The policy `settings` ask for, reading the token file; raises TokenError.
    Without an admin listener there is nothing to guard and nothing is read."""
    token: bytes | None = None
    warnings: list[str] = []
    if settings.metrics is not None and settings.admin_token_file is not None:
        token, warnings = load_token(settings.admin_token_file)
    return AdminPolicy(token, settings.metrics_allow), warnings


def exposure_warnings(settings: GlobalSettings) -> list[str]:
    """What `sekisho check` and the daemon warn about: read-only pages open beyond this host."""
    address = settings.metrics
    if address is None or _loopback(address.host):
        return []
    if not any(admits(e) and network_of(e).prefixlen == 0 for e in settings.metrics_allow):
        return []
    return [
        f"global.metrics: {address} is not a loopback address and no global.metrics_allow limits "
        "who may use it: /metrics, /status and /api/status are open to anyone who can reach it"
    ]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(_host(host)).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------- the server


class AdminServer:
    def __init__(self, policy: AdminPolicy | None = None) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: asyncio.Server | None = None
        self.policy = policy if policy is not None else AdminPolicy()  # swapped on reload
        self.address: Address | None = None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$"
        self._routes.append((method, re.compile(regex), handler))

    async def start(self, sock: socket.socket, address: Address | None = None) -> None:
        self.address = address
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def dispatch(self, request: AdminRequest) -> AdminResponse:
        allowed = []
        for method, regex, handler in self._routes:
            m = regex.match(request.path)
            if m is None:
                continue
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                allowed.append(method)
                continue
            request.params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            try:
                return await handler(request)
            except Exception:
                log.exception("admin handler for %s %s failed", request.method, request.path)
                return AdminResponse.text("internal error\n", 500)
        if allowed:
            return AdminResponse(405, b"method not allowed\n", headers=[("Allow", ", ".join(allowed))])
        return AdminResponse.text("not found\n", 404)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else ""
        own = own_origins(writer.get_extra_info("sockname"), self.address)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                refusal = authorize(request.method, request.headers, peer, self.policy, own)
                if refusal is not None:
                    log.info(
                        "admin: %s %s from %s refused (%d)",
                        request.method,
                        request.path,
                        peer,
                        refusal.status,
                    )
                response = refusal if refusal is not None else await self.dispatch(request)
                headers = [
                    ("Content-Type", response.content_type),
                    ("Content-Length", str(len(response.body))),
                    ("Cache-Control", "no-store"),
                    *response.headers,
                ]
                writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
                if request.method != "HEAD":
                    writer.write(conn.send(h11.Data(data=response.body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass
        except Exception:
            # The connection's task is asyncio's (start_server): nobody else would see this.
            log.exception("admin: connection from %s failed", peer)
        finally:
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> AdminRequest | None:
        method = target = ""
        headers: list[tuple[bytes, bytes]] = []
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                async with asyncio.timeout(30):
                    data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                method, target = event.method.decode(), event.target.decode()
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                url = urllib.parse.urlsplit(target)
                query = urllib.parse.parse_qs(url.query)
                return AdminRequest(method, url.path, query, {}, bytes(body), headers)
            else:  # ConnectionClosed, PAUSED
                return None
