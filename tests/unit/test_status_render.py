"""proxy.process.status renderers against a fixture snapshot (the /api/status shape)."""

from __future__ import annotations

import html.parser
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.process.status import admin_url, duration, render_html, render_text

SNAPSHOT = Path(__file__).parent.parent / "data" / "status" / "snapshot.json"
NOW = 1700003600.0


@pytest.fixture
def snapshot() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SNAPSHOT.read_text())
    return data


def test_text_table(snapshot: dict[str, Any]) -> None:
    text = render_text(snapshot, now=NOW)
    lines = text.splitlines()
    assert lines[0] == "sekisho 0.1.0  config /etc/sekisho/sekisho.toml  up 1h00m  reloads 2"
    assert "  0.0.0.0:80        http  www.example.com /  pool:alpha" in lines
    assert any(line.split()[:2] == ["0.0.0.0:25", "smtp"] and "rcpt @example.com" in line for line in lines)
    assert "  alpha  wrr  health http  1/2 up" in lines
    assert "  squid  wlc  0/2 up  ALL SERVERS DOWN" in lines
    up = next(line for line in lines if "-> 192.0.2.9:80" in line)
    assert up.split()[2:9] == ["UP", "3", "3", "9", "36001", "0", "ok"]
    assert up.endswith("2.1ms 5s ago")
    down = next(line for line in lines if "-> 192.0.2.10:80" in line)
    assert (
        "(web2.example.com:80)" in down
        and "DOWN" in down
        and "failed connect timeout 2000.0ms 2s ago" in down
    )
    assert "UP sorry" in next(line for line in lines if "192.0.2.50:80" in line)
    assert "failed connection refused" in text  # lb's "reason" is read too
    vi = next(line for line in lines if line.startswith("  VI "))
    assert vi.split()[:5] == ["VI", "eth0", "1", "MASTER", "101"]
    assert "this node (192.0.2.2)" in vi and "10m00s ago" in vi
    vi6 = next(line for line in lines if line.startswith("  VI6"))
    assert "BACKUP" in vi6 and "192.0.2.3" in vi6


def test_text_tolerates_an_empty_or_odd_snapshot() -> None:
    text = render_text({}, now=NOW)
    assert text.startswith("sekisho ?")
    assert text.count("(none)") == 4
    render_text({"pools": [{"servers": [{}]}, "junk"], "vrrp": [{"state": "FAULT"}], "listeners": None})


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_page(snapshot: dict[str, Any]) -> None:
    page = render_html(snapshot, now=NOW)
    parser = _Collector()
    parser.feed(page)
    tags = parser.tags
    # self-contained: nothing loaded from anywhere, no script
    assert not [t for t, a in tags if t in ("script", "img", "iframe") or (t == "link" and a.get("href"))]
    assert ("meta", {"http-equiv": "refresh", "content": "5"}) in tags
    servers = {a["data-server"]: a["data-state"] for t, a in tags if t == "tr" and "data-server" in a}
    assert servers == {
        "192.0.2.9:80": "UP",
        "192.0.2.10:80": "DOWN",
        "192.0.2.50:80": "UP",
        "10.10.10.10:8080": "DOWN",
        "10.10.10.20:8080": "DOWN",
    }
    assert '<span class="badge MASTER">MASTER</span>' in page
    assert "all servers down" in page
    assert "redirect:https://www.example.com/" in page


def test_html_escapes_everything() -> None:
    evil = "<script>alert(1)</script>"
    page = render_html(
        {
            "version": evil,
            "pools": [{"name": evil, "servers": [{"address": evil, "up": True}]}],
            "vrrp": [{"name": evil, "state": evil}],
            "routes": [{"host": evil}],
        },
        now=NOW,
    )
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1:9100", "http://127.0.0.1:9100/api/status"),
        ("0.0.0.0:9100", "http://127.0.0.1:9100/api/status"),
        ("[::]:9100", "http://[::1]:9100/api/status"),
        ("[::1]:9100", "http://[::1]:9100/api/status"),
        ("localhost:9100", "http://localhost:9100/api/status"),
    ],
)
def test_admin_url(address: str, url: str) -> None:
    assert admin_url(address) == url


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (754, "12m34s"), (7380, "2h03m"), (93784, "1d2h03m")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
