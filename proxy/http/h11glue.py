"""Where sekisho reaches inside h11: here and nowhere else.

h11's public API would cost a Python call per header (`Headers` is a `Sequence`
whose items are built on access) and a copy of its buffer per chunk
(`trailing_data`). The three reaches below are each one line, and
`tests/unit/test_h11glue.py` fails loudly when an h11 release changes what they
rely on: pin h11 or adapt this module, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import h11
import h11._readers

Triple = tuple[bytes, bytes, bytes]  # (name as sent, lower-case name, value)

# RFC 9112 7.1.1: h11 reads a request chunk extension as `;.*`, bare CR and NUL included.
# Make h11 (still the judge) stricter: such a chunk line is a 400, as in HAProxy and nginx.
STRICT_CHUNK_HEADER = re.compile(rb"(?P<chunk_size>[0-9A-Fa-f]{1,20})(?P<chunk_ext>;[^\r\n\x00]*)?[ \t]*\r\n")


def install_strict_chunk_reader() -> None:
    """Make h11's chunk-size line reader refuse bare CR and NUL in chunk extensions."""
    h11._readers.chunk_header_re = STRICT_CHUNK_HEADER


def header_triples(req: h11.Request) -> Sequence[Triple]:
    """A request's fields as h11 keeps them, without building a tuple per field."""
    return req.headers._full_items


def buffered(conn: h11.Connection) -> int:
    """How many received bytes h11 holds unparsed (no copy, unlike `trailing_data`)."""
    return len(conn._receive_buffer)


install_strict_chunk_reader()
