"""Automatic HTTPS against a real ACME CA: Debian's pebble, on loopback.

sekisho runs as `sekisho run` (a subprocess, so it can be killed); pebble's HTTP-01 and
TLS-ALPN-01 validation ports are sekisho's plain and HTTPS listeners, and its resolver
answers 127.0.0.1 for every name. Nothing of the protocol is mocked.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import signal
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from proxy.process.status import render_text
from tests.adversarial.daemon import Daemon
from tests.interop.pebble import LoopbackDns, Pebble
from tests.support import free_port, require_tool, run

pytestmark = pytest.mark.slow


def _config(  # noqa: PLR0917
    state: Path,
    pebble: Pebble,
    plain: int,
    tls: int,
    admin: int,
    tls_hosts: list[str],
    plain_hosts: list[str],
    challenges: str = '["http-01", "tls-alpn-01"]',
    workers: int = 1,
) -> str:
    out = [
        f'[global]\naccess_log = ""\nworkers = {workers}\nmetrics = "127.0.0.1:{admin}"\n',
        f'[acme]\ndirectory = "{pebble.directory}"\nca_file = "{pebble.ca_file}"\n'
        f'state_dir = "{state}"\nemail = "ops@example.test"\nchallenges = {challenges}\nretry_min = 1.0\n',
    ]
    if plain_hosts:
        out.append(f'[[http]]\nlisten = ["127.0.0.1:{plain}"]\n')
        for host in plain_hosts:
            out.append(f'[[http.route]]\nhost = "{host}"\nstatus = 418\n')
    out.append(f'[[http]]\nlisten = ["127.0.0.1:{tls}"]\ntls = [{{ acme = true }}]\n')
    for host in tls_hosts:
        out.append(f'[[http.route]]\nhost = "{host}"\nstatus = 200\n')
    return "".join(out)


@contextlib.contextmanager
def _sekisho(tmp: Path, toml: str, port: int) -> Iterator[Daemon]:
    path = tmp / "sekisho.toml"
    path.write_text(toml)
    daemon = Daemon(path, port).start(timeout=20)
    try:
        yield daemon
    finally:
        daemon.stop()


def _wait(what: str, check: object, timeout: float = 30.0, daemon: Daemon | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {''.join(daemon.log) if daemon else ''}")


def _client(cadata: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=cadata)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _get(conn: ssl.SSLSocket, host: str) -> bytes:
    conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _connect(port: int, host: str, cadata: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return _client(cadata).wrap_socket(raw, server_hostname=host)


def _served_by(port: int, host: str, cadata: str) -> tuple[str, bytes]:
    """(issuer name of the certificate sekisho serves for `host`, the answer's status line),
    verifying the chain against `cadata`."""
    with _connect(port, host, cadata) as conn:
        cert = conn.getpeercert()
        issuer = " ".join(value for rdn in cert["issuer"] for _, value in rdn)
        return str(issuer), _get(conn, host).split(b"\r\n", 1)[0]


def _admin(admin: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5) as r:
        return str(r.read().decode())


def _metrics(admin: int) -> str:
    return _admin(admin, "/metrics")


def _metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def _plain_get(port: int, host: str, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


@pytest.fixture
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    yield server
    server.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_http01_tls_alpn01_kill_mid_order_and_restart(tmp_path: Path, dns: LoopbackDns, workers: int) -> None:
    """With one process, and with two workers (the supervisor orders; the workers answer the
    challenges from the state directory and serve the certificates it writes)."""
    plain, tls, admin = free_port(), free_port(), free_port()
    pebble = Pebble(tmp_path, plain, tls, dns).start()
    state = tmp_path / "state"
    try:
        toml = _config(
            state, pebble, plain, tls, admin, ["a.test", "b.test"], ["other.test"], workers=workers
        )
        # 1. Killed mid-order: once the account exists, the orders are under way.
        path = tmp_path / "sekisho.toml"
        path.write_text(toml)
        first = Daemon(path, tls).start(timeout=20)
        try:
            _wait("the account", (state / "account.json").exists, daemon=first)
            first.signal(signal.SIGKILL)
        finally:
            first.stop()
        account = (state / "account.json").read_bytes()
        for pem in (state / "certs").glob("*.pem") if (state / "certs").exists() else ():
            assert b"BEGIN CERTIFICATE" in pem.read_bytes() and b"PRIVATE KEY" in pem.read_bytes()

        # 2. Started again: the same account; both hosts get certificates by HTTP-01.
        with _sekisho(tmp_path, toml, tls) as daemon:
            certs = [state / "certs" / "a.test.pem", state / "certs" / "b.test.pem"]
            _wait("two certificates", lambda: all(c.exists() for c in certs), daemon=daemon)
            root = pebble.root_pem()
            for host in ("a.test", "b.test"):
                _wait(f"{host} served", lambda h=host: _try_served(tls, h, root), daemon=daemon)
                issuer, status = _served_by(tls, host, root)
                assert "Pebble Intermediate" in issuer, issuer
                assert status == b"HTTP/1.1 200 OK"
            # curl with pebble's root, by SNI (what a user would run)
            (tmp_path / "pebble-root.pem").write_text(root)
            for host in ("a.test", "b.test"):
                done = run(
                    [
                        require_tool("curl"),
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--cacert",
                        str(tmp_path / "pebble-root.pem"),
                        "--resolve",
                        f"{host}:{tls}:127.0.0.1",
                        f"https://{host}:{tls}/",
                    ],
                    check=False,
                )
                assert done.stdout == "200", done.stderr
            log = "".join(daemon.log)
            # A host whose authorization the killed run already won is issued on it ("reused":
            # pebble, as Let's Encrypt, keeps a valid authorization): HTTP-01 either way.
            assert log.count("(http-01)") + log.count("(reused)") == 2, log
            assert "(tls-alpn-01)" not in log, log
            assert "new account key" not in log and "acme: account" not in log, log
            assert (state / "account.json").read_bytes() == account
            for f in [*certs, state / "account.json", state / "account.key"]:
                assert f.stat().st_mode & 0o777 == 0o600, f
            text = _metrics(admin)
            assert _metric(text, "sekisho_acme_orders_total", 'result="success"') == 2
            not_after = _metric(text, "sekisho_tls_certificate_expiry_timestamp_seconds", 'host="a.test"')
            assert not_after > time.time() + 86400
            # A challenge request for a host sekisho does not manage is routed as any other;
            # for a managed host it is never routed (404 for an unknown token).
            assert _plain_get(plain, "other.test", "/.well-known/acme-challenge/x").startswith(
                b"HTTP/1.1 418"
            )
            assert _plain_get(plain, "a.test", "/.well-known/acme-challenge/x").startswith(b"HTTP/1.1 404")
        before = {c: c.stat().st_mtime_ns for c in certs}

        # 3. Restart with a third host, reachable only on the TLS listener: TLS-ALPN-01;
        # the stored certificates are served at once and not ordered again.
        toml = _config(
            state, pebble, plain, tls, admin, ["a.test", "b.test", "c.test"], [], '["tls-alpn-01"]', workers
        )
        with _sekisho(tmp_path, toml, tls) as daemon:
            issuer, _ = _served_by(tls, "a.test", root)  # at once: from the state directory
            assert "Pebble Intermediate" in issuer
            c_cert = state / "certs" / "c.test.pem"
            _wait("c.test's certificate", c_cert.exists, daemon=daemon)
            _wait("c.test served", lambda: _try_served(tls, "c.test", root), daemon=daemon)
            log = "".join(daemon.log)
            assert "c.test: new certificate (tls-alpn-01)" in log, log
            assert "a.test: ordering" not in log and "b.test: ordering" not in log, log
            assert {c: c.stat().st_mtime_ns for c in certs} == before
            assert _metric(_metrics(admin), "sekisho_acme_orders_total", 'result="success"') == 1

            # 4. A reload (SIGHUP) that adds a host: ordered and served without a restart.
            (tmp_path / "sekisho.toml").write_text(
                _config(
                    state,
                    pebble,
                    plain,
                    tls,
                    admin,
                    ["a.test", "b.test", "c.test", "d.test"],
                    [],
                    '["tls-alpn-01"]',
                    workers,
                )
            )
            daemon.signal(signal.SIGHUP)
            _wait("d.test served", lambda: _try_served(tls, "d.test", root), daemon=daemon)
            assert _metric(_metrics(admin), "sekisho_acme_orders_total", 'result="success"') == 2
    finally:
        pebble.stop()


def _try_served(port: int, host: str, cadata: str) -> bool:
    try:
        _served_by(port, host, cadata)
    except (OSError, ssl.SSLError):
        return False
    return True


def test_renewal_swaps_without_dropping_and_survives_ca_outage(tmp_path: Path, dns: LoopbackDns) -> None:
    plain, tls, admin = free_port(), free_port(), free_port()
    pebble = Pebble(tmp_path, plain, tls, dns)  # not started: the CA is down
    state = tmp_path / "state"
    # A certificate near its end (two thirds of its life gone) from another CA, as left by
    # an earlier run: served at once, due for renewal at once.
    old_ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    leaf = old_ca.issue_cert(
        "a.test",
        not_before=now - datetime.timedelta(hours=2),
        not_after=now + datetime.timedelta(minutes=30),
    )
    (state / "certs").mkdir(parents=True)
    pem = leaf.private_key_pem.bytes() + b"".join(b.bytes() for b in leaf.cert_chain_pems)
    (state / "certs" / "a.test.pem").write_bytes(pem)
    old_root = old_ca.cert_pem.bytes().decode()
    toml = _config(state, pebble, plain, tls, admin, ["a.test", "d.test"], ["other.test"])
    try:
        with _sekisho(tmp_path, toml, tls) as daemon:
            issuer, status = _served_by(tls, "a.test", old_root)
            assert status == b"HTTP/1.1 200 OK"
            # The CA is down: orders fail, the old certificate is still served, it shows.
            _wait(
                "a failed order",
                lambda: _metric(_metrics(admin), "sekisho_acme_orders_total", 'result="failure"') >= 1,
                daemon=daemon,
            )
            text = _metrics(admin)
            assert _metric(text, "sekisho_acme_certificate_failures", 'host="a.test"') >= 1
            assert _served_by(tls, "a.test", old_root)[0] == issuer
            assert "order failed" in "".join(daemon.log)
            status = json.loads(_admin(admin, "/api/status"))
            states = {c["host"]: c for c in status["acme"]["certificates"]}
            assert states["a.test"]["state"] == "failing" and states["a.test"]["last_error"]
            assert states["d.test"]["state"] == "failing"
            assert "CERTIFICATES (ACME)" in render_text(status)
            # A managed host without a certificate yet: a clear alert at once, not a hang.
            started = time.monotonic()
            with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
                _served_by(tls, "d.test", old_root)
            assert time.monotonic() - started < 5

            # A client keeps a connection open across the swap; another makes new ones.
            kept = _connect(tls, "a.test", old_root)
            assert _get(kept, "a.test").startswith(b"HTTP/1.1 200")
            pebble.start()
            both = old_root + pebble.root_pem()
            failures: list[str] = []
            served: set[str] = set()
            stop = threading.Event()

            def new_connections() -> None:
                deadline = time.monotonic() + 40
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        issuer, status = _served_by(tls, "a.test", both)
                        served.add(issuer)
                        if status != b"HTTP/1.1 200 OK":
                            failures.append(status.decode())
                    except (OSError, ssl.SSLError) as exc:
                        failures.append(repr(exc))
                    time.sleep(0.05)

            worker = threading.Thread(target=new_connections, daemon=True)
            worker.start()
            try:
                _wait(
                    "the renewed certificate",
                    lambda: _try_served_by_pebble(tls, pebble),
                    timeout=40,
                    daemon=daemon,
                )
                time.sleep(0.3)
            finally:
                stop.set()
                worker.join(10)
            assert not failures, failures
            assert any("Pebble Intermediate" in i for i in served), served
            assert _get(kept, "a.test").startswith(b"HTTP/1.1 200")  # the open one goes on
            kept.close()
            text = _metrics(admin)
            _wait("d.test's certificate", (state / "certs" / "d.test.pem").exists, daemon=daemon)
            text = _metrics(admin)
            assert _metric(text, "sekisho_acme_orders_total", 'result="success"') == 2
            assert _metric(text, "sekisho_acme_certificate_failures", 'host="a.test"') == 0
            assert _metric(text, "sekisho_tls_certificate_expiry_timestamp_seconds", 'host="a.test"') > (
                time.time() + 86400
            )
    finally:
        pebble.stop()


def _try_served_by_pebble(port: int, pebble: Pebble) -> bool:
    try:
        return "Pebble Intermediate" in _served_by(port, "a.test", pebble.root_pem())[0]
    except (OSError, ssl.SSLError):
        return False


def test_an_account_the_ca_does_not_know_is_registered_again(tmp_path: Path, dns: LoopbackDns) -> None:
    plain, tls, admin = free_port(), free_port(), free_port()
    pebble = Pebble(tmp_path, plain, tls, dns).start()
    state = tmp_path / "state"
    state.mkdir()
    forgotten = {"uri": f"https://127.0.0.1:{pebble.port}/my-account/424242", "body": {}}
    (state / "account.json").write_text(json.dumps({"directory": pebble.directory, "account": forgotten}))
    try:
        toml = _config(state, pebble, plain, tls, admin, ["a.test"], ["other.test"])
        with _sekisho(tmp_path, toml, tls) as daemon:
            _wait("a.test's certificate", (state / "certs" / "a.test.pem").exists, daemon=daemon)
            log = "".join(daemon.log)
            assert "accountDoesNotExist" in log, log
            account = json.loads((state / "account.json").read_text())
            assert account["directory"] == pebble.directory
            assert account["account"]["uri"] != forgotten["uri"]
    finally:
        pebble.stop()
