"""Confidence intervals over seeds and paired differences, for every "did it help" number.

Student t intervals: with 3 to 5 seeds the normal approximation is far too narrow
(t_{0.975, 2} = 4.30 against z = 1.96). A difference is paired: run i of each side shares
its seed and label sample, so the per-seed noise of the sample cancels in ``a[i] - b[i]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

from ..errors import WorkbenchError

__all__ = ["NO_DIFFERENCE", "describe_difference", "mean_ci", "paired_difference", "t_quantile", "verdict"]

NO_DIFFERENCE = "no measurable difference"


def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student t critical value: P(|T| <= q) = confidence with ``dof`` degrees of freedom."""
    if not 0.0 < confidence < 1.0:
        raise WorkbenchError(f"confidence {confidence} must be in (0, 1); e.g. 0.95")
    if dof < 1:
        raise WorkbenchError(f"a t interval needs 1 or more degrees of freedom (2 or more values), got {dof}")
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, dof))


def _clean(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise WorkbenchError(f"{what} is empty; pass one value or more (one per seed)")
    if not np.isfinite(x).all():
        raise WorkbenchError(f"{what} holds a NaN or infinite value; drop the failed run(s) first")
    return x


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student t interval of the mean; one value gives (v, nan, nan)."""
    x = _clean(values, "values")
    mean = float(x.mean())
    if x.size == 1:  # no spread to estimate: the interval is unknown, not zero-width
        if not 0.0 < confidence < 1.0:
            raise WorkbenchError(f"confidence {confidence} must be in (0, 1); e.g. 0.95")
        return mean, math.nan, math.nan
    half = t_quantile(confidence, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    """"gain" when the interval is above 0, "loss" when below, else "no measurable difference"."""
    if math.isnan(low) or math.isnan(high) or low <= 0.0 <= high:
        return NO_DIFFERENCE  # an unknown interval (one seed) cannot exclude 0 either
    return "gain" if low > 0.0 else "loss"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of a[i] - b[i] with its t interval: keys mean, low, high, n, confidence, verdict."""
    x, y = _clean(a, "a"), _clean(b, "b")
    if x.size != y.size:
        raise WorkbenchError(f"paired values need equal lengths (one per shared seed), got {x.size} and {y.size}; "
                             "compare runs with the same seeds")
    mean, low, high = mean_ci(x - y, confidence)
    return {"mean": mean, "low": low, "high": high, "n": int(x.size), "confidence": confidence,
            "verdict": verdict(low, high)}


def describe_difference(diff: dict[str, Any], scale: float = 100.0, unit: str = "points") -> str:
    """One line in words, e.g. "gain: +12.3 points (95% CI +8.1 to +16.5, 5 seeds)"."""
    level = f"{diff['confidence']:.0%} CI"
    if math.isnan(diff["low"]):
        interval = f"{level} unknown with {diff['n']} seed"
    else:
        interval = f"{level} {diff['low'] * scale:+.1f} to {diff['high'] * scale:+.1f}, {diff['n']} seeds"
    return f"{diff['verdict']}: {diff['mean'] * scale:+.1f} {unit} ({interval})"
