"""Small statistics: percentiles of latency samples, median with min-max of runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def latency_summary_us(samples_ns: list[int]) -> dict[str, float]:
    samples_ns.sort()
    return {
        "p50_us": percentile(samples_ns, 50) / 1000.0,
        "p90_us": percentile(samples_ns, 90) / 1000.0,
        "p99_us": percentile(samples_ns, 99) / 1000.0,
        "max_us": (samples_ns[-1] / 1000.0) if samples_ns else float("nan"),
    }


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median with min-max; n is how many values there were."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
