"""Connection counts that every worker process sees: one row per worker, one column per server.

The supervisor creates the table (anonymous shared memory, `memfd_create`) and hands its
file descriptor to each worker with the row that worker owns. A worker adds to its own row
only; a reader sums a server's column over the rows. Nobody writes another's row, so no
lock is needed: an aligned 32-bit store is atomic, and a reader that sees a count one
connection old decides as one process would have a moment earlier.

What the schedulers then mean across workers: `lc` picks the server with the fewest
connections open through *all* workers (as IPVS does for one kernel), and a server's
`max_connections` caps the sum, not each worker's share.

A row whose worker died still holds that worker's counts: the supervisor clears it
(`clear_row`) before giving the row to another worker. Columns are given to servers
by the supervisor; a column is reused only once every row reads zero for it.

The first cell of the table is not a count: the supervisor keeps there how many rows
are in use (rows are handed out lowest first), so a reader sums N rows, not the
table's room for reloads; the sum itself is one strided slice, added up in C.
"""

from __future__ import annotations

import mmap
import os

_CELL = 4  # bytes: int32


class SharedCounts:
    def __init__(self, fd: int, rows: int, columns: int, row: int) -> None:
        self.fd = fd
        self.rows = rows
        self.columns = columns
        self.row = row  # the row this process writes; -1 in the supervisor (reads only)
        self._map = mmap.mmap(fd, _size(rows, columns))
        self._cells = memoryview(self._map).cast("i")

    @classmethod
    def create(cls, rows: int, columns: int) -> SharedCounts:
        fd = os.memfd_create("sekisho-counts", 0)  # not MFD_CLOEXEC: workers inherit it by pass_fds
        os.ftruncate(fd, _size(rows, columns))  # zero-filled; pages are made only when touched
        table = cls(fd, rows, columns, -1)
        table.rows_in_use(rows)  # until the supervisor says better
        return table

    def attach(self, row: int) -> SharedCounts:
        """The same table, writing `row` (a worker's view)."""
        return SharedCounts(self.fd, self.rows, self.columns, row)

    def rows_in_use(self, rows: int) -> None:
        """The supervisor: rows 0 .. rows-1 may hold counts (the others are zero)."""
        self._cells[0] = min(rows, self.rows)

    def add(self, column: int, delta: int) -> None:
        self._cells[1 + self.row * self.columns + column] += delta

    def total(self, column: int) -> int:
        step = self.columns
        start = 1 + column
        return sum(self._cells[start : start + self._cells[0] * step : step])

    def of_row(self, row: int, column: int) -> int:
        return int(self._cells[1 + row * self.columns + column])

    def clear_row(self, row: int) -> None:
        start = 1 + row * self.columns
        self._cells[start : start + self.columns] = memoryview(bytes(self.columns * _CELL)).cast("i")

    def close(self) -> None:
        self._cells.release()
        self._map.close()


def _size(rows: int, columns: int) -> int:
    return (1 + rows * columns) * _CELL


class Columns:
    """The supervisor's allocation of columns to servers: a freed column is reused only
    once no worker still counts a connection in it (a worker may drop a connection to
    a server the config no longer has)."""

    def __init__(self, counts: SharedCounts) -> None:
        self._counts = counts
        self._next = 0
        self._freed: list[int] = []

    def take(self) -> int:
        """A free column, or -1 when the table is full (that server is then counted per worker)."""
        for i, column in enumerate(self._freed):
            if self._counts.total(column) == 0:
                del self._freed[i]
                return column
        if self._next < self._counts.columns:
            self._next += 1
            return self._next - 1
        return -1

    def free(self, column: int) -> None:
        if column >= 0:
            self._freed.append(column)
