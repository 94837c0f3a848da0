"""The netperf-style benchmark: sekisho beside the backend itself and beside its peers.

`python -m bench` runs TCP_STREAM, TCP_RR, TCP_CRR and HTTP workloads against
`direct` (the backend), `sekisho` (started from a generated config), and
HAProxy and nginx (started from generated configs) when installed, interleaved
round by round, and writes a table, JSON, Markdown and a PNG chart.

Modules:
    servers   built-in backends: echo, splice sink, tiny HTTP server (own processes)
    gen       built-in load generators: stream, rr, crr, http (closed loop and fixed rate)
    tools     wrk and iperf3 runners and output parsers
    procs     start/stop/pin child processes, wait for ports, RSS
    targets   backends and the targets (direct, sekisho, haproxy, nginx) with generated configs
    workloads the workload table and how each one runs against an endpoint
    memory    sekisho RSS: idle, 10,000 idle keep-alive connections, 1 GiB uploads
    report    summaries, ratios, stdout table, JSON, Markdown, PNG
    cli       argument parsing and the round loop
    opcount   `python -m bench.opcount`: Python bytecodes per L4 connection (exact, not timed)
"""
