"""The HTTP and SMTP edge, and the daemon that wires one config together."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("sekisho")
except PackageNotFoundError:  # running from a checkout without install
    VERSION = "0.0.0"
