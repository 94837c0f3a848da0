"""Admin API for pools: `POST /servers/{pool}/{address}/weight`.

Sets a server's weight at run time, without a reload (HAProxy's `set weight`,
ipvsadm -e -w). Weight 0 drains: no new connections, existing ones finish.
`address` is a resolved "ip:port" / "[v6]:port" or the address as configured
("www.example.com:80": every address it resolved to). The body is the weight,
as a bare integer or JSON `{"weight": N}`; `?weight=N` works too.

It changes state, so it needs the token of `global.admin_token_file`
(`proxy.process.admin.authorize`; without one configured it answers 403):

    curl -H "Authorization: Bearer $(cat /etc/sekisho/admin.token)" -X POST -d 0 \
        http://127.0.0.1:9100/servers/alpha/192.0.2.9:80/weight
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from lb.pool import PoolSet
from proxy.process.admin import AdminRequest, AdminResponse, AdminServer

log = logging.getLogger("sekisho.admin")

MAX_WEIGHT = 65535


def _weight(request: AdminRequest) -> int | None:
    raw: object
    if "weight" in request.query:
        raw = request.query["weight"][-1]
    else:
        text = request.body.decode("utf-8", "replace").strip()
        try:
            raw = json.loads(text) if text else None
        except ValueError:
            return None
        if isinstance(raw, dict):
            raw = raw.get("weight")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if isinstance(raw, int) and 0 <= raw <= MAX_WEIGHT:
        return raw
    return None


def register(admin: AdminServer, get_pools: Callable[[], PoolSet]) -> None:
    async def set_weight(request: AdminRequest) -> AdminResponse:
        pools = get_pools()
        name, address = request.params["pool"], request.params["address"]
        if name not in pools:
            return AdminResponse.json({"error": f"no pool named {name!r}"}, 404)
        pool = pools[name]
        backends = pool.find(address)
        if not backends:
            return AdminResponse.json({"error": f"pool {name}: no server {address!r}"}, 404)
        weight = _weight(request)
        if weight is None:
            return AdminResponse.json(
                {"error": f'body must be a weight 0-{MAX_WEIGHT} (a number or {{"weight": N}})'}, 400
            )
        for b in backends:
            pool.set_weight(b, weight)
            log.warning("pool %s: server %s weight set to %d by the admin API", name, b.key, weight)
        keys = {b.key for b in backends}
        servers = [s for s in pool.stats()["servers"] if s["address"] in keys and not s["sorry"]]
        return AdminResponse.json({"pool": name, "servers": servers})

    admin.route("POST", "/servers/{pool}/{address}/weight", set_weight)
