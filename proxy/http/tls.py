"""The server-side TLS of an HTTPS listener: SNI picks the current context among the certificates,
which are reloaded when their files change on disk (configured paths and ACME-managed ones)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import conf
from proxy.http.errors import HttpProxyError

log = logging.getLogger("sekisho.tls")
CERT_CHECK_INTERVAL = 2.0  # seconds between looks at the certificate files (one stat each)


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


def _not_after(cert_path: str) -> float | None:
    try:
        info = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
        return float(ssl.cert_time_to_seconds(info["notAfter"]))
    except (OSError, ssl.SSLError, AttributeError, KeyError, ValueError):
        return None


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


# A worker's copy of the certificate and key files as its supervisor loaded them when it
# checked the config (path -> bytes). A worker that starts (or restarts after a crash) while a
# file is being rewritten serves this copy, as its siblings go on serving the certificate they
# loaded, instead of failing to start: nginx's and HAProxy's workers get theirs from the
# master's memory. The file is tried again when it changes.
_CHECKED: dict[str, bytes] = {}


def configured_certs(config: conf.Config) -> list[conf.TlsCert]:
    """Every certificate file pair a config names: HTTPS listeners and SMTP STARTTLS."""
    return [c for h in config.http for c in h.tls] + [s.tls for s in config.smtp if s.tls is not None]


def checked_files(certs: Iterable[conf.TlsCert]) -> dict[str, bytes]:
    """The bytes of each certificate pair that loads as read (a supervisor's, for its workers);
    a pair that does not is left out, and its workers read the files themselves."""
    out: dict[str, bytes] = {}
    for c in certs:
        try:
            pair = {path: Path(path).read_bytes() for path in (c.cert, c.key) if path}
            with _in_memory(pair[c.cert], pair.get(c.key) if c.key else None) as (cert, key):
                server_context().load_cert_chain(cert, key)
        except (OSError, ssl.SSLError):
            continue
        out.update(pair)
    return out


def keep_checked(files: Mapping[str, bytes]) -> None:
    """In a worker: the supervisor's copy (checked_files), before any TLS listener is built."""
    _CHECKED.clear()
    _CHECKED.update(files)


@contextlib.contextmanager
def _in_memory(cert: bytes, key: bytes | None) -> Iterator[tuple[str, str | None]]:
    """Paths that read as `cert` and `key` (load_cert_chain takes paths only): memfds."""
    fds: list[int] = []
    try:
        paths: list[str] = []
        for data in (cert, key) if key is not None else (cert,):
            fd = os.memfd_create("sekisho-tls", os.MFD_CLOEXEC)
            fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            paths.append(f"/proc/self/fd/{fd}")
        yield paths[0], paths[1] if len(paths) > 1 else None
    finally:
        for fd in fds:
            os.close(fd)


def load_cert_chain(
    ctx: ssl.SSLContext, cert: str, key: str | None, *, from_copy: bool = True
) -> tuple[list[str], float | None]:
    """`ctx.load_cert_chain` from the files, else (`from_copy`) from the supervisor's checked
    copy; the names and notAfter of the certificate loaded. Raises what the files raised."""
    try:
        ctx.load_cert_chain(cert, key)
        return _names(ctx, cert), _not_after(cert)
    except (OSError, ssl.SSLError) as exc:
        data, key_data = _CHECKED.get(cert), _CHECKED.get(key) if key else None
        if not from_copy or data is None or (key and key_data is None):
            raise
        try:
            with _in_memory(data, key_data) as (cert_copy, key_copy):
                ctx.load_cert_chain(cert_copy, key_copy)
                loaded = _names(ctx, cert_copy), _not_after(cert_copy)
        except (OSError, ssl.SSLError):
            raise exc from None
        log.warning("tls: %s does not load (%s): serving the copy the supervisor checked", cert, exc)
        return loaded


class CertFiles:
    """One certificate served from files (cert and key; one path when the key is in the
    certificate's file): loaded again when either file changes on disk, and swapped in only
    once the new pair loads (load_cert_chain checks that the key is the certificate's). A
    bad or half-written pair keeps the old one serving; the next change is tried again."""

    def __init__(self, cert: str | Path, key: str | Path | None, alpn: Sequence[str], required: bool) -> None:
        self.cert, self.key, self.alpn = str(cert), str(key) if key else None, list(alpn)
        self.context: ssl.SSLContext | None = None
        self.names: list[str] = []
        self.not_after: float | None = None  # of the certificate in use (epoch seconds)
        self.error = ""
        self.reloads = 0
        # (stat) signature of the files last tried: () none yet, None missing
        self._seen: tuple[tuple[int, int, int], ...] | None = ()
        if not self.refresh() and required:
            raise TlsConfigError(self.error)

    def _signature(self) -> tuple[tuple[int, int, int], ...] | None:
        out = []
        for path in (self.cert, self.key) if self.key else (self.cert,):
            try:
                st = os.stat(path)
            except OSError:
                return None
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self) -> bool:
        """Load the files again if they changed since last tried; True when a new
        certificate was swapped in."""
        signature = self._signature()
        if signature is None and (self.context is not None or self.cert not in _CHECKED):
            if self.context is None:  # (an ACME file not issued yet: one stat per look)
                self.error = f"{self.cert}: cannot read"
            return False
        if signature == self._seen:
            return False
        self._seen = signature
        ctx = server_context()
        ctx.set_alpn_protocols(self.alpn)
        try:
            # (a certificate in use stays in use rather than give way to the supervisor's copy)
            names, not_after = load_cert_chain(ctx, self.cert, self.key, from_copy=self.context is None)
        except (OSError, ssl.SSLError) as exc:
            self.error = f"{self.cert}: {exc}"
            if self.context is not None:
                log.error(
                    "tls: %s changed but does not load, still serving the old certificate: %s", self.cert, exc
                )
            return False
        if self.context is not None:
            self.reloads += 1
            log.info("tls: %s changed on disk: new certificate in use", self.cert)
        self.context, self.names, self.error = ctx, names, ""
        self.not_after = not_after
        return True


