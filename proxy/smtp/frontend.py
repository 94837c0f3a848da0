"""The I/O side of the SMTP edge: one Protocol per client, one task per session.

The task pulls events from the sans-IO `Envelope` and does what they say:
write a reply, dial a backend and replay the envelope, move message bytes,
upgrade to TLS. Pipelined commands are handled one after another, so replies
leave in command order. SMTP is a conversation with waits on both sides, so a
task per connection (not a callback chain) keeps it readable; the byte-moving
part is plain `transport.write` with backpressure both ways.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

import conf
from lb.pool import PoolSet
from proxy.access import ClientFilter
from proxy.accesslog import AccessLog
from proxy.http.tls import load_cert_chain, server_context
from proxy.linger import linger_close
from proxy.smtp.backend import (
    BackendError,
    BackendLink,
    BackendUnavailable,
    ClientInfo,
    XclientUnavailable,
    open_backend,
)
from proxy.smtp.envelope import (
    NEED_DATA,
    PAUSED,
    AbortData,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    Envelope,
    Policy,
    Quit,
    Recipient,
    Respond,
    StartTls,
    State,
)
from proxy.smtp.replies import Reply
from proxy.smtp.stats import NO_ROUTE, SmtpStats

log = logging.getLogger("sekisho.smtp")

READ_HIGH_WATER = 1 << 20  # pause reading the client beyond this much unprocessed input
TLS_HANDSHAKE_TIMEOUT = 30.0

R_UNAVAILABLE = Reply.of(451, "4.4.1 No mail server available for this domain; try again later")
R_NO_XCLIENT = Reply.of(451, "4.3.0 Mail server cannot take the client's address (XCLIENT); try again later")
R_BACKEND_LOST = Reply.of(451, "4.4.2 Connection to the mail server lost; try again later")
R_TIMEOUT = Reply.of(421, "4.4.2 Timeout; closing connection")
R_SHUTDOWN = Reply.of(421, "4.3.2 Service shutting down; closing connection")
R_DENIED = Reply.of(554, "5.7.1 Access denied")

_RECIPIENT_TAGS = {"relay_denied", "other_route", "too_many"}


class SmtpFrontend:
    def __init__(
        self, config: conf.SmtpListener, pools: PoolSet, stats: SmtpStats, access_log: AccessLog | None = None
    ) -> None:
        self.config = config
        # One line per session when the access log is on (AccessLog.session).
        self.access_log = access_log if access_log is not None and access_log.enabled else None
        self.pools = pools
        self.stats_ = stats
        self.policy = Policy.from_config(config)
        self.access = ClientFilter(config.allow)
        self.max_connections = config.max_connections
        self.sessions: set[SmtpSession] = set()
        self.retired = False
        self._empty = asyncio.Event()
        self._empty.set()
        self.tls: ssl.SSLContext | None = None
        if config.tls is not None:
            ctx = server_context()  # TLS 1.2+, AEAD suites only, as on HTTPS listeners
            load_cert_chain(ctx, config.tls.cert, config.tls.key)
            self.tls = ctx

    def make_protocol(self, on_close: Callable[[], None]) -> asyncio.BaseProtocol:
        return SmtpSession(self, on_close)

    def ssl_context(self) -> ssl.SSLContext | None:
        return None  # TLS is STARTTLS inside the session, never on accept

    def allowed(self, ip: str) -> bool:
        return self.access.admits(ip)

    def stats(self) -> dict[str, Any]:
        snap = self.stats_.snapshot()
        snap["active"] = len(self.sessions)
        return snap

    def retire(self) -> None:
        """Stop taking new work: idle sessions close now, busy ones after their transaction."""
        self.retired = True
        for session in list(self.sessions):
            session.retire()

    async def drain(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            for session in list(self.sessions):
                session.abort()

    def _add(self, session: SmtpSession) -> None:
        self.sessions.add(session)
        self._empty.clear()

    def _remove(self, session: SmtpSession) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._empty.set()


class SmtpSession(asyncio.Protocol):
    def __init__(self, frontend: SmtpFrontend, on_close: Callable[[], None]) -> None:
        self.frontend = frontend
        self.stats = frontend.stats_
        self.timeouts = frontend.config.timeouts
        self.on_close = on_close
        self.env = Envelope(frontend.policy)
        self.transport: asyncio.Transport | None = None
        self.backend: BackendLink | None = None
        self.peer: tuple[str, int] = ("0.0.0.0", 0)
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.task: asyncio.Task[None] | None = None
        self._input = asyncio.Event()
        self._lost = False
        self._reading_paused = False
        self._retiring = False
        self._data_failed = False
        self._tls_upgrade: list[bytes] | None = None
        self._writable = asyncio.Event()  # cleared while the client's transport is over its high-water mark
        self._writable.set()
        self._lingering = False  # closing after an error: discard what the client still sends
        self._client_eof = asyncio.Event()
        # for the session log line
        self.started = time.monotonic()
        self.last_code = 0  # the last reply we sent
        self.result = "closed"  # the client went away, unless we know better
        self.used: list[tuple[str, str]] = []  # (route domain, pool/server) of each backend opened
        self.bytes_relayed = 0
        self.messages = 0

    # ------------------------------------------------------------ Protocol

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't check.
        self.transport = transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        local = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.local = (str(local[0]), int(local[1]))
        self.frontend._add(self)
        if not self.frontend.allowed(self.peer[0]):
            self.stats.refused_connections += 1
            self.last_code, self.result = 554, "denied"
            transport.write(R_DENIED.encode())
            transport.close()
            return
        self.stats.connections += 1
        self.last_code = 220
        transport.write(self.env.greeting())
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"smtp {self.peer}")

    def data_received(self, data: bytes) -> None:
        if self._tls_upgrade is not None:
            # Once start_tls has swapped protocols, what reaches us is decrypted
            # data that may arrive before our coroutine resumes: keep it for
            # after tls_started(). (Cleartext pipelined behind STARTTLS was
            # already dropped by the envelope.)
            self._tls_upgrade.append(data)
            return
        if self._lingering:
            return
        self.env.receive_data(data)
        self._input.set()
        if self.env.buffered > READ_HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._client_eof.set()
        self.env.receive_data(b"")
        self._input.set()
        # Keep the write side open for our last replies (TLS transports close anyway).
        return None if self.env.tls_active else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._client_eof.set()
        self.env.receive_data(b"")
        self._input.set()
        self._writable.set()
        if self.task is None:
            self._finish()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------ control

    def retire(self) -> None:
        self._retiring = True
        self._input.set()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.backend is not None:
            self.backend.close()

    def _finish(self) -> None:
        self.frontend._remove(self)
        self.on_close()
        if self.frontend.access_log is not None:
            self.frontend.access_log.session(
                protocol="SMTP",
                client=self.peer[0],
                listener=str(self.frontend.config.listen[0]),
                status=self.last_code,
                route=",".join(dict.fromkeys(d for d, _ in self.used)),
                upstream=",".join(dict.fromkeys(u for _, u in self.used)),
                bytes_out=0,
                bytes_in=self.bytes_relayed,
                duration=time.monotonic() - self.started,
                result=self.result,
                agent=self.env.helo or "-",
                messages=self.messages,
            )

    # ------------------------------------------------------------ session

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if data[:3].isdigit():
                self.last_code = int(data[:3])

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception:
            log.exception("smtp session %s failed", self.peer)
        finally:
            if self.backend is not None:
                if self.env.state is State.DATA or self._lost:
                    self.backend.close()
                else:
                    await self._quit_backend()
            transport = self.transport
            if transport is not None and self._lingering and not self._client_eof.is_set():
                # Closing after an error reply with client input unread would reset the
                # connection under that reply: linger (proxy.linger). The session ends,
                # through connection_lost, once the lingering does.
                self.task = None
                linger_close(transport, self)
            else:
                if transport is not None:
                    transport.close()
                self._finish()

    async def _loop(self) -> None:
        env = self.env
        while True:
            if self._retiring and env.idle:
                self.result = "shutdown"
                self._write(R_SHUTDOWN.encode())
                return
            if not self._writable.is_set() and not await self._client_reads():
                return
            self._input.clear()
            ev = env.next_event()
            if ev is NEED_DATA:
                if self._reading_paused and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                timeout = self.timeouts.data if env.state is State.DATA else self.timeouts.command
                try:
                    async with asyncio.timeout(timeout):
                        await self._input.wait()
                except TimeoutError:
                    self.stats.timeouts += 1
                    self.result = "timeout"
                    self._write(R_TIMEOUT.encode())
                    return
                continue
            if ev is PAUSED:  # only while an answer is owed; we always answer inline
                raise RuntimeError("envelope paused with no answer owed")
            if isinstance(ev, ConnectionClosed):
                return
            if isinstance(ev, Respond):
                self._count_rejection(ev.tag)
                self._write(ev.reply.encode())
                if ev.close:
                    self._lingering = True
                    return
            elif isinstance(ev, DataChunk):
                await self._forward(ev.data)
            elif isinstance(ev, Recipient):
                self._write(env.answer(await self._recipient(ev)))
            elif isinstance(ev, DataStart):
                self._write(env.answer(await self._data_start()))
            elif isinstance(ev, DataEnd):
                self._write(env.answer(await self._data_end(ev.data)))
            elif isinstance(ev, AbortData):
                self._abort_message(ev)
            elif isinstance(ev, StartTls):
                if not await self._start_tls(ev.reply):
                    return
            elif isinstance(ev, Quit):
                await self._quit_backend()
                self.result = "quit"
                self._write(ev.reply.encode())
                return

    async def _client_reads(self) -> bool:
        """Our replies pile up unread (a client pipelining without reading): process no
        more commands until it reads, so its input waits in our bounded buffer and then
        in the kernel. False when it will not read within the command timeout."""
        try:
            async with asyncio.timeout(self.timeouts.command):
                await self._writable.wait()
        except TimeoutError:
            self.stats.timeouts += 1
            if self.transport is not None:
                self.transport.abort()
            return False
        return not self._lost

    # ------------------------------------------------------------ events

    def _route_name(self) -> str:
        txn = self.env.transaction
        if txn is not None and txn.route is not None:
            return txn.route.domain
        return self.backend.route.domain if self.backend is not None else NO_ROUTE

    def _count_rejection(self, tag: str | None) -> None:
        if tag is None:
            return
        self.stats.rejected_commands[tag] += 1
        if tag in _RECIPIENT_TAGS:
            self.stats.recipients_rejected[tag] += 1
        if tag == "relay_denied":
            self.stats.outcome(NO_ROUTE, "rejected_relay")

    async def _recipient(self, ev: Recipient) -> Reply:
        link = self.backend
        if link is not None and (link.route is not ev.route or not link.alive):
            await self._quit_backend()
            link = None
        if link is None:
            try:
                link = await self._open(ev.route)
            except BackendUnavailable as exc:
                self.stats.outcome(ev.route.domain, "temp_fail")
                return R_NO_XCLIENT if isinstance(exc, XclientUnavailable) else R_UNAVAILABLE
        t = self.timeouts.command
        try:
            if link.txn != ev.transaction:
                if link.in_txn:
                    await link.command("RSET", t)
                    link.in_txn = False
                txn = self.env.transaction
                assert txn is not None
                r = await link.command(self._mail_line(link, txn.sender.forward(), txn.params), t)
                if not r.positive:
                    return r
                link.txn, link.in_txn = ev.transaction, True
            r = await link.command(f"RCPT TO:{ev.path.forward()}", t)
        except BackendError as exc:
            log.warning("smtp backend %s: %s", link.backend.key, exc)
            self._drop_backend()
            self.stats.outcome(ev.route.domain, "temp_fail")
            return R_BACKEND_LOST
        if not r.positive:
            self.stats.recipients_rejected["backend"] += 1
        return r

    async def _open(self, route: conf.SmtpRoute) -> BackendLink:
        env = self.env
        client = ClientInfo(
            addr=self.peer[0],
            port=self.peer[1],
            helo=env.helo or "unknown",
            esmtp=env.esmtp,
            local_addr=self.local[0],
            local_port=self.local[1],
        )
        link = await open_backend(
            route,
            self.frontend.pools[route.pool],
            client,
            self.timeouts.connect,
            on_connect_failure=self._connect_failed,
            on_xclient_missing=lambda pool, server: self._xclient_missing(route.domain, pool, server),
        )
        self.backend = link
        self.used.append((route.domain, f"{route.pool}/{link.backend.key}"))
        return link

    def _connect_failed(self, pool: str) -> None:
        self.stats.backend_connect_failures[pool] += 1

    def _xclient_missing(self, route: str, pool: str, server: str) -> None:
        # Logged once per server (the stats outlive reloads), counted every time.
        key = (pool, server)
        if not self.stats.xclient_refused[key]:
            log.warning(
                "smtp backend %s (pool %s) does not offer XCLIENT, which route %s asks for: not used "
                "for its mail (logged once per server; sekisho_smtp_xclient_refused_total counts each time)",
                server,
                pool,
                route,
            )
        self.stats.xclient_refused[key] += 1

    @staticmethod
    def _mail_line(link: BackendLink, sender: str, params: dict[str, str]) -> str:
        parts = [f"MAIL FROM:{sender}"]
        if "SIZE" in params and "SIZE" in link.keywords:
            parts.append(f"SIZE={params['SIZE']}")
        if "BODY" in params and "8BITMIME" in link.keywords:
            parts.append(f"BODY={params['BODY']}")
        return " ".join(parts)

    async def _data_start(self) -> Reply:
        link = self.backend
        self._data_failed = False
        route = self._route_name()
        if link is None or not link.alive:
            self._drop_backend()
            self.stats.outcome(route, "temp_fail")
            return R_BACKEND_LOST
        try:
            r = await link.command("DATA", self.timeouts.command)
        except BackendError:
            self._drop_backend()
            self.stats.outcome(route, "temp_fail")
            return R_BACKEND_LOST
        if r.code != 354:
            self.stats.outcome(route, "temp_fail" if r.code < 500 else "error")
        return r

    async def _forward(self, data: bytes) -> None:
        link = self.backend
        if self._data_failed or link is None:
            return
        try:
            link.write(data)
            self.stats.bytes_relayed[link.route.domain] += len(data)
            self.bytes_relayed += len(data)
            await link.drain()
        except BackendError:
            self._data_failed = True

    async def _data_end(self, data: bytes) -> Reply:
        route = self._route_name()
        await self._forward(data)
        link = self.backend
        if self._data_failed or link is None:
            self._drop_backend()
            self.stats.outcome(route, "temp_fail")
            return R_BACKEND_LOST
        try:
            r = await link.reply(self.timeouts.data)
        except BackendError as exc:
            log.warning("smtp backend %s after DATA: %s", link.backend.key, exc)
            self._drop_backend()
            self.stats.outcome(route, "temp_fail")
            return R_BACKEND_LOST
        link.in_txn = False
        if r.positive:
            self.messages += 1
            self.stats.outcome(route, "relayed")
        else:
            self.stats.outcome(route, "temp_fail" if r.code < 500 else "error")
        return r

    def _abort_message(self, ev: AbortData) -> None:
        # The backend got part of a message and no terminating dot: closing the
        # connection makes it discard that message.
        route = self._route_name() if self.backend is not None else NO_ROUTE
        self._drop_backend()
        self.stats.outcome(route, "error")
        self.stats.rejected_commands[ev.tag] += 1
        self._write(ev.reply.encode())

    async def _start_tls(self, reply: Reply) -> bool:
        ctx = self.frontend.tls
        transport = self.transport
        assert ctx is not None and transport is not None
        self._write(reply.encode())
        loop = asyncio.get_running_loop()
        self._tls_upgrade = []
        try:
            new = await loop.start_tls(
                transport, self, ctx, server_side=True, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("smtp %s: STARTTLS failed: %s", self.peer, exc)
            self.stats.starttls_failures += 1
            transport.abort()
            return False
        early, self._tls_upgrade = self._tls_upgrade, None
        if new is None:
            return False
        self.transport = new
        self.stats.starttls += 1
        self.env.tls_started()
        for data in early:
            self.data_received(data)
        return True

    def _drop_backend(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    async def _quit_backend(self) -> None:
        link, self.backend = self.backend, None
        if link is not None:
            await link.quit(min(2.0, self.timeouts.command))
