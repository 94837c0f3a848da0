"""The per-request fast paths give exactly what the general code gives.

precheck_head's three-pass filter against the check-by-check version, the one-pass
backend request head against `apply` + `request_head`, and the client response
fields parse_head builds against `response_headers` over the parsed fields (names
compared without case: parse_head keeps the backend's).
"""

from __future__ import annotations

import random

import h11
import pytest

from proxy.http.headers import RequestPolicy, _precheck_reason, precheck_head, response_headers
from proxy.http.response import _FIELDS, ResponseError, parse_head, request_head

SEEDS = range(4)

REQUEST_PIECES = [
    b"Host: a.example",
    b"Host: [::1]:80",
    b"Host: a b",
    b"Host:",
    b"host :x",
    b"X: a\tb",
    b"X: \x01",
    b"X: \x7f",
    b"X: \x00",
    b"X: caf\xc3\xa9",
    b" folded",
    b"\tfolded",
    b"Transfer_Encoding: chunked",
    b"content_length: 1",
    b"Content-Length: 5",
    b"X: a\rb",
    b"X: a\nb",
    b"",
]


def random_head(rnd: random.Random) -> bytes:
    line = rnd.choice([b"GET / HTTP/1.1", b"GET / HTTP/1.0", b"GET / HTTP/2.0", b"GET /\x01 HTTP/1.1"])
    fields = [rnd.choice(REQUEST_PIECES) for _ in range(rnd.randint(0, 4))]
    return b"\r\n".join([line, *fields]) + b"\r\n\r\n"


@pytest.mark.parametrize("seed", SEEDS)
def test_precheck_fast_path_agrees(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(3000):
        head = random_head(rnd)
        assert precheck_head(head) == _precheck_reason(head), head


NAMES = [
    b"host",
    b"x-forwarded-for",
    b"x-real-ip",
    b"forwarded",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"connection",
    b"te",
    b"close",
    b"x-a",
    b"keep-alive",
    b"upgrade",
    b"transfer-encoding",
    b"content-length",
    b"accept",
]
VALUES = [
    b"a",
    b"close",
    b"keep-alive",
    b"x-a",
    b"trailers",
    b"close, x-a",
    b"te, upgrade",
    b"Keep-Alive, Close",
    b"host",
    b"content-length",
    b"h:80",
    b'a "b"',
    b"",
]
POLICIES = [
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"],
    [],
    ["forwarded", "x-real-ip"],
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"],
]


@pytest.mark.parametrize("seed", SEEDS)
def test_one_pass_request_head_agrees(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(3000):
        policy = RequestPolicy(rnd.choice(POLICIES))
        items = [(n.upper(), n, rnd.choice(VALUES)) for n in rnd.sample(NAMES, rnd.randint(0, 6))]
        peer = rnd.choice(["192.0.2.1", "2001:db8::1"])
        proto = rnd.choice([b"http", b"https"])
        trusted = rnd.random() < 0.2
        chunked = rnd.random() < 0.3
        upgrade = rnd.choice([None, b"websocket"])
        general = request_head(
            b"GET",
            b"/x",
            policy.apply(
                [(n, v) for _, n, v in items],
                peer=peer,
                proto=proto,
                trusted=trusted,
                chunked=chunked,
                upgrade=upgrade,
            ),
        )
        fast = policy.request_head(
            b"GET", b"/x", items, peer=peer, proto=proto, trusted=trusted, chunked=chunked, upgrade=upgrade
        )
        assert fast == general, items


def test_one_pass_request_head_from_h11() -> None:
    c = h11.Connection(h11.SERVER)
    c.receive_data(
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n"
    )
    req = c.next_event()
    assert isinstance(req, h11.Request)
    out = RequestPolicy(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]).request_head(
        req.method,
        req.target,
        req.headers._full_items,
        peer="192.0.2.7",
        proto=b"http",
        trusted=False,
        chunked=False,
    )
    assert out == (
        b"GET /a HTTP/1.1\r\nhost: h\r\nx-forwarded-for: 192.0.2.7\r\n"
        b"x-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
    )


RESPONSE_NAMES = [
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Keep-Alive",
    b"TE",
    b"Upgrade",
    b"Close",
    b"X-A",
    b"Server",
    b"Host",
    b"Proxy-Connection",
]
RESPONSE_VALUES = [b"5", b"chunked", b"close", b"keep-alive", b"x-a", b"Close, X-A", b"upgrade", b"a b", b""]


@pytest.mark.parametrize("seed", SEEDS)
def test_response_fields_agree(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(3000):
        lines = [
            rnd.choice(RESPONSE_NAMES)
            + b":"
            + rnd.choice([b"", b" ", b"\t "])
            + rnd.choice(RESPONSE_VALUES)
            + rnd.choice([b"", b" ", b"\t"])
            for _ in range(rnd.randint(0, 6))
        ]
        raw = rnd.choice([b"HTTP/1.1 200 OK", b"HTTP/1.0 204 "]) + b"".join(b"\r\n" + line for line in lines)
        try:
            head = parse_head(raw + b"\r\n")
        except ResponseError:
            continue
        if head.fields is None:  # `Connection` names fields: the general path decides
            continue
        expected = [
            (n, b": " + v + b"\r\n")
            for n, v in response_headers(head.headers)
            if head.status != 204 or n != b"content-length"  # RFC 9110 8.6
        ]
        # The same lines, names in the backend's case (RFC 9110 5.1; nginx relays them so).
        got = [line.partition(b":") for line in head.fields.split(b"\r\n")[:-1]]
        assert [(n.lower(), b":" + rest + b"\r\n") for n, _, rest in got] == expected, raw
        assert {n for n, _, _ in got} <= set(RESPONSE_NAMES), raw


FIELD_PIECES = [
    b"X-A: b",
    b"x: \tv\t ",
    b"Y:",
    b"Z:  ",
    b" folded",
    b"\tfolded",
    b"X :v",
    b": v",
    b"X: a\rb",
    b"X: a\nb",
]
FIELD_PIECES += [
    b"X: \x00",
    b"X: \x7f",
    b"X: caf\xc3\xa9",
    b"X\x01: v",
    b"",
    b"X: v\r",
    b"\nX: v",
    b"X-B: \x80",
]


@pytest.mark.parametrize("seed", SEEDS)
def test_field_block_acceptance_matches_the_grammar(seed: int) -> None:
    """parse_head's line count check accepts exactly the blocks `_FIELDS` (the field-line
    grammar) accepts."""
    rnd = random.Random(seed)
    for _ in range(3000):
        block = b"".join(rnd.choice(FIELD_PIECES) + b"\r\n" for _ in range(rnd.randint(0, 4)))
        try:
            head = parse_head(b"HTTP/1.1 200 OK\r\n" + block)
        except ResponseError as exc:
            assert "malformed header field" in str(exc)
            assert _FIELDS.fullmatch(block) is None, block
        else:
            assert _FIELDS.fullmatch(block) is not None, block
            assert [n for n, _ in head.headers] == [
                line.split(b":")[0].lower() for line in block.split(b"\r\n")[:-1]
            ]
