"""`sekisho convert delegate`: the edge of CONTEXT.md and everything else."""

from __future__ import annotations

import io
import ipaddress
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
from conf.convert import convert_text, main
from proxy.access import ClientFilter

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
    # DeleGate's last match wins, sekisho's first: the exclusion comes first (issue 20)
    assert [str(n) for n in http.allow] == ["!10.1.2.3/32", "10.0.0.0/8", "192.168.0.0/16"]
    assert http.forwarded_headers == ("x-real-ip",)
    by_path = {(r.host, r.path): r for r in http.routes}
    app = by_path[("shop.example.com", "/app/")]
    assert app.strip_prefix and app.pool == "shop.example.com"
    assert ("*.shop.example.com", "/app/") in by_path
    old = by_path[(None, "/old/")]
    assert (old.redirect, old.status) == ("http://www.example.com/new/", 301)
    assert by_path[(None, "/")].pool == "192.0.2.50"  # SERVER=http://192.0.2.50:8000/
    static = by_path[(None, "/static/")]  # MOUNT="/static/* http://192.0.2.61/assets/*"
    assert (static.rewrite_prefix, static.strip_prefix) == ("/assets/", False)
    assert http.routes[0].status == 403
    assert config.global_.access_log == "/var/log/delegate/http.log"
    w = _warnings(err, path)
    for line, text in {
        4: "gateway.example.com",
        9: "rewrote URLs in responses",
        10: "useproxy",
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


# ------------------------------------------------- RELIABLE exclusions (issue 20)


def test_reliable_exclusions_keep_their_meaning() -> None:
    config, warnings = _convert(
        '-P80 SERVER=http MOUNT="/* http://10.0.0.1/*" RELIABLE="10.0.0.0/8,!10.1.0.0/16,10.1.2.0/24"\n'
    )
    # DeleGate: the last entry holding the client decides; sekisho: the first. Reversed:
    assert [str(e) for e in config.http[0].allow] == ["10.1.2.0/24", "!10.1.0.0/16", "10.0.0.0/8"]
    assert not warnings or all("RELIABLE" not in m for _, m in warnings)


def test_reliable_starting_with_an_exclusion_starts_from_everyone() -> None:
    config, _ = _convert('-P80 SERVER=http MOUNT="/* http://10.0.0.1/*" RELIABLE="!192.0.2.7"\n')
    assert [str(e) for e in config.http[0].allow] == ["!192.0.2.7/32", "0.0.0.0/0", "::/0"]


def test_reliable_ranges_become_networks() -> None:
    config, _ = _convert(
        '-P80 SERVER=http MOUNT="/* http://10.0.0.1/*" '
        'RELIABLE="192.168.1.[32-63],10.[0-3].*,!10.0.0.[0-127]"\n'
    )
    assert [str(e) for e in config.http[0].allow] == ["!10.0.0.0/25", "10.0.0.0/14", "192.168.1.32/27"]


def _delegate_admits(entries: list[str], addr: str) -> bool:
    """DeleGate's HostList rule as its manual states it: every entry is scanned first to
    last, an entry holding the host includes it ("!": excludes it), the last one decides;
    a list whose first entry has "!" starts from everyone."""
    a = ipaddress.ip_address(addr)
    included = entries[0].startswith("!")
    for entry in entries:
        net = ipaddress.ip_network(entry.lstrip("!"))
        if net.version == a.version and a in net:
            included = not entry.startswith("!")
    return included


_DG_NETS = st.sampled_from(
    ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3", "192.0.2.0/24", "192.0.2.7", "0.0.0.0/0"]
)
_DG_ADDRS = st.sampled_from(
    ["10.1.2.3", "10.1.2.4", "10.1.3.1", "10.2.0.1", "192.0.2.7", "192.0.2.8", "8.8.8.8"]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), _DG_NETS), min_size=1, max_size=6),
    st.lists(_DG_ADDRS, min_size=1, max_size=7),
)
def test_converted_reliable_decides_as_delegate_did(raw: list[tuple[bool, str]], addrs: list[str]) -> None:
    entries = [("!" if deny else "") + net for deny, net in raw]
    toml, warnings = convert_text(
        "delegate",
        f'-P80 SERVER=http MOUNT="/* http://10.0.0.1/*" RELIABLE="{",".join(entries)}"\n',
        "dg.conf",
    )
    assert not warnings.errors
    allow = ClientFilter(conf.load_text(toml).http[0].allow)
    for addr in addrs:
        assert allow.admits(addr) == _delegate_admits(entries, addr), (entries, addr)


def _refused(text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(text)
    try:
        rc = main(["delegate", f.name], stdout=out, stderr=err)
    finally:
        os.unlink(f.name)
    return rc, out.getvalue(), err.getvalue().replace(f.name, "dg.conf")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('RELIABLE="*,!badhost.example.com"', "RELIABLE !badhost.example.com: excludes a name"),
        ('RELIABLE="10.0.0.0/8,!user@10.1.2.3"', "RELIABLE !user@10.1.2.3: excludes a user (Ident)"),
        ('PERMIT="http:*:192.168.*"', "PERMIT=http:*:192.168.*: DeleGate admitted only"),
        ('REJECT="http:*:10.1.2.3"', "REJECT=http:*:10.1.2.3: DeleGate refused"),
        ('AUTHORIZER="-list{u:p}"', "AUTHORIZER=-list{u:p}: DeleGate asked these clients for a password"),
        ('MOUNT="/admin/* http://10.0.0.2/admin/* from=192.168.0.0/16"', "MOUNT option from=192.168.0.0/16"),
        ('MOUNT="/s/* http://10.0.0.2/s/* withssl"', "MOUNT option withssl"),
        ('MOUNT="/status http://10.0.0.2/status"', "MOUNT /status: DeleGate forwarded only this exact path"),
    ],
)
def test_what_would_widen_is_an_error_naming_the_line(line: str, expected: str) -> None:
    rc, out, err = _refused(f'-P80\nSERVER=http\nMOUNT="/* http://10.0.0.1/*"\n{line}\n')
    assert rc == 1 and out == ""
    assert f"dg.conf:4: error: {expected}" in err
    assert "nothing written" in err


def test_an_unmatchable_exclusion_with_nothing_admitted_before_it_is_only_a_warning() -> None:
    config, warnings = _convert(
        '-P80 SERVER=http MOUNT="/* http://10.0.0.1/*" RELIABLE="*.example.com,!*.bad.example.com"\n'
    )
    assert config.http[0].allow == ()  # names only: nobody sekisho can match is admitted
    assert any("!*.bad.example.com: no entry before it admits" in m for _, m in warnings)


def test_smtp_instructions_carry_reliable() -> None:
    """The [[smtp]] listener is written by hand: RELIABLE goes with the instructions, or the new
    listener would admit everyone (its default)."""
    toml, warnings = convert_text(
        "delegate", '-P25\nSERVER=smtp://mail.example.com:25\nRELIABLE="10.0.0.0/8,!10.1.2.3"\n', "dg.conf"
    )
    conf.load_text(toml)
    (note,) = [n for n in warnings.items if n.line == 2]
    assert 'allow = ["!10.1.2.3/32", "10.0.0.0/8"] (RELIABLE, line 3)' in note.message
    assert 'allow = ["!10.1.2.3/32", "10.0.0.0/8"]' in toml  # and in the pool's comment
