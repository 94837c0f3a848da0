"""The ACME state directory: atomic 0600 writes, a torn or mismatched file never served,
and certificate files reloaded on change only once the new pair loads."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trustme

from proxy.acme.store import CertStore, StoreError, atomic_write
from proxy.http.tls import CertFiles, SniSelector


def _pem(ca: trustme.CA, host: str) -> tuple[bytes, bytes]:
    leaf = ca.issue_cert(host)
    return leaf.private_key_pem.bytes(), b"".join(b.bytes() for b in leaf.cert_chain_pems)


def test_atomic_write_is_0600_and_a_crash_before_the_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state" / "x.pem"
    atomic_write(path, b"old")
    assert path.read_bytes() == b"old" and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["x.pem"]  # no temporary left behind


def test_store_saves_key_and_chain_together_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    ca = trustme.CA()
    store = CertStore(tmp_path)
    key, chain = _pem(ca, "a.test")
    stored = store.save("a.test", key, chain)
    assert stored.names == ("a.test",) and stored.not_after > stored.not_before
    again = store.load("a.test")
    assert again is not None and again.pem == stored.pem
    assert store.path("a.test").stat().st_mode & 0o777 == 0o600
    assert store.load("b.test") is None
    other_key, _ = _pem(ca, "a.test")
    with pytest.raises(StoreError, match="does not belong"):
        store.save("a.test", other_key, chain)
    with pytest.raises(StoreError, match=r"does not name b\.test"):
        store.save("b.test", key, chain)
    assert store.load("a.test") == stored  # the refused saves changed nothing
    store.path("a.test").write_bytes(stored.pem[: len(stored.pem) // 2])  # a torn file
    with pytest.raises(StoreError):
        store.load("a.test")


def test_account_key_and_registration_live_in_the_state_directory(tmp_path: Path) -> None:
    store = CertStore(tmp_path / "s", account_key=tmp_path / "keys" / "account.key")
    assert store.read_account_key() is None and store.read_account() is None
    store.write_account_key(b"KEY")
    store.write_account(b'{"uri": "x"}')
    assert (tmp_path / "keys" / "account.key").stat().st_mode & 0o777 == 0o600
    assert store.read_account_key() == b"KEY" and store.read_account() == b'{"uri": "x"}'


def _write_pair(ca: trustme.CA, cert: Path, key: Path, host: str) -> None:
    leaf = ca.issue_cert(host)
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))


def test_certificate_files_are_reloaded_when_changed_and_checked_with_the_key(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "site.pem", tmp_path / "site.key"
    _write_pair(ca, cert, key, "a.test")
    files = CertFiles(cert, key, ["http/1.1"], required=True)
    first = files.context
    assert files.names == ["a.test"] and files.not_after is not None
    assert not files.refresh()  # unchanged: not read again
    # certbot's deploy: a new certificate whose key is not there yet -> keep serving the old
    leaf = ca.issue_cert("a.test")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    assert not files.refresh()
    assert files.context is first and "key values mismatch" in files.error.lower().replace("_", " ")
    leaf.private_key_pem.write_to_path(str(key))  # the key follows: now it swaps
    assert files.refresh()
    assert files.context is not first and files.reloads == 1


def test_sni_selector_serves_managed_hosts_from_their_files_as_they_appear(tmp_path: Path) -> None:
    ca = trustme.CA()
    path = tmp_path / "certs" / "a.test.pem"
    selector = SniSelector([], ["http/1.1"], {"a.test": path})
    assert selector.missing and selector.refuses("a.test") and not selector.refuses("b.test")
    path.parent.mkdir()
    key, chain = _pem(ca, "a.test")
    atomic_write(path, key + chain)
    assert selector.refresh() == 1
    assert not selector.missing and not selector.refuses("a.test")
    # a client verifying against the CA gets a.test's certificate through the callback
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = ctx.wrap_bio(c_in, c_out, server_hostname="a.test")
    srv = selector.context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, outbox, peer_in in ((cli, c_out, s_in), (srv, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            data = outbox.read()
            if data:
                peer_in.write(data)
        if cli.version() and srv.version():
            break
    cert = cli.getpeercert()
    assert ("DNS", "a.test") in cert["subjectAltName"]


def test_a_state_directory_that_cannot_be_made_is_reported_by_key(tmp_path: Path) -> None:
    import conf
    from proxy.acme.service import AcmeService

    (tmp_path / "file").write_text("not a directory")
    text = """
[acme]
state_dir = "STATE"
[[http]]
listen = ["127.0.0.1:1"]
tls = [{ acme = true }]
  [[http.route]]
  host = "a.test"
  status = 200
"""
    good = conf.load_text(text.replace("STATE", str(tmp_path / "state" / "acme")))
    assert AcmeService.state_dir_problem(good) is None
    assert (tmp_path / "state" / "acme").stat().st_mode & 0o777 == 0o700
    bad = conf.load_text(text.replace("STATE", str(tmp_path / "file" / "acme")))
    problem = AcmeService.state_dir_problem(bad)
    assert problem is not None and problem.startswith(f"acme.state_dir: cannot make {tmp_path}/file/acme")


def test_the_stored_account_belongs_to_one_ca(tmp_path: Path) -> None:
    import json

    from acme import messages

    from proxy.acme.board import ChallengeBoard
    from proxy.acme.client import AcmeClient

    store = CertStore(tmp_path)
    regr = messages.RegistrationResource(uri="https://ca.test/acct/1", body=messages.Registration())
    store.write_account(json.dumps({"directory": "https://ca.test/dir", "account": regr.to_json()}).encode())
    same = AcmeClient("https://ca.test/dir", store, None, None, ChallengeBoard())
    saved = same._saved_account()
    assert saved is not None and saved.uri == "https://ca.test/acct/1"
    other = AcmeClient("https://other.test/dir", store, None, None, ChallengeBoard())
    assert other._saved_account() is None  # another CA: register there (same key)
    store.write_account(b"{not json")
    assert same._saved_account() is None


@pytest.mark.asyncio
async def test_one_certificate_watch_per_event_loop() -> None:
    import asyncio

    from proxy.http.tls import watch_certificates

    first = asyncio.ensure_future(watch_certificates(0.01))
    await asyncio.sleep(0.03)
    second = asyncio.ensure_future(watch_certificates(0.01))
    await asyncio.sleep(0.03)
    assert second.done() and not first.done()  # the serving layer and a worker may both ask
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
