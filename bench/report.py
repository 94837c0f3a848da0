"""From raw runs to medians and ratios, and out as a table, JSON, Markdown and a PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.stats import spread

PEERS = ("direct", "haproxy", "nginx")
PROXIES = ("sekisho", "haproxy", "nginx")
LATENCY_KEYS = ("p50_us", "p99_us", "cpu_cost", "proxy_cpu_pct")

# The figures the HTTP (2) and pools (3) issues set: (workload, ratio, at least, stretch, source)
ISSUE_TARGETS = (
    ("HTTP_small_ka", "sekisho/haproxy", 0.2, 0.35, "issue 2: HTTP wrk -c32 >= 0.2 x HAProxy (stretch 0.35)"),
    ("TCP_STREAM", "sekisho/direct", 0.85, None, "issue 3: TCP_STREAM >= 0.85 of direct"),
    ("TCP_STREAM", "sekisho/haproxy", 1.3, None, "issue 3: TCP_STREAM >= 1.3 x HAProxy"),
    ("L4_HTTP_ka", "sekisho/haproxy", 1.0, None, "issue 3: L4 small request/response >= 1.0 x HAProxy"),
    ("L4_HTTP_close", "sekisho/haproxy", 0.75, None, "issue 3: L4 new connections/s >= 0.75 x HAProxy"),
    (
        "HTTP2_small_tls",
        "sekisho/nginx",
        0.25,
        None,
        "issue 18: HTTP/2 over TLS (h2load -c8 -m16) >= 0.25 x nginx",
    ),
)
# Targets comparing one target with itself in two workloads, paired by round:
# (workload, against workload, target, at least, source)
SELF_TARGETS = (
    (
        "HTTP2_small_tls",
        "HTTP11_small_tls",
        "sekisho",
        1.0,
        "issue 18: sekisho HTTP/2 req/s >= its own HTTP/1.1-over-TLS keep-alive req/s",
    ),
)
# Workload pairs whose per-target ratio the report shows (same target, same round)
PROTOCOL_PAIRS = (("HTTP2_small_tls", "HTTP11_small_tls"),)


def summarize(doc: dict[str, Any]) -> None:
    """Fill each workload's "summary" and "ratios" from its "runs" (in place)."""
    targets = list(doc["targets"])
    for w in doc["workloads"].values():
        by_target: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in targets}
        for r in w["runs"]:
            if r["ok"]:
                by_target.setdefault(r["target"], {})[r["round"]] = r["metrics"]
        summary: dict[str, Any] = {}
        for t in targets:
            runs = by_target.get(t, {})
            status = doc["targets"][t]["status"]
            failed = [r["error"] for r in w["runs"] if r["target"] == t and not r["ok"]]
            entry: dict[str, Any] = {"value": spread([m["value"] for m in runs.values()])}
            for key in LATENCY_KEYS:
                vals = [m[key] for m in runs.values() if isinstance(m.get(key), (int, float))]
                if vals:
                    entry[key] = spread(vals)
            if status != "ok" and not runs:
                entry["status"] = status
            elif not runs and failed:
                entry["status"] = "failed"
            elif not runs:
                entry["status"] = "not run"
            else:
                entry["status"] = "ok"
            entry["failures"] = len(failed)
            if failed:
                entry["last_error"] = failed[-1]
            summary[t] = entry
        w["summary"] = summary
        ratios: dict[str, Any] = {}
        s_runs = by_target.get("sekisho", {})
        for peer in PEERS:
            p_runs = by_target.get(peer, {})
            rounds = sorted(set(s_runs) & set(p_runs))
            pairs = [(s_runs[i]["value"], p_runs[i]["value"]) for i in rounds]
            vals = [s / p for s, p in pairs if p]
            if not vals:
                continue
            entry = {"ratio": spread(vals)}
            if not w["higher_is_better"]:
                entry["delta"] = spread([s - p for s, p in pairs])
            ratios[f"sekisho/{peer}"] = entry
        w["ratios"] = ratios


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    if a >= 100_000:
        return f"{v / 1000:.0f}k"
    if a >= 10_000:
        return f"{v / 1000:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(entry: dict[str, Any] | None, key: str = "value") -> str:
    if entry is None:
        return "-"
    if entry.get("status") not in (None, "ok"):
        return str(entry["status"])
    s = entry.get(key)
    if not s or not s.get("n"):
        return "-"
    if s["n"] == 1:
        return _num(s["median"])
    return f"{_num(s['median'])} ({_num(s['min'])}-{_num(s['max'])})"


