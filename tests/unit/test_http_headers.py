"""Header policy: strict pre-checks, hop-by-hop removal, client address headers."""

from __future__ import annotations

import pytest

from proxy.http.headers import (
    RequestPolicy,
    check_content_length,
    head_end,
    precheck_head,
    response_headers,
)

ALL = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"]


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    found = [v for n, v in headers if n == name]
    assert len(found) <= 1, f"{name!r} appears {len(found)} times"
    return found[0] if found else None


def test_head_end() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody") == 27
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") == -1
    assert head_end(b"GET / HTTP/1.1\nHost: a\n\n") == -2
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\n") == -2


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", "NUL"),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "bare CR"),
        (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", "bare CR or LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", "folding"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", "folding"),
    ],
)
def test_precheck_head(head: bytes, problem: str | None) -> None:
    reason = precheck_head(head)
    if problem is None:
        assert reason is None
    else:
        assert reason is not None and problem in reason


@pytest.mark.parametrize(
    ("head", "ok"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\ncontent-length:5 \r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", False),
    ],
)
def test_content_length(head: bytes, ok: bool) -> None:
    assert (check_content_length(head) is None) is ok


def apply(
    headers: list[tuple[bytes, bytes]], trusted: bool = False, **kw: object
) -> list[tuple[bytes, bytes]]:
    policy = RequestPolicy(kw.pop("names", ALL))  # type: ignore[arg-type]
    return policy.apply(headers, peer="192.0.2.7", proto=b"https", trusted=trusted, chunked=False, **kw)  # type: ignore[arg-type]


def test_hop_by_hop_removed_from_requests() -> None:
    out = apply(
        [
            (b"host", b"a"),
            (b"connection", b"keep-alive, x-secret, content-length, host, transfer-encoding"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-connection", b"keep-alive"),
            (b"te", b"gzip"),
            (b"upgrade", b"h2c"),
            (b"x-secret", b"1"),
            (b"content-length", b"3"),
            (b"x-keep", b"yes"),
        ]
    )
    kept = names(out)
    for gone in (b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"x-secret"):
        assert gone not in kept
    # Connection can never remove Host or the framing.
    assert value(out, b"host") == b"a"
    assert value(out, b"content-length") == b"3"
    assert value(out, b"x-keep") == b"yes"


def test_te_trailers_survives_and_chunked_is_reframed() -> None:
    policy = RequestPolicy(ALL)
    out = policy.apply(
        [(b"host", b"a"), (b"te", b"trailers, deflate"), (b"transfer-encoding", b"chunked")],
        peer="192.0.2.7",
        proto=b"http",
        trusted=False,
        chunked=True,
    )
    assert value(out, b"te") == b"trailers"
    assert value(out, b"transfer-encoding") == b"chunked"


def test_upgrade_kept_when_tunnelling() -> None:
    policy = RequestPolicy(ALL)
    out = policy.apply(
        [(b"host", b"a"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")],
        peer="192.0.2.7",
        proto=b"http",
        trusted=False,
        chunked=False,
        upgrade=b"websocket",
    )
    assert value(out, b"connection") == b"upgrade"
    assert value(out, b"upgrade") == b"websocket"


def test_untrusted_client_cannot_forge_its_address() -> None:
    out = apply(
        [
            (b"host", b"www.example.com"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-real-ip", b"10.0.0.1"),
            (b"forwarded", b"for=10.0.0.1"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"evil"),
        ]
    )
    assert value(out, b"x-forwarded-for") == b"192.0.2.7"
    assert value(out, b"x-real-ip") == b"192.0.2.7"
    assert value(out, b"forwarded") == b"for=192.0.2.7;proto=https;host=www.example.com"
    assert value(out, b"x-forwarded-proto") == b"https"
    assert value(out, b"x-forwarded-host") == b"www.example.com"


def test_trusted_proxy_chain_is_extended() -> None:
    out = apply(
        [
            (b"host", b"h"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"forwarded", b"for=10.0.0.1"),
            (b"x-forwarded-proto", b"http"),
        ],
        trusted=True,
    )
    assert value(out, b"x-forwarded-for") == b"10.0.0.1, 10.0.0.2, 192.0.2.7"
    assert value(out, b"forwarded") == b"for=10.0.0.1, for=192.0.2.7;proto=https;host=h"
    assert value(out, b"x-forwarded-proto") == b"http"


def test_unconfigured_headers_are_dropped_from_untrusted_peers_and_not_added() -> None:
    out = apply([(b"host", b"h"), (b"x-forwarded-for", b"1.2.3.4")], names=["x-forwarded-proto"])
    assert value(out, b"x-forwarded-for") is None
    assert value(out, b"x-forwarded-proto") == b"https"


def test_forwarded_ipv6_is_quoted() -> None:
    policy = RequestPolicy(["forwarded"])
    out = policy.apply([(b"host", b"h")], peer="2001:db8::1", proto=b"http", trusted=False, chunked=False)
    assert value(out, b"forwarded") == b'for="[2001:db8::1]";proto=http;host=h'


def test_hop_by_hop_removed_from_responses() -> None:
    out = response_headers(
        [
            (b"content-length", b"5"),
            (b"connection", b"close, x-internal, content-length"),
            (b"keep-alive", b"timeout=5"),
            (b"x-internal", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2"),
            (b"server", b"backend"),
        ]
    )
    assert names(out) == [b"content-length", b"server"]


def test_101_keeps_upgrade() -> None:
    out = response_headers(
        [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", b"x")],
        upgrade=True,
    )
    assert set(names(out)) == {b"upgrade", b"connection", b"sec-websocket-accept"}
