"""Messages between the supervisor and a worker: one Unix socketpair per worker.

Each message is a tuple `(kind, *fields)`, sent as a 4-byte length and a pickle.
Pickle is fine here and only here: both ends are processes of this daemon (the
socketpair is made by the supervisor and inherited by the worker it starts), and
the payloads are the plain dataclasses the metrics already read.

    supervisor -> worker   ("view", {pool: [ServerView]})   health, weights, addresses
                           ("snapshot", seq)                 counters, please
                           ("close", key)                    stop accepting on one address
                           ("drain",)                        finish in-flight work, then exit
                           ("adopt", index)                  watch a dead worker's sockets too
                           ("release", index)                its replacement serves: stop
    worker -> supervisor   ("ready", pid)                    listening
                           ("snapshot", seq, data)
                           ("closed", key)
                           ("connect_failed", pool, server)  passive health
                           ("bye", data)                     drained; the last counters
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

_LENGTH = struct.Struct("!I")
MAX_MESSAGE = 64 << 20


def send(writer: asyncio.StreamWriter, *message: Any) -> None:
    if writer.is_closing():
        return
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(data)) + data)


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None when the other end has gone."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE:
            return None
        message = pickle.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return message if isinstance(message, tuple) and message else None