def _ratio_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    r = entry["ratio"]
    text = f"{r['median']:.2f}x" if r["n"] == 1 else f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
    if "delta" in entry:
        text += f" {entry['delta']['median']:+.0f}µs"
    return text


def rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    targets = list(doc["targets"])
    header = ["workload", "unit", *targets, "sekisho/direct", "sekisho/haproxy", "sekisho/nginx"]
    out = []
    for name, w in doc["workloads"].items():
        row = [name, w["unit"]] + [_cell(w["summary"].get(t)) for t in targets]
        row += [_ratio_cell(w["ratios"].get(f"sekisho/{p}")) for p in PEERS]
        out.append(row)
    return header, out


def latency_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    targets = list(doc["targets"])
    header = ["workload", *[f"{t} p50/p99 µs" for t in targets]]
    out = []
    for name, w in doc["workloads"].items():
        if w["kind"] == "stream":
            continue
        cells = []
        for t in targets:
            e = w["summary"].get(t)
            if not e or e.get("status") != "ok" or "p50_us" not in e:
                cells.append(e.get("status", "-") if e else "-")
                continue
            cells.append(f"{_num(e['p50_us']['median'])} / {_num(e['p99_us']['median'])}")
        out.append([name, *cells])
    return header, out


def text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(header))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in body]
    return "\n".join(lines)


def md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def memory_lines(doc: dict[str, Any]) -> list[str]:
    mem = doc.get("memory") or {}
    out: list[str] = []
    if not mem:
        return out
    if mem.get("error"):
        out.append(f"- sekisho memory: {mem['error']}")
    idle = mem.get("idle_rss_kib")
    if idle:
        out.append(f"- sekisho RSS idle (just started, no traffic): {idle / 1024:.1f} MiB")
    for name, kib in (mem.get("idle_rss_kib_by_target") or {}).items():
        if name != "sekisho" and kib:
            out.append(f"- {name} RSS idle (just started): {kib / 1024:.1f} MiB")
    c = mem.get("idle_connections")
    if c:
        out.append(
            f"- {c['connections']} idle keep-alive HTTP connections held ({c['errors']} errors): "
            f"RSS {c['rss_before_kib'] / 1024:.1f} -> {c['rss_kib'] / 1024:.1f} MiB, "
            f"{c['per_conn_kib']} KiB per connection"
            if c.get("per_conn_kib") is not None
            else f"- idle connections: none held ({c.get('first_errors')})"
        )
    for key, label in (("upload_http", "HTTP route"), ("upload_tcp", "L4 [[tcp]] service")):
        u = mem.get(key)
        if not u:
            continue
        status = f"error: {u['error']}" if u["error"] else (u["status"] or "ok")
        out.append(
            f"- {u['bytes'] / 2**30:.2f} GiB upload through the {label}: peak RSS "
            f"{u['peak_rss_kib'] / 1024:.1f} MiB (+{u['growth_kib'] / 1024:.1f} MiB), "
            f"{u['gbps']} Gbit/s, {u['seconds']} s, {status}"
        )
    return out


def ceiling_lines(doc: dict[str, Any]) -> list[str]:
    """The generator alone (direct: generator -> backend, no proxy) against the best proxied
    figure: the proof that the generator is not what a proxied figure measures."""
    out = []
    for name, w in doc["workloads"].items():
        if w["kind"] != "stream":
            continue
        d = w["summary"].get("direct", {})
        if d.get("status") != "ok":
            continue
        gen = d["value"]["median"]
        proxied = {
            t: e["value"]["median"]
            for t, e in w["summary"].items()
            if t != "direct" and e.get("status") == "ok"
        }
        if proxied:
            best = max(proxied, key=lambda t: proxied[t])
            ratio = gen / proxied[best]
            verdict = (
                "the generator is not what the proxied figures measure"
                if ratio >= 1.5
                else "close to 1x: the generator/receiver pair, not the proxy, bounds these figures"
            )
            out.append(
                f"- {name}: generator alone (direct, {w['tool']}) {gen:.1f} {w['unit']}; best proxied "
                f"{best} {proxied[best]:.1f} {w['unit']}: {ratio:.1f}x, {verdict}"
            )
        else:
            out.append(f"- {name}: generator alone (direct, {w['tool']}) {gen:.1f} {w['unit']}")
    return out


