"""The lb package's one exception base."""


class LbError(Exception):
    """Base of every error raised by lb."""


class NoBackendAvailable(LbError):
    """Every server of the pool is down (and there is no sorry server)."""


class UpstreamConnectError(LbError):
    """Connecting to a backend failed (refused, unreachable or timed out)."""


class ProxyProtocolError(LbError):
    """A malformed PROXY protocol header."""
