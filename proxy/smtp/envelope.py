"""The SMTP envelope as a pure state machine, in h11's shape.

Feed it what the client sent (`receive_data`), pull events (`next_event`), and
write what they tell you to. Everything the protocol decides on its own (our
EHLO capabilities, syntax errors, relay denial, limits) comes back as a
`Respond` event; what needs a backend (a routed recipient, DATA, the end of a
message) comes back as its own event, and the machine answers `PAUSED` until
the I/O side passes the backend's reply through `answer()`. Pipelined
commands (RFC 2920) simply wait in the buffer meanwhile, so replies always go
out in command order whatever byte boundaries the commands arrived on.

All transitions live here and in one table, `_ALLOWED`; the I/O side (the
front end) only reads, writes, dials and times out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import conf
from proxy.smtp.address import AddressError, Path, RouteTable, parse_path, relay_concern, split_path
from proxy.smtp.data import DataScanner
from proxy.smtp.errors import LocalProtocolError
from proxy.smtp.replies import Reply

MAX_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class State(enum.Enum):
    INIT = "init"  # greeted, no HELO/EHLO yet
    READY = "ready"  # HELO/EHLO seen, no transaction
    MAIL = "mail"  # MAIL FROM accepted
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # between 354 and the final dot
    TLS = "tls"  # STARTTLS answered; waiting for the handshake
    CLOSED = "closed"


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"


NEED_DATA = _Sentinel.NEED_DATA
PAUSED = _Sentinel.PAUSED


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Respond:
    """Send `reply`; close afterwards when `close`. `tag` names a rejection for the counters."""

    reply: Reply
    close: bool = False
    tag: str | None = None


@dataclass(frozen=True)
class StartTls:
    """Send `reply`, upgrade the connection, then call `tls_started()`."""

    reply: Reply


@dataclass(frozen=True)
class Recipient:
    """Forward this recipient to `route` (connect and replay MAIL when needed); `answer()`."""

    path: Path
    route: conf.SmtpRoute
    transaction: int


@dataclass(frozen=True)
class DataStart:
    """Send DATA to the backend; `answer()` with its reply (354 switches to the message)."""


@dataclass(frozen=True)
class DataChunk:
    """Message bytes (dot-stuffed, CRLF only) for the backend."""

    data: bytes


@dataclass(frozen=True)
class DataEnd:
    """The last message bytes, terminator included; `answer()` with the backend's reply."""

    data: bytes


@dataclass(frozen=True)
class AbortData:
    """The message was refused (`reply`): abandon the backend transaction (close it), then reply."""

    reply: Reply
    tag: str


@dataclass(frozen=True)
class Quit:
    reply: Reply


@dataclass(frozen=True)
class ConnectionClosed:
    """The client is gone (EOF), or we closed."""


Event = Respond | StartTls | Recipient | DataStart | DataChunk | DataEnd | AbortData | Quit | ConnectionClosed


@dataclass(frozen=True)
class Policy:
    hostname: str
    routes: RouteTable
    max_message_bytes: int = 10240000
    max_recipients: int = 100
    max_unknown_commands: int = 20
    bare_line_endings: Literal["reject", "normalize"] = "reject"
    tls_offered: bool = False

    @classmethod
    def from_config(cls, config: conf.SmtpListener) -> Policy:
        return cls(
            hostname=config.hostname,
            routes=RouteTable(config.routes),
            max_message_bytes=config.max_message_bytes,
            max_recipients=config.max_recipients,
            max_unknown_commands=config.max_unknown_commands,
            bare_line_endings=config.bare_line_endings,
            tls_offered=config.tls is not None,
        )


@dataclass
class Transaction:
    number: int
    sender: Path
    params: dict[str, str] = field(default_factory=dict)
    recipients: list[Path] = field(default_factory=list)
    route: conf.SmtpRoute | None = None