def cost_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The proxies' own CPU per unit of work (median), and sekisho's cost relative to each peer."""
    targets = [t for t in PROXIES if t in doc["targets"]]
    header = [
        "workload",
        "unit",
        *[f"{t} (cpu%)" for t in targets],
        "cost sekisho/haproxy",
        "cost sekisho/nginx",
    ]
    out = []
    for name, w in doc["workloads"].items():
        cells, meds = [], {}
        for t in targets:
            e = w["summary"].get(t) or {}
            c = e.get("cpu_cost")
            if e.get("status") != "ok" or not c or not c.get("n"):
                cells.append(e.get("status", "-") if e.get("status") != "ok" else "-")
                continue
            meds[t] = c["median"]
            pct = e.get("proxy_cpu_pct", {}).get("median")
            cells.append(
                f"{_num(c['median'])} ({pct:.0f}%)"
                if isinstance(pct, float) and not math.isnan(pct)
                else _num(c["median"])
            )
        ratios = [
            f"{meds['sekisho'] / meds[p]:.2f}x" if "sekisho" in meds and meds.get(p) else "-"
            for p in ("haproxy", "nginx")
        ]
        out.append([name, w.get("cpu_cost_unit", "?").replace("proxy CPU ", ""), *cells, *ratios])
    return header, out


def target_lines(doc: dict[str, Any]) -> list[str]:
    out = []
    for name, ratio, floor, stretch, text in ISSUE_TARGETS:
        w = doc["workloads"].get(name)
        if w is None:
            continue
        r = w["ratios"].get(ratio)
        if not r:
            out.append(f"- {text}: not measured")
            continue
        med = r["ratio"]["median"]
        verdict = "met" if med >= floor else "SHORT"
        if stretch is not None and med >= stretch:
            verdict = "met (stretch too)"
        out.append(
            f"- {text}: {med:.3f}x (min-max {r['ratio']['min']:.2f}-{r['ratio']['max']:.2f}) -> {verdict}"
        )
    return out


def self_ratio(doc: dict[str, Any], name: str, other: str, target: str) -> dict[str, float | int] | None:
    """target's figure in workload `name` over its figure in `other`, paired round by round."""
    a, b = doc["workloads"].get(name), doc["workloads"].get(other)
    if a is None or b is None:
        return None

    def by_round(w: dict[str, Any]) -> dict[int, float]:
        return {r["round"]: r["metrics"]["value"] for r in w["runs"] if r["ok"] and r["target"] == target}

    ra, rb = by_round(a), by_round(b)
    vals = [ra[i] / rb[i] for i in sorted(set(ra) & set(rb)) if rb[i]]
    return spread(vals) if vals else None


def self_target_lines(doc: dict[str, Any]) -> list[str]:
    out = []
    for name, other, target, floor, text in SELF_TARGETS:
        if name not in doc["workloads"] or other not in doc["workloads"]:
            continue
        r = self_ratio(doc, name, other, target)
        if r is None:
            out.append(f"- {text}: not measured")
            continue
        verdict = "met" if r["median"] >= floor else "SHORT"
        out.append(f"- {text}: {r['median']:.3f}x (min-max {r['min']:.2f}-{r['max']:.2f}) -> {verdict}")
    return out


def protocol_lines(doc: dict[str, Any]) -> list[str]:
    """Per target: one workload's figure over another's (h2 over HTTP/1.1), and what TLS gave."""
    out = []
    for name, other in PROTOCOL_PAIRS:
        if name not in doc["workloads"] or other not in doc["workloads"]:
            continue
        cells = []
        for t in doc["targets"]:
            r = self_ratio(doc, name, other, t)
            if r is not None:
                cells.append(
                    f"{t} {r['median']:.2f}x" + (f" ({r['min']:.2f}-{r['max']:.2f})" if r["n"] > 1 else "")
                )
        if cells:
            out.append(f"- {name} / {other}: " + ", ".join(cells))
        for w_name in (name, other):
            seen: dict[str, set[str]] = {}
            for r in doc["workloads"][w_name]["runs"]:
                if r["ok"] and r["metrics"].get("tls"):
                    seen.setdefault(r["target"], set()).add(r["metrics"]["tls"])
            if seen:
                out.append(
                    f"- {w_name} negotiated: "
                    + "; ".join(f"{t} {' | '.join(sorted(v))}" for t, v in seen.items())
                )
    return out


