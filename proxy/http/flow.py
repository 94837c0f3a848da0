"""Backpressure for one client connection, in both directions (uvicorn's flow_control.py idea).

Reading from the client stops while any reason holds: HELD (a request waits for its
backend or its response, so pipelined bytes stay in the kernel) or BACKPRESSURE (the
backend's transport asked us to stop writing). When the client's transport asks us
to stop writing, reading from the backend that feeds it stops until it drains.
"""

from __future__ import annotations

import asyncio

HELD = 1
BACKPRESSURE = 2


class FlowControl:
    __slots__ = ("_client", "_source", "read_paused", "write_paused")

    def __init__(self) -> None:
        self._client: asyncio.Transport | None = None
        self._source: asyncio.Transport | None = None  # the backend transport feeding the client
        self.read_paused = 0  # reasons (bits) not to read from the client
        self.write_paused = False  # the client's transport is full

    def attach(self, client: asyncio.Transport) -> None:
        self._client = client

    def detach(self) -> None:
        """The connection is closing (or lingering on its own): touch its transport no more."""
        self._client = None

    # ---------------------------------------------------------------- reading from the client

    def pause_reading(self, reason: int) -> None:
        if not self.read_paused and self._client is not None and not self._client.is_closing():
            self._client.pause_reading()
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and self._client is not None and not self._client.is_closing():
                self._client.resume_reading()

    def reading_resumed(self) -> None:
        """The transport reads again on its own (a tunnel starts): forget every reason."""
        self.read_paused = 0
        if self._client is not None and not self._client.is_closing():
            self._client.resume_reading()

    # ---------------------------------------------------------------- writing to the client

    def follow(self, source: asyncio.Transport) -> None:
        """`source` (a backend connection) now feeds the client: stop it while the client is full."""
        self._source = source
        if self.write_paused:
            source.pause_reading()

    def unfollow(self) -> None:
        """The backend connection outlives this exchange: it must not stay paused for us."""
        source = self._source
        self._source = None
        if source is not None and self.write_paused and not source.is_closing():
            source.resume_reading()

    def client_pause_writing(self) -> None:
        self.write_paused = True
        if self._source is not None and not self._source.is_closing():
            self._source.pause_reading()

    def client_resume_writing(self) -> None:
        self.write_paused = False
        if self._source is not None and not self._source.is_closing():
            self._source.resume_reading()