R_OK = Reply.of(250, "2.0.0 Ok")
R_TOO_LONG = Reply.of(500, "5.5.6 Line too long")
R_BAD_CHARS = Reply.of(500, "5.5.2 Syntax error: bad characters or bare line ending in command")
R_UNKNOWN = Reply.of(500, "5.5.2 Command not recognized")
R_NOT_IMPLEMENTED = Reply.of(502, "5.5.1 Command not implemented")
R_TOO_MANY_ERRORS = Reply.of(421, "4.7.0 Too many errors; closing connection")
R_FORBIDDEN = Reply.of(550, "5.7.1 Command not permitted")
R_PROXY = Reply.of(550, "5.7.1 PROXY protocol not accepted here")
R_SEQUENCE = Reply.of(503, "5.5.1 Bad sequence of commands")
R_NEED_HELO = Reply.of(503, "5.5.1 Send HELO/EHLO first")
R_NEED_MAIL = Reply.of(503, "5.5.1 Need MAIL command")
R_NEED_RCPT = Reply.of(554, "5.5.1 No valid recipients")
R_NESTED = Reply.of(503, "5.5.1 Nested MAIL command")
R_RELAY = Reply.of(550, "5.7.1 Relaying denied")
R_OTHER_ROUTE = Reply.of(452, "4.5.3 Recipient for another domain: send it in a separate transaction")
R_TOO_MANY_RCPTS = Reply.of(452, "4.5.3 Too many recipients")
R_TOO_BIG = Reply.of(552, "5.3.4 Message size exceeds fixed limit")
R_PARAM = Reply.of(555, "5.5.4 Unsupported parameter")
R_SYNTAX_ARG = Reply.of(501, "5.5.4 Syntax error in parameters or arguments")

