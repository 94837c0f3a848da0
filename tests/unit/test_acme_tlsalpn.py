"""TLS-ALPN-01: the challenge certificate (RFC 8737 3) and reading SNI and ALPN from a real
ClientHello (made by Python's ssl over memory BIOs)."""

from __future__ import annotations

import hashlib
import ssl

import pytest
from cryptography import x509

from proxy.acme.tlsalpn import (
    ACME_TLS_ALPN,
    ID_PE_ACME_IDENTIFIER,
    NotTls,
    challenge_certificate,
    client_hello,
)


def _hello(server_name: str | None, alpn: list[str]) -> bytes:
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_a_validation_hello_is_told_from_a_browser_one() -> None:
    hello = client_hello(_hello("A.Test", [ACME_TLS_ALPN]))
    assert hello is not None and hello.server_name == "a.test" and hello.is_acme_validation
    browser = client_hello(_hello("a.test", ["h2", "http/1.1"]))
    assert browser is not None and browser.alpn == ("h2", "http/1.1") and not browser.is_acme_validation
    mixed = client_hello(_hello("a.test", ["http/1.1", ACME_TLS_ALPN]))
    assert mixed is not None and not mixed.is_acme_validation  # RFC 8737: acme-tls/1 alone
    bare = client_hello(_hello(None, []))
    assert bare is not None and bare.server_name is None and bare.alpn == ()


def test_a_partial_hello_asks_for_more_and_anything_else_is_not_tls() -> None:
    data = _hello("a.test", [ACME_TLS_ALPN])
    for cut in (0, 3, 5, 40, len(data) - 1):
        assert client_hello(data[:cut]) is None
    with pytest.raises(NotTls):
        client_hello(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    with pytest.raises(NotTls):
        client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00")  # a ServerHello


def test_the_challenge_certificate_carries_the_digest_of_the_key_authorization() -> None:
    cert_pem, key_pem = challenge_certificate("a.test", "token.thumbprint")
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert ext.critical
    assert ext.value.public_bytes() == b"\x04\x20" + hashlib.sha256(b"token.thumbprint").digest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.test"]
    assert b"PRIVATE KEY" in key_pem
