"""The admin weight endpoint (drain at run time) and the lb metrics exposition."""

from __future__ import annotations

import asyncio
import json

import conf
from proxy.listener import bind
from proxy.process.admin import AdminPolicy, AdminServer
from proxy.process.metrics import Exposition
from proxy.process.metrics.lb import families, tcp_families
from proxy.process.pool_admin import register
from tests.integration.test_tcp_failover import Backend, Service, ask, run

TOKEN = b"lb-admin-test-token"


async def post(port: int, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (path.encode(), TOKEN, len(body), body)
    )
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def _drain() -> None:
    a = await Backend("A").start()
    b = await Backend("B").start()
    pool = conf.Pool("web", (conf.Server(a.address), conf.Server(b.address)), scheduler="rr")
    async with Service(pool) as svc:
        admin = AdminServer(AdminPolicy(TOKEN))  # who may call it: tests/*/test_admin_auth.py
        register(admin, lambda: svc.pools)
        sock = bind(conf.Address("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await admin.start(sock)
        # An open connection to A survives the drain.
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"hi\n")
        first = (await reader.readline()).strip().decode()
        target = a if first == "A" else b
        other = "B" if first == "A" else "A"

        status, reply = await post(port, f"/servers/web/{target.address}/weight", b"0")
        assert status == 200, reply
        assert reply["servers"][0]["effective_weight"] == 0  # type: ignore[index]
        assert [await ask(svc.port) for _ in range(6)] == [other] * 6
        writer.write(b"again\n")
        assert (await reader.readline()).strip().decode() == first  # existing connection finishes
        writer.close()

        status, _ = await post(port, f"/servers/web/{target.address}/weight", b'{"weight": 2}')
        assert status == 200
        assert {await ask(svc.port) for _ in range(6)} == {"A", "B"}

        assert (await post(port, "/servers/nope/1.2.3.4:5/weight", b"1"))[0] == 404
        assert (await post(port, "/servers/web/1.2.3.4:5/weight", b"1"))[0] == 404
        assert (await post(port, f"/servers/web/{target.address}/weight", b"-1"))[0] == 400
        assert (await post(port, f"/servers/web/{target.address}/weight", b"heavy"))[0] == 400

        # Metrics: the exposition renders, with HAProxy-exporter-like names.
        ex = Exposition()
        ex.add_source("lb", lambda: families(svc.pools))
        ex.add_source("tcp", lambda: tcp_families({"127.0.0.1:0": svc.stats}))
        text = ex.render().decode()
        for name in (
            "sekisho_server_up",
            "sekisho_server_weight",
            "sekisho_server_current_connections",
            "sekisho_server_connections_total",
            "sekisho_server_connect_failures_total",
            "sekisho_server_check_failures_total",
            "sekisho_server_check_duration_seconds",
            "sekisho_server_bytes_in_total",
            "sekisho_server_picks_total",
            "sekisho_backend_up_servers",
            "sekisho_backend_status",
            "sekisho_tcp_connections_total",
            "sekisho_tcp_bytes_out_total",
        ):
            assert f"\n{name}{{" in text, name
        assert f'sekisho_server_weight{{pool="web",server="{target.address}"}} 2.0' in text
        assert 'sekisho_backend_up_servers{pool="web"} 2.0' in text
        await admin.stop()
    await a.stop()
    await b.stop()


def test_admin_weight_drains_and_metrics_render() -> None:
    run(_drain())
