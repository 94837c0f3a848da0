"""`sekisho status` against an admin endpoint served by the test (loopback)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proxy.process import status
from tests.support import free_port

SNAPSHOT = Path(__file__).parent.parent / "data" / "status" / "snapshot.json"


@pytest.fixture
def admin() -> Iterator[str]:
    body = SNAPSHOT.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/api/status":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return status.main(argv, out, err), out.getvalue(), err.getvalue()


def test_table(admin: str) -> None:
    rc, out, _ = _main(["--admin", admin])
    assert rc == 0
    assert "-> 192.0.2.9:80" in out and "MASTER" in out and "ALL SERVERS DOWN" in out


def test_json(admin: str) -> None:
    rc, out, _ = _main(["--admin", admin, "--json"])
    assert rc == 0
    assert json.loads(out) == json.loads(SNAPSHOT.read_text())


def test_admin_address_from_the_config(admin: str, tmp_path: Path) -> None:
    config = tmp_path / "sekisho.toml"
    config.write_text(f'[global]\nmetrics = "{admin}"\n')
    rc, out, _ = _main(["-c", str(config), "--json"])
    assert rc == 0 and json.loads(out)["version"] == "0.1.0"


def test_no_metrics_listener_in_config(tmp_path: Path) -> None:
    config = tmp_path / "sekisho.toml"
    config.write_text("[global]\n")
    rc, _, err = _main(["-c", str(config)])
    assert rc == 2 and "global.metrics" in err


def test_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "sekisho.toml"
    config.write_text("[global]\nmetrics = 9100\n")
    rc, _, err = _main(["-c", str(config)])
    assert rc == 2 and "global.metrics" in err


def test_no_config_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `sekisho status` with no -c reads the default config; where there is none, say what to pass.
    monkeypatch.setattr(status, "DEFAULT_CONFIG", str(tmp_path / "sekisho.toml"))
    rc, out, err = _main([])
    assert rc == 2 and out == ""
    assert f"cannot read {tmp_path / 'sekisho.toml'}" in err
    assert "-c FILE" in err and "--admin HOST:PORT" in err


def test_daemon_not_running() -> None:
    rc, _, err = _main(["--admin", f"127.0.0.1:{free_port()}", "--timeout", "2"])
    assert rc == 1 and "no answer" in err and "is sekisho running" in err