# command -> states it is allowed in (anything else gets the state's reason)
_ALLOWED: dict[str, frozenset[State]] = {
    "EHLO": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "HELO": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "MAIL": frozenset({State.READY}),
    "RCPT": frozenset({State.MAIL, State.RCPT}),
    "DATA": frozenset({State.MAIL, State.RCPT}),
    "STARTTLS": frozenset({State.INIT, State.READY}),
    "RSET": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "NOOP": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "VRFY": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "EXPN": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "HELP": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
    "QUIT": frozenset({State.INIT, State.READY, State.MAIL, State.RCPT}),
}
_FORBIDDEN = frozenset({"XCLIENT", "XFORWARD", "PROXY"})
_NOT_IMPLEMENTED = frozenset({"AUTH", "BDAT", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML"})


class Envelope:
    """One client connection's SMTP dialogue up to and through DATA."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.state = State.INIT
        self.helo: str | None = None
        self.esmtp = False
        self.tls_active = False
        self.transaction: Transaction | None = None
        self.transactions = 0
        self.unknown_commands = 0
        self.scanner: DataScanner | None = None
        self._buf = bytearray()
        self._eof = False
        self._discarding = False
        self._first_line = True  # only the connection's first bytes can be a PROXY v2 header
        self._pending: Event | None = None

    # ------------------------------------------------------------ public API

    def greeting(self) -> bytes:
        return Reply.of(220, f"{self.policy.hostname} ESMTP").encode()

    def receive_data(self, data: bytes) -> None:
        """What the client sent; b"" means end of file."""
        if not data:
            self._eof = True
        elif self.state not in (State.TLS, State.CLOSED):
            # While a STARTTLS handshake is pending, cleartext is discarded
            # (CVE-2011-0411): nothing injected before TLS may count as a command.
            self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def paused(self) -> bool:
        return self._pending is not None

    @property
    def idle(self) -> bool:
        """No transaction open and nothing waiting: safe to close on shutdown."""
        return self.state in (State.INIT, State.READY) and self._pending is None and not self._buf

    def next_event(self) -> Event | _Sentinel:
        if self._pending is not None or self.state is State.TLS:
            return PAUSED
        if self.state is State.CLOSED:
            return ConnectionClosed()
        if self.state is State.DATA:
            return self._data_event()
        return self._command_event()

    def answer(self, reply: Reply) -> bytes:
        """The backend's reply to the pending Recipient / DataStart / DataEnd; returns bytes to send."""
        pending = self._pending
        if pending is None:
            raise LocalProtocolError("answer() without a pending event")
        self._pending = None
        txn = self.transaction
        if isinstance(pending, Recipient):
            assert txn is not None
            if reply.positive:
                txn.recipients.append(pending.path)
                txn.route = pending.route
                self.state = State.RCPT
        elif isinstance(pending, DataStart):
            if reply.code == 354:
                self.state = State.DATA
                self.scanner = DataScanner(self.policy.bare_line_endings, self.policy.max_message_bytes)
        elif isinstance(pending, DataEnd):
            self._end_transaction()
        return reply.encode()

    def tls_started(self) -> None:
        """The STARTTLS handshake completed: RFC 3207 4.2, start over (no HELO, no transaction)."""
        if self.state is not State.TLS:
            raise LocalProtocolError("tls_started() outside STARTTLS")
        self.tls_active = True
        self.helo = None
        self.esmtp = False
        self.transaction = None
        self._buf.clear()
        self.state = State.INIT

    def close(self) -> None:
        self.state = State.CLOSED
        self._pending = None

    # ------------------------------------------------------------ internals

    def _end_transaction(self) -> None:
        self.transaction = None
        self.scanner = None
        self.state = State.READY if self.helo is not None else State.INIT

    def _respond(self, reply: Reply, tag: str | None = None, close: bool = False) -> Respond:
        if close:
            self.close()
        return Respond(reply, close, tag)

    def _data_event(self) -> Event | _Sentinel:
        scanner = self.scanner
        assert scanner is not None
        while True:
            step = scanner.step(self._buf)
            if step is None:
                return ConnectionClosed() if self._eof else NEED_DATA
            chunk, done = step
            if done:
                if scanner.problem is not None:
                    tag = "too_big" if scanner.problem.code == 552 else "bare_line_ending"
                    self._end_transaction()
                    return AbortData(scanner.problem, tag)
                self._pending = DataEnd(chunk)
                return self._pending
            if chunk:
                return DataChunk(chunk)

    def _command_event(self) -> Event | _Sentinel:
        buf = self._buf
        while True:
            if self._discarding:
                idx = buf.find(b"\r\n")
                if idx < 0:
                    del buf[: max(0, len(buf) - 1)]  # a CR may be the start of the CRLF
                    return ConnectionClosed() if self._eof else NEED_DATA
                del buf[: idx + 2]
                self._discarding = False
                continue
            # A PROXY v2 header starts with a blank line: wait for all of its signature,
            # but only at the very start. Later, a blank line is just a bad command and
            # is answered at once (a client waiting for that answer would hang).
            if self._first_line and buf[:12] == PROXY_V2_SIGNATURE[: len(buf[:12])]:
                if len(buf) >= len(PROXY_V2_SIGNATURE):
                    return self._respond(R_PROXY, "forbidden", close=True)
                if buf and not self._eof:
                    return NEED_DATA
            idx = buf.find(b"\r\n", 0, MAX_LINE)
            if idx < 0:
                if len(buf) >= MAX_LINE:
                    self._first_line = False
                    self._discarding = True
                    return self._junk(R_TOO_LONG)
                return ConnectionClosed() if self._eof else NEED_DATA
            self._first_line = False
            line = bytes(buf[:idx])
            del buf[: idx + 2]
            return self._command(line)

    def _over_error_limit(self) -> bool:
        # Like Postfix's smtpd_hard_error_limit: unknown verbs and junk lines (control
        # bytes, 8-bit, over-long) all count, so a scanner cannot keep a session forever.
        self.unknown_commands += 1
        return self.unknown_commands >= self.policy.max_unknown_commands

    def _junk(self, reply: Reply) -> Event:
        if self._over_error_limit():
            return self._respond(R_TOO_MANY_ERRORS, "syntax", close=True)
        return self._respond(reply, "syntax")

    def _command(self, raw: bytes) -> Event:
        if not raw.isascii() or any(c in raw for c in (b"\r", b"\n", b"\x00")):
            return self._junk(R_BAD_CHARS)
        text = raw.decode("ascii")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if verb in _FORBIDDEN:
            return self._respond(R_FORBIDDEN, "forbidden", close=True)
        allowed = _ALLOWED.get(verb)
        if allowed is None:
            if self._over_error_limit():
                return self._respond(R_TOO_MANY_ERRORS, "unknown", close=True)
            return self._respond(R_NOT_IMPLEMENTED if verb in _NOT_IMPLEMENTED else R_UNKNOWN, "unknown")
        if self.state not in allowed:
            return self._respond(self._sequence_reply(verb), "sequence")
        handler = getattr(self, f"_cmd_{verb.lower()}")
        event: Event = handler(arg.strip(" "))
        return event

    def _sequence_reply(self, verb: str) -> Reply:
        if verb == "MAIL":
            return R_NEED_HELO if self.state is State.INIT else R_NESTED
        if verb == "RCPT":
            return R_NEED_HELO if self.state is State.INIT else R_NEED_MAIL
        if verb == "DATA":
            return R_NEED_HELO if self.state is State.INIT else R_NEED_MAIL
        return R_SEQUENCE

    # ------------------------------------------------------------ commands

    def _cmd_ehlo(self, arg: str) -> Event:
        return self._hello(arg, esmtp=True)

    def _cmd_helo(self, arg: str) -> Event:
        return self._hello(arg, esmtp=False)

    def _hello(self, arg: str, esmtp: bool) -> Event:
        name = arg.split(" ", maxsplit=1)[0] if arg else ""
        if not name or not all("!" <= c <= "~" for c in name) or len(name) > 255:
            return self._respond(Reply.of(501, "5.5.4 Syntax: EHLO hostname"), "syntax")
        self.helo = name
        self.esmtp = esmtp
        self._end_transaction()
        p = self.policy
        if not esmtp:
            return self._respond(Reply.of(250, p.hostname))
        lines = [p.hostname, f"SIZE {p.max_message_bytes}", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if p.tls_offered and not self.tls_active:
            lines.append("STARTTLS")
        return self._respond(Reply.of(250, *lines))

    def _cmd_mail(self, arg: str) -> Event:
        if arg[:5].upper() != "FROM:":
            return self._respond(Reply.of(501, "5.5.4 Syntax: MAIL FROM:<address>"), "syntax")
        try:
            path_text, params_text = split_path(arg[5:])
            path = parse_path(path_text, allow_null=True)
        except AddressError as exc:
            return self._respond(Reply.of(501, f"{exc.enhanced} Bad sender address syntax"), "syntax")
        params: dict[str, str] = {}
        for item in params_text.split():
            key, eq, value = item.partition("=")
            key = key.upper()
            if key == "SIZE" and eq and value.isdigit() and len(value) < 20:
                if int(value) > self.policy.max_message_bytes:
                    return self._respond(R_TOO_BIG, "too_big")
                params[key] = value
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                params[key] = value.upper()
            elif key in ("SIZE", "BODY"):
                return self._respond(R_SYNTAX_ARG, "syntax")
            else:
                return self._respond(R_PARAM, "syntax")
        self.transactions += 1
        self.transaction = Transaction(self.transactions, path, params)
        self.state = State.MAIL
        return self._respond(Reply.of(250, "2.1.0 Ok"))

    def _cmd_rcpt(self, arg: str) -> Event:
        txn = self.transaction
        assert txn is not None
        if arg[:3].upper() != "TO:":
            return self._respond(Reply.of(501, "5.5.4 Syntax: RCPT TO:<address>"), "syntax")
        try:
            path_text, params_text = split_path(arg[3:])
            path = parse_path(path_text, allow_null=False, allow_postmaster=True)
        except AddressError as exc:
            return self._respond(Reply.of(501, f"{exc.enhanced} Bad recipient address syntax"), "syntax")
        if params_text.strip(" "):
            return self._respond(R_PARAM, "syntax")
        assert path.mailbox is not None
        if relay_concern(path.mailbox) is not None:
            return self._respond(R_RELAY, "relay_denied")
        route = self.policy.routes.route_for(path.mailbox)
        if route is None:
            return self._respond(R_RELAY, "relay_denied")
        if len(txn.recipients) >= self.policy.max_recipients:
            return self._respond(R_TOO_MANY_RCPTS, "too_many")
        if txn.route is not None and route is not txn.route:
            return self._respond(R_OTHER_ROUTE, "other_route")
        self._pending = Recipient(path, route, txn.number)
        return self._pending

    def _cmd_data(self, arg: str) -> Event:
        if arg:
            return self._respond(R_SYNTAX_ARG, "syntax")
        if self.state is State.MAIL:
            return self._respond(R_NEED_RCPT, "sequence")
        self._pending = DataStart()
        return self._pending

    def _cmd_starttls(self, arg: str) -> Event:
        if not self.policy.tls_offered:
            return self._respond(R_NOT_IMPLEMENTED, "unknown")
        if self.tls_active:
            return self._respond(Reply.of(503, "5.5.1 TLS already active"), "sequence")
        if arg:
            return self._respond(R_SYNTAX_ARG, "syntax")
        self._buf.clear()  # anything pipelined after STARTTLS is discarded
        self.state = State.TLS
        return StartTls(Reply.of(220, "2.0.0 Ready to start TLS"))

    def _cmd_rset(self, arg: str) -> Event:
        self._end_transaction()
        return self._respond(R_OK)

    def _cmd_noop(self, arg: str) -> Event:
        return self._respond(R_OK)

    def _cmd_vrfy(self, arg: str) -> Event:
        return self._respond(Reply.of(252, "2.5.2 Cannot VRFY user; try RCPT to attempt delivery"))

    def _cmd_expn(self, arg: str) -> Event:
        return self._respond(R_NOT_IMPLEMENTED)

    def _cmd_help(self, arg: str) -> Event:
        return self._respond(Reply.of(214, "2.0.0 See RFC 5321"))

    def _cmd_quit(self, arg: str) -> Event:
        self.close()
        return Quit(Reply.of(221, "2.0.0 Bye"))
