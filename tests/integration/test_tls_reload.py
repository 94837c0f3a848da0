"""Certificate files configured by path are reloaded when they change on disk (a certbot
deploy hook needs nothing but the files): in every worker, checked with the key first,
without a reload and without dropping an open connection."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import trustme

from tests.adversarial.daemon import Daemon
from tests.support import free_port


def _issuer(port: int, cadata: str) -> str:
    ctx = ssl.create_default_context(cadata=cadata)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="www.example.test") as conn,
    ):
        cert = conn.getpeercert()
        return " ".join(value for rdn in cert["issuer"] for _, value in rdn)


def _request(conn: ssl.SSLSocket) -> bytes:
    conn.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_changed_certificate_files_are_served_once_the_key_matches(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(organization_name="Old CA"), trustme.CA(organization_name="New CA")
    cert, key = tmp_path / "site.pem", tmp_path / "site.key"
    first = old_ca.issue_cert("www.example.test")
    first.cert_chain_pems[0].write_to_path(str(cert))
    first.private_key_pem.write_to_path(str(key))
    port, admin = free_port(), free_port()
    toml = tmp_path / "sekisho.toml"
    toml.write_text(
        f'[global]\naccess_log = ""\nworkers = 2\nmetrics = "127.0.0.1:{admin}"\n'
        f'[[http]]\nlisten = ["127.0.0.1:{port}"]\ntls = [{{ cert = "{cert}", key = "{key}" }}]\n'
        "[[http.route]]\nstatus = 204\n"
    )
    both = old_ca.cert_pem.bytes().decode() + new_ca.cert_pem.bytes().decode()
    daemon = Daemon(toml, port).start(timeout=20)
    try:
        deadline = time.monotonic() + 20  # both workers up (each reads the files as it starts)
        while sum("serving" in line for line in daemon.log) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "Old CA" in _issuer(port, both)
        kept = ssl.create_default_context(cadata=both).wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="www.example.test"
        )
        assert _request(kept) == b"HTTP/1.1 204 No Content"
        # The new certificate lands before its key (certbot writes one file, then the other):
        # the pair does not match, so the old one goes on being served.
        second = new_ca.issue_cert("www.example.test")
        second.cert_chain_pems[0].write_to_path(str(cert))
        time.sleep(3.0)  # more than one look at the files (every 2 s)
        assert all("Old CA" in _issuer(port, both) for _ in range(4))
        assert "does not load, still serving the old certificate" in "".join(daemon.log)
        second.private_key_pem.write_to_path(str(key))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # every worker: four new connections in a row
            if all("New CA" in _issuer(port, both) for _ in range(4)):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the new certificate was not served: {''.join(daemon.log)}")
        assert _request(kept) == b"HTTP/1.1 204 No Content"  # the open connection goes on
        kept.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        expiry = 'sekisho_tls_certificate_expiry_timestamp_seconds{host="www.example.test"} '
        assert expiry in metrics, metrics  # the supervisor reads the files its workers serve
    except Exception as exc:
        raise AssertionError(f"{exc!r}; sekisho said: {''.join(daemon.log)}") from exc
    finally:
        daemon.stop()


def _workers_serving(daemon: Daemon) -> int:
    return sum(bool(re.search(r"worker \d+ \(generation \d+\) serving", line)) for line in daemon.log)


def test_a_worker_restarted_while_the_certificate_is_half_written_serves_the_checked_copy(
    tmp_path: Path,
) -> None:
    """nginx's and HAProxy's workers take their certificates from the master's memory; ours
    read the files, so a worker restarted after a crash while a deploy rewrites the
    certificate would fail to start (and be retried after the crash-loop brake) where its
    sibling serves on. It serves the copy the supervisor checked at the last (re)load."""
    ca = trustme.CA(organization_name="Checked CA")
    cert, key = tmp_path / "site.pem", tmp_path / "site.key"
    issued = ca.issue_cert("www.example.test")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    port = free_port()
    toml = tmp_path / "sekisho.toml"
    toml.write_text(
        f'[global]\naccess_log = ""\nworkers = 2\n'
        f'[[http]]\nlisten = ["127.0.0.1:{port}"]\ntls = [{{ cert = "{cert}", key = "{key}" }}]\n'
        "[[http.route]]\nstatus = 204\n"
    )
    cadata = ca.cert_pem.bytes().decode()
    daemon = Daemon(toml, port).start(timeout=20)
    try:
        deadline = time.monotonic() + 20
        while _workers_serving(daemon) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.2)  # past the crash-loop brake (a worker dying in its first second waits)
        pem = cert.read_bytes()
        cert.write_bytes(pem[: len(pem) // 2])  # a deploy caught half way
        children = ["ps", "--ppid", str(daemon.pid), "-o", "pid="]
        ps = subprocess.run(children, check=True, capture_output=True, text=True)
        os.kill(min(int(p) for p in ps.stdout.split()), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _workers_serving(daemon) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workers_serving(daemon) == 3, "the restarted worker does not serve"
        assert "serving the copy the supervisor checked" in "".join(daemon.log)
        # 16 new connections: the kernel hashes them over both workers' sockets.
        assert all("Checked CA" in _issuer(port, cadata) for _ in range(16))
    except Exception as exc:
        raise AssertionError(f"{exc!r}; sekisho said: {''.join(daemon.log)}") from exc
    finally:
        daemon.stop()