def profile_lines(doc: dict[str, Any], top: int = 8) -> list[str]:
    out = []
    for name, p in (doc.get("profile") or {}).items():
        if p.get("error"):
            out.append(f"- {name}: profile failed: {p['error']}")
            continue
        out.append(
            f"- {name} ({p['samples']} samples, {_num(p.get('value_under_profiler'))} under the profiler):"
        )
        out.append("  self:      " + "; ".join(f"{n} {pct}%" for n, pct in p["self"][:top]))
        out.append("  inclusive: " + "; ".join(f"{n} {pct}%" for n, pct in p["inclusive"][:top]))
    return out


def stdout_report(doc: dict[str, Any]) -> str:
    parts = [text_table(*rows(doc)), "", "latency medians (p50 / p99, µs):", text_table(*latency_rows(doc))]
    parts += ["", "proxy CPU per unit of work (median; lower is better):", text_table(*cost_rows(doc))]
    ceil = ceiling_lines(doc)
    if ceil:
        parts += ["", "generator ceiling:", *ceil]
    goals = target_lines(doc) + self_target_lines(doc)
    if goals:
        parts += ["", "targets from the issues (median ratio):", *goals]
    proto = protocol_lines(doc)
    if proto:
        parts += ["", "HTTP/2 against HTTP/1.1 over TLS (same target, paired by round):", *proto]
    prof = profile_lines(doc, top=6)
    if prof:
        parts += ["", "sekisho profile (py-spy, share of samples):", *prof]
    mem = memory_lines(doc)
    if mem:
        parts += ["", "memory:", *mem]
    problems = [
        f"- {name}: {t['status']}: {t['error'][:300]}"
        for name, t in doc["targets"].items()
        if t["status"] != "ok"
    ]
    if problems:
        parts += ["", "targets not measured:", *problems]
    return "\n".join(parts)


def markdown(doc: dict[str, Any], chart_name: str | None) -> str:
    m = doc["machine"]
    s = doc["settings"]
    lines = [
        f"# sekisho bench: {doc['started'][:16]} on {m['host']}",
        "",
        f"`{' '.join(doc['command'])}`: {s['rounds']} round(s) x {s['duration']} s per figure, "
        "targets interleaved A B C A B C; cells are median (min-max) over rounds, ratios are "
        "paired within a round. Higher is better except `HTTP_rate_*` (p50 latency; the ratio "
        "cell adds the median added latency).",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['mem_total_mib']} MiB, Linux {m['kernel']}, "
        f"Python {m['python']}, uvloop {m['uvloop']}. Load average at start {m['loadavg_start']}, "
        f"at end {doc.get('loadavg_end')}.",
        f"Pinning: {s['pinning']}",
        "",
    ]
    if chart_name:
        lines += [f"![chart]({chart_name})", ""]
    lines += [
        md_table(*rows(doc)),
        "",
        "Latency medians, p50 / p99 µs:",
        "",
        md_table(*latency_rows(doc)),
        "",
    ]
    lines += [
        "Proxy CPU per unit of work (median, lower is better; the proxy's own utime+stime over the run, "
        "steadier than a rate when the machine is shared):",
        "",
        md_table(*cost_rows(doc)),
        "",
    ]
    ceil = ceiling_lines(doc)
    if ceil:
        lines += ["Generator ceiling:", "", *ceil, ""]
    goals = target_lines(doc) + self_target_lines(doc)
    if goals:
        lines += ["Targets set in the issues (median ratio):", "", *goals, ""]
    proto = protocol_lines(doc)
    if proto:
        lines += ["HTTP/2 against HTTP/1.1 over TLS (same target, paired by round):", "", *proto, ""]
    prof = profile_lines(doc, top=12)
    if prof:
        lines += ["sekisho profile (py-spy during one extra run, share of samples):", "", *prof, ""]
    mem = memory_lines(doc)
    if mem:
        lines += ["Memory:", "", *mem, ""]
    lines += ["Targets:", ""]
    for name, t in doc["targets"].items():
        extra = f" ({t['notes']})" if t.get("notes") else ""
        err = f": {t['error'][:300]}" if t["status"] != "ok" else ""
        lines.append(f"- {name}: {t['status']}, {t['version']}{extra}{err}")
    lines += ["", "Backends:", ""]
    for key, b in doc["backends"].items():
        lines.append(f"- {key}: {b['what']} on {b['endpoint']}")
    lines += ["", "Tools:", ""]
    for name, w in doc["workloads"].items():
        lines.append(f"- {name}: {w['description']}; {w['tool']}")
    if doc.get("notes"):
        lines += ["", *[f"Note: {n}" for n in doc["notes"]]]
    return "\n".join(lines) + "\n"


