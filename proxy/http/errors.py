"""The one exception base of the HTTP proxy."""

from __future__ import annotations


class HttpProxyError(Exception):
    """Base of every error raised by proxy.http."""


class BadRequest(HttpProxyError):
    """A request we refuse to interpret; `status` is what the client gets (400, 431, 413...)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
