"""`sekisho convert keepalived`: the lb pair of CONTEXT.md and everything else."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import conf
from conf.convert import convert_text, main
from conf.convert.kaparse import ParseError, parse
from conf.model import VrrpScript, VrrpTrack

DATA = Path(__file__).parent.parent / "data" / "convert"


def _run(kind: str, path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main([kind, str(path)], stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def _warnings(err: str, path: Path) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in err.splitlines():
        m = re.match(rf"^{re.escape(str(path))}:(\d+): warning: (.*)$", line)
        if m:
            found.setdefault(int(m[1]), []).append(m[2])
    return found


@pytest.mark.parametrize("name", ["keepalived", "keepalived-full", "keepalived-track"])
def test_matches_expected_toml(name: str) -> None:
    path = DATA / f"{name}.conf"
    rc, out, _ = _run("keepalived", path)
    assert rc == 0
    assert out == (DATA / f"{name}.expected.toml").read_text()
    conf.load_text(out)  # what `sekisho check` runs


def test_the_lb_pair_of_context() -> None:
    path = DATA / "keepalived.conf"
    rc, out, err = _run("keepalived", path)
    assert rc == 0
    config = conf.load_text(out)
    (vrrp,) = config.vrrp
    assert (vrrp.name, vrrp.interface, vrrp.virtual_router_id, vrrp.priority) == ("VI", "bond0", 1, 101)
    assert vrrp.initial_state == "BACKUP"
    assert vrrp.preempt is False  # nopreempt
    assert vrrp.advert_int == 1.0
    assert vrrp.auth_pass == "p@ssw0rd"
    assert vrrp.garp_master_delay == 5.0
    assert [str(v) for v in vrrp.virtual_ipaddress] == ["192.0.2.160/24"]
    assert vrrp.track_interface == ("bond0",)
    assert vrrp.notify.master == ("/etc/keepalived/notify.sh", "master")
    assert vrrp.notify.fault == ("/etc/keepalived/notify.sh", "fault")
    (tcp,) = config.tcp
    assert [str(a) for a in tcp.listen] == ["192.0.2.160:8080"]
    pool = config.pools[tcp.pool]
    assert pool.scheduler == "rr"
    assert [(str(s.address), s.weight) for s in pool.servers] == [
        ("10.10.10.10:8080", 1),
        ("10.10.10.20:8080", 1),
    ]
    assert pool.on_failure == "inhibit"
    assert pool.health.kind == "tcp"
    assert (pool.health.interval, pool.health.timeout, pool.health.port) == (3.0, 2.0, None)
    assert (pool.health.rise, pool.health.fall) == (1, 2)  # keepalived: back after 1, down after 1 + retry(1)
    warnings = _warnings(err, path)
    assert any("lb_kind DR" in w and "full proxy" in w for w in warnings[44])
    assert any("dev eth0" in w for w in warnings[28])
    assert set(warnings) == {6, 9, 10, 11, 12, 28, 44}  # nothing else dropped, each one reported


def test_everything_else() -> None:
    path = DATA / "keepalived-full.conf"
    rc, out, err = _run("keepalived", path)
    assert rc == 0
    config = conf.load_text(out)
    web, half = config.vrrp
    assert web.initial_state == "MASTER" and web.preempt is True
    assert web.auth_pass == "verylong"  # keepalived sends the first 8 bytes
    assert web.garp_master_delay == 3.0  # global_defs vrrp_garp_master_delay
    assert [str(v) for v in web.virtual_ipaddress] == ["198.51.100.10/32", "198.51.100.11/24"]
    assert web.notify.any == ("/usr/local/bin/vrrp-notify",)  # keepalived's generic notify
    assert web.notify.master == ()
    assert web.notify.stop == ("/usr/local/bin/vrrp-stopped", "--now")
    assert [t.script.name for t in web.track_script] == ["chk_haproxy"]
    assert web.track_script[0].script.command == ("/usr/bin/killall", "-0", "haproxy")
    assert web.track_script[0].script.interval == 2.0
    assert web.track_interface == ("eth1", "eth2")
    assert web.track_interface_weight == ()  # VG1 has no sync_group_tracking_weight
    assert [str(p) for p in web.unicast_peer] == ["198.51.100.2"]
    # VI_HALF: advert_int 0.5 made whole for VRRPv2, AH dropped; VI_BROKEN has no interface.
    assert (half.name, half.advert_int, half.auth_pass) == ("VI_HALF", 1.0, None)
    assert {v.name for v in config.vrrp} == {"VI_WEB", "VI_HALF"}

    web_pool = config.pools["WEB"]
    assert web_pool.scheduler == "wlc"
    assert str(web_pool.sorry_server) == "192.0.2.99:80"
    assert web_pool.servers[0].max_connections == 500  # uthreshold
    assert web_pool.health.kind == "http" and web_pool.health.path == "/healthz"
    assert web_pool.health.expect_status == (200, 201, 202, 203, 204)
    assert web_pool.health.host == "www.example.com"
    assert web_pool.health.fall == 3  # retry 2
    listen = {str(a) for t in config.tcp for a in t.listen}
    assert {"198.51.100.10:80", "198.51.100.20:80", "198.51.100.22:80", "198.51.100.10:25"} <= listen
    assert config.pools["vs-198.51.100.10-25"].health.kind == "smtp"
    assert config.pools["vs-198.51.100.10-25"].scheduler == "wlc"  # sed -> closest
    mysql = config.pools["vs-198.51.100.10-3306"]
    assert mysql.health.kind == "script"
    # misc_path named its server: one command with a placeholder checks each server as its own did
    assert mysql.health.command == ("/usr/local/bin/check_mysql", "{host}")
    assert mysql.health.fall == 1  # MISC_CHECK retries 0 times by default
    assert not any("53" in str(a) for t in config.tcp for a in t.listen)  # UDP: not converted

    w = _warnings(err, path)
    expect = {
        11: "include",
        18: "vrrp_sync_group",
        33: "longer than 8 bytes",
        46: "ignores the weight in sync group VG1",
        63: "auth_type AH",
        71: "not converted",
        82: "fwmark 7",
        88: "lvs_method NAT",
        90: "persistence_timeout",
        102: "digest",
        104: "one URL",
        111: "notify_down",
        128: "lb_algo sed",
        129: "lb_kind TUN",
        134: "helo_name",
        142: "lb_kind DR",
        149: "misc_dynamic",
        154: "SSL_GET",
        162: "protocol UDP",
        168: "fwmark",
    }
    for line, text in expect.items():
        assert any(text in m for m in w.get(line, [])), (line, text, w.get(line))
    assert not {13, 48, 51} & set(w)  # vrrp_script, track_script, notify: converted as they are


def test_track_scripts_weights_and_notify() -> None:
    """keepalived in front of HAProxy: vrrp_script, track_script, weighted links, notify."""
    path = DATA / "keepalived-track.conf"
    rc, out, err = _run("keepalived", path)
    assert rc == 0
    config = conf.load_text(out)
    vi, owner = config.vrrp
    haproxy, disk, maintenance = vi.track_script
    assert haproxy.script == VrrpScript(
        "chk_haproxy", ("/usr/bin/killall", "-0", "haproxy"), 2.0, 1.0, rise=2, fall=2, weight=-20
    )
    assert haproxy.weight == -20
    assert disk.script.command == ("/usr/local/bin/check-disk", "--min", "10%")
    assert (disk.script.interval, disk.script.timeout, disk.script.init_fail) == (10.0, 10.0, True)
    assert (disk.script.weight, disk.weight) == (0, -50)  # the instance's override
    assert maintenance.script.name == "chk-maintenance"
    assert (maintenance.weight, maintenance.reverse) == (0, True)
    assert vi.track_interface == ("eth0", "eth1", "eth2", "eth3")
    assert vi.track_interface_weight == (VrrpTrack("eth1", -30), VrrpTrack("eth2", 10, reverse=True))
    assert vi.notify.master == ("/etc/keepalived/notify.sh", "master")
    assert vi.notify.backup == ("/etc/keepalived/notify.sh", "backup")
    assert vi.notify.any == ("/usr/local/bin/keepalived-state", "--log", "/var/log/vrrp.log")
    # the owner: keepalived drops weighted interfaces and scripts, keeps the unweighted
    assert owner.track_interface == ()
    assert [t.script.name for t in owner.track_script] == ["chk_disk"]
    w = _warnings(err, path)
    expect = {
        16: "sekisho runs checks as its own user",
        25: "named 'chk-maintenance'",
        30: "no script; keepalived removes it",
        34: "vrrp_track_process",
        56: "expected 'weight N [reverse]'",
        62: "does not exist (keepalived ignores it)",
        63: "was not converted",
        65: "track_process",
        82: "address owner",
        85: "address owner",
    }
    for line, text in expect.items():
        assert any(text in m for m in w.get(line, [])), (line, text, w.get(line))
    assert set(w) == {4, 5, 6, *expect}


def test_sync_group_tracking_weight_keeps_weights_and_order_does_not_matter() -> None:
    text = (
        "vrrp_sync_group G {\n group {\n  A\n }\n sync_group_tracking_weight\n}\n"
        "vrrp_instance A {\n track_script {\n  chk weight 5\n }\n"
        " track_interface {\n  eth1 weight -7\n }\n"
        " interface eth0\n virtual_router_id 9\n priority 90\n"
        " virtual_ipaddress {\n  10.0.0.1/24\n }\n}\n"
        'vrrp_script chk {\n script "/bin/true"\n}\n'  # defined after its use, as keepalived allows
    )
    config, warnings = _convert(text)
    (a,) = config.vrrp
    assert [(t.script.name, t.weight) for t in a.track_script] == [("chk", 5)]
    assert a.track_interface_weight == (VrrpTrack("eth1", -7),)
    assert [m for _, m in warnings if "weight" in m] == []


def test_weights_of_the_owner_found_after_the_track_blocks() -> None:
    config, warnings = _convert(
        "vrrp_instance A {\n track_interface {\n  eth0 weight -5\n  eth1 weight -5\n }\n"
        " interface eth0\n virtual_router_id 9\n priority 255\n"
        " virtual_ipaddress {\n  10.0.0.1/24\n }\n}\n"
    )
    assert config.vrrp[0].track_interface == ("eth0",)
    messages = [m for _, m in warnings]
    assert any("own interface" in m for m in messages)
    assert any("eth1 weight -5" in m and "address owner" in m for m in messages)


def _convert(text: str) -> tuple[conf.Config, list[tuple[int, str]]]:
    toml, warnings = convert_text("keepalived", text, "k.conf")
    return conf.load_text(toml), [(n.line, n.message) for n in warnings.items]


def test_semicolons_and_brace_on_next_line() -> None:
    config, _ = _convert(
        "vrrp_instance VI { state BACKUP; interface eth0; virtual_router_id 7\n"
        "  virtual_ipaddress\n  {\n    10.0.0.1/24\n  }\n}\n"
    )
    assert config.vrrp[0].virtual_router_id == 7
    assert str(config.vrrp[0].virtual_ipaddress[0]) == "10.0.0.1/24"


def test_mixed_inhibit_and_no_checker() -> None:
    config, warnings = _convert(
        "virtual_server 10.0.0.1 80 {\n lb_algo wrr\n"
        " real_server 10.0.0.2 80 { weight 2\n inhibit_on_failure\n }\n"
        " real_server 10.0.0.3 80 { weight 1 }\n}\n"
    )
    pool = config.pools["vs-10.0.0.1-80"]
    assert pool.on_failure == "inhibit"
    assert pool.health.kind == "none"
    assert any("some real servers only" in m for _, m in warnings)


def test_remove_without_inhibit_and_connect_port() -> None:
    config, _ = _convert(
        "virtual_server 10.0.0.1 80 {\n delay_loop 6\n"
        " real_server 10.0.0.2 80 { TCP_CHECK { connect_port 8081\n connect_timeout 1 } }\n}\n"
    )
    pool = config.pools["vs-10.0.0.1-80"]
    assert pool.on_failure == "remove"
    assert pool.scheduler == "wlc"  # ipvsadm's default
    assert (pool.health.port, pool.health.interval, pool.health.timeout) == (8081, 6.0, 1.0)


def test_ipv6_virtual_server_and_ipv2_advert_rounding() -> None:
    config, warnings = _convert(
        "vrrp_instance A {\n interface eth0\n virtual_router_id 3\n advert_int 1.5\n"
        " virtual_ipaddress {\n 10.0.0.9\n }\n}\n"
        "virtual_server 2001:db8::1 443 {\n real_server 2001:db8::2 443 { weight 1 }\n}\n"
    )
    assert config.vrrp[0].advert_int == 2.0
    assert any(line == 1 and "whole seconds" in m for line, m in warnings)
    assert [str(a) for a in config.tcp[0].listen] == ["[2001:db8::1]:443"]


def test_parse_errors_carry_the_line() -> None:
    with pytest.raises(ParseError) as info:
        parse("vrrp_instance VI {\n  state BACKUP\n")
    assert info.value.line == 1
    with pytest.raises(ParseError) as info:
        parse("a\n}\n")
    assert info.value.line == 2


def test_cli_reports_a_parse_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("global_defs {\n router_id x\n\n")
    rc, out, err = _run("keepalived", bad)
    assert rc == 1 and out == ""
    assert f"{bad}:1: error:" in err


def test_cli_missing_file(tmp_path: Path) -> None:
    rc, _, err = _run("keepalived", tmp_path / "nope.conf")
    assert rc == 1 and "cannot read" in err


def test_cli_output_file(tmp_path: Path) -> None:
    target = tmp_path / "sekisho.toml"
    out, err = io.StringIO(), io.StringIO()
    assert main(["keepalived", str(DATA / "keepalived.conf"), "-o", str(target)], out, err) == 0
    assert out.getvalue() == ""
    assert target.read_text() == (DATA / "keepalived.expected.toml").read_text()


MISC = """
virtual_server 192.0.2.160 3306 {
    delay_loop 5
    lb_algo rr
    protocol TCP
    real_server 10.0.0.1 3306 {
        MISC_CHECK {
            misc_path "/usr/local/bin/check_db --host 10.0.0.1 --port 3306"
            misc_timeout 4
        }
    }
    real_server 10.0.0.2 3306 {
        MISC_CHECK {
            misc_path "/usr/local/bin/check_db --host 10.0.0.2 --port 3306"
            misc_timeout 4
        }
    }
    real_server 10.0.0.3 3306 {
        MISC_CHECK {
            misc_path "/opt/legacy/ping_db.sh replica"
            misc_timeout 4
        }
    }
}
"""


def test_misc_check_per_real_server() -> None:
    """keepalived runs each real server's own misc_path (issue 20): the converted pool does too."""
    toml, warnings = convert_text("keepalived", MISC, "keepalived.conf")
    pool = conf.load_text(toml).pools["vs-192.0.2.160-3306"]
    assert pool.health.kind == "script" and pool.health.timeout == 4.0
    assert pool.health.command == ("/usr/local/bin/check_db", "--host", "{host}", "--port", "{port}")
    own = {str(s.address): s.health_command for s in pool.servers}
    assert own == {
        "10.0.0.1:3306": (),
        "10.0.0.2:3306": (),
        "10.0.0.3:3306": ("/opt/legacy/ping_db.sh", "replica"),
    }
    assert not [n for n in warnings.items if "check" in n.message.lower()]

    from lb.health import script_command

    argv = [
        script_command(pool.health, s, pool.name, s.address.host, s.address.port).argv for s in pool.servers
    ]
    assert argv == [
        ("/usr/local/bin/check_db", "--host", "10.0.0.1", "--port", "3306"),
        ("/usr/local/bin/check_db", "--host", "10.0.0.2", "--port", "3306"),
        ("/opt/legacy/ping_db.sh", "replica"),
    ]


