"""TLS-ALPN-01 (RFC 8737): the challenge certificate, and telling a validation handshake apart.

The CA connects to port 443 with SNI naming the host and ALPN offering only "acme-tls/1",
and expects a self-signed certificate for that host carrying the critical acmeIdentifier
extension: the SHA-256 of the key authorization. Python's SNI callback cannot see the
client's ALPN list, so the listener peeks at the ClientHello (only while a TLS-ALPN-01
challenge is open) and `client_hello` reads the two extensions from it.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

ACME_TLS_ALPN = "acme-tls/1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 6.1


def challenge_certificate(host: str, key_authorization: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) answering the TLS-ALPN-01 challenge of `host`."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        # extnValue is the DER of Authorization ::= OCTET STRING (SIZE (32))
        .add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


class NotTls(ValueError):
    """The bytes are not the start of a TLS handshake."""


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None  # lower-case
    alpn: tuple[str, ...]

    @property
    def is_acme_validation(self) -> bool:
        """RFC 8737 3: the CA offers acme-tls/1 and nothing else."""
        return self.alpn == (ACME_TLS_ALPN,)


def client_hello(data: bytes) -> ClientHello | None:
    """SNI and ALPN of the ClientHello at the start of `data` (the bytes a server has
    received so far). None: not all of it yet. Raises NotTls for anything else."""
    # The handshake message may span records: gather record fragments first.
    body = bytearray()
    pos = 0
    need: int | None = None
    while need is None or len(body) < need:
        if len(data) < pos + 5:
            return None
        if data[pos] != 22 or data[pos + 1] != 3:  # handshake record, TLS 1.x
            raise NotTls("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) < pos + 5 + length:
            return None
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if need is None and len(body) >= 4:
            if body[0] != 1:
                raise NotTls("not a ClientHello")
            need = 4 + int.from_bytes(body[1:4], "big")
    return _parse_hello(bytes(body[4:need]))


def _parse_hello(hello: bytes) -> ClientHello:
    try:
        p = 2 + 32  # legacy_version, random
        p += 1 + hello[p]  # session id
        p += 2 + int.from_bytes(hello[p : p + 2], "big")  # cipher suites
        p += 1 + hello[p]  # compression methods
        if p >= len(hello):
            return ClientHello(None, ())
        end = p + 2 + int.from_bytes(hello[p : p + 2], "big")
        p += 2
        name: str | None = None
        alpn: tuple[str, ...] = ()
        while p + 4 <= end:
            kind = int.from_bytes(hello[p : p + 2], "big")
            size = int.from_bytes(hello[p + 2 : p + 4], "big")
            ext = hello[p + 4 : p + 4 + size]
            p += 4 + size
            if kind == 0:  # server_name: list of (type, name)
                q = 2
                while q + 3 <= len(ext):
                    n = int.from_bytes(ext[q + 1 : q + 3], "big")
                    if ext[q] == 0:
                        name = ext[q + 3 : q + 3 + n].decode("ascii", "replace").lower().rstrip(".")
                        break
                    q += 3 + n
            elif kind == 16:  # application_layer_protocol_negotiation
                q = 2
                protocols = []
                while q < len(ext):
                    n = ext[q]
                    protocols.append(ext[q + 1 : q + 1 + n].decode("ascii", "replace"))
                    q += 1 + n
                alpn = tuple(protocols)
    except IndexError:
        raise NotTls("truncated ClientHello") from None
    return ClientHello(name, alpn)
