"""Mail paths and recipient routing (proxy/smtp/address.py): the domainless <Postmaster>."""

from __future__ import annotations

import pytest

import conf
from proxy.smtp.address import AddressError, Mailbox, Path, RouteTable, parse_path, relay_concern

ROUTES = (
    conf.SmtpRoute("*.example.org", "gamma"),
    conf.SmtpRoute("example.com", "alpha"),
    conf.SmtpRoute("example.net", "beta"),
)


@pytest.mark.parametrize("text", ["<postmaster>", "<Postmaster>", "<POSTMASTER>", "<pOsTmAsTeR>"])
def test_postmaster_without_a_domain_is_a_recipient_path(text: str) -> None:
    path = parse_path(text, allow_null=False, allow_postmaster=True)
    assert path == Path(Mailbox(text[1:-1], ""))
    assert path.mailbox is not None and path.mailbox.is_bare_postmaster
    assert path.forward() == text  # forwarded as written: the backend qualifies it itself
    assert relay_concern(path.mailbox) is None


@pytest.mark.parametrize(
    "text", ['<"postmaster">', "<postmaster >", "<@a.test:postmaster>", "<postmaster@>", "<abuse>", "<>"]
)
def test_other_domainless_paths_stay_errors(text: str) -> None:
    with pytest.raises(AddressError):
        parse_path(text, allow_null=False, allow_postmaster=True)


def test_postmaster_without_a_domain_only_when_asked() -> None:
    # Senders (MAIL FROM) have no such form.
    with pytest.raises(AddressError):
        parse_path("<postmaster>", allow_null=True)


def test_postmaster_with_a_domain_is_an_ordinary_mailbox() -> None:
    path = parse_path("<postmaster@example.net>", allow_null=False, allow_postmaster=True)
    assert path.mailbox is not None and not path.mailbox.is_bare_postmaster
    assert RouteTable(ROUTES).route_for(path.mailbox) is ROUTES[2]


def test_postmaster_route_is_the_first_one_by_default() -> None:
    table = RouteTable(ROUTES)
    assert table.postmaster is ROUTES[0]  # the first route, wildcard or not
    assert table.route_for(Mailbox("Postmaster", "")) is ROUTES[0]
    assert table.lookup("") is None  # an empty domain never matches a route by itself
    assert RouteTable(()).postmaster is None


def test_postmaster_route_is_the_marked_one() -> None:
    marked = conf.SmtpRoute("example.net", "beta", postmaster=True)
    table = RouteTable((ROUTES[0], ROUTES[1], marked))
    assert table.postmaster is marked
    assert table.route_for(Mailbox("postmaster", "")) is marked
    assert table.route_for(Mailbox("u", "x.example.org")) is ROUTES[0]


SMTP_CONFIG = """
[pool.mail-a]
servers = [{{ address = "127.0.0.1:2525" }}]
[pool.mail-b]
servers = [{{ address = "127.0.0.1:2526" }}]

[[smtp]]
listen = ["127.0.0.1:2500"]
hostname = "mx.example.com"
  [[smtp.route]]
  domain = "example.com"
  pool = "mail-a"
  [[smtp.route]]
  domain = "example.net"
  pool = "mail-b"
  {second}
  [[smtp.route]]
  domain = "example.org"
  pool = "mail-b"
  {third}
"""


def test_config_marks_the_postmaster_route() -> None:
    config = conf.load_text(SMTP_CONFIG.format(second="postmaster = true", third=""))
    routes = config.smtp[0].routes
    assert [r.postmaster for r in routes] == [False, True, False]
    assert RouteTable(routes).postmaster is routes[1]


def test_config_allows_one_postmaster_route() -> None:
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(SMTP_CONFIG.format(second="postmaster = true", third="postmaster = true"))
    assert [str(i) for i in info.value.issues] == [
        "smtp[0].route[2].postmaster: route[1] already takes <Postmaster>"
    ]
