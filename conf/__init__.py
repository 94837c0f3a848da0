"""sekisho's configuration model: TOML in, frozen validated dataclasses out.

Nothing in this package opens a socket. `load_file` / `load_text` return a
`Config` or raise `ConfigError` carrying every problem found, each with the
key path it concerns.
"""

from conf.errors import ConfigError, ConfigIssue
from conf.load import load_file, load_text
from conf.model import (
    Address,
    Config,
    GlobalSettings,
    HealthCheck,
    HttpListener,
    HttpRoute,
    HttpTimeouts,
    Pool,
    Server,
    SmtpListener,
    SmtpRoute,
    SmtpTimeouts,
    TcpService,
    TcpTimeouts,
    TlsCert,
    VrrpInstance,
    VrrpNotify,
)

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "GlobalSettings",
    "HealthCheck",
    "HttpListener",
    "HttpRoute",
    "HttpTimeouts",
    "Pool",
    "Server",
    "SmtpListener",
    "SmtpRoute",
    "SmtpTimeouts",
    "TcpService",
    "TcpTimeouts",
    "TlsCert",
    "VrrpInstance",
    "VrrpNotify",
    "load_file",
    "load_text",
]
