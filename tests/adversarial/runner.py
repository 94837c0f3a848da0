"""Send the corpus through one proxy (sekisho, HAProxy or nginx) to a recording backend."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tests.adversarial.corpus import Case
from tests.adversarial.harness import RecordingBackend, exchange


@dataclass
class Outcome:
    case: Case
    answer: bytes  # what the client read until close
    received: bytes  # what the backend read
    requests: int  # complete requests the backend parsed
    broken: list[str]

    @property
    def status(self) -> int | None:
        """The first final status line the client got (1xx skipped); None if none."""
        data = self.answer
        while data.startswith(b"HTTP/1."):
            try:
                code = int(data.split(b" ", 2)[1])
            except (IndexError, ValueError):
                return None
            if code >= 200:
                return code
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return None
            data = data[end + 4 :]
        return None

    @property
    def forwarded(self) -> bool:
        """Did at least one complete request reach the backend?"""
        return self.requests > 0


async def run_case(port: int, backend: RecordingBackend, case: Case, timeout: float = 3.0) -> Outcome:
    backend.reset()
    answer = await exchange(port, case.raw, timeout=timeout, half_close=True)
    # anything a proxy forwards arrives well before it answers; give stragglers a moment
    await asyncio.sleep(0.01)
    return Outcome(case, answer, bytes(backend.raw), backend.requests, list(backend.broken))


def judge_sekisho(o: Outcome) -> str | None:
    """None if sekisho did what the case expects, else why not."""
    from tests.adversarial.corpus import Forward, Reject

    exp = o.case.expect
    if isinstance(exp, Reject):
        if o.status != exp.status:
            return f"expected {exp.status}, got {o.answer[:80]!r} (backend got {o.received[:120]!r})"
        if exp.partial:
            if o.requests:
                return (
                    f"answered {exp.status} but a complete request reached the backend: {o.received[:160]!r}"
                )
        elif o.received:
            return f"answered {exp.status} but the backend received {o.received[:160]!r}"
        if b"connection: close" not in o.answer.lower():
            return "refusal without connection: close"
        return None
    assert isinstance(exp, Forward)
    if o.received != exp.raw:
        return f"backend got {o.received[:200]!r}, expected {exp.raw[:200]!r} (client {o.answer[:60]!r})"
    if o.status != 200:
        return f"backend got the request but the client saw {o.answer[:80]!r}"
    return None
