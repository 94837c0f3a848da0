"""[acme] and `tls = [{ acme = true }]`: defaults, and errors that name the key path."""

from __future__ import annotations

import pytest

import conf
from conf.model import LETS_ENCRYPT

BASE = """
[pool.p]
servers = [{ address = "127.0.0.1:1" }]
"""
LISTENER = """
[[http]]
listen = ["127.0.0.1:8443"]
tls = [{ acme = true }]
  [[http.route]]
  host = "www.example.test"
  pool = "p"
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(text)
    return [str(i) for i in info.value.issues]


def test_acme_defaults_to_lets_encrypt_and_reaches_the_listener() -> None:
    config = conf.load_text(BASE + LISTENER)
    assert config.acme is not None and config.acme.directory == LETS_ENCRYPT
    assert config.acme.challenges == ("http-01", "tls-alpn-01")
    assert config.http[0].acme == config.acme and config.http[0].tls == ()


def test_acme_section_and_certificate_files_side_by_side() -> None:
    config = conf.load_text(
        BASE
        + """
[acme]
directory = "https://ca.example.test/dir"
email = "ops@example.test"
state_dir = "/srv/acme"
account_key = "/srv/acme.key"
ca_file = "/srv/ca.pem"
challenges = ["tls-alpn-01"]
retry_min = 5
"""
        + LISTENER.replace(
            "tls = [{ acme = true }]", 'tls = [{ cert = "/x.pem", key = "/x.key" }, { acme = true }]'
        )
    )
    acme = config.http[0].acme
    assert acme is not None and acme.state_dir == "/srv/acme" and acme.challenges == ("tls-alpn-01",)
    assert acme.retry_min == 5.0 and acme.email == "ops@example.test"
    assert [c.cert for c in config.http[0].tls] == ["/x.pem"]


def test_acme_errors_name_the_key() -> None:
    errors = _errors(
        BASE
        + """
[acme]
directory = "ca.example.test"
email = "not an address"
challenges = ["dns-01"]
retry_min = 0
colour = "blue"
"""
        + LISTENER
    )
    assert "acme.directory: expected the CA's directory URL (https://...), got 'ca.example.test'" in errors
    assert "acme.email: expected an e-mail address, got 'not an address'" in errors
    assert "acme.challenges[0]: must be one of http-01, tls-alpn-01, got 'dns-01'" in errors
    assert "acme.retry_min: must be > 0" in errors
    assert "acme.colour: unknown key" in errors
    wildcard_only = LISTENER.replace('host = "www.example.test"', 'host = "*.example.test"')
    assert _errors(BASE + wildcard_only) == [
        "http[0].tls: acme = true, but no route names an exact host to order for"
    ]
    assert _errors(BASE + LISTENER.replace("acme = true", "acme = false")) == [
        "http[0].tls[0].acme: acme = false means nothing here: leave the item out"
    ]


def test_plain_listeners_answer_http01_only_when_acme_is_in_use() -> None:
    plain = """
[[http]]
listen = ["127.0.0.1:8080"]
  [[http.route]]
  pool = "p"
"""
    with_acme = conf.load_text(BASE + plain + LISTENER)
    assert [h.answers_http01 for h in with_acme.http] == [True, False]
    without = conf.load_text(BASE + plain)
    assert [h.answers_http01 for h in without.http] == [False]
