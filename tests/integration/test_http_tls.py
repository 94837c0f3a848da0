"""HTTPS: SNI picks among the configured certificates (the first is the default); curl in the loop."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
import trustme

from tests.integration.http_backends import HttpBackend, Proxy, config
from tests.support import require_tool

ROUTES = '[[http.route]]\npath = "/"\npool = "alpha"\n'


def certs(tmp: Path) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    entries = []
    for name in ("a.example.test", "b.example.test"):
        cert = ca.issue_cert(name)
        cert.private_key_pem.write_to_path(str(tmp / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(tmp / f"{name}.pem"))
        entries.append(f'{{ cert = "{tmp}/{name}.pem", key = "{tmp}/{name}.key" }}')
    return ca, f"tls = [{', '.join(entries)}]"


async def curl(port: int, name: str, ca: Path) -> tuple[int, str, str]:
    exe = require_tool("curl")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-s",
        "--max-time",
        "5",
        "--cacert",
        str(ca),
        "--resolve",
        f"{name}:{port}:127.0.0.1",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        f"https://{name}:{port}/echo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    return int(code or 0), body, err.decode()


def served_name(port: int, sni: str | None, ca: trustme.CA) -> str:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = False
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        cert = tls.getpeercert()
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert cert is not None
    return str(dict(x[0] for x in cert["subject"]).get("commonName") or cert["subjectAltName"][0][1])


@pytest.mark.asyncio
async def test_https_sni_selects_the_certificate(tmp_path: Path) -> None:
    backend = await HttpBackend("a").start()
    ca, tls = certs(tmp_path)
    try:
        async with Proxy(config({"alpha": [backend.address]}, ROUTES, tls)) as p:
            for name in ("a.example.test", "b.example.test"):
                code, body, err = await curl(p.port, name, tmp_path / "ca.pem")
                assert code == 200, err  # curl verified the certificate against the name
                headers = dict(json.loads(body)["headers"])
                assert headers["x-forwarded-proto"] == "https"
                assert headers["host"] == f"{name}:{p.port}"
            loop = asyncio.get_running_loop()
            assert (
                await loop.run_in_executor(None, served_name, p.port, "b.example.test", ca)
                == "b.example.test"
            )
            # No SNI, or a name no certificate has: the first certificate.
            assert await loop.run_in_executor(None, served_name, p.port, None, ca) == "a.example.test"
            assert (
                await loop.run_in_executor(None, served_name, p.port, "c.example.test", ca)
                == "a.example.test"
            )
    finally:
        await backend.stop()


def test_tls_below_1_2_refused(tmp_path: Path) -> None:
    import conf
    from proxy.http.tls import build_server_context

    _, _ = certs(tmp_path)
    ctx = build_server_context(
        [conf.TlsCert(str(tmp_path / "a.example.test.pem"), str(tmp_path / "a.example.test.key"))]
    )
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
