"""`sekisho convert delegate`: the edge of CONTEXT.md and everything else."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import conf
from proxy.convert import convert_text, main

DATA = Path(__file__).parent.parent / "data" / "convert"


def _run(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["delegate", str(path)], stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def _warnings(err: str, path: Path) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in err.splitlines():
        m = re.match(rf"^{re.escape(str(path))}:(\d+): warning: (.*)$", line)
        if m:
            found.setdefault(int(m[1]), []).append(m[2])
    return found


@pytest.mark.parametrize("name", ["http", "delegate-full"])
def test_matches_expected_toml(name: str) -> None:
    rc, out, _ = _run(DATA / f"{name}.conf")
    assert rc == 0
    assert out == (DATA / f"{name}.expected.toml").read_text()
    conf.load_text(out)


def test_the_edge_of_context() -> None:
    path = DATA / "http.conf"
    rc, out, err = _run(path)
    assert rc == 0
    config = conf.load_text(out)
    assert config.global_.access_log == ""  # LOGFILE=""
    (http,) = config.http
    assert [str(a) for a in http.listen] == ["0.0.0.0:80"]
    assert [str(n) for n in http.allow] == ["0.0.0.0/0", "::/0"]  # RELIABLE="*"
    assert http.forwarded_headers == ("x-forwarded-for",)  # HTTPCONF add-qhead
    routes = [(r.host, r.path, r.target, r.pool, r.status) for r in http.routes]
    assert routes == [
        (None, "/-/", "status", None, 404),  # first: DeleGate's own pages never reachable
        ("alpha", "/", "pool", "alpha", None),
        ("beta", "/", "pool", "beta", None),
    ]
    assert [str(s.address) for s in config.pools["alpha"].servers] == ["www.example.com:80"]
    assert [str(s.address) for s in config.pools["beta"].servers] == ["192.0.2.105:80"]
    w = _warnings(err, path)
    assert any("covered by the MOUNT at line 16" in m for m in w[17])  # /-/admin/* folded into /-/
    assert any("not in REACHABLE" in m for m in w[13])  # 192.0.2.105 vs REACHABLE="192.0.2.9"
    assert any("exactly" in m for m in w[16])
    # RELAY, CONNECT, CACHE are what sekisho does anyway: noted in the output, not warned
    assert not any(line in w for line in (6, 7, 8, 9))
    assert "RELAY=proxy" in out


def test_everything_else() -> None:
    path = DATA / "delegate-full.conf"
    rc, out, err = _run(path)
    assert rc == 0
    config = conf.load_text(out)
    (http,) = config.http
    assert [str(a) for a in http.listen] == ["0.0.0.0:8080", "192.0.2.1:8443"]
    assert [str(n) for n in http.allow] == ["192.168.0.0/16", "10.0.0.0/8"]
    assert http.forwarded_headers == ("x-real-ip",)
    by_path = {(r.host, r.path): r for r in http.routes}
    app = by_path[("shop.example.com", "/app/")]
    assert app.strip_prefix and app.pool == "shop.example.com"
    assert ("*.shop.example.com", "/app/") in by_path
    old = by_path[(None, "/old/")]
    assert (old.redirect, old.status) == ("http://www.example.com/new/", 301)
    assert by_path[(None, "/")].pool == "192.0.2.50"  # SERVER=http://192.0.2.50:8000/
    assert http.routes[0].status == 403
    assert config.global_.access_log == "/var/log/delegate/http.log"
    w = _warnings(err, path)
    for line, text in {
        4: "!10.1.2.3",
        9: "rewrite is not possible",
        10: "from=",
        11: "nntp",
        14: "kill-qhead",
        16: "TIMEOUT",
        17: "not followed",
    }.items():
        assert any(text in m for m in w.get(line, [])), (line, text, w.get(line))


def _convert(text: str) -> tuple[conf.Config, list[tuple[int, str]]]:
    toml, warnings = convert_text("delegate", text, "dg.conf")
    return conf.load_text(toml), [(n.line, n.message) for n in warnings.items]


def test_no_xff_means_none_is_added() -> None:
    config, warnings = _convert('-P8080\nSERVER=http\nMOUNT="/* http://10.0.0.1:8080/*"\n')
    assert config.http[0].forwarded_headers == ()
    assert any("no RELIABLE" in m for _, m in warnings)


def test_reliable_forms() -> None:
    config, _ = _convert(
        '-P80 SERVER=http MOUNT="/* http://10.0.0.1/*" '
        'RELIABLE="{192.168.1.*,10.0.0.0/255.0.0.0,localhost}"\n'
    )
    assert [str(n) for n in config.http[0].allow] == [
        "192.168.1.0/24",
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
    ]


def test_smtp_server_gives_a_pool_and_a_warning() -> None:
    toml, warnings = convert_text("delegate", "-P25\nSERVER=smtp://mail.example.com:25\n", "dg.conf")
    config = conf.load_text(toml)
    assert [str(s.address) for s in config.pools["mail.example.com"].servers] == ["mail.example.com:25"]
    assert any(n.line == 2 and "recipient domain" in n.message for n in warnings.items)


def test_nothing_to_route_is_reported() -> None:
    toml, warnings = convert_text("delegate", "-P80\nSERVER=http\n", "dg.conf")
    conf.load_text(toml)
    assert any("needs a route" in n.message for n in warnings.items)