class SniSelector:
    """The TLS side of one HTTPS listener: SNI picks the current context of a certificate.

    `certs`: files named in the config; the first is the default (no SNI, or a name no
    certificate carries). `managed`: host -> the key+chain file the ACME service keeps for
    it (it may not exist yet; a client asking for such a host then gets an
    unrecognized_name alert at once rather than someone else's certificate). Every file is
    watched (`refresh_all`), so a new certificate is served from the next handshake on;
    connections already open keep theirs.
    """

    def __init__(
        self,
        certs: Sequence[conf.TlsCert],
        alpn: Sequence[str] = ("http/1.1",),
        managed: Mapping[str, str | Path] | None = None,
    ) -> None:
        self.files = [CertFiles(c.cert, c.key, alpn, required=True) for c in certs]
        self.managed = {h: CertFiles(p, None, alpn, required=False) for h, p in (managed or {}).items()}
        if not self.files and not self.managed:
            raise TlsConfigError("no certificate configured")
        self._exact: dict[str, CertFiles] = {}
        self._wildcard: dict[str, CertFiles] = {}
        self._index()
        # The listener's context only dispatches: the callback always moves the connection
        # to the context of the certificate it picked (same settings, same ALPN).
        # The listener's context: the default certificate's as loaded now (no switch for its
        # clients until that file changes), else one without a certificate that only dispatches.
        # The callback moves each connection to the current context of the certificate it picks.
        first = self.files[0].context if self.files else None
        if first is None:
            first = server_context()
            first.set_alpn_protocols(list(alpn))
        self.context = first
        self.context.sni_callback = self._pick
        _LIVE.add(self)

    def _index(self) -> None:
        exact: dict[str, CertFiles] = {}
        wildcard: dict[str, CertFiles] = {}
        for files in self.files:
            for name in files.names:
                if name.startswith("*."):
                    wildcard.setdefault(name[1:], files)
                else:
                    exact.setdefault(name, files)
        self._exact, self._wildcard = exact, wildcard

    def _pick(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        files: CertFiles | None = None
        if server_name is not None:
            name = server_name.lower().rstrip(".")
            files = self.managed.get(name)
            if files is not None and files.context is None and not files.refresh():
                # (its file was looked at first: another process may have just written it)
                files = self._exact.get(name) or self._covering(name)
                if files is None:
                    return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME  # no certificate yet
            if files is None:
                files = self._exact.get(name) or self._covering(name)
        if files is None:
            files = self.files[0] if self.files else self._any_managed()
            if files is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ctx = files.context
        if ctx is not None and ctx is not self.context:
            sock.context = ctx
        return None

    @property
    def missing(self) -> bool:
        """Some managed host has no certificate yet (its clients are refused)."""
        return any(f.context is None for f in self.managed.values())

    def refuses(self, name: str | None) -> bool:
        """A handshake naming `name` would be refused (`_pick` returns an alert)."""
        if name is None:
            return not self.files and self._any_managed() is None
        files = self.managed.get(name)
        if files is None or (files.context is None and files.refresh()):
            return False  # (another process may have just written its file)
        return files.context is None and not (self._exact.get(name) or self._covering(name))

    def _covering(self, name: str) -> CertFiles | None:
        dot = name.find(".")
        return self._wildcard.get(name[dot:]) if dot > 0 else None

    def _any_managed(self) -> CertFiles | None:
        return next((f for f in self.managed.values() if f.context is not None), None)

    def refresh(self) -> int:
        """Reload every file that changed; the number of certificates swapped."""
        swapped = 0
        for files in self.files:
            swapped += files.refresh()
        if swapped:
            self._index()
        for files in self.managed.values():
            swapped += files.refresh()
        return swapped


_LIVE: weakref.WeakSet[SniSelector] = weakref.WeakSet()


def served_certificates() -> dict[str, float]:
    """name -> notAfter of the certificate each TLS listener serves for it (the expiry metric)."""
    out: dict[str, float] = {}
    for selector in list(_LIVE):
        for files in selector.files:
            for name in files.names:
                if files.not_after is not None:
                    out[name] = files.not_after
        for host, files in selector.managed.items():
            if files.not_after is not None:
                out[host] = files.not_after
    return out


def file_certificates(certs: Iterable[conf.TlsCert]) -> dict[str, float]:
    """name -> notAfter of certificate files as they are on disk now (a supervisor that
    serves nothing itself reports what its workers load)."""
    out: dict[str, float] = {}
    for cert in certs:
        not_after = _not_after(cert.cert)
        if not_after is not None:
            for name in _names(server_context(), cert.cert):
                out.setdefault(name, not_after)
    return out


def refresh_all() -> int:
    """Reload the changed certificate files of every TLS listener of this process."""
    return sum(selector.refresh() for selector in list(_LIVE))


async def watch_certificates(interval: float = CERT_CHECK_INTERVAL) -> None:
    """Look for changed certificate files every `interval` seconds, forever (a stat per
    file: certbot's renewals and the ACME service's, in every worker). One per event loop:
    a second call returns at once (the serving layer and a worker may both start one)."""
    loop = asyncio.get_running_loop()
    if loop in _WATCHING:
        return
    _WATCHING.add(loop)
    try:
        while True:
            await asyncio.sleep(interval)
            refresh_all()
    finally:
        _WATCHING.discard(loop)


_WATCHING: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def build_server_context(
    certs: Sequence[conf.TlsCert], alpn: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """A TLS 1.2+ context whose sni_callback switches to the certificate naming the server
    (see SniSelector; `alpn`: the protocols offered, in our order of preference)."""
    return SniSelector(certs, alpn).context
