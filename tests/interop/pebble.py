"""Pebble (Let's Encrypt's RFC 8555 test CA) on loopback, with a resolver of our own.

Pebble validates by connecting to the name being proved: its `-dnsserver` here is a tiny
UDP resolver (`LoopbackDns`) that answers every A query with 127.0.0.1 (and AAAA with no
address), so any test host name reaches the sekisho under test. Its own HTTPS (the ACME
directory, the management API with the issuing root) uses a certificate from a trustme CA
made by the test; nothing is read from outside the repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import trustme

from tests.support import free_port, require_tool


class LoopbackDns:
    """A resolver that knows one answer: every name is 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(IndexError, struct.error, OSError):
                self.sock.sendto(self._answer(data), peer)

    def _answer(self, query: bytes) -> bytes:
        self.queries += 1
        p = 12
        while query[p]:
            p += 1 + query[p]
        question = query[12 : p + 5]
        qtype = struct.unpack("!H", query[p + 1 : p + 3])[0]
        answers = b""
        if qtype == 1:  # A
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        flags = 0x8180  # response, recursion desired and available, NOERROR
        header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if answers else 0, 0, 0)
        return header + question + answers

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Pebble:
    """`pebble` with its validation ports pointed at ours; stop()/start() keep its ports."""

    def __init__(self, tmp: Path, http_port: int, tls_port: int, dns: LoopbackDns) -> None:
        self.binary = require_tool("pebble")
        self.tmp = tmp
        self.dns = dns
        self.port = free_port()
        self.management = free_port()
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tmp / "pebble-https-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert, key = tmp / "pebble-cert.pem", tmp / "pebble-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        self.config = tmp / "pebble.json"
        self.config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.management}",
                        "certificate": str(cert),
                        "privateKey": str(key),
                        "httpPort": http_port,
                        "tlsPort": tls_port,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        self._https = ssl.create_default_context(cafile=str(self.ca_file))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "pebble.log"

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self, timeout: float = 15.0) -> Pebble:
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.get(self.directory)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"pebble did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, context=self._https, timeout=5) as response:
            body: bytes = response.read()
            return body

    def root_pem(self) -> str:
        """The root that signs this pebble's certificates (it makes a new one at every start)."""
        return self.get(f"https://127.0.0.1:{self.management}/roots/0").decode()
