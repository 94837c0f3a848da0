"""The anycast decision core (vrrp.anycast) against a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

import pytest

import conf
from vrrp.anycast import (
    HEALTHY,
    LISTENERS_DOWN,
    Announce,
    Announcer,
    ArmTimer,
    Drain,
    Observed,
    StateChanged,
    TimerFired,
    Undrain,
    Withdraw,
)

UP = Observed(True, {"web": True, "api": True})


def kinds(actions: Sequence[object]) -> list[type]:
    return [type(a) for a in actions]


def test_first_healthy_look_announces_at_once() -> None:
    core = Announcer(("web", "api"), hold_down=10.0)
    assert (core.reason, core.announced) == ("starting", False)
    actions = core.handle(UP, now=100.0)
    assert kinds(actions) == [Announce, StateChanged]
    assert actions[1] == StateChanged(True, HEALTHY, 100.0)
    assert core.announced and core.since == 100.0
    assert core.handle(UP, now=100.2) == []  # nothing new: nothing to do


def test_not_announced_until_listeners_and_every_named_pool_are_up() -> None:
    core = Announcer(("web", "api"), hold_down=10.0)
    assert core.handle(Observed(False, {"web": True, "api": True}), 0.0) == [
        StateChanged(False, LISTENERS_DOWN, 0.0)
    ]
    actions = core.handle(Observed(True, {"web": True, "api": False}), 1.0)
    assert actions == [StateChanged(False, "pool api: no server up", 1.0)]
    assert core.handle(Observed(True, {"web": True}), 2.0) == []  # a pool not reported counts as down
    assert kinds(core.handle(UP, 3.0)) == [Announce, StateChanged]


def test_a_pool_down_withdraws_at_once_and_the_hold_down_delays_the_return() -> None:
    core = Announcer(("web",), hold_down=5.0)
    core.handle(Observed(True, {"web": True}), 0.0)
    actions = core.handle(Observed(True, {"web": False}), 10.0)
    assert actions == [
        Withdraw("pool web: no server up"),
        StateChanged(False, "pool web: no server up", 10.0),
    ]
    # Healthy again at 12: held until 17.
    actions = core.handle(Observed(True, {"web": True}), 12.0)
    assert actions[0] == ArmTimer(17.0)
    assert not core.announced and core.reason.startswith("hold-down")
    assert [a for a in core.handle(Observed(True, {"web": True}), 16.9) if not isinstance(a, ArmTimer)] == []
    actions = core.handle(TimerFired(), 17.0)
    assert kinds(actions) == [Announce, StateChanged]
    assert core.since == 17.0 and core.announcements == 2 and core.withdrawals == 1


def test_healthy_since_time_zero_counts() -> None:
    core = Announcer(("web",), hold_down=5.0)
    core.handle(Observed(True, {"web": True}), -10.0)
    core.handle(Observed(True, {"web": False}), -1.0)
    core.handle(Observed(True, {"web": True}), 0.0)  # a clock may read 0.0: healthy since then
    assert kinds(core.handle(TimerFired(), 5.0)) == [Announce, StateChanged]


def test_flapping_restarts_the_hold_down() -> None:
    core = Announcer(("web",), hold_down=5.0)
    up, down = Observed(True, {"web": True}), Observed(True, {"web": False})
    core.handle(up, 0.0)
    core.handle(down, 1.0)
    for t in (2.0, 4.0, 6.0, 8.0):  # up 1 s, down 1 s, ...: never healthy for 5 s
        core.handle(up, t)
        assert not core.announced
        core.handle(down, t + 1.0)
    assert core.withdrawals == 1  # one withdrawal, no route churn while it flaps
    core.handle(up, 20.0)
    assert not core.announced
    assert kinds(core.handle(up, 25.0)) == [Announce, StateChanged]


def test_drain_withdraws_whatever_the_health_and_stays_withdrawn() -> None:
    core = Announcer(("web",), hold_down=5.0)
    core.handle(Observed(True, {"web": True}), 0.0)
    actions = core.handle(Drain("stopping"), 3.0)
    assert actions == [Withdraw("drained: stopping"), StateChanged(False, "drained: stopping", 3.0)]
    assert core.handle(Observed(True, {"web": True}), 4.0) == []
    assert core.handle(Drain("stopping"), 5.0) == []  # a second drain changes nothing


def test_undrain_announces_without_hold_down_when_healthy() -> None:
    core = Announcer(("web",), hold_down=5.0)
    core.handle(Observed(True, {"web": True}), 0.0)
    core.handle(Drain("admin"), 1.0)
    assert kinds(core.handle(Undrain(), 2.0)) == [Announce, StateChanged]


def test_undrain_while_a_pool_is_down_waits_for_health() -> None:
    core = Announcer(("web",), hold_down=5.0)
    core.handle(Observed(True, {"web": True}), 0.0)
    core.handle(Drain("admin"), 1.0)
    core.handle(Observed(True, {"web": False}), 2.0)
    assert core.handle(Undrain(), 3.0) == [StateChanged(False, "pool web: no server up", 1.0)]
    assert kinds(core.handle(Observed(True, {"web": True}), 4.0)) == [Announce, StateChanged]


def test_listeners_closing_withdraw() -> None:
    core = Announcer((), hold_down=0.0)
    core.handle(Observed(True), 0.0)
    assert core.handle(Observed(False), 1.0)[0] == Withdraw(LISTENERS_DOWN)
    assert kinds(core.handle(Observed(True), 1.5)) == [Announce, StateChanged]  # hold_down 0


def test_reconfigure_keeps_the_announcement_or_withdraws_for_a_new_pool() -> None:
    core = Announcer(("web",), hold_down=5.0)
    core.handle(Observed(True, {"web": True}), 0.0)
    assert core.reconfigure(("web",), 1.0, now=1.0) == []
    assert core.announced and core.hold_down == 1.0
    # A newly named pool has not been looked at yet: the next observation decides.
    core.reconfigure(("web", "api"), 1.0, now=2.0)
    actions = core.handle(Observed(True, {"web": True, "api": False}), 2.1)
    assert actions[0] == Withdraw("pool api: no server up")


# ------------------------------------------------------------------ the config


def anycast_errors(text: str) -> list[str]:
    with pytest.raises(conf.ConfigError) as info:
        conf.load_text(text)
    return [str(i) for i in info.value.issues]


POOL = '[pool.web]\nservers = [{ address = "127.0.0.1:8001" }]\n'


def test_config_defaults_and_the_device_name() -> None:
    config = conf.load_text(POOL + '[[anycast]]\nname = "edge"\nvips = ["203.0.113.10", "2001:db8::1/128"]\n')
    group = config.anycast[0]
    assert group.vips == (
        ipaddress.ip_interface("203.0.113.10/32"),
        ipaddress.ip_interface("2001:db8::1/128"),
    )
    assert (group.interface, group.table, group.route_protocol, group.device) == ("lo", 100, 252, "sk-edge")
    assert group.pools == () and group.hold_down == 10.0 and group.withdraw_grace == 2.0


def test_config_errors_name_the_key_path() -> None:
    text = (
        POOL
        + '[[anycast]]\nname = "edge"\nvips = ["203.0.113.10/24"]\npools = ["web", "nope"]\ntable = 254\n'
        + 'hold_down = -1\ndevice = "a-very-long-device-name"\nbogus = 1\n'
        + '[[anycast]]\nname = "edge"\nvips = ["203.0.113.11"]\ndevice = "sk-other"\n'
        + "[[anycast]]\nvips = []\n"
    )
    assert anycast_errors(text) == [
        "anycast[0].vips[0]: 203.0.113.10/24 is not a host address (/32 or /128)",
        "anycast[0].device: 'a-very-long-device-name' is not a Linux interface name (at most 15 characters)",
        "anycast[0].hold_down: must be between 0.0 and 3600.0",
        "anycast[0].table: 253-255 are the kernel's default, main and local tables: use a table of its own",
        "anycast[0].bogus: unknown key",
        "anycast[2].name: required",
        "anycast[2].vips: needs at least one address",
        "anycast[0].pools[1]: no pool named 'nope'",
        "anycast[1].name: 'edge' is also anycast[0]",
    ]


def test_a_vip_in_two_groups_is_an_error() -> None:
    text = (
        POOL
        + '[[anycast]]\nname = "a"\nvips = ["203.0.113.10"]\n'
        + '[[anycast]]\nname = "b"\nvips = ["203.0.113.10"]\n'
    )
    assert anycast_errors(text) == ["anycast[1].vips[0]: 203.0.113.10 is also announced by anycast[0]"]


def test_only_health_rules_and_timers_update_in_place() -> None:
    from vrrp.anycast_io import AnycastService

    base = conf.load_text(POOL + '[[anycast]]\nname = "edge"\nvips = ["203.0.113.10"]\n').anycast[0]
    assert AnycastService.updatable(base, dataclasses.replace(base, pools=("web",), hold_down=3.0))
    assert not AnycastService.updatable(base, dataclasses.replace(base, table=101))
    assert not AnycastService.updatable(base, dataclasses.replace(base, vips=()))


def test_mh_on_two_nodes_sends_a_client_to_the_same_backend() -> None:
    """What `mh` gives across nodes (docs/anycast.md): two nodes that never talk pick the
    same server for a client, also after the same server went down on both."""
    from lb.pool import BackendPool

    servers = "".join(f'{{ address = "10.0.1.{i}:8080" }},' for i in range(1, 8))
    config = conf.load_text(f'[pool.web]\nscheduler = "mh"\nservers = [{servers}]\n').pools["web"]
    node_a, node_b = BackendPool(config), BackendPool(config)
    clients = [f"198.51.100.{i}" for i in range(1, 200)]

    def picks(pool: BackendPool) -> list[str]:
        return [b.key for b in map(pool.pick, clients) if b is not None]

    assert picks(node_a) == picks(node_b) and len(set(picks(node_a))) == 7
    before = picks(node_a)
    for pool in (node_a, node_b):
        pool.set_down(pool.find("10.0.1.3:8080")[0])
    after = picks(node_a)
    assert after == picks(node_b)
    # Maglev's disruption is near-minimal, not minimal: a few clients of other servers move too.
    others = [c for c, x, y in zip(clients, before, after, strict=True) if x not in (y, "10.0.1.3:8080")]
    assert len(others) < len(clients) // 10, others


def test_metrics_and_status_say_announced_why_and_since() -> None:
    from proxy.process.metrics import Exposition
    from proxy.process.metrics import anycast as anycast_metrics
    from proxy.process.status import render_text

    group = {
        "name": "edge",
        "vips": ["203.0.113.10"],
        "announced": False,
        "reason": "pool web: no server up",
        "since": 1_700_000_000.0,
        "announcements": 2,
        "withdrawals": 2,
    }
    exposition = Exposition()
    exposition.add_source("anycast", lambda: anycast_metrics.families([group]))
    text = exposition.render().decode()
    assert 'sekisho_anycast_announced{group="edge"} 0.0' in text
    assert 'sekisho_anycast_reason_info{group="edge",reason="pool web: no server up"} 1.0' in text
    assert 'sekisho_anycast_since_seconds{group="edge"} 1.7e+09' in text
    assert 'sekisho_anycast_withdrawals_total{group="edge"} 2.0' in text
    status = render_text({"anycast": [group]}, now=1_700_000_065.0)
    assert "ANYCAST" in status
    line = next(x for x in status.splitlines() if x.strip().startswith("edge"))
    assert line.split()[:3] == ["edge", "203.0.113.10", "withdrawn"] and line.endswith("1m05s ago"), line
    assert "ANYCAST" not in render_text({}, now=0.0)  # no group configured: no table