@pytest.mark.parametrize("algo", ["lblc", "lblcr"])
def test_lblc_says_what_it_keys_on(algo: str) -> None:
    text = MISC.replace("lb_algo rr", f"lb_algo {algo}")
    toml, warnings = convert_text("keepalived", text, "keepalived.conf")
    assert conf.load_text(toml).pools["vs-192.0.2.160-3306"].scheduler == "lblc"
    (note,) = [n for n in warnings.items if "destination address" in n.message]
    assert note.line == 4 and "client's address" in note.message


V6 = """
vrrp_instance VI_V6 {
    state BACKUP
    interface eth1
    virtual_router_id 52
    priority 100
    advert_int 0.5
    virtual_ipaddress {
        2001:db8::10/64
    }
}
"""


def test_an_ipv6_instance_becomes_vrrpv3() -> None:
    toml, warnings = convert_text("keepalived", V6, "keepalived.conf")
    assert not warnings.errors
    (v6,) = conf.load_text(toml).vrrp
    assert (v6.version, v6.advert_int, [str(v) for v in v6.virtual_ipaddress]) == (
        3,
        0.5,
        ["2001:db8::10/64"],
    )


def test_mixed_families_in_one_instance_are_an_error(tmp_path: Path) -> None:
    """One sekisho instance carries one family: convert stops and says how to split it
    rather than write an instance that carries less than the original."""
    mixed = V6.replace("2001:db8::10/64", "192.0.2.10/24\n        2001:db8::10/64")
    _, warnings = convert_text("keepalived", mixed, "keepalived.conf")
    (error,) = warnings.errors
    assert error.line == 2 and "2001:db8::10/64" in error.message and "of its own" in error.message
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "keepalived.conf"
    path.write_text(mixed)
    assert main(["keepalived", str(path)], stdout=out, stderr=err) == 1
    assert out.getvalue() == "" and "nothing written" in err.getvalue()
