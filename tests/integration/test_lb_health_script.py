"""The `script` check knows which server it checks (issue 20): placeholders in the command,
SEKISHO_* in the environment, and a server's own `health_command` (keepalived's MISC_CHECK
per real_server), run by a pool's real check loop."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

import conf
from lb.health import script_command
from lb.pool import PoolSet
from tests.integration.test_tcp_failover import run

# Records its argv and the SEKISHO_* environment, then exits with the status given by the
# file named in argv[1] for this port (missing: 0).
RECORDER = """
import json, os, sys
out, port = sys.argv[1], sys.argv[3]
env = {k: v for k, v in os.environ.items() if k.startswith(("SEKISHO_POOL", "SEKISHO_SERVER"))}
with open(f"{out}/{port}.seen", "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "env": env}) + "\\n")
status = f"{out}/{port}.status"
sys.exit(int(open(status).read()) if os.path.exists(status) else 0)
"""


def _seen(tmp: Path, port: int) -> list[dict[str, object]]:
    path = tmp / f"{port}.seen"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _wait(predicate: object, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def _per_server(tmp: Path) -> None:
    script = tmp / "check.py"
    script.write_text(RECORDER)
    py = sys.executable
    a, b, own = (
        conf.Address("127.0.0.1", 7001),
        conf.Address("127.0.0.1", 7002),
        conf.Address("127.0.0.2", 7003),
    )
    pool = conf.Pool(
        "web",
        (
            conf.Server(a),
            conf.Server(b),
            # its own command, as a keepalived real_server with its own misc_path
            conf.Server(own, health_command=(py, str(script), str(tmp), "{host}", "{port}", "own")),
        ),
        health=conf.HealthCheck(
            "script",
            interval=0.05,
            timeout=5.0,
            rise=1,
            fall=1,
            command=(py, str(script), str(tmp), "{host}", "{port}"),
        ),
    )
    (tmp / "7002.status").write_text("1")  # the second server's check fails
    pools = PoolSet({"web": pool})
    await pools.start()
    try:
        backends = {x.port: x for x in pools["web"].backends}
        assert await _wait(lambda: all(_seen(tmp, p) for p in (7001, 7002, 7003)))
        assert await _wait(lambda: not backends[7002].up)
        assert backends[7001].up and backends[7003].up
        first = _seen(tmp, 7001)[0]
        assert first["argv"] == [str(tmp), "127.0.0.1", "7001"]
        assert first["env"] == {
            "SEKISHO_POOL": "web",
            "SEKISHO_SERVER": "127.0.0.1:7001",
            "SEKISHO_SERVER_HOST": "127.0.0.1",
            "SEKISHO_SERVER_PORT": "7001",
        }
        assert _seen(tmp, 7003)[0]["argv"] == [str(tmp), "127.0.0.2", "7003", "own"]
        (tmp / "7002.status").write_text("0")  # it recovers: up again after one good check
        assert await _wait(lambda: backends[7002].up)
    finally:
        await pools.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_server_is_checked_with_its_own_command(tmp_path: Path, loop: str) -> None:
    run(_per_server(tmp_path), loop)


def test_placeholders_and_the_checked_port() -> None:
    check = conf.HealthCheck(
        "script", port=8081, command=("chk", "--to={host}:{port}", "{server}", "{pool}", "{x}")
    )
    server = conf.Server(conf.Address("backend.test", 80))
    cmd = script_command(check, server, "p", "192.0.2.10", 80)
    # {host}: the address connected to; {port}: the port checked (health.port); unknown braces stay
    assert cmd.argv == ("chk", "--to=192.0.2.10:8081", "backend.test:80", "p", "{x}")
    assert cmd.env["SEKISHO_SERVER_PORT"] == "8081" and cmd.env["SEKISHO_SERVER"] == "backend.test:80"


def test_config_health_command() -> None:
    base = """
[pool.p]
servers = [
  {{ address = "127.0.0.1:80", health_command = "chk {{host}}" }},
  {{ address = "127.0.0.1:81"{second} }},
]
health = {{ kind = "{kind}"{command} }}
"""
    # every server has its own: the pool's command may be left out
    text = base.format(kind="script", command="", second=', health_command = ["chk2", "{port}"]')
    servers = conf.load_text(text).pools["p"].servers
    assert [s.health_command for s in servers] == [("chk", "{host}"), ("chk2", "{port}")]
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(base.format(kind="script", command="", second=""))
    assert [str(i) for i in info.value.issues] == ["pool.p.health.command: required for kind = 'script'"]
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(base.format(kind="tcp", command="", second=""))
    assert [str(i) for i in info.value.issues] == [
        "pool.p.servers[0].health_command: only for health.kind = 'script'"
    ]
