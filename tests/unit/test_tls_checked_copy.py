"""A worker's copy of the certificate files its supervisor checked (proxy.http.tls): what it
serves when a file does not load as it starts. No sockets, no loop."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import conf
from proxy.http.tls import (
    CertFiles,
    TlsConfigError,
    checked_files,
    keep_checked,
    load_cert_chain,
    server_context,
)


@pytest.fixture(autouse=True)
def no_copy() -> Iterator[None]:
    keep_checked({})
    yield
    keep_checked({})


def _pair(tmp: Path, ca: trustme.CA, name: str, stem: str) -> conf.TlsCert:
    issued = ca.issue_cert(name)
    cert, key = tmp / f"{stem}.pem", tmp / f"{stem}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return conf.TlsCert(str(cert), str(key))


def _half_write(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def test_the_supervisor_hands_on_only_pairs_that_load(tmp_path: Path) -> None:
    ca = trustme.CA()
    good = _pair(tmp_path, ca, "good.example.test", "good")
    mismatched = _pair(tmp_path, ca, "bad.example.test", "bad")
    os.replace(_pair(tmp_path, ca, "other.example.test", "other").key, mismatched.key)
    missing = conf.TlsCert(str(tmp_path / "none.pem"), str(tmp_path / "none.key"))
    files = checked_files([good, mismatched, missing])
    assert files == {good.cert: Path(good.cert).read_bytes(), good.key: Path(good.key).read_bytes()}


def test_a_file_that_does_not_load_at_start_is_served_from_the_copy_until_it_loads(tmp_path: Path) -> None:
    ca = trustme.CA()
    pair = _pair(tmp_path, ca, "www.example.test", "site")
    keep_checked(checked_files([pair]))
    _half_write(pair.cert)
    files = CertFiles(pair.cert, pair.key, ["http/1.1"], required=True)
    assert files.context is not None and files.names == ["www.example.test"]
    assert files.not_after is not None
    # The deploy finishes (a new certificate): the next look at the files serves it.
    newer = _pair(tmp_path, ca, "new.example.test", "new")
    os.replace(newer.cert, pair.cert)
    os.replace(newer.key, pair.key)
    assert files.refresh() and files.names == ["new.example.test"]


def test_a_file_missing_at_start_is_served_from_the_copy_until_it_is_back(tmp_path: Path) -> None:
    ca = trustme.CA()
    pair = _pair(tmp_path, ca, "www.example.test", "site")
    keep_checked(checked_files([pair]))
    saved = Path(pair.cert).read_bytes()
    os.unlink(pair.cert)  # a deploy that removes and writes the file again
    files = CertFiles(pair.cert, pair.key, ["http/1.1"], required=True)
    assert files.names == ["www.example.test"]
    assert not files.refresh()  # still missing: nothing new
    Path(pair.cert).write_bytes(saved)
    assert files.refresh() and files.reloads == 1 and files.names == ["www.example.test"]


def test_without_a_copy_a_file_that_does_not_load_is_an_error(tmp_path: Path) -> None:
    pair = _pair(tmp_path, trustme.CA(), "www.example.test", "site")
    _half_write(pair.cert)
    with pytest.raises(TlsConfigError):
        CertFiles(pair.cert, pair.key, ["http/1.1"], required=True)
    with pytest.raises(ssl.SSLError):
        load_cert_chain(server_context(), pair.cert, pair.key)


def _served_name(server: ssl.SSLContext, ca: trustme.CA, name: str) -> str:
    """A TLS handshake in memory (two MemoryBIOs): the DNS name the server's certificate carries."""
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, srv):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    cert = client.getpeercert()
    assert cert is not None
    return str(dict(cert["subjectAltName"])["DNS"])


def test_smtp_starttls_loads_the_copy_too(tmp_path: Path) -> None:
    ca = trustme.CA()
    pair = _pair(tmp_path, ca, "mail.example.test", "mail")
    keep_checked(checked_files([pair]))
    Path(pair.key).write_bytes(b"")  # the key being rewritten
    ctx = server_context()
    load_cert_chain(ctx, pair.cert, pair.key)  # no error: the copy loaded
    assert _served_name(ctx, ca, "mail.example.test") == "mail.example.test"
