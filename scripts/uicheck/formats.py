"""Metric values and run durations as the MLflow UI prints them (its JS ``Utils``), which the
pages' text is matched with."""

from __future__ import annotations

import math


def mlflow_metric(value: float) -> str:
    """A metric value as the MLflow UI prints it (``Utils.formatMetric`` of its JS)."""
    if value == 0:
        return "0"
    a = abs(value)
    if a < 0.001:
        mant, exp = f"{value:.3e}".split("e")
        return f"{mant}e{int(exp):+d}"
    scale = 1000 if a < 10 else 100 if a < 100 else 10
    text = repr(math.floor(value * scale + 0.5) / scale)  # JS Math.round: halves go up
    return text[:-2] if text.endswith(".0") else text


def mlflow_duration(ms: int) -> str:
    """A run duration as the MLflow UI prints it (``Utils.formatDuration``)."""
    if ms < 500:
        return f"{ms}ms"
    for limit, unit, div in ((60e3, "s", 1e3), (3600e3, "min", 60e3), (86400e3, "h", 3600e3)):
        if ms < limit:
            return f"{ms / div:.1f}{unit}"
    return f"{ms / 86400e3:.1f}d"
