"""Counters summed over worker processes, field by field.

Every worker reports the same shapes (the per-listener stats dataclasses, listener
and pool counters in plain dicts); the supervisor adds them up for /metrics and
status. Gauges (open connections) are summed over the live workers only: a worker
that is gone keeps contributing its counters (so a total never goes backwards when
a worker is restarted) but not its connections.
"""

from __future__ import annotations

import dataclasses
from typing import Any

GAUGES = frozenset({"active", "connections_active", "connections"})


def add(total: Any, part: Any, skip: frozenset[str] = frozenset()) -> Any:
    """`total + part` (total may be None), recursively; names in `skip` are left out."""
    if dataclasses.is_dataclass(part) and not isinstance(part, type):
        out = total if total is not None else type(part)()
        for f in dataclasses.fields(part):
            if f.name not in skip:
                setattr(out, f.name, add(getattr(out, f.name), getattr(part, f.name), skip))
        return out
    if isinstance(part, dict):
        out = total if total is not None else type(part)()
        for key, value in part.items():
            if key not in skip:
                out[key] = add(out.get(key), value, skip)
        return out
    if isinstance(part, list):
        if total is None:
            return list(part)
        return [a + b for a, b in zip(total, part, strict=False)] + total[len(part) :] + part[len(total) :]
    if isinstance(part, int | float) and not isinstance(part, bool):
        return (total or 0) + part
    return part  # labels (a listener's address): the same in every worker


def retire(totals: Any, last: Any) -> Any:
    """Fold the last report of a worker that is gone into the totals of the gone."""
    return add(totals, last, GAUGES)
