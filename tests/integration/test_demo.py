"""`make demo` (python -m proxy.demo) starts, and what it tells a newcomer to try works."""

from __future__ import annotations

import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where the demo's printed commands name its ports (the preferred ones or, when taken, any).
HTTP_PORT = r"http://127\.0\.0\.1:(\d+)/ "
TCP_PORT = r"/dev/tcp/127\.0\.0\.1/(\d+)"
SMTP_PORT = r"smtp://127\.0\.0\.1:(\d+)"
METRICS_PORT = r"http://127\.0\.0\.1:(\d+)/metrics"


def _start() -> tuple[subprocess.Popen[str], str]:
    """The demo, and what it printed up to its prompt."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops the demo."):
            break
    return proc, "".join(lines)


def _port(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, text
    return int(found.group(1))


def _get(url: str, host: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_demo_does_what_it_says() -> None:
    proc, text = _start()
    try:
        assert "Ctrl-C stops the demo." in text, text
        assert "pip install aiosmtpd" not in text  # the test extras have it: the mail part runs
        web = f"http://127.0.0.1:{_port(HTTP_PORT, text)}"
        status, body = _get(f"{web}/", "www.example.com")
        assert status == 200 and body.startswith("hello from alpha-")
        status, body = _get(f"{web}/app/x", "beta.example.com")
        assert status == 200 and "request: GET /x HTTP/1.1" in body  # strip_prefix
        assert _get(f"{web}/-/admin")[0] == 404
        with socket.create_connection(("127.0.0.1", _port(HTTP_PORT, text)), 5) as s:
            # curl's large uploads: the interim 100 from the site comes through before the body goes
            s.sendall(b"POST /up HTTP/1.1\r\nHost: www.example.com\r\n")
            s.sendall(b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
            s.sendall(b"hello")
            assert s.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")

        with socket.create_connection(("127.0.0.1", _port(TCP_PORT, text)), 5) as s:
            s.sendall(b"hi\n")
            assert s.recv(100) == b"hi\n"

        with smtplib.SMTP("127.0.0.1", _port(SMTP_PORT, text), timeout=5) as smtp:
            letter = b"Subject: hi\r\n\r\nhello\r\n"
            assert smtp.sendmail("me@client.test", ["bob@example.com"], letter) == {}
            assert smtp.sendmail("me@client.test", ["carol@example.net"], letter) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                smtp.sendmail("me@client.test", ["eve@elsewhere.test"], letter)
            assert refused.value.recipients["eve@elsewhere.test"][0] == 550

        status, metrics = _get(f"http://127.0.0.1:{_port(METRICS_PORT, text)}/metrics")
        assert status == 200 and "sekisho_" in metrics

        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "mail-a took a message from me@client.test for bob@example.com" in rest
    assert "mail-b took a message from me@client.test for carol@example.net" in rest