def chart(doc: dict[str, Any], path: Path) -> str | None:
    """One subplot per workload: median bars with min-max whiskers, sekisho's ratios annotated."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: {exc}"
    names = list(doc["workloads"])
    if not names:
        return "no chart: no workloads"
    targets = list(doc["targets"])
    colors = {"direct": "#7f7f7f", "sekisho": "#d62728", "haproxy": "#1f77b4", "nginx": "#2ca02c"}
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        w = doc["workloads"][name]
        meds, los, his, labels = [], [], [], []
        for t in targets:
            e = w["summary"].get(t, {})
            v = e.get("value", {})
            if e.get("status") == "ok" and v.get("n"):
                meds.append(v["median"])
                los.append(v["median"] - v["min"])
                his.append(v["max"] - v["median"])
                labels.append(_num(v["median"]))
            else:
                meds.append(0.0)
                los.append(0.0)
                his.append(0.0)
                labels.append(e.get("status", "-"))
        x = list(range(len(targets)))
        bars = ax.bar(x, meds, yerr=[los, his], capsize=3, color=[colors.get(t, "#9467bd") for t in targets])
        for bar, label, hi in zip(bars, labels, his, strict=True):
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height() + hi),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xticks(x, targets, fontsize=9)
        better = "higher" if w["higher_is_better"] else "lower"
        ax.set_title(f"{name} ({w['unit']}, {better} is better)", fontsize=10)
        ax.set_ylim(0, (max(meds) + max(his, default=0)) * 1.45 or 1)
        notes = []
        for peer in PEERS:
            r = w["ratios"].get(f"sekisho/{peer}")
            if r:
                txt = f"sekisho/{peer} {r['ratio']['median']:.2f}x"
                if "delta" in r:
                    txt += f" ({r['delta']['median']:+.0f} µs)"
                notes.append(txt)
        if notes:
            ax.text(
                0.02,
                0.97,
                "\n".join(notes),
                transform=ax.transAxes,
                va="top",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
            )
    m = doc["machine"]
    fig.suptitle(
        f"sekisho bench {doc['started'][:10]} {m['host']}: {m['cpu_model']}, {m['cores']} cores; "
        f"median of {doc['settings']['rounds']} interleaved rounds, whiskers min-max",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    return obj


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Compact (one line per workload) and rounded to 6 significant digits: a full run stays well
    under 200 KB."""
    doc = _rounded(doc)
    top = {k: v for k, v in doc.items() if k != "workloads"}
    body = json.dumps(top, indent=1, default=str)[:-2]
    works = ",\n".join(
        f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in doc["workloads"].items()
    )
    path.write_text(body + ',\n "workloads": {\n' + works + "\n }\n}\n")


def render(json_path: Path, latest: bool = False) -> None:
    """Re-render the Markdown and PNG of a stored run (the JSON keeps everything needed)."""
    doc = json.loads(json_path.read_text())
    png = json_path.with_suffix(".png")
    err = chart(doc, png)
    json_path.with_suffix(".md").write_text(markdown(doc, None if err else png.name))
    if latest:
        if not err:
            (json_path.parent / "latest.png").write_bytes(png.read_bytes())
        (json_path.parent / "latest.md").write_text(markdown(doc, None if err else "latest.png"))
    print(stdout_report(doc))


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        print("usage: python -m bench.report RESULT.json [--latest]", file=sys.stderr)
        raise SystemExit(2)
    render(Path(sys.argv[1]), latest="--latest" in sys.argv[2:])
