"""The DATA stream between `354` and `<CR><LF>.<CR><LF>`, parsed, not spliced.

Only `<CR><LF>.<CR><LF>` ends a message (RFC 5321 4.1.4). A bare CR or bare LF
anywhere in the message is what SMTP smuggling (2023) rides on: a receiver
that reads `<LF>.<LF>` as the end sees a second message where we saw one. So
before anything reaches a backend, a message with a bare line ending is either
refused (`reject`: nothing more is forwarded and the backend transaction is
abandoned) or rewritten (`normalize`: every bare CR or LF becomes CRLF, and a
resulting line that starts with "." is dot-stuffed, so the backend sees one
message with the same lines).

The lines we forward keep the client's dot-stuffing: we never unstuff, so the
backend reads exactly the body the client meant.
"""

from __future__ import annotations

from typing import Literal

from proxy.smtp.replies import Reply

END = b".\r\n"
FLUSH_AT = 65536  # a line this long without CRLF is passed on in pieces

BARE_LINE_ENDING = Reply.of(550, "5.5.2 Bare CR or LF in message; only CRLF line endings are accepted")
TOO_BIG = Reply.of(552, "5.3.4 Message size exceeds fixed limit")


class DataScanner:
    def __init__(self, mode: Literal["reject", "normalize"], limit: int) -> None:
        self.mode = mode
        self.limit = limit
        self.size = 0
        self.normalized = 0  # bare line endings rewritten
        self.problem: Reply | None = None
        self.at_line_start = True

    def step(self, buf: bytearray) -> tuple[bytes, bool] | None:
        """Take what can be decided from `buf` (consumed in place).

        Returns (bytes to forward, message finished) or None when more input is
        needed. The final piece ends with the `.<CR><LF>` terminator, unless a
        problem was found, in which case nothing is forwarded any more.
        """
        if not buf:
            return None
        if self.at_line_start and buf.startswith(END):
            del buf[:3]
            return self._finish(b"")
        i = buf.find(b"\r\n.\r\n")
        if i >= 0:
            body = bytes(buf[: i + 2])
            del buf[: i + 5]
            return self._finish(body)
        j = buf.rfind(b"\r\n")
        if j >= 0:
            cut = j + 2
        elif len(buf) >= FLUSH_AT:
            # Hold back a trailing CR or LF: it may be half of a CRLF, or a bare ending
            # whose next line must be judged (and, normalizing, dot-stuffed) together
            # with it. Cut after a bare LF, the next chunk would start a line we no
            # longer know is one, and a ".<CRLF>" there would end the message at the
            # backend while we read on (smuggling).
            cut = len(buf) - 1 if buf[-1] in (0x0D, 0x0A) else len(buf)
        else:
            return None
        chunk = bytes(buf[:cut])
        del buf[:cut]
        return self._process(chunk), False

    def _finish(self, body: bytes) -> tuple[bytes, bool]:
        out = self._process(body)
        return (b"" if self.problem else out + END), True

    def _process(self, chunk: bytes) -> bytes:
        start = self.at_line_start
        self.at_line_start = chunk.endswith(b"\r\n") or (start and not chunk)
        self.size += len(chunk)
        if self.problem is not None:
            return b""
        if self.size > self.limit:
            self.problem = TOO_BIG
            return b""
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") == crlf and chunk.count(b"\n") == crlf:
            return chunk
        if self.mode == "reject":
            self.problem = BARE_LINE_ENDING
            return b""
        return self._normalize(chunk, start)

    def _normalize(self, chunk: bytes, start: bool) -> bytes:
        lines = []
        for i, line in enumerate(chunk.split(b"\r\n")):
            parts = line.replace(b"\r", b"\n").split(b"\n")
            self.normalized += len(parts) - 1
            # A client line "." cut short by a bare ending (".<LF>...") would
            # become the end of data once the ending is a CRLF: stuff it.
            if len(parts) > 1 and parts[0] == b"." and (i > 0 or start):
                parts[0] = b".."
            for k in range(1, len(parts)):
                if parts[k].startswith(b"."):
                    parts[k] = b"." + parts[k]
            lines.append(b"\r\n".join(parts))
        return b"\r\n".join(lines)
