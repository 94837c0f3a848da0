"""Issue 7, part 1: the smuggling corpus through sekisho, and lying backends behind it."""

from __future__ import annotations

import h11
import pytest

from tests.adversarial.corpus import (
    BAD_RESPONSES,
    CHUNK_EXT_REGRESSIONS,
    NORMALIZED_RESPONSES,
    TRUNCATED_RESPONSES,
    Case,
    Forward,
    Reject,
    all_cases,
)
from tests.adversarial.harness import RecordingBackend, Sekisho, exchange, proxy_config, status_of
from tests.adversarial.runner import judge_sekisho, run_case

CASES = all_cases()
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def test_corpus_is_large_and_named() -> None:
    assert len(CASES) >= 150
    assert len({c.name for c in CASES}) == len(CASES)
    assert sum(isinstance(c.expect, Reject) for c in CASES) >= 150
    assert sum(isinstance(c.expect, Forward) for c in CASES) >= 30


async def _through_sekisho(cases: list[Case]) -> list[str]:
    backend = await RecordingBackend().start()
    failures: list[str] = []
    try:
        async with Sekisho(proxy_config(backend.address)) as p:
            for case in cases:
                outcome = await run_case(p.port, backend, case)
                why = judge_sekisho(outcome)
                if why is not None:
                    failures.append(f"{case.name}: {why}")
    finally:
        await backend.stop()
    return failures


@pytest.mark.asyncio
async def test_corpus_through_sekisho() -> None:
    failures = await _through_sekisho([c for c in CASES if c.name not in CHUNK_EXT_REGRESSIONS])
    assert failures == [], "\n".join(failures)


@pytest.mark.asyncio
async def test_regression_request_chunk_extension() -> None:
    r"""Bug (fixed in 0ee7e77): a request chunk extension holding a bare CR or a NUL was
    accepted (and dropped) instead of refused with 400. HAProxy and nginx both refuse the
    bare CR, so sekisho was more permissive than both. The fix, in proxy/http/connection.py:

        import re
        import h11._readers
        # RFC 9112 7.1.1: h11 reads a chunk extension as `;.*`, bare CR and NUL included.
        h11._readers.chunk_header_re = re.compile(
            rb"(?P<chunk_size>[0-9A-Fa-f]{1,20})(?P<chunk_ext>;[^\r\n\x00]*)?[ \t]*\r\n"
        )
    """
    failures = await _through_sekisho([c for c in CASES if c.name in CHUNK_EXT_REGRESSIONS])
    assert failures == [], "\n".join(failures)


async def _answer_from(response: bytes) -> bytes:
    backend = await RecordingBackend(response=response, close=True).start()
    try:
        async with Sekisho(proxy_config(backend.address)) as p:
            return await exchange(p.port, GET, timeout=3, half_close=True)
    finally:
        await backend.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "response"), BAD_RESPONSES, ids=[n for n, _ in BAD_RESPONSES])
async def test_lying_backend_gets_502_never_relayed(name: str, response: bytes) -> None:
    answer = await _answer_from(response)
    assert status_of(answer) == 502, answer[:200]
    # Nothing of the lying response reached the client: only sekisho's own 502.
    assert answer.partition(b"\r\n\r\n")[2] == b"Bad Gateway\n", answer


def _complete(answer: bytes) -> bool:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(answer)
    client.receive_data(b"")
    try:
        while True:
            ev = client.next_event()
            if isinstance(ev, h11.EndOfMessage):
                return True
            if ev is h11.NEED_DATA or isinstance(ev, h11.ConnectionClosed):
                return False
    except h11.RemoteProtocolError:
        return False


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "response"), TRUNCATED_RESPONSES, ids=[n for n, _ in TRUNCATED_RESPONSES])
async def test_truncated_response_never_looks_complete(name: str, response: bytes) -> None:
    answer = await _answer_from(response)
    assert status_of(answer) in (200, 502), answer
    if status_of(answer) == 200:
        assert not _complete(answer), answer


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "response", "relayed"), NORMALIZED_RESPONSES, ids=[n for n, _, _ in NORMALIZED_RESPONSES]
)
async def test_tolerated_response_relayed_clean(name: str, response: bytes, relayed: bytes) -> None:
    answer = await _answer_from(response)
    assert answer == relayed


# ----------------------------------------------------------------------- regressions (bugs found)


@pytest.mark.asyncio
async def test_regression_chunked_response_with_content_type_is_not_502() -> None:
    """Bug: check_content_length() called a head without Content-Length a duplicate, so any
    chunked or close-delimited response carrying Content-Type (any "ontent-") became a 502."""
    answer = await _answer_from(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Language: en\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    assert status_of(answer) == 200 and answer.endswith(b"2\r\nok\r\n0\r\n\r\n"), answer


@pytest.mark.asyncio
async def test_regression_response_content_length_list_is_502() -> None:
    """Bug: a backend's "Content-Length: 2, 2" was merged by h11 and relayed."""
    answer = await _answer_from(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok")
    assert status_of(answer) == 502


@pytest.mark.asyncio
async def test_regression_http10_without_host_is_forwarded_not_502() -> None:
    """Bug: an HTTP/1.0 request without Host was answered 502 (h11 refused to send an
    HTTP/1.1 request without Host) and counted as a backend error."""
    failures = await _through_sekisho(
        [
            Case(
                "1.0 no Host",
                b"GET /x HTTP/1.0\r\n\r\n",
                Forward(b"GET /x HTTP/1.1\r\nhost: \r\n\r\n"),
                "rfc",
            )
        ]
    )
    assert failures == []


REGRESSION_400 = [
    ("control character in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n"),
    ("DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    (
        "Transfer_Encoding alias",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
    ),
    ("Content_Length alias", b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 3\r\n\r\nabc"),
    ("Host list", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: evil@a\r\n\r\n"),
    ("Host with path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
]


@pytest.mark.asyncio
async def test_regression_strictness_fixes() -> None:
    """Forwarded before this suite; now 400 (proxy/http/headers.py precheck_head)."""
    cases = [Case(n, raw, Reject(400), "rfc") for n, raw in REGRESSION_400]
    assert await _through_sekisho(cases) == []
