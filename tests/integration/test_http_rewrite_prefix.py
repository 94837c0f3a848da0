"""A route's rewrite_prefix through a real listener (issue 20): what DeleGate's
MOUNT="/static/* http://server/assets/*" did, converted and served."""

from __future__ import annotations

import pytest

from conf.convert import convert_text
from tests.integration.http_backends import HttpBackend, Proxy, request


@pytest.mark.asyncio
async def test_a_converted_mount_reaches_the_server_under_its_own_prefix() -> None:
    backend = await HttpBackend("assets").start()
    try:
        dg = f'-P80 SERVER=http MOUNT="/static/* http://{backend.address}/assets/*" RELIABLE="127.0.0.1"\n'
        toml, warnings = convert_text("delegate", dg, "dg.conf")
        assert not warnings.errors
        toml = toml.replace('"0.0.0.0:80"', '"127.0.0.1:1"').replace(
            "[[http]]", '[global]\naccess_log = ""\n\n[[http]]', 1
        )
        async with Proxy(toml) as p:
            status, _, _ = await request(p.port, b"GET /static/img/a.png?v=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 200
        assert [r["target"] for r in backend.requests] == ["/assets/img/a.png?v=2"]
    finally:
        await backend.stop()
