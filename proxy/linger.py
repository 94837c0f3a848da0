"""Lingering close, as nginx (`lingering_close`) and Apache do it.

Closing a TCP socket while client input is still unread makes the kernel send RST
instead of FIN, and an RST that reaches the client before it has read our last
answer destroys that answer: a client still uploading the body of a request we
refused sees "connection reset" instead of the 413 that says why. So after the
answer we send our FIN (`write_eof`), read and discard what the client still sends
until it closes its side, and only then close: bounded by LINGER_QUIET seconds
without input and LINGER_TOTAL seconds in all.

The transport is handed to a small protocol of its own for that time; the owner's
`connection_lost` still comes at the very end, so the connection counts as open
until it is gone (and a frontend's drain can still abort it).
"""

from __future__ import annotations

import asyncio

LINGER_QUIET = 2.0  # seconds without client input (nginx lingering_timeout: 5 s)
LINGER_TOTAL = 30.0  # seconds in all (nginx lingering_time: 30 s)


class _Linger(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, owner: asyncio.BaseProtocol) -> None:
        self.transport = transport
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.until = now + LINGER_TOTAL
        self.quiet_until = now + LINGER_QUIET
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self.quiet_until, self._on_timer)

    def data_received(self, data: bytes) -> None:
        # Discarded. The timer is not moved per read; it re-arms itself when it fires early.
        self.quiet_until = self.loop.time() + LINGER_QUIET

    def eof_received(self) -> bool:
        return False  # the client is done sending: close now, nothing is left unread

    def _on_timer(self) -> None:
        end = min(self.quiet_until, self.until)
        if end - self.loop.time() > 0.001:
            self.timer = self.loop.call_at(end, self._on_timer)
            return
        self.timer = None
        self.transport.abort()  # (a client that neither reads nor closes may hold our buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.owner.connection_lost(exc)


def linger_close(transport: asyncio.Transport, owner: asyncio.BaseProtocol) -> None:
    """Close `transport` once what was written is sent, lingering as above where
    TCP half-close allows it (not over TLS, which closes at once as before)."""
    if transport.is_closing() or not transport.can_write_eof():
        transport.close()
        return
    transport.set_protocol(_Linger(transport, owner))
    transport.write_eof()
    if not transport.is_reading():
        transport.resume_reading()
