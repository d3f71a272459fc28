"""Percentiles and the small summaries every section reports."""
from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p99, mean and max of a sample."""
    if not values:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "mean": math.nan, "max": math.nan}
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "mean": sum(values) / len(values), "max": max(values)}


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    """A number for a table: '—' when missing, thousands separated, unit appended."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip() if unit else text
