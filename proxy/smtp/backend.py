"""The backend leg: a small SMTP client over one asyncio Protocol.

`open_backend` dials a server of the route's pool (lb.dial.Attempts: pick,
retry, passive health), reads the banner, says EHLO with the client's HELO name and
passes the client's identity on: XCLIENT when the route asks for it, a PROXY
protocol header when the pool asks for one. XCLIENT fails closed: a server
that does not offer it (with ADDR) is not used for a route that asks for it,
since it would take sekisho's own address for the client's, and a backend
trusting that address (Postfix `mynetworks`) would trust every sender. The
next server of the pool is tried; when none offers it, `XclientUnavailable`.
Every network failure becomes `BackendError`: this module is the one place
the backend leg's exceptions are caught.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import conf
from lb import proxy_protocol
from lb.dial import Attempts, dial
from lb.errors import LbError, NoBackendAvailable
from lb.pool import Backend, BackendPool
from proxy.smtp.errors import SmtpError, SmtpProtocolError
from proxy.smtp.replies import Reply, ReplyParser, ehlo_keywords

log = logging.getLogger("sekisho.smtp")

XCLIENT_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO")


class BackendError(SmtpError):
    """The backend connection failed, timed out, closed or spoke nonsense."""


class BackendUnavailable(BackendError):
    """No server of the route's pool could be reached (or would talk to us)."""


class XclientUnavailable(BackendUnavailable):
    """The route asks for XCLIENT and no server that could be reached offers it."""


class XclientNotOffered(BackendError):
    """This server does not offer XCLIENT with ADDR (the route asks for it)."""


@dataclass(frozen=True)
class ClientInfo:
    addr: str
    port: int
    helo: str
    esmtp: bool
    local_addr: str = "127.0.0.1"
    local_port: int = 25


class BackendProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ReplyParser()
        self.closed = False
        self.error: str | None = None
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        self._wake.set()

    def eof_received(self) -> bool | None:
        self.closed = True
        self._wake.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = str(exc) if exc else None
        self._wake.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()


