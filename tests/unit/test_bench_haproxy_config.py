"""The bench's HAProxy peer: tuned for bulk (splice both ways) by default, or
HAProxy's own default TCP mode with --no-haproxy-splice."""

from __future__ import annotations

from pathlib import Path

from bench.cli import parse_args
from bench.targets import Backends, haproxy_config


def _backends() -> Backends:
    b = Backends(Path("/nonexistent"), None)
    b.endpoints = {
        k: ("127.0.0.1", 9000 + i) for i, k in enumerate(("stream", "echo", "sink", "http", "upload"))
    }
    return b


def test_splice_options_only_when_asked() -> None:
    ports = {"http": 1, "stream": 2, "echo": 3, "l4http": 4}
    tuned = haproxy_config(_backends(), ports)
    plain = haproxy_config(_backends(), ports, splice=False)
    assert "option splice-request" in tuned and "option splice-response" in tuned
    assert "splice" not in plain
    assert tuned.replace("    option splice-request\n    option splice-response\n", "") == plain


def test_cli_flag() -> None:
    assert parse_args([]).haproxy_splice is True
    assert parse_args(["--no-haproxy-splice"]).haproxy_splice is False
