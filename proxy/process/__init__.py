"""The process layer: what runs one sekisho process around the edges.

The edges (`proxy.http`, `proxy.smtp`, `proxy.tcp`, with `proxy.listener`) serve
connections; this package starts, reloads and stops them and shows what they do:

    cli         the `sekisho` command (check, run, stop, reload, status, convert)
    daemon      one config wired into listeners, pools, VRRP and the admin listener
    frontends   which edge serves which config section; per-listener stats that outlive reloads
    tasks       the owner of the daemon's background tasks (failures logged, one cancellation)
    admin       the admin listener (global.metrics) and who may use it; pool_admin: its pool API
    metrics     stats() snapshots -> Prometheus families at scrape time
    status      `sekisho status` and the /status page
    sdnotify    systemd readiness and watchdog
    demo        `make demo`

Arrows point one way: proxy.process -> the edges -> lb -> conf. No edge imports
this package, and the metrics never import the daemon (they read snapshots).
"""
