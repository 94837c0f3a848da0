"""Answers sekisho writes itself: every status line carries its reason phrase."""

from __future__ import annotations

import pytest

from proxy.http.answers import plain, reason, route_answer
from proxy.http.routing import Route


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (301, b"Moved Permanently"),
        (302, b"Found"),
        (303, b"See Other"),
        (307, b"Temporary Redirect"),
        (308, b"Permanent Redirect"),
        (400, b"Bad Request"),
        (404, b"Not Found"),
        (413, b"Content Too Large"),
        (418, b"I'm a teapot"),
        (431, b"Request Header Fields Too Large"),
        (502, b"Bad Gateway"),
        (504, b"Gateway Timeout"),
        (299, b"Success"),  # unregistered: the class's name
        (499, b"Client Error"),
    ],
)
def test_reason_phrases(status: int, phrase: bytes) -> None:
    assert reason(status) == phrase


def redirect(status: int = 301) -> Route:
    return Route(0, "old/", "old.example.com", None, b"/", "redirect", status=status, redirect="https://new/")


def test_redirect_has_a_reason_phrase() -> None:
    out = route_answer(redirect(), b"/a?b", with_body=True, close=False)
    assert out == (
        b"HTTP/1.1 301 Moved Permanently\r\nlocation: https://new/a?b\r\ncontent-length: 0\r\n\r\n"
    )
    assert route_answer(redirect(308), b"/", with_body=True, close=True).startswith(
        b"HTTP/1.1 308 Permanent Redirect\r\n"
    )


def test_status_route_body_and_head() -> None:
    teapot = Route(0, "*/t", None, None, b"/t", "status", status=418)
    out = route_answer(teapot, b"/t", with_body=True, close=True)
    assert out == (
        b"HTTP/1.1 418 I'm a teapot\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 13\r\nconnection: close\r\n\r\nI'm a teapot\n"
    )
    head = route_answer(teapot, b"/t", with_body=False, close=False)
    assert head.endswith(b"content-length: 13\r\n\r\n")  # HEAD: the length, no body


def test_plain_error() -> None:
    assert plain(502) == (
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 12\r\nconnection: close\r\n\r\nBad Gateway\n"
    )
    assert plain(503, close=False).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
