"""One error type for the VRRP package.

Every packet we refuse raises a `VrrpError` subclass whose `reason` is the
label the drop is counted under (`sekisho_vrrp_dropped_packets_total{reason}`).
"""

from __future__ import annotations


class VrrpError(Exception):
    """Base of every error raised by the vrrp package."""

    reason = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedPacket(VrrpError):
    """The bytes are not a valid VRRP advertisement (length, version, type, checksum)."""

    reason = "malformed"


class RejectedPacket(VrrpError):
    """A well-formed advertisement we must not act on (TTL, VRID, auth, interval, our own)."""

    reason = "rejected"


class VrrpIOError(VrrpError):
    """The I/O side could not do its job (no such interface, no IPv4 address, ...)."""

    reason = "io"
