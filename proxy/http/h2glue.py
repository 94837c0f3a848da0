"""Where sekisho reaches inside hpack: here and nowhere else.

The HTTP/2 connection (proxy/http/h2server.py) decodes every received header block with
hpack's `Decoder` (public API). `CachingDecoder` remembers the header lists of blocks
which did not change the dynamic table: a client repeats its request blocks byte for
byte once their fields are indexed (h2load, browsers), and hpack's pure-Python decoding
was a tenth of an HTTP/2 request's CPU. A hit is valid only at the same table
generation (every insertion and resize counts) and the same limits.

What it relies on, inside hpack 4.x: `Decoder.header_table`, `HeaderTable.add` and its
`maxsize` property (the only ways hpack changes a table), `Decoder.max_header_list_size`
and `max_allowed_table_size`. `tests/unit/test_h2glue.py` decodes the same blocks with a
plain `hpack.Decoder` and with this one (table insertions, evictions, size updates) and
fails loudly when the two read different headers: pin hpack or adapt this module.

(Until 2026-12-06 this module also moved h2's own state machines for the frames we
built; h2 is no longer part of the connection, see h2server.py.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hpack
from hpack.table import HeaderTable

# Per connection, so bounded tightly (a client chooses what is remembered): at most 16 blocks
# of at most 2 KiB and 64 fields each, some tens of KiB per connection at worst.
_DECODE_CACHE_MAX = 16
_DECODE_BLOCK_MAX = 2048
_DECODE_FIELDS_MAX = 64
_TABLE_MAXSIZE: Any = HeaderTable.__dict__["maxsize"]  # hpack's property, extended below


class _CountedTable(HeaderTable):
    """hpack's dynamic table, counting its changes: a decoded list is only reused at
    the generation it was decoded at."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return int(_TABLE_MAXSIZE.fget(self))

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        _TABLE_MAXSIZE.fset(self, newmax)


class CachingDecoder(hpack.Decoder):
    """hpack's decoder, remembering what blocks that leave the table alone decode to."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size=max_header_list_size)
        self.header_table = _CountedTable()
        self._cache: dict[bytes, tuple[int, int, tuple[hpack.HeaderTuple, ...]]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[hpack.HeaderTuple]:
        if not raw:
            return super().decode(data, raw)
        table = self.header_table
        assert isinstance(table, _CountedTable)
        hit = self._cache.get(data)
        if (
            hit is not None
            and hit[0] == table.generation
            and hit[1] == self.max_header_list_size
            and table.maxsize <= self.max_allowed_table_size
        ):
            return hit[2]  # (h2 copies it into the event: `H2Stream._process_received_headers`)
        generation = table.generation
        headers = tuple(super().decode(data, raw=True))
        if (
            table.generation == generation
            and len(data) <= _DECODE_BLOCK_MAX
            and len(headers) <= _DECODE_FIELDS_MAX
        ):
            cache = self._cache
            if len(cache) >= _DECODE_CACHE_MAX:
                cache.clear()
            cache[bytes(data)] = (generation, self.max_header_list_size, headers)
        return headers
