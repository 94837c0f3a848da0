"""[vrrp_script.NAME], track_script, weighted track_interface and notify.any in the config."""

from __future__ import annotations

import pytest

import conf
from conf.model import VrrpScript, VrrpTrack, VrrpTrackScript

HEAD = (
    '[[vrrp]]\nname = "VI"\ninterface = "eth0"\nvirtual_router_id = 1\n'
    'virtual_ipaddress = ["192.0.2.160/24"]\n'
)
OWN = "the instance's own interface is always tracked (down: FAULT); it takes no weight"

SCRIPTS = """
[vrrp_script.chk_haproxy]
command = ["/usr/bin/pgrep", "haproxy"]
interval = 2.0
timeout = 1.0
rise = 2
fall = 2
weight = -20

[vrrp_script.chk_nginx]
command = "/usr/bin/killall -0 nginx"
"""


def errors(text: str) -> list[str]:
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(text)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_scripts_referenced_by_name_with_keepalived_defaults() -> None:
    config = conf.load_text(
        SCRIPTS
        + HEAD
        + "priority = 150\n"
        + 'track_script = ["chk_haproxy", { name = "chk_nginx", weight = 10, reverse = true }]\n'
    )
    (vrrp,) = config.vrrp
    haproxy = VrrpScript("chk_haproxy", ("/usr/bin/pgrep", "haproxy"), 2.0, 1.0, 2, 2, -20)
    nginx = VrrpScript("chk_nginx", ("/usr/bin/killall", "-0", "nginx"), interval=1.0, timeout=1.0)
    assert vrrp.track_script == (
        VrrpTrackScript(haproxy, -20),  # the script's own weight
        VrrpTrackScript(nginx, 10, reverse=True),  # overridden here
    )


def test_timeout_defaults_to_the_interval() -> None:
    config = conf.load_text(
        '[vrrp_script.c]\ncommand = "/bin/true"\ninterval = 5\n' + HEAD + 'track_script = ["c"]\n'
    )
    assert config.vrrp[0].track_script[0].script.timeout == 5.0


def test_weighted_track_interface_keeps_the_plain_list() -> None:
    config = conf.load_text(HEAD + 'track_interface = ["eth0", "bond0", { name = "eth2", weight = -30 }]\n')
    (vrrp,) = config.vrrp
    assert vrrp.track_interface == ("eth0", "bond0", "eth2")  # what `check --live` looks up
    assert vrrp.track_interface_weight == (VrrpTrack("eth2", -30),)


def test_notify_any_and_commands_as_arrays() -> None:
    config = conf.load_text(
        HEAD + 'notify = { any = "/usr/local/bin/vrrp-notify", master = ["/bin/echo", "a b"], timeout = 3 }\n'
    )
    notify = config.vrrp[0].notify
    assert notify.any == ("/usr/local/bin/vrrp-notify",)
    assert notify.master == ("/bin/echo", "a b")
    assert notify.timeout == 3.0


def test_errors_name_the_key_path() -> None:
    text = (
        """
[vrrp_script.chk]
interval = 0
weight = 300
rise = 0
user = "nobody"

[vrrp_script."bad name"]
command = []
"""
        + HEAD
        + """
track_interface = [
  { name = "eth0", weight = -10 }, { name = "eth1", weight = -10, bogus = 1 }, 7, { weight = 1 },
]
track_script = ["chk", "missing", "chk", { name = "chk", reverse = "yes" }]
notify = { any = "'unterminated" }
"""
    )
    assert errors(text) == [
        "vrrp_script.chk.interval: must be > 0",
        "vrrp_script.chk.command: required",
        "vrrp_script.chk.rise: must be between 1 and 100",
        "vrrp_script.chk.weight: must be between -253 and 253",
        "vrrp_script.chk.user: unknown key",
        "vrrp_script.bad name: a script name is letters, digits, '_', '.', '-'",
        "vrrp_script.bad name.command: empty command",
        'vrrp[0].notify.any: cannot split "\'unterminated": No closing quotation',
        'vrrp[0].track_interface[2]: expected a name or a table { name = "...", weight = N }',
        "vrrp[0].track_interface[3].name: required",
        f"vrrp[0].track_interface[0]: {OWN}",
        "vrrp[0].track_interface[1].bogus: unknown key",
        "vrrp[0].track_script[2]: 'chk' is listed twice",
        "vrrp[0].track_script[3]: 'chk' is listed twice",
        "vrrp[0].track_script[1]: no vrrp_script named 'missing'",
    ]


def test_the_address_owner_takes_no_weights() -> None:
    text = (
        SCRIPTS
        + HEAD
        + 'priority = 255\ntrack_interface = [{ name = "eth1", weight = -10 }]\n'
        + 'track_script = ["chk_haproxy", { name = "chk_nginx", weight = 5 }]\n'
    )
    owner = (
        "the address owner (priority 255) keeps its priority (keepalived ignores the weight); use weight = 0"
    )
    assert errors(text) == [
        f"vrrp[0].track_interface[0].weight: {owner}",
        f"vrrp[0].track_script[0]: {owner} (vrrp_script.chk_haproxy has -20)",
        f"vrrp[0].track_script[1].weight: {owner}",
    ]
    ok = conf.load_text(
        SCRIPTS + HEAD + 'priority = 255\ntrack_script = [{ name = "chk_haproxy", weight = 0 }]\n'
    )
    assert ok.vrrp[0].track_script[0].weight == 0
