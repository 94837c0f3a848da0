"""Poller.close_socket during a batch: the socket is closed after the batch,
so its fd number cannot be reused by a socket made in the same batch, and the
batch's remaining events for it reach nobody (not a new socket's handler)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from lb.poller import IN, Poller


def test_close_in_a_batch_defers_the_close_and_drops_its_events() -> None:
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        first, first_peer = socket.socketpair()
        second, second_peer = socket.socketpair()
        made: list[socket.socket] = []
        calls: list[str] = []
        checks: list[tuple[bool, bool]] = []
        try:
            for s in (first, second):
                s.setblocking(False)
            first_fd, second_fd = first.fileno(), second.fileno()

            def closes(other: socket.socket) -> Callable[[int], None]:
                def handler(ev: int) -> None:
                    # Whichever socket's event comes first closes the other one,
                    # then makes a new socket, watched like the closed one was.
                    # (The poller logs a handler's exception: record, assert after.)
                    calls.append("handler")
                    poller.close_socket(other)
                    fresh, fresh_peer = socket.socketpair()
                    made.extend((fresh, fresh_peer))
                    still_open = other.fileno() != -1  # until the batch is over
                    reused = other.fileno() in (fresh.fileno(), fresh_peer.fileno())
                    checks.append((still_open, reused))
                    poller.add(fresh.fileno(), lambda ev: calls.append("fresh"), IN)

                return handler

            poller.add(first_fd, closes(second), IN)
            poller.add(second_fd, closes(first), IN)
            first_peer.send(b"x")
            second_peer.send(b"y")
            await asyncio.sleep(0.05)
            assert calls == ["handler"]  # one handler ran; the closed socket's event was dropped
            assert checks == [(True, False)]  # closed after the batch, its fd number not reused in it
            assert first.fileno() == -1 or second.fileno() == -1  # closed once the batch ended
            assert len(poller.handlers) == 2  # the survivor and the fresh socket
        finally:
            poller.close()
            for s in (first, first_peer, second, second_peer, *made):
                s.close()

    asyncio.run(main())


def test_close_outside_a_batch_is_immediate() -> None:
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        a, b = socket.socketpair()
        try:
            poller.add(a.fileno(), lambda ev: None, IN)
            poller.close_socket(a)
            assert a.fileno() == -1 and not poller.handlers
        finally:
            poller.close()
            b.close()

    asyncio.run(main())
