"""`python -m bench.opcount` counts the L4 path's own work per connection."""

from __future__ import annotations

import uvloop

from bench import opcount


def test_opcount_sees_the_l4_path_per_connection() -> None:
    ops, calls = uvloop.run(opcount.count(30))
    per_conn = sum(ops.values()) / 30
    assert 300 < per_conn < 20_000
    # every connection went through the listener, the dial and the relay once
    assert calls["tcp.py:TcpFrontend.take_socket"] == 30
    assert calls["tcp.py:_Conn.ended"] == 30
    assert ops["fdrelay.py:_Flow.event"] > 0
    assert not any(k.startswith("opcount.py") for k in ops)  # the harness is left out
