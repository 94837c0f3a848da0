"""The ACME state directory: the account and one file per certificate, written atomically.

Layout (every file mode 0600, the directories 0700):

    <state_dir>/account.json        the account's URL and registration (RFC 8555 7.3)
    <state_dir>/account.key         the account key (PEM), unless [acme] account_key says where
    <state_dir>/certs/<host>.pem    the certificate's private key, then its chain

Key and chain share one file so that they change together: a file is written whole to a
temporary name, fsync'ed, renamed over the old one, and the directory fsync'ed, so a crash
at any moment leaves the old file or the new one, never a torn one or a key from one
order beside a certificate from another. Workers (and the TLS listeners of this process)
pick a new certificate up by noticing that the file changed (proxy/http/tls.py), the
same way certificate files configured by path are reloaded.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PRIVATE = 0o600


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    """Replace `path` with `data`: write a temporary file beside it, fsync, rename, fsync the
    directory. Readers see the old content or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StoreError(Exception):
    """A stored file that cannot be used (unreadable, not PEM, key and certificate apart)."""


@dataclass(frozen=True)
class StoredCert:
    host: str
    path: Path
    pem: bytes  # key, then the chain
    not_before: float  # epoch seconds
    not_after: float
    names: tuple[str, ...]  # the leaf's DNS names

    @property
    def chain_pem(self) -> bytes:
        start = self.pem.find(b"-----BEGIN CERTIFICATE-----")
        return self.pem[start:] if start >= 0 else b""


def cert_path(state_dir: str | Path, host: str) -> Path:
    return Path(state_dir) / "certs" / f"{host}.pem"


def check_pair(pem: bytes, host: str | None = None) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The leaf and the chain of a key+chain PEM, checked: the key is the leaf's, and the
    leaf names `host`. Raises StoreError."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
        chain = x509.load_pem_x509_certificates(pem)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"not a key and certificate PEM: {exc}") from None
    if not chain:
        raise StoreError("no certificate")
    leaf = chain[0]
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise StoreError("unsupported key type")
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise StoreError("the key does not belong to the certificate")
    if host is not None and host not in dns_names(leaf):
        raise StoreError(f"the certificate does not name {host}")
    return leaf, chain


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))


class CertStore:
    """The certificates and account of one state directory."""

    def __init__(self, state_dir: str | Path, account_key: str | Path | None = None) -> None:
        self.root = Path(state_dir)
        self.account_key_path = Path(account_key) if account_key else self.root / "account.key"
        self.account_path = self.root / "account.json"

    def path(self, host: str) -> Path:
        return cert_path(self.root, host)

    def save(self, host: str, key_pem: bytes, chain_pem: bytes) -> StoredCert:
        """Check and store a new certificate for `host` (replacing the old one atomically)."""
        pem = key_pem.rstrip(b"\n") + b"\n" + chain_pem.lstrip(b"\n")
        stored = self._parse(host, self.path(host), pem)
        atomic_write(self.path(host), pem)
        return stored

    def load(self, host: str) -> StoredCert | None:
        """The stored certificate of `host`, or None when there is none. Raises StoreError
        for a file that is there but unusable."""
        path = self.path(host)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}") from None
        return self._parse(host, path, pem)

    @staticmethod
    def _parse(host: str, path: Path, pem: bytes) -> StoredCert:
        try:
            leaf, _ = check_pair(pem, host)
        except StoreError as exc:
            raise StoreError(f"{path}: {exc}") from None
        return StoredCert(
            host,
            path,
            pem,
            leaf.not_valid_before_utc.timestamp(),
            leaf.not_valid_after_utc.timestamp(),
            dns_names(leaf),
        )

    # ------------------------------------------------------------------ the account

    def read_account_key(self) -> bytes | None:
        try:
            return self.account_key_path.read_bytes()
        except FileNotFoundError:
            return None

    def write_account_key(self, pem: bytes) -> None:
        atomic_write(self.account_key_path, pem)

    def read_account(self) -> bytes | None:
        try:
            return self.account_path.read_bytes()
        except FileNotFoundError:
            return None

    def write_account(self, data: bytes) -> None:
        atomic_write(self.account_path, data)
