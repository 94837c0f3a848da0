"""One access-log line per TCP and SMTP session (issue 20: DeleGate's LOGFILE logged every
protocol), in the HTTP lines' layout: client, route/pool, server, bytes, duration, result."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
from pathlib import Path
from typing import Any

import pytest

import conf
from conf.access import parse_entry
from proxy.accesslog import AccessLog
from tests.integration.test_smtp_frontend import FakeMta, start_edge
from tests.integration.test_tcp_failover import Backend, Service, run
from tests.integration.test_tcp_relay import simple_pool

# client - - [time] "request" status size "referer" "agent" "host" upstream duration
COMBINED = re.compile(
    r'^(?P<client>\S+) - - \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"-" "(?P<agent>[^"]*)" "(?P<route>[^"]*)" (?P<upstream>\S+) (?P<duration>\d+\.\d{6})$'
)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def _tcp(tmp: Path, fmt: str) -> list[str]:
    path = tmp / f"tcp.{fmt}.log"
    be = await Backend("B").start()
    dead = conf.Server(conf.Address("127.0.0.1", 9))  # discard port: nothing listens
    allow = tuple(parse_entry(e) for e in ("!127.0.0.3", "127.0.0.0/8"))
    access_log = AccessLog(str(path), fmt)
    async with Service(simple_pool(be), allow=allow) as svc:
        svc.frontend.access_log = access_log
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port, local_addr=("127.0.0.2", 0))
        writer.write(b"ping\n")
        assert await reader.readline() == b"B\n"
        writer.close()
        try:  # the excluded client: reset at accept
            _, w2 = await asyncio.open_connection("127.0.0.1", svc.port, local_addr=("127.0.0.3", 0))
            await asyncio.sleep(0.1)
            w2.close()
        except ConnectionError:
            pass
        for _ in range(100):
            await asyncio.sleep(0.02)
            if svc.stats.active == 0:
                break
    async with Service(conf.Pool("dead", (dead,))) as svc:  # no server can take it
        svc.frontend.access_log = access_log
        try:
            r3, w3 = await asyncio.open_connection("127.0.0.1", svc.port)
            w3.write(b"x")
            await r3.read()
            w3.close()
        except ConnectionError:
            pass
    access_log.close()
    await be.stop()
    return _lines(path)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tcp_sessions_combined(tmp_path: Path, loop: str) -> None:
    lines = run(_tcp(tmp_path, "combined"), loop)
    by_client = {m["client"]: m for m in (COMBINED.match(line) for line in lines) if m}
    assert len(by_client) == 3 and len(lines) == 3, lines
    ok, denied = by_client["127.0.0.2"], by_client["127.0.0.3"]
    assert ok["request"] == "TCP 127.0.0.1:0" and ok["status"] == "200" and ok["size"] == "2"  # "B\n"
    assert ok["route"] == "p" and ok["upstream"].startswith("127.0.0.1:")
    assert (denied["status"], denied["upstream"]) == ("403", "-")
    refused = COMBINED.match(lines[-1])
    assert refused is not None and (refused["status"], refused["route"]) == ("502", "dead")


def test_tcp_sessions_json(tmp_path: Path) -> None:
    records = [json.loads(line) for line in run(_tcp(tmp_path, "json"))]
    ok = next(r for r in records if r["client"] == "127.0.0.2")
    assert ok["protocol"] == "tcp" and ok["result"] == "ok" and ok["status"] == 200
    assert (ok["bytes_in"], ok["bytes_out"]) == (5, 2) and ok["route"] == "p" and ok["duration"] >= 0
    assert {r["result"] for r in records} == {"ok", "denied", "no_server"}


async def _smtp(tmp: Path, fmt: str) -> list[str]:
    path = tmp / f"smtp.{fmt}.log"
    mta = FakeMta(xclient=False)
    port = await mta.start()
    allow = tuple(parse_entry(e) for e in ("!127.0.0.3", "127.0.0.0/8"))
    edge = await start_edge({"alpha": port}, (conf.SmtpRoute("example.com", "alpha"),), allow=allow)
    access_log = AccessLog(str(path), fmt)
    edge.frontend.access_log = access_log

    def mail(source: str) -> Any:
        with smtplib.SMTP(
            "127.0.0.1", edge.port, local_hostname="client.test", source_address=(source, 0)
        ) as s:
            s.sendmail("a@sender.test", ["u@example.com"], b"Subject: x\r\n\r\nhello\r\n")
            s.sendmail("a@sender.test", ["v@example.com"], b"Subject: y\r\n\r\nhello again\r\n")

    try:
        await asyncio.to_thread(mail, "127.0.0.2")
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port, local_addr=("127.0.0.3", 0))
        assert (await reader.read()).startswith(b"554")
        writer.close()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not edge.frontend.sessions:
                break
    finally:
        await edge.stop()
        await mta.stop()
        access_log.close()
    return _lines(path)


def test_smtp_sessions_combined(tmp_path: Path) -> None:
    lines = run(_smtp(tmp_path, "combined"))
    matches = [COMBINED.match(line) for line in lines]
    assert all(matches) and len(matches) == 2, lines
    by_client = {m["client"]: m for m in matches if m}
    ok, denied = by_client["127.0.0.2"], by_client["127.0.0.3"]
    assert ok["request"] == "SMTP 127.0.0.1:0" and ok["status"] == "221" and ok["agent"] == "client.test"
    assert ok["route"] == "example.com" and ok["upstream"].startswith("alpha/127.0.0.1:")
    assert int(ok["size"]) > 40  # both messages' data
    assert (denied["status"], denied["route"], denied["upstream"]) == ("554", "-", "-")


def test_smtp_sessions_json(tmp_path: Path) -> None:
    records = {r["client"]: r for r in map(json.loads, run(_smtp(tmp_path, "json")))}
    ok = records["127.0.0.2"]
    assert (ok["protocol"], ok["result"], ok["messages"], ok["helo"]) == ("smtp", "quit", 2, "client.test")
    assert records["127.0.0.3"]["result"] == "denied"
