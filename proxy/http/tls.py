"""The server-side TLS context of an HTTPS listener: SNI picks among the configured certificates."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import conf
from proxy.http.errors import HttpProxyError


class TlsConfigError(HttpProxyError):
    """A certificate or key that cannot be loaded."""


def _names(ctx: ssl.SSLContext, cert_path: str) -> list[str]:
    """The DNS names of a certificate file (SAN, else CN), lower-case."""
    try:
        info = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
    except (OSError, ssl.SSLError, AttributeError):
        return []
    names = [v.lower() for k, v in info.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in info.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    names.append(v.lower())
    return names


# TLS 1.2 suites: ECDHE key exchange and an AEAD cipher, nothing else. This is Mozilla's
# "intermediate" profile (ssl-config.mozilla.org; Debian's haproxy.cfg ships it) in its order,
# without its DHE-RSA suites: Python's ssl turns on no DH group of its own, so without a dhparam
# file DHE is never negotiated, and every client that has AES-GCM or ChaCha20 also has ECDHE.
# No CBC suite (LUCKY13, POODLE-style padding oracles), so no SHA-1 or SHA-2 HMAC suite and no
# static RSA key exchange. The TLS 1.3 suites (all AEAD) are OpenSSL's own and set_ciphers does
# not touch them. Python's default list, like nginx's HIGH:!aNULL:!MD5, offers CBC suites too.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def server_context() -> ssl.SSLContext:
    """The base of every TLS listener (HTTPS, SMTP STARTTLS): TLS 1.2 or newer, AEAD suites only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(TLS12_CIPHERS)
    return ctx


def _context(cert: conf.TlsCert, alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = server_context()
    ctx.set_alpn_protocols(list(alpn))
    try:
        ctx.load_cert_chain(cert.cert, cert.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{cert.cert}: {exc}") from None
    return ctx


def build_server_context(
    certs: Sequence[conf.TlsCert], alpn: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """A TLS 1.2+ context; its sni_callback switches to the certificate naming the server.

    `alpn`: the protocols offered, in our order of preference ("h2" first when the
    listener speaks HTTP/2). The first certificate is the default (no SNI, or a name no certificate
    carries). Certificate files are read here, so building a new context (a
    new frontend on reload) is what reloads certificates.
    """
    if not certs:
        raise TlsConfigError("no certificate configured")
    contexts = [_context(c, alpn) for c in certs]
    default = contexts[0]
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for cert, ctx in zip(certs, contexts, strict=True):
        for name in _names(ctx, cert.cert):
            if name.startswith("*."):
                wildcard.setdefault(name[1:], ctx)
            else:
                exact.setdefault(name, ctx)

    def pick(sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if server_name is None:
            return
        name = server_name.lower().rstrip(".")
        ctx = exact.get(name)
        if ctx is None:
            dot = name.find(".")
            ctx = wildcard.get(name[dot:]) if dot > 0 else None
        if ctx is not None and ctx is not default:
            sock.context = ctx

    default.sni_callback = pick
    return default
