"""What an HTTPS listener with `acme = true` needs from the ACME side, kept out of the
request path: the certificate file of every route host, and the TLS-ALPN-01 handshake."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

import conf
from proxy.acme.board import BOARD
from proxy.acme.store import cert_path
from proxy.acme.tlsalpn import NotTls, client_hello
from proxy.http.tls import SniSelector

HELLO_WAIT = 5.0  # seconds a client may take to send its ClientHello while a challenge is open
HELLO_MAX = 16384 + 5 * 4  # a ClientHello larger than this is nobody's validation
UNRECOGNIZED_NAME_ALERT = b"\x15\x03\x03\x00\x02\x02\x70"  # fatal alert 112 (RFC 6066 3)


def acme_cert_paths(listener: conf.HttpListener) -> dict[str, str]:
    """host -> the key+chain file the ACME service keeps for it (it may not exist yet)."""
    assert listener.acme is not None
    hosts = dict.fromkeys(r.host for r in listener.routes if r.host and not r.host.startswith("*."))
    return {h: str(cert_path(listener.acme.state_dir, h)) for h in hosts if h}


def needs_hello(selector: SniSelector) -> bool:
    """Whether accepted connections must be looked at before the handshake: while a
    TLS-ALPN-01 challenge is open, or while a managed host has no certificate yet."""
    return BOARD.tls_alpn_open or selector.missing


async def context_for_hello(sock: socket.socket, selector: SniSelector) -> ssl.SSLContext | None:
    """The context to shake hands with, after peeking at the ClientHello: the challenge's
    own when it is the CA's TLS-ALPN-01 validation (SNI of the host, ALPN acme-tls/1 and
    nothing else, RFC 8737 3), else the listener's. None: the client asks for a managed
    host without a certificate yet; it has been sent an unrecognized_name alert (asyncio
    closes a failed handshake without sending its alert, so we write it ourselves)."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(HELLO_WAIT):
            while len(data) < HELLO_MAX:
                try:
                    data = sock.recv(HELLO_MAX, socket.MSG_PEEK)
                except BlockingIOError:
                    await _readable(loop, sock)
                    continue
                if not data:
                    break  # closed
                hello = client_hello(data)
                if hello is None:
                    await asyncio.sleep(0.01)  # part of it: the rest is on its way (still readable)
                    continue
                if hello.is_acme_validation:
                    return BOARD.tls_alpn(hello.server_name) or selector.context
                if selector.refuses(hello.server_name):
                    with contextlib.suppress(OSError):
                        sock.send(UNRECOGNIZED_NAME_ALERT)
                    return None
                break
    except (TimeoutError, NotTls, OSError):
        pass
    return selector.context  # the handshake decides what happens to it


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
