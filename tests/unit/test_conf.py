"""The configuration model: the contract loads, and every error kind names its key path."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import conf

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"
SPEC = EXAMPLES / "contract.toml"  # the contract, copied in (tests/unit/test_contract.py)

BASE = """
[pool.a]
servers = [{ address = "127.0.0.1:8001" }]
"""


def errors(text: str) -> list[str]:
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(text)
    return [str(i) for i in info.value.issues]


def test_contract_file_loads_as_it_stands() -> None:
    config = conf.load_file(SPEC)
    assert set(config.pools) == {"alpha", "beta", "squid", "mail-alpha", "mail-beta"}
    alpha = config.pools["alpha"]
    assert alpha.scheduler == "wrr"
    assert [s.weight for s in alpha.servers] == [3, 1]
    assert alpha.health.kind == "http" and alpha.health.rise == 2 and alpha.health.fall == 3
    assert alpha.sorry_server == conf.Address("192.0.2.50", 80)
    assert config.pools["beta"].proxy_protocol == "v2"
    assert config.pools["beta"].servers[0].weight == 1
    http = config.http[0]
    assert http.routes[0].path == "/-/" and http.routes[0].status == 404
    assert http.routes[2].strip_prefix is True
    assert http.routes[3].redirect == "https://www.example.com/" and http.routes[3].status == 301
    assert http.timeouts.header == 10.0 and http.max_header_bytes == 16384
    assert config.http[1].tls[0].cert.endswith("www.example.com.pem")
    assert config.smtp[0].routes[0].xclient is True
    assert config.tcp[0].listen == (conf.Address("192.0.2.160", 8080),)
    vrrp = config.vrrp[0]
    assert vrrp.preempt is False and vrrp.auth_pass == "p@ssw0rd" and vrrp.version == 2
    assert vrrp.virtual_ipaddress == (ipaddress.ip_interface("192.0.2.160/24"),)
    assert vrrp.notify.master == ("/etc/sekisho/notify.sh", "master")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    conf.load_file(path)


def test_toml_syntax_error_names_the_file() -> None:
    assert "TOML syntax" in errors("[pool.a\n")[0]


def test_unknown_key() -> None:
    assert errors(BASE + "colour = 'red'\n") == ["pool.a.colour: unknown key"]
    assert errors(BASE + "[global]\nmetrcs = '127.0.0.1:1'\n") == ["global.metrcs: unknown key"]
    assert errors("[nonsense]\n") == ["nonsense: unknown key"]


def test_wrong_type() -> None:
    text = 'servers = [{ address = "127.0.0.1:8001", weight = "3" }]'
    assert errors(f"[pool.a]\n{text}\n") == ["pool.a.servers[0].weight: expected an integer, got string"]
    assert errors(BASE + "[[tcp]]\nlisten = '127.0.0.1:9'\npool = 'a'\nmax_connections = true\n") == [
        "tcp[0].max_connections: expected an integer, got boolean"
    ]


def test_out_of_range() -> None:
    text = '[pool.a]\nservers = [{ address = "127.0.0.1:1" }, { address = "127.0.0.1:2", weight = -1 }]\n'
    assert errors(text) == ["pool.a.servers[1].weight: must be between 0 and 65535"]


def test_bad_choice() -> None:
    assert errors(BASE.replace("[pool.a]", "[pool.a]\nscheduler = 'fastest'")) == [
        "pool.a.scheduler: must be one of 'rr' | 'wrr' | 'lc' | 'wlc' | 'sh' | 'mh' | 'lblc', got 'fastest'"
    ]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "want host:port"),
        ("127.0.0.1:0", "port '0' must be 1-65535"),
        ("127.0.0.1:http", "port 'http' must be 1-65535"),
        ("::1:80", "an IPv6 address needs brackets"),
        ("[::1:80", "want [ipv6]:port"),
        ("bad host!:80", "is neither an IP address nor a host name"),
        ("999.1.1.1:80", "is neither an IP address nor a host name"),
    ],
)
def test_bad_address(address: str, reason: str) -> None:
    (message,) = errors(f'[pool.a]\nservers = [{{ address = "{address}" }}]\n')
    assert message.startswith(f"pool.a.servers[0].address: bad address {address!r}")
    assert reason in message


def test_addresses_that_are_fine() -> None:
    config = conf.load_text(
        '[pool.a]\nservers = [{ address = "[::1]:80" }, { address = "web.internal:8080" }]\n'
    )
    assert [str(s.address) for s in config.pools["a"].servers] == ["[::1]:80", "web.internal:8080"]


def test_bad_cidr() -> None:
    text = BASE + '[[http]]\nlisten = "127.0.0.1:1"\nallow = ["10.0.0.1/8"]\n[[http.route]]\npool = "a"\n'
    (message,) = errors(text)
    assert message.startswith("http[0].allow[0]: bad CIDR '10.0.0.1/8'")


def test_dangling_pool_names() -> None:
    text = (
        BASE
        + '[[http]]\nlisten = "127.0.0.1:1"\n[[http.route]]\nhost = "a.test"\npool = "a"\n'
        + '[[http.route]]\nhost = "b.test"\npool = "a"\n[[http.route]]\npool = "gamma"\n'
        + '[[smtp]]\nlisten = "127.0.0.1:2"\n[[smtp.route]]\ndomain = "x.test"\npool = "mail"\n'
        + '[[tcp]]\nlisten = "127.0.0.1:3"\npool = "squid"\n'
    )
    assert errors(text) == [
        "http[0].route[2].pool: no pool named 'gamma'",
        "smtp[0].route[0].pool: no pool named 'mail'",
        "tcp[0].pool: no pool named 'squid'",
    ]


def test_duplicate_listeners() -> None:
    text = (
        BASE
        + '[[http]]\nlisten = ["0.0.0.0:80"]\n[[http.route]]\npool = "a"\n'
        + '[[tcp]]\nlisten = "127.0.0.1:80"\npool = "a"\n'
        + '[[tcp]]\nlisten = "0.0.0.0:80"\npool = "a"\n'
        + '[global]\nmetrics = "0.0.0.0:80"\n'
    )
    assert errors(text) == [
        "tcp[0].listen[0]: 127.0.0.1:80 is already used by http[0].listen[0]",
        "tcp[1].listen[0]: 0.0.0.0:80 is already used by http[0].listen[0]",
        "global.metrics: 0.0.0.0:80 is already used by http[0].listen[0]",
    ]


def test_routes_that_can_never_match() -> None:
    text = (
        BASE
        + '[[http]]\nlisten = "127.0.0.1:1"\n'
        + '[[http.route]]\nhost = "*.example.com"\npath = "/"\npool = "a"\n'
        + '[[http.route]]\nhost = "www.example.com"\npath = "/app/"\npool = "a"\n'
        + '[[http.route]]\nhost = "example.com"\npool = "a"\n'
    )
    assert errors(text) == [
        "http[0].route[1]: can never match: route[0] (host=*.example.com, path=/) "
        "takes every request it would"
    ]


def test_route_targets() -> None:
    head = BASE + '[[http]]\nlisten = "127.0.0.1:1"\n'
    assert errors(head + '[[http.route]]\npath = "/"\n') == [
        "http[0].route[0].pool: a route needs a target: pool, redirect or status"
    ]
    assert errors(head + '[[http.route]]\nredirect = "https://x/"\nstatus = 404\n') == [
        "http[0].route[0].status: a redirect status is one of 301, 302, 303, 307, 308"
    ]
    assert errors(head + '[[http.route]]\npath = "app"\npool = "a"\n') == [
        "http[0].route[0].path: must start with '/'"
    ]
    assert errors(head + "[[http.route]]\nstatus = 404\nstrip_prefix = true\n") == [
        "http[0].route[0].strip_prefix: only for routes with a pool"
    ]
    assert errors(head) == ["http[0].route: an http listener needs at least one [[http.route]]"]


def test_health_keys_belong_to_their_kind() -> None:
    text = BASE.replace("[pool.a]", "[pool.a]\nhealth = { kind = 'tcp', path = '/x' }")
    assert errors(text) == ["pool.a.health.path: only for kind = 'http'"]
    text = BASE.replace("[pool.a]", "[pool.a]\nhealth = { kind = 'script' }")
    assert errors(text) == ["pool.a.health.command: required for kind = 'script'"]


def test_missing_required_and_empty_pool() -> None:
    assert errors("[pool.a]\nscheduler = 'rr'\n") == ["pool.a.servers: required"]
    assert errors("[pool.a]\nservers = []\n") == ["pool.a.servers: a pool needs at least one server"]


def test_vrrp_rules() -> None:
    head = '[[vrrp]]\nname = "VI"\ninterface = "eth0"\nvirtual_router_id = 1\npriority = 100\n'
    vip = 'virtual_ipaddress = ["192.0.2.1/24"]\n'
    assert errors(head + vip + "advert_int = 0.5\n") == [
        "vrrp[0].advert_int: VRRPv2 advertises whole seconds, 1 to 255"
    ]
    assert errors(head + vip + "version = 3\nauth_pass = 'x'\n") == [
        "vrrp[0].auth_pass: VRRPv3 has no authentication (RFC 5798); only for version = 2"
    ]
    assert errors(head + vip + "auth_pass = '123456789'\n") == [
        "vrrp[0].auth_pass: a VRRPv2 simple password is 1 to 8 bytes (keepalived truncates)"
    ]
    assert errors(head + 'virtual_ipaddress = ["2001:db8::1/64"]\nversion = 2\n') == [
        "vrrp[0].version: VRRPv2 is IPv4 only (RFC 3768): IPv6 virtual addresses need version = 3"
    ]
    assert conf.load_text(head + 'virtual_ipaddress = ["2001:db8::1/64"]\n').vrrp[0].version == 3
    assert errors(head.replace("priority = 100", "priority = 256") + vip) == [
        "vrrp[0].priority: must be between 1 and 255"
    ]
    v3 = conf.load_text(head + vip + "version = 3\nadvert_int = 0.1\n")
    assert v3.vrrp[0].advert_int == 0.1
    assert errors(head + vip + head + vip) == [
        "vrrp[1].name: 'VI' is also vrrp[0]",
        "vrrp[1].virtual_router_id: 1 on eth0 is also vrrp[0]",
    ]


def test_every_error_is_reported_at_once() -> None:
    text = "[pool.a]\nservers = [{ address = 'x' }]\nbogus = 1\n[[tcp]]\nlisten = 'nope'\npool = 'zz'\n"
    assert len(errors(text)) == 4


def test_summary() -> None:
    assert conf.load_file(SPEC).summary() == (
        "5 pools (7 servers), 2 http, 1 smtp, 1 tcp listeners, 7 routes, 1 vrrp instances"
    )


def test_required_keys_are_reported_once() -> None:
    assert errors("[[tcp]]\nlisten = '127.0.0.1:1'\n") == ["tcp[0].pool: required"]