class BackendLink:
    """One connection to one backend server, for one route."""

    def __init__(
        self,
        route: conf.SmtpRoute,
        pool: BackendPool,
        backend: Backend,
        transport: asyncio.Transport,
        protocol: BackendProtocol,
    ) -> None:
        self.route = route
        self.pool = pool
        self.backend = backend
        self.transport = transport
        self.protocol = protocol
        self.keywords: dict[str, str] = {}
        self.txn: int | None = None  # the client transaction our MAIL FROM belongs to
        self.in_txn = False  # the server holds an open transaction (MAIL accepted, no end yet)
        self._released = False

    @property
    def alive(self) -> bool:
        return not self.protocol.closed and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.alive:
            raise BackendError("backend connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        await self.protocol._writable.wait()
        if not self.alive:
            raise BackendError("backend connection closed")

    async def reply(self, timeout: float) -> Reply:
        proto = self.protocol
        try:
            async with asyncio.timeout(timeout):
                while True:
                    proto._wake.clear()
                    try:
                        reply = proto.parser.next_reply()
                    except SmtpProtocolError as exc:
                        raise BackendError(str(exc)) from None
                    if reply is not None:
                        return reply
                    if proto.closed:
                        raise BackendError("backend closed the connection")
                    await proto._wake.wait()
        except TimeoutError:
            raise BackendError("backend reply timed out") from None

    async def command(self, line: str, timeout: float) -> Reply:
        self.write(line.encode("ascii") + b"\r\n")
        return await self.reply(timeout)

    def close(self) -> None:
        """Close now (mid-DATA this abandons the message: no terminating dot was sent)."""
        if not self.transport.is_closing():
            self.transport.close()
        if not self._released:
            self._released = True
            self.pool.drop(self.backend)

    async def quit(self, timeout: float = 2.0) -> None:
        if self.alive:
            try:
                await self.command("QUIT", timeout)
            except BackendError:
                pass
        self.close()


def xtext(value: str) -> str:
    """RFC 3461 xtext: '+', '=' and anything outside ! .. ~ as +HH."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in value)


def xclient_line(client: ClientInfo, offered: str) -> str:
    names = {w.upper() for w in offered.split()}
    addr = client.addr
    if ":" in addr:
        addr = "IPV6:" + addr
    values = {
        "NAME": "[UNAVAILABLE]",
        "ADDR": addr,
        "PORT": str(client.port),
        "PROTO": "ESMTP" if client.esmtp else "SMTP",
        "HELO": client.helo,
    }
    attrs = [f"{k}={xtext(values[k])}" for k in XCLIENT_ATTRS if k in names]
    return "XCLIENT " + " ".join(attrs)


def proxy_header(version: str, client: ClientInfo) -> bytes:
    """The PROXY protocol header the pool asks for, describing the client's connection to us."""
    return proxy_protocol.encode(version, (client.addr, client.port), (client.local_addr, client.local_port))


async def open_backend(
    route: conf.SmtpRoute,
    pool: BackendPool,
    client: ClientInfo,
    timeout: float,
    *,
    on_connect_failure: Callable[[str], None],
    on_xclient_missing: Callable[[str, str], None],
) -> BackendLink:
    """Dial, banner, EHLO, identity; raises BackendUnavailable (XclientUnavailable).

    A server that accepts the connection but will not talk (a 4xx/5xx banner,
    a refused EHLO or XCLIENT, a timeout) counts as a failed connect, and the
    next server of the pool is tried, as lb.dial does for refused connects.
    A server without the XCLIENT the route asks for is told QUIT and skipped
    the same way, reported through `on_xclient_missing(pool, server)` and not
    held against its health (it is up; it is only wrong for this route). No
    transaction has begun on a skipped server, so nothing is delivered twice.
    """
    preamble: Callable[[Backend], bytes] | None = None
    if pool.proxy_protocol is not None:
        version = pool.proxy_protocol

        def preamble(_: Backend) -> bytes:
            return proxy_header(version, client)

    # A server that would not talk, or lacks XCLIENT, ends a round of connects
    # (lb.dial.dial); the next round excludes it and every server tried before.
    attempts = Attempts(pool, client.addr)
    reason = ""  # why the last connected server was not used
    while True:
        try:
            transport, protocol, backend = await dial(attempts, BackendProtocol, timeout, preamble)
        except LbError as exc:
            no_xclient = attempts.skips  # servers skipped for want of XCLIENT
            if not (no_xclient and isinstance(exc, NoBackendAvailable)):
                on_connect_failure(pool.name)  # (servers skipped for XCLIENT are counted apart)
            error = XclientUnavailable if no_xclient else BackendUnavailable
            raise error(f"{reason}; {exc}" if reason else str(exc)) from None
        link = BackendLink(route, pool, backend, transport, protocol)
        try:
            await _handshake(link, route, pool, client, timeout)
        except XclientNotOffered as exc:
            await link.quit(min(2.0, timeout))  # (the link gives the server back)
            on_xclient_missing(pool.name, backend.key)
            reason = f"{backend.key}: {exc}"
            attempts.skipped(backend, reason, released=True)
        except BackendError as exc:
            log.warning("smtp backend %s (pool %s): %s", backend.key, pool.name, exc)
            link.close()  # (the link gives the server back)
            reason = f"{backend.key}: {exc}"
            attempts.failed(backend, reason, released=True)
            on_connect_failure(pool.name)
        except BaseException:
            link.close()  # cancelled mid-handshake: the server is given back all the same
            raise
        else:
            return link
        if not attempts.again():
            raise XclientUnavailable(reason) if attempts.skips else BackendUnavailable(reason)


async def _handshake(
    link: BackendLink, route: conf.SmtpRoute, pool: BackendPool, client: ClientInfo, timeout: float
) -> None:
    banner = await link.reply(timeout)
    if banner.code != 220:
        raise BackendError(f"banner {banner}")
    link.keywords = await _ehlo(link, client.helo, timeout)
    if not route.xclient:
        return
    offered = link.keywords.get("XCLIENT")
    if pool.proxy_protocol is None and (offered is None or "ADDR" not in offered.upper().split()):
        # Without the client's address the server would take ours for it: fail closed.
        raise XclientNotOffered("XCLIENT not offered" if offered is None else f"XCLIENT {offered} lacks ADDR")
    if offered is not None:
        r = await link.command(xclient_line(client, offered), timeout)
        if r.code != 220:
            raise BackendError(f"XCLIENT refused: {r}")
        link.keywords = await _ehlo(link, client.helo, timeout)


async def _ehlo(link: BackendLink, helo: str, timeout: float) -> dict[str, str]:
    r = await link.command(f"EHLO {helo}", timeout)
    if r.positive:
        return ehlo_keywords(r)
    r = await link.command(f"HELO {helo}", timeout)
    if not r.positive:
        raise BackendError(f"HELO refused: {r}")
    return {}
