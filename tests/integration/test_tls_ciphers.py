"""A client that offers only CBC suites in TLS 1.2 is refused; an AEAD one is served.

On a real HTTPS listener (an RSA and an ECDSA certificate, chosen by SNI) and on SMTP
STARTTLS, with Python's ssl as the client and, as testssl does, with `openssl s_client`.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

import conf
from lb.pool import PoolSet
from proxy.listener import Listener, bind
from proxy.smtp.frontend import SmtpFrontend
from proxy.smtp.stats import SmtpStats
from tests.integration.http_backends import Proxy, config
from tests.support import require_tool

# TLS 1.2 CBC suites (HMAC-SHA1 and HMAC-SHA256/384) that Python's default server list offered.
CBC = ":".join(
    (
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-RSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-RSA-AES256-SHA384",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AES128-SHA256",
        "AES128-SHA",
    )
)
AEAD = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
NAMES = {trustme.KeyType.ECDSA: "ecdsa.example.test", trustme.KeyType.RSA: "rsa.example.test"}
ROUTES = '[[http.route]]\npath = "/"\nstatus = 404\n'


def _certs(tmp: Path) -> tuple[Path, list[conf.TlsCert]]:
    """One CA file that trusts both, and an ECDSA and an RSA certificate."""
    cas: list[trustme.CA] = []
    certs = []
    for key_type, name in NAMES.items():
        ca = trustme.CA(key_type=key_type)
        leaf = ca.issue_cert(name, "127.0.0.1", key_type=key_type)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(tmp / f"{name}.key"))
        certs.append(conf.TlsCert(str(tmp / f"{name}.pem"), str(tmp / f"{name}.key")))
        cas.append(ca)
    bundle = tmp / "ca.pem"
    bundle.write_bytes(b"".join(ca.cert_pem.bytes() for ca in cas))
    return bundle, certs


def _client(ca: Path, ciphers: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    return ctx


def _handshake(port: int, name: str, ctx: ssl.SSLContext) -> str:
    """The suite agreed on; raises ssl.SSLError when the server refuses."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.version() == "TLSv1.2"
        suite = tls.cipher()
        assert suite is not None
        return suite[0]


def _s_client(port: int, name: str, ca: Path, cipher: str) -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl")
    target = [
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        name,
        "-CAfile",
        str(ca),
        "-verify_return_error",
    ]
    return subprocess.run(
        [openssl, "s_client", *target, "-tls1_2", "-cipher", cipher, "-brief"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.asyncio
async def test_https_refuses_cbc_and_serves_aead(tmp_path: Path) -> None:
    ca, certs = _certs(tmp_path)
    tls = "tls = [" + ", ".join(f'{{ cert = "{c.cert}", key = "{c.key}" }}' for c in certs) + "]"
    async with Proxy(config({}, ROUTES, tls)) as p:
        for key_type, name in NAMES.items():
            kind = "ECDSA" if key_type is trustme.KeyType.ECDSA else "RSA"
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(_handshake, p.port, name, _client(ca, CBC))
            suite = await asyncio.to_thread(_handshake, p.port, name, _client(ca, AEAD))
            assert suite == f"ECDHE-{kind}-AES128-GCM-SHA256"

            refused = await asyncio.to_thread(_s_client, p.port, name, ca, f"ECDHE-{kind}-AES128-SHA256")
            assert refused.returncode != 0, refused.stdout + refused.stderr
            assert "CONNECTION ESTABLISHED" not in refused.stderr, refused.stderr
            served = await asyncio.to_thread(_s_client, p.port, name, ca, f"ECDHE-{kind}-AES128-GCM-SHA256")
            assert served.returncode == 0, served.stderr
            assert f"Ciphersuite: ECDHE-{kind}-AES128-GCM-SHA256" in served.stderr, served.stderr


def _starttls(port: int, ctx: ssl.SSLContext) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
        s.ehlo()
        s.starttls(context=ctx)
        assert isinstance(s.sock, ssl.SSLSocket)
        suite = s.sock.cipher()
        assert suite is not None
        return suite[0]


@pytest.mark.asyncio
async def test_smtp_starttls_refuses_cbc_and_serves_aead(tmp_path: Path) -> None:
    ca, certs = _certs(tmp_path)
    address = conf.Address("127.0.0.1", 0)
    smtp = conf.SmtpListener(listen=(address,), hostname="mx.example.test", routes=(), tls=certs[0])
    frontend = SmtpFrontend(smtp, PoolSet({}), SmtpStats())
    listener = Listener("smtp", address, bind(address), frontend)
    listener.start()
    port = listener.bound[1]
    ctx = _client(ca, AEAD)
    ctx.check_hostname = False  # the listener's address, not a name: the CA still vouches for the key
    try:
        refused = _client(ca, CBC)
        refused.check_hostname = False
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected)):
            await asyncio.to_thread(_starttls, port, refused)
        assert await asyncio.to_thread(_starttls, port, ctx) == "ECDHE-ECDSA-AES128-GCM-SHA256"
    finally:
        await listener.stop_accepting()
        frontend.retire()
        await frontend.drain(2.0)
