"""Backend pools: schedulers, health checks, the L4 relay, PROXY protocol."""
