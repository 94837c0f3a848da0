"""What a sekisho TLS listener offers in TLS 1.2: ECDHE with an AEAD cipher, never CBC.

testssl flagged LUCKY13 because the listeners took Python's default list, which (like
nginx's HIGH:!aNULL:!MD5) includes the CBC suites with an HMAC-SHA1/SHA256/SHA384.
Both listener kinds are checked: HTTPS (build_server_context) and SMTP STARTTLS.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

import conf
from lb.pool import PoolSet
from proxy.http.tls import build_server_context
from proxy.smtp.frontend import SmtpFrontend
from proxy.smtp.stats import SmtpStats


def _cert(tmp: Path) -> conf.TlsCert:
    leaf = trustme.CA().issue_cert("tls.example.test")
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return conf.TlsCert(str(tmp / "cert.pem"), str(tmp / "key.pem"))


def _https(tmp: Path) -> ssl.SSLContext:
    return build_server_context([_cert(tmp)])


def _smtp(tmp: Path) -> ssl.SSLContext:
    listener = conf.SmtpListener(
        listen=(conf.Address("127.0.0.1", 0),),
        hostname="mx.example.test",
        routes=(),
        tls=_cert(tmp),
    )
    frontend = SmtpFrontend(listener, PoolSet({}), SmtpStats())
    assert frontend.tls is not None
    return frontend.tls


def _tls12(ctx: ssl.SSLContext) -> list[Any]:  # typeshed's _Cipher TypedDicts
    return [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]


LISTENERS = pytest.mark.parametrize("build", [_https, _smtp], ids=["https", "smtp-starttls"])


@LISTENERS
def test_tls12_offers_only_ecdhe_with_an_aead_cipher(
    build: Callable[[Path], ssl.SSLContext], tmp_path: Path
) -> None:
    ctx = build(tmp_path)
    suites = _tls12(ctx)
    names = [c["name"] for c in suites]
    cbc = [c["name"] for c in suites if "CBC" in c["symmetric"].upper() or not c["aead"]]
    assert not cbc, f"CBC / non-AEAD suites offered in TLS 1.2: {cbc}"
    # Every suite: forward secrecy by ECDHE, the MAC is the AEAD itself (no HMAC-SHA1, no SHA-2 HMAC).
    for c in suites:
        assert c["kea"] == "kx-ecdhe", c["name"]
        assert c["digest"] is None, c["name"]  # OpenSSL names no MAC digest for an AEAD suite
        assert " Mac=AEAD" in c["description"], c["description"]
    # Still the usual AEAD suites, for ECDSA and RSA certificates alike.
    for wanted in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ):
        assert wanted in names
    # TLS 1.3 is untouched by the TLS 1.2 list, and nothing older than 1.2 is spoken.
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"} >= {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    }
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
