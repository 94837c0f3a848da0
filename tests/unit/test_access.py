"""`allow` lists with deny entries (issue 20): conf.access (the rule, its checks) and
proxy.access.ClientFilter (the one matcher of [[http]], [[smtp]] and [[tcp]])."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
from conf.access import AccessEntry, Deny, decide, parse_entry, problems, without_idle_entries
from proxy.access import ClientFilter

LISTENER = """
[pool.a]
servers = [{{ address = "127.0.0.1:8001" }}]
[[{kind}]]
listen = ["127.0.0.1:8080"]
{extra}allow = {allow}
"""
ROUTES = {
    "http": '[[http.route]]\npool = "a"\n',
    "smtp": '[[smtp.route]]\ndomain = "example.com"\npool = "a"\n',
    "tcp": "",
}


def _load(kind: str, allow: str) -> conf.Config:
    extra = 'pool = "a"\n' if kind == "tcp" else ""
    return conf.load_text(LISTENER.format(kind=kind, extra=extra, allow=allow) + ROUTES[kind])


def _errors(kind: str, allow: str) -> list[str]:
    with pytest.raises(conf.ConfigError) as info:
        _load(kind, allow)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize("kind", ["http", "smtp", "tcp"])
def test_every_listener_kind_reads_deny_entries_in_order(kind: str) -> None:
    config = _load(kind, '["!10.1.2.3", "10.0.0.0/8", "::1"]')
    listener = {"http": config.http, "smtp": config.smtp, "tcp": config.tcp}[kind][0]
    assert [str(e) for e in listener.allow] == ["!10.1.2.3/32", "10.0.0.0/8", "::1/128"]
    f = ClientFilter(listener.allow)
    assert not f.admits("10.1.2.3")  # the exclusion, before the network that holds it
    assert not f.admits("::ffff:10.1.2.3")  # the same client over a dual-stack socket
    assert f.admits("10.1.2.4") and f.admits("::1") and f.admits("::1%lo")
    assert not f.admits("192.0.2.1")  # no entry: refused
    assert not f.admits("not an address")


def test_a_deny_after_an_allow_that_holds_it_is_an_error() -> None:
    # nginx would accept this and never apply the deny; here it is a config error, not a widening
    (message,) = _errors("http", '["0.0.0.0/0", "::/0", "!10.1.2.3"]')
    assert message.startswith("http[0].allow[2]: !10.1.2.3/32 never applies")
    assert "[0] 0.0.0.0/0 admits them" in message
    # covered by the union of earlier entries, not by one of them
    (message,) = _errors("tcp", '["10.0.0.0/9", "10.128.0.0/9", "!10.200.0.1"]')
    assert message.startswith("tcp[0].allow[2]: !10.200.0.1/32 never applies")


def test_a_deny_with_nothing_to_refuse_is_an_error() -> None:
    # an nginx user writing this expects everyone else to be admitted; nobody would be
    (message,) = _errors("smtp", '["!10.1.2.3"]')
    assert message.startswith("smtp[0].allow[0]: !10.1.2.3/32 refuses nothing")
    assert 'add "0.0.0.0/0" after it' in message


def test_an_allow_under_an_earlier_deny_is_an_error() -> None:
    (message,) = _errors("http", '["!10.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0"]')
    assert message.startswith("http[0].allow[1]: 10.1.0.0/16 never applies")


def test_redundant_allows_stay_valid() -> None:
    _load("http", '["10.0.0.0/8", "10.1.0.0/16"]')  # harmless, as before deny entries existed


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("!", "does not appear to be an IPv4 or IPv6 network"),
        ("!10.0.0.1/8", "has host bits set"),
        ("::ffff:10.0.0.0/104", "write 10.0.0.0/8"),
        ("!::ffff:10.1.2.3", "write !10.1.2.3/32"),
    ],
)
def test_bad_entries_name_their_path(entry: str, reason: str) -> None:
    (message,) = _errors("http", f'["{entry}", "0.0.0.0/0"]')
    assert message.startswith(f"http[0].allow[0]: bad CIDR '{entry}'") and reason in message


def test_metrics_allow_is_the_same_kind_of_list() -> None:
    from proxy.process.admin import AdminPolicy, exposure_warnings

    text = '[global]\nmetrics = "0.0.0.0:9100"\nmetrics_allow = ["!10.0.0.1", "0.0.0.0/0", "::/0"]\n'
    settings = conf.load_text(text).global_
    policy = AdminPolicy(allow=settings.metrics_allow)
    assert not policy.allows("10.0.0.1") and policy.allows("10.0.0.2") and policy.allows("::1")
    assert exposure_warnings(settings)  # all but one address is still everyone
    with pytest.raises(conf.ConfigError, match=r"global.metrics_allow\[1\]: !10.0.0.1/32 never applies"):
        conf.load_text('[global]\nmetrics_allow = ["0.0.0.0/0", "!10.0.0.1"]\n')


def test_everyone_only_when_both_families_come_before_any_deny() -> None:
    assert ClientFilter(conf.HttpListener(()).allow).everyone
    assert not ClientFilter((parse_entry("!10.0.0.1"), *conf.HttpListener(()).allow)).everyone
    assert not ClientFilter((parse_entry("0.0.0.0/0"),)).everyone


# ------------------------------------------------------------------ the rule as a model


def _reference(entries: list[tuple[bool, str]], addr: str) -> bool:
    """nginx's rule spelled out: walk the entries, the first whose network holds the
    address decides; nothing matched: refused (the implied `deny all`)."""
    a = ipaddress.ip_address(addr)
    for admits, cidr in entries:
        net = ipaddress.ip_network(cidr)
        if net.version == a.version and a in net:
            return admits
    return False


_V4_NETS = st.builds(
    lambda n, p: str(ipaddress.ip_network((n & (0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF, p))),
    st.sampled_from([0x0A000000, 0x0A010000, 0x0A010200, 0x0A010203, 0xC0000200, 0]),
    st.sampled_from([0, 8, 16, 24, 30, 32]),
)
_V6_NETS = st.sampled_from(["::/0", "2001:db8::/32", "2001:db8::1/128", "::1/128"])
_ENTRIES = st.lists(st.tuples(st.booleans(), st.one_of(_V4_NETS, _V6_NETS)), max_size=8)
_ADDRS = st.one_of(
    st.sampled_from(["10.1.2.3", "10.1.2.4", "10.1.3.1", "10.2.0.1", "192.0.2.1", "8.8.8.8"]),
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.sampled_from(["2001:db8::1", "2001:db8::2", "::1", "fe80::1", "::ffff:10.1.2.3"]),
)


def _entries(raw: list[tuple[bool, str]]) -> list[AccessEntry]:
    return [parse_entry(c if admits else f"!{c}") for admits, c in raw]


def _plain(addr: str) -> str:
    a = ipaddress.ip_address(addr)
    mapped = a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) else None
    return str(mapped or a)


@settings(max_examples=250, deadline=None)
@given(_ENTRIES, st.lists(_ADDRS, min_size=1, max_size=6))
def test_the_matcher_is_first_match_wins(raw: list[tuple[bool, str]], addrs: list[str]) -> None:
    entries = _entries(raw)
    f = ClientFilter(entries)
    for addr in addrs + addrs:  # the second time from the cache
        assert f.admits(addr) == _reference(raw, _plain(addr)), (raw, addr)


@settings(max_examples=200, deadline=None)
@given(_ENTRIES, st.lists(_ADDRS, min_size=1, max_size=6))
def test_leaving_out_the_entries_the_check_names_changes_no_decision(
    raw: list[tuple[bool, str]], addrs: list[str]
) -> None:
    entries = _entries(raw)
    kept = without_idle_entries(entries)
    assert not problems(kept)
    for addr in addrs:
        a = ipaddress.ip_address(_plain(addr))
        assert decide(kept, a) == decide(entries, a), (raw, [str(e) for e in kept], addr)


def test_deny_prints_as_written() -> None:
    assert str(Deny(ipaddress.IPv4Network("10.1.2.3/32"))) == "!10.1.2.3/32"
