"""The open challenges: what the listeners answer while the CA validates.

The ACME service (one process) posts an answer before it tells the CA to validate and takes
it down after; the listeners of every process read it: HTTP-01 on the plain listeners
(proxy/http/frontend.py, `Exchange.start`), TLS-ALPN-01 on the HTTPS ones (proxy/acme/listen.py).
An answer lives in memory (the posting process) and as a file under
`<state_dir>/challenges/` (every worker process):

    challenges/http-01/<token>          the key authorization
    challenges/tls-alpn-01/<host>.pem   key and self-signed certificate (RFC 8737 3)

The service posts from its thread and the listeners read on the event loop, so every
change replaces a whole dict (readers never see one half-made).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import tempfile
import threading
from pathlib import Path

import conf
from proxy.acme.plan import hosts_for
from proxy.acme.store import atomic_write

log = logging.getLogger("sekisho.acme")
HTTP01_PREFIX = b"/.well-known/acme-challenge/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # base64url (RFC 8555 8.1): never a path


class ChallengeBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.managed: frozenset[str] = frozenset()  # hosts whose challenges we answer
        self.root: Path | None = None  # <state_dir>/challenges
        self._http01: dict[str, bytes] = {}  # token -> key authorization
        self._tls_alpn: dict[str, ssl.SSLContext] = {}  # host -> challenge context (posted here)
        self._seen_dir: int | None = None  # mtime_ns of challenges/tls-alpn-01 last listed
        self._files: dict[str, tuple[int, ssl.SSLContext | None]] = {}  # host -> (mtime_ns, ctx)

    def follow(self, config: conf.Config) -> None:
        """The hosts and state directory of a (new) config: every process calls this."""
        self.managed = frozenset(hosts_for(config).managed)
        self.root = Path(config.acme.state_dir) / "challenges" if config.acme is not None else None

    # ------------------------------------------------------------------ posting (the service)

    def clear_stale(self) -> None:
        """Remove the answers a killed orderer left behind (the ordering process, at start):
        a stale TLS-ALPN-01 file would make every worker peek at every ClientHello."""
        if self.root is None:
            return
        for kind in ("http-01", "tls-alpn-01"):
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.root / kind):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def post_http01(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._http01 = {**self._http01, token: key_authorization.encode("ascii")}
        if self.root is not None and _TOKEN.match(token):
            atomic_write(self.root / "http-01" / token, key_authorization.encode("ascii"), 0o644)

    def remove_http01(self, token: str) -> None:
        with self._lock:
            self._http01 = {k: v for k, v in self._http01.items() if k != token}
        if self.root is not None and _TOKEN.match(token):
            with contextlib.suppress(OSError):
                (self.root / "http-01" / token).unlink()

    def post_tls_alpn(self, host: str, pem: bytes) -> None:
        """`pem`: key and self-signed certificate answering `host`'s challenge."""
        if self.root is not None:
            path = self.root / "tls-alpn-01" / f"{host}.pem"
            atomic_write(path, pem)
            context = challenge_context_from(path)
        else:
            with tempfile.TemporaryDirectory(prefix="sekisho-acme-") as tmp:
                path = Path(tmp) / "challenge.pem"
                atomic_write(path, pem)
                context = challenge_context_from(path)
        if context is None:
            raise OSError(f"{host}: the TLS-ALPN-01 certificate does not load")
        with self._lock:
            self._tls_alpn = {**self._tls_alpn, host: context}

    def remove_tls_alpn(self, host: str) -> None:
        with self._lock:
            self._tls_alpn = {k: v for k, v in self._tls_alpn.items() if k != host}
        if self.root is not None:
            with contextlib.suppress(OSError):
                (self.root / "tls-alpn-01" / f"{host}.pem").unlink()

    # ------------------------------------------------------------------ answering (the listeners)

    def http01(self, host: str, target: bytes) -> bytes | None:
        """The body answering an HTTP-01 request, b"" for a managed host's unknown token
        (404), or None when the request is not ours (not a managed host or not a challenge
        path): it is then routed as any other."""
        if not target.startswith(HTTP01_PREFIX) or host not in self.managed:
            return None
        token = target[len(HTTP01_PREFIX) :].split(b"?", 1)[0].decode("latin-1")
        answer = self._http01.get(token)
        if answer is None and self.root is not None and _TOKEN.match(token):
            try:
                answer = (self.root / "http-01" / token).read_bytes()
            except OSError:
                answer = b""
        return answer or b""

    @property
    def tls_alpn_open(self) -> bool:
        """A TLS-ALPN-01 challenge is open (here or, by its file, in the ordering process):
        one stat per call, made only on ACME listeners."""
        if self._tls_alpn:
            return True
        if self.root is None:
            return False
        directory = self.root / "tls-alpn-01"
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            return False
        if mtime != self._seen_dir:
            self._seen_dir = mtime
            try:
                names = {n[:-4] for n in os.listdir(directory) if n.endswith(".pem")}
            except OSError:
                names = set()
            self._files = {h: self._files.get(h, (0, None)) for h in names}
        return bool(self._files)

    def tls_alpn(self, host: str | None) -> ssl.SSLContext | None:
        if not host:
            return None
        ctx = self._tls_alpn.get(host)
        if ctx is not None or self.root is None or host not in self._files:
            return ctx
        path = self.root / "tls-alpn-01" / f"{host}.pem"
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        seen, ctx = self._files[host]
        if seen != mtime or ctx is None:
            ctx = challenge_context_from(path)
            self._files[host] = (mtime, ctx)
        return ctx


def challenge_context_from(path: Path) -> ssl.SSLContext | None:
    """A server context that shows the TLS-ALPN-01 certificate in `path` and speaks only
    acme-tls/1."""
    from proxy.acme.tlsalpn import ACME_TLS_ALPN
    from proxy.http.tls import server_context

    ctx = server_context()
    ctx.set_alpn_protocols([ACME_TLS_ALPN])
    try:
        ctx.load_cert_chain(path)
    except (OSError, ssl.SSLError) as exc:
        log.warning("acme: %s: %s", path, exc)
        return None
    return ctx


BOARD = ChallengeBoard()  # one per process: the listeners and the ACME service share it
