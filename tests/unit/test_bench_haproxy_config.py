"""The bench's HAProxy peer: tuned (splice both ways, tcp-smart-connect) by
default, or HAProxy's own default TCP mode with --no-haproxy-tuned."""

from __future__ import annotations

from pathlib import Path

from bench.cli import parse_args
from bench.targets import TUNED_HAPROXY, Backends, haproxy_config


def _backends() -> Backends:
    b = Backends(Path("/nonexistent"), None)
    b.endpoints = {
        k: ("127.0.0.1", 9000 + i) for i, k in enumerate(("stream", "echo", "sink", "http", "upload"))
    }
    return b


def test_tuning_options_only_when_asked() -> None:
    ports = {"http": 1, "stream": 2, "echo": 3, "l4http": 4}
    tuned = haproxy_config(_backends(), ports)
    plain = haproxy_config(_backends(), ports, tuned=False)
    for option in ("option splice-request", "option splice-response", "option tcp-smart-connect"):
        assert option in tuned
    assert "splice" not in plain and "smart" not in plain
    assert tuned.replace("".join(line + "\n" for line in TUNED_HAPROXY), "") == plain


def test_cli_flag() -> None:
    assert parse_args([]).haproxy_tuned is True
    assert parse_args(["--no-haproxy-tuned"]).haproxy_tuned is False
    assert parse_args(["--no-haproxy-splice"]).haproxy_tuned is False  # the earlier name
