"""`make demo` (python -m proxy.process.demo) starts, and what it tells a newcomer to try works."""

from __future__ import annotations

import re
import shlex
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
CONFIG = r"; config: (\S+)"
# The `sekisho status -c FILE` line, as a newcomer would paste it into a shell.
STATUS = r"^  (\S+ status -c \S+)$"
PROMPT = "Ctrl-C stops the demo"


def _start() -> tuple[subprocess.Popen[str], str]:
    """The demo, and what it printed up to its prompt."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.process.demo"],
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
        if line.startswith(PROMPT):
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


def _state(text: str) -> Path:
    """The demo's temporary directory (where it wrote its config)."""
    found = re.search(CONFIG, text)
    assert found is not None, text
    return Path(found.group(1)).parent


def test_the_demo_does_what_it_says() -> None:
    proc, text = _start()
    try:
        assert PROMPT in text, text
        state = _state(text)
        assert state.is_dir() and state.name.startswith("sekisho-demo-")
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

        # `sekisho status -c …` exactly as printed: the venv's sekisho, the demo's config.
        line = re.search(STATUS, text, re.MULTILINE)
        assert line is not None, text
        argv = shlex.split(line.group(1))
        assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "sekisho", argv
        shown = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert shown.returncode == 0, shown.stderr
        assert "Pools" in shown.stdout and "alpha  wrr" in shown.stdout, shown.stdout
        assert f"{state}/sekisho.toml" in shown.stdout  # the daemon the demo started

        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, rest
    assert not state.exists(), f"the demo left {state} behind"
    assert "mail-a took a message from me@client.test for bob@example.com" in rest
    assert "mail-b took a message from me@client.test for carol@example.net" in rest


def test_sigterm_stops_the_demo_and_removes_its_directory() -> None:
    proc, text = _start()
    try:
        assert PROMPT in text, text
        state = _state(text)
        assert (state / "sekisho.toml").is_file()
        proc.send_signal(signal.SIGTERM)  # what `kill` or a closing terminal session does
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, rest
    assert not state.exists(), f"the demo left {state} behind"
