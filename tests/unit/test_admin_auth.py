"""Who may use the admin listener: `proxy.process.admin.authorize`, the token file, the config
keys (`global.admin_token_file`, `global.metrics_allow`) and `sekisho check`'s warning."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import conf
from proxy.process.admin import (
    AdminPolicy,
    AdminResponse,
    TokenError,
    admin_policy,
    authorize,
    exposure_warnings,
    load_token,
    own_origins,
    parse_origin,
)
from proxy.process.cli import main

TOKEN = b"0123456789abcdef0123456789abcdef"
ON = AdminPolicy(TOKEN)
OWN = own_origins(("127.0.0.1", 9100), None)
PEER = "127.0.0.1"


def decide(
    method: str, headers: list[tuple[bytes, bytes]], policy: AdminPolicy = ON, peer: str = PEER
) -> AdminResponse | None:
    return authorize(method, headers, peer, policy, OWN)


def auth(token: bytes = TOKEN) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + token)]


# -------------------------------------------------------------------- authorize


@pytest.mark.parametrize("policy", [ON, AdminPolicy()])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reading_needs_nothing(method: str, policy: AdminPolicy) -> None:
    assert decide(method, [], policy) is None
    assert decide(method, [(b"origin", b"http://evil.example")], policy) is None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_anything_else_needs_the_token(method: str) -> None:
    refusal = decide(method, [])
    assert refusal is not None
    assert refusal.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="sekisho admin"') in refusal.headers
    assert decide(method, auth()) is None


def test_a_wrong_token_is_401_invalid_token() -> None:
    for wrong in (TOKEN[:-1] + b"0", TOKEN[:-1], TOKEN + b"0", b"x"):
        refusal = decide("POST", auth(wrong))
        assert refusal is not None
        assert refusal.status == 401
        assert ("WWW-Authenticate", 'Bearer realm="sekisho admin", error="invalid_token"') in refusal.headers


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", b"Basic " + TOKEN)],
        [(b"authorization", b"Bearer")],
        [(b"authorization", b"Bearer ")],
        [(b"authorization", TOKEN)],
        [(b"authorization", b"Bearer " + TOKEN), (b"authorization", b"Bearer " + TOKEN)],
        [(b"x-token", TOKEN)],
    ],
)
def test_only_one_bearer_credential_counts(headers: list[tuple[bytes, bytes]]) -> None:
    refusal = decide("POST", headers)
    assert refusal is not None
    assert refusal.status == 401


def test_the_scheme_is_case_insensitive_and_spaces_around_do_not_count() -> None:
    assert decide("POST", [(b"authorization", b"  bearer   " + TOKEN + b" ")]) is None


def test_no_token_configured_turns_state_changes_off_and_says_how_to_turn_them_on() -> None:
    refusal = decide("POST", auth(), AdminPolicy())
    assert refusal is not None
    assert refusal.status == 403
    assert b"global.admin_token_file" in refusal.body


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"http://127.0.0.1:9101",
        b"https://127.0.0.1:9100",
        b"http://127.0.0.2:9100",
        b"null",
        b"http://127.0.0.1:9100/path",
        b"\xff",
    ],
)
def test_an_origin_elsewhere_is_refused_even_with_the_token(origin: bytes) -> None:
    refusal = decide("POST", [*auth(), (b"origin", origin)])
    assert refusal is not None
    assert refusal.status == 403
    assert b"cross-origin" in refusal.body


@pytest.mark.parametrize(
    "origin", [b"http://127.0.0.1:9100", b"HTTP://LOCALHOST:9100", b"http://localhost:9100"]
)
def test_this_listeners_own_origin_is_fine(origin: bytes) -> None:
    assert decide("POST", [*auth(), (b"origin", origin)]) is None


def test_two_origins_are_refused() -> None:
    own = (b"origin", b"http://127.0.0.1:9100")
    refusal = decide("POST", [*auth(), own, own])
    assert refusal is not None
    assert refusal.status == 403


def test_a_bad_origin_without_the_token_learns_nothing_about_it() -> None:
    refusal = decide("POST", [(b"origin", b"http://evil.example")])
    assert refusal is not None
    assert refusal.status == 403
    assert b"token" not in refusal.body


def test_clients_outside_the_allow_list_are_refused_and_closed() -> None:
    policy = AdminPolicy(TOKEN, (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")))
    for method, headers in (("GET", []), ("POST", auth())):
        refusal = decide(method, headers, policy, peer="192.0.2.1")
        assert refusal is not None
        assert refusal.status == 403
        assert ("Connection", "close") in refusal.headers
    assert decide("GET", [], policy, peer="10.1.2.3") is None
    assert decide("GET", [], policy, peer="::ffff:10.1.2.3") is None  # a dual-stack socket's view
    assert decide("GET", [], policy, peer="::1") is None
    refusal = decide("GET", [], policy, peer="")
    assert refusal is not None
    assert refusal.status == 403


def test_the_token_does_not_show_in_a_repr() -> None:
    assert TOKEN.decode() not in repr(ON)


# ---------------------------------------------------------------------- origins


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"http://127.0.0.1:9100", ("http", "127.0.0.1", 9100)),
        (b"http://Admin.Example", ("http", "admin.example", 80)),
        (b"https://admin.example", ("https", "admin.example", 443)),
        (b"http://[::1]:9100", ("http", "::1", 9100)),
        (b"http://[0:0:0:0:0:0:0:1]:9100", ("http", "::1", 9100)),
        (b"null", None),
        (b"ftp://x", None),
        (b"http://x:99999", None),
        (b"http://x/", None),
    ],
)
def test_parse_origin(value: bytes, parsed: tuple[str, str, int] | None) -> None:
    assert parse_origin(value) == parsed


def test_own_origins() -> None:
    assert own_origins(("::ffff:127.0.0.1", 9100, 0, 0), None) == {
        ("http", "127.0.0.1", 9100),
        ("http", "localhost", 9100),
    }
    assert own_origins(("192.0.2.5", 9100), conf.Address("admin.example", 9100)) == {
        ("http", "192.0.2.5", 9100),
        ("http", "admin.example", 9100),
    }
    assert own_origins(None, None) == frozenset()


# -------------------------------------------------------------------- token file


def test_load_token_strips_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_bytes(b"\n  " + TOKEN + b"\r\n")
    path.chmod(0o600)
    assert load_token(str(path)) == (TOKEN, [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"two words", "one token"),
        (b"caf\xc3\xa9-0123456789abcdef", "one token"),
        (b"x" * 5000, "one token"),
    ],
)
def test_load_token_refuses(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "admin.token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TokenError) as info:
        load_token(str(path))
    assert str(info.value).startswith("global.admin_token_file: ")
    assert message in str(info.value)


def test_load_token_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="not a regular file"):
        load_token(str(tmp_path))


def test_load_token_warns_when_others_may_read_it_or_it_is_short(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_bytes(TOKEN)
    path.chmod(0o640)
    token, warnings = load_token(str(path))
    assert token == TOKEN
    assert warnings == [
        f"global.admin_token_file: {path} is readable by group/other (mode 0640); chmod 600 it"
    ]
    path.write_bytes(b"short")
    path.chmod(0o600)
    _, warnings = load_token(str(path))
    assert len(warnings) == 1
    assert "the token is 5 characters" in warnings[0]


def test_admin_policy_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_bytes(TOKEN)
    path.chmod(0o600)
    config = conf.load_text(
        f'[global]\nmetrics = "127.0.0.1:9100"\nadmin_token_file = "{path}"\nmetrics_allow = ["10.0.0.0/8"]\n'
    )
    policy, warnings = admin_policy(config.global_)
    assert policy == AdminPolicy(TOKEN, (ipaddress.ip_network("10.0.0.0/8"),))
    assert warnings == []
    # No admin listener: nothing to guard, the file is not read.
    policy, _ = admin_policy(conf.load_text(f'[global]\nadmin_token_file = "{tmp_path / "none"}"\n').global_)
    assert policy.token is None


# ------------------------------------------------------------------ config keys


def test_config_keys_and_defaults() -> None:
    default = conf.load_text("[global]\n").global_
    assert default.admin_token_file is None
    assert {str(n) for n in default.metrics_allow} == {"0.0.0.0/0", "::/0"}
    settings = conf.load_text(
        '[global]\nadmin_token_file = "/etc/sekisho/admin.token"\n'
        'metrics_allow = ["127.0.0.1/32", "::1/128"]\n'
    ).global_
    assert settings.admin_token_file == "/etc/sekisho/admin.token"
    assert settings.metrics_allow == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("line", "issue"),
    [
        ("admin_token_file = 5", "global.admin_token_file: expected a string, got integer"),
        ('admin_token_file = ""', "global.admin_token_file: expected a file path"),
        ('metrics_allow = ["10.0.0.1/8"]', "global.metrics_allow[0]: bad CIDR '10.0.0.1/8'"),
        ('metrics_allow = "10.0.0.0/8"', "global.metrics_allow: expected an array, got string"),
        ("metrics_allow = []", "global.metrics_allow: an empty list shuts everyone out"),
        ('admin_token = "secret"', "global.admin_token: unknown key"),
    ],
)
def test_config_errors_name_the_key(line: str, issue: str) -> None:
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(f"[global]\n{line}\n")
    assert any(str(i).startswith(issue) for i in info.value.issues), info.value.issues


# ------------------------------------------------------ the exposure warning


@pytest.mark.parametrize(
    ("lines", "warns"),
    [
        ('metrics = "0.0.0.0:9100"', True),
        ('metrics = "[::]:9100"', True),
        ('metrics = "192.0.2.5:9100"', True),
        ('metrics = "admin.example:9100"', True),
        ('metrics = "0.0.0.0:9100"\nmetrics_allow = ["0.0.0.0/0"]', True),
        ('metrics = "0.0.0.0:9100"\nmetrics_allow = ["10.0.0.0/8"]', False),
        ('metrics = "127.0.0.1:9100"', False),
        ('metrics = "127.0.0.53:9100"', False),
        ('metrics = "[::1]:9100"', False),
        ('metrics = "localhost:9100"', False),
        ("", False),
    ],
)
def test_exposure_warning(lines: str, warns: bool) -> None:
    warnings = exposure_warnings(conf.load_text(f"[global]\n{lines}\n").global_)
    assert bool(warnings) is warns
    if warns:
        assert warnings[0].startswith("global.metrics: ")
        assert "global.metrics_allow" in warnings[0]


def test_sekisho_check_warns_for_an_unguarded_admin_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sekisho.toml"
    path.write_text('[global]\nmetrics = "0.0.0.0:9100"\n')
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok:" in out
    assert "sekisho: warning: global.metrics: 0.0.0.0:9100 is not a loopback address" in err
    assert main(["check", "-q", "-c", str(path)]) == 0  # quiet hides the ok, not the warning
    out, err = capsys.readouterr()
    assert out == ""
    assert "warning: global.metrics" in err

    path.write_text('[global]\nmetrics = "0.0.0.0:9100"\nmetrics_allow = ["10.0.0.0/8"]\n')
    assert main(["check", "-c", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
    path.write_text('[global]\nmetrics = "127.0.0.1:9100"\n')
    assert main(["check", "-c", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
