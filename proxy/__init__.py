"""The edges (HTTP, SMTP, TCP); `proxy.process` is the process that runs them (daemon, CLI, metrics)."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("sekisho")
except PackageNotFoundError:  # running from a checkout without install
    VERSION = "0.0.0"
