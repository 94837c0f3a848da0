"""The smtp package's one exception base."""


class SmtpError(Exception):
    """Base of every error raised by proxy.smtp."""


class SmtpProtocolError(SmtpError):
    """A peer (client or backend server) broke the protocol."""


class LocalProtocolError(SmtpError):
    """We used the envelope machine wrongly (a bug in the I/O side)."""
