"""SMTP replies: what we send (`Reply`) and a parser for what a server sends.

Both are pure: no sockets, no clock. A backend's reply is parsed into a
`Reply` and re-encoded before it reaches the client, so a server can never
push raw bytes at the client through us.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.smtp.errors import SmtpProtocolError

MAX_REPLY_LINE = 2048  # RFC 5321 says 512; be generous with servers
MAX_REPLY_LINES = 100


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @classmethod
    def of(cls, code: int, *lines: str) -> Reply:
        return cls(code, tuple(lines) or ("",))

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def encode(self) -> bytes:
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            clean = "".join(c if " " <= c <= "~" else "?" for c in line)
            out.append(f"{self.code}{sep}{clean}".rstrip(" ") + "\r\n")
        return "".join(out).encode("ascii")

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ReplyParser:
    """Feed bytes from a server; pull complete (possibly multi-line) replies."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_reply(self) -> Reply | None:
        """A complete reply, or None when more bytes are needed; raises SmtpProtocolError."""
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    raise SmtpProtocolError("server reply line too long")
                return None
            raw = bytes(self._buf[:idx]).rstrip(b"\r")
            del self._buf[: idx + 1]
            if len(raw) < 3 or not raw[:3].isdigit() or (len(raw) > 3 and raw[3:4] not in (b" ", b"-")):
                raise SmtpProtocolError(f"malformed server reply {raw[:40]!r}")
            code = int(raw[:3])
            if self._code is not None and code != self._code:
                raise SmtpProtocolError("reply code changed inside a multi-line reply")
            self._code = code
            self._lines.append(raw[4:].decode("ascii", "replace"))
            if len(self._lines) > MAX_REPLY_LINES:
                raise SmtpProtocolError("server reply has too many lines")
            if raw[3:4] != b"-":
                reply = Reply(code, tuple(self._lines))
                self._lines = []
                self._code = None
                return reply


def ehlo_keywords(reply: Reply) -> dict[str, str]:
    """EHLO reply lines after the first, as {KEYWORD: params}."""
    out: dict[str, str] = {}
    for line in reply.lines[1:]:
        word, _, params = line.strip().partition(" ")
        if word:
            out[word.upper()] = params
    return out
