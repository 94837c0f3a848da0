"""The status page in a real headless Chromium (Debian's chromium package).

The page is served by a tiny HTTP server in the test from the fixture
snapshot, so this runs without a daemon; tests/integration/test_ops_daemon.py
loads the page a running sekisho serves.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proxy.process.status import render_html
from tests.support import require_tool

SNAPSHOT = Path(__file__).parent.parent / "data" / "status" / "snapshot.json"


def chromium(url: str, tmp_path: Path, screenshot: Path | None = None, extra: Sequence[str] = ()) -> str:
    """Load url in headless Chromium: the DOM after load (and a screenshot when asked)."""
    binary = require_tool("chromium")
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,900",
        *extra,
    ]
    if screenshot is not None:
        done = subprocess.run(
            [*args, f"--screenshot={screenshot}", url], check=False, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    done = subprocess.run([*args, "--dump-dom", url], check=False, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


@pytest.fixture
def page_server() -> Iterator[str]:
    body = render_html(json.loads(SNAPSHOT.read_text()), now=1700003600.0).encode()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path != "/status":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/status"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    # self-contained: the browser asked for the page and nothing else (favicon aside)
    assert {r for r in requests if r != "/favicon.ico"} == {"/status"}


def test_status_page_in_chromium(page_server: str, tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    dom = chromium(page_server, tmp_path, screenshot=shot)
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<h1>sekisho status</h1>" in dom
    assert 'data-server="192.0.2.9:80" data-state="UP"' in dom
    assert 'data-server="192.0.2.10:80" data-state="DOWN"' in dom
    assert '<span class="badge MASTER">MASTER</span>' in dom
    assert '<span class="badge BACKUP">BACKUP</span>' in dom
    assert "all servers down" in dom
