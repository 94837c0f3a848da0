"""The open challenges of this process: what the listeners answer while the CA validates.

The ACME service posts an answer before it tells the CA to validate and takes it down
after; the HTTP listeners (HTTP-01, proxy/http/frontend.py) and the TLS listeners
(TLS-ALPN-01) read it. The service posts from a worker thread and the listeners read on
the event loop, so every change replaces a whole dict (readers never see one half-made).
"""

from __future__ import annotations

import ssl
import threading

HTTP01_PREFIX = b"/.well-known/acme-challenge/"


class ChallengeBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.managed: frozenset[str] = frozenset()  # hosts whose challenges we answer
        self._http01: dict[str, bytes] = {}  # token -> key authorization
        self._tls_alpn: dict[str, ssl.SSLContext] = {}  # host -> challenge context

    def manage(self, hosts: frozenset[str]) -> None:
        self.managed = hosts

    # ------------------------------------------------------------------ posting

    def post_http01(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._http01 = {**self._http01, token: key_authorization.encode("ascii")}

    def remove_http01(self, token: str) -> None:
        with self._lock:
            self._http01 = {k: v for k, v in self._http01.items() if k != token}

    def post_tls_alpn(self, host: str, context: ssl.SSLContext) -> None:
        with self._lock:
            self._tls_alpn = {**self._tls_alpn, host: context}

    def remove_tls_alpn(self, host: str) -> None:
        with self._lock:
            self._tls_alpn = {k: v for k, v in self._tls_alpn.items() if k != host}

    # ------------------------------------------------------------------ answering

    def http01(self, host: str, target: bytes) -> bytes | None:
        """The body answering an HTTP-01 request, b"" for a managed host's unknown token
        (404), or None when the request is not ours (not a managed host or not a challenge
        path): it is then routed as any other."""
        if not target.startswith(HTTP01_PREFIX) or host not in self.managed:
            return None
        token = target[len(HTTP01_PREFIX) :].split(b"?", 1)[0].decode("latin-1")
        return self._http01.get(token, b"")

    @property
    def tls_alpn_open(self) -> bool:
        return bool(self._tls_alpn)

    def tls_alpn(self, host: str | None) -> ssl.SSLContext | None:
        return self._tls_alpn.get(host) if host else None


BOARD = ChallengeBoard()  # one per process: the listeners and the ACME service share it
