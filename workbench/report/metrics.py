"""Headline metrics: notebooks show them with :func:`record_metrics`; the runner collects them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import WorkbenchError
from .markup import fmt, table

__all__ = ["METRICS_MIMETYPE", "collect_metrics", "jsonable", "order_metrics", "record_metrics"]

METRICS_MIMETYPE = "application/vnd.workbench.metrics+json"
_SCALARS = (str, int, float, bool)
# Issue 11's headline: "did pretraining help?" comes first wherever metrics are listed.
_FIRST = ("downstream_task", "downstream_n_test", "downstream_n_train", "downstream_accuracy",
          "downstream_random_accuracy", "downstream_gain", "downstream_gain_ci_low", "downstream_gain_ci_high")


def jsonable(value: Any) -> Any:
    """A JSON scalar for ``value``: numpy/torch scalars unwrapped, NaN and objects as text."""
    if hasattr(value, "item") and not isinstance(value, _SCALARS):
        value = value.item()  # numpy / torch scalars
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not valid JSON
    return str(value)


def order_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with the downstream headline first, the rest in recorded order."""
    first = {k: metrics[k] for k in _FIRST if k in metrics}
    return first | {k: v for k, v in metrics.items() if k not in first}


def record_metrics(metrics: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """Show headline metrics as a table and mark them for the report runner to collect."""
    from IPython.display import display

    values = {**(metrics or {}), **more}
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise WorkbenchError(f"metric names must be strings, got {bad!r}; e.g. record_metrics({{'loss': 2.1}})")
    clean = {k: jsonable(v) for k, v in values.items()}
    width = max((len(k) for k in clean), default=0)
    text = "\n".join(f"{k.ljust(width)}  {fmt(v)}" for k, v in clean.items())
    display({METRICS_MIMETYPE: clean, "text/plain": text, "text/html": table(clean, short=True)}, raw=True)
    return clean


def collect_metrics(nb: Any) -> dict[str, Any]:
    """The metrics an executed notebook recorded (a later record of a name wins)."""
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get(METRICS_MIMETYPE)
            if isinstance(data, str):
                data = json.loads(data)
            if isinstance(data, dict):
                found.update(data)
    return found
