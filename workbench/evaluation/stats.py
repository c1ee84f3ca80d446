"""Confidence intervals over seeds and paired differences, for every "did it help" number.

Student t intervals: with 3 to 5 seeds the normal approximation is far too narrow
(t_{0.975, 2} = 4.30 against z = 1.96). A difference is paired: run i of each side shares
its seed and label sample, so the per-seed noise of the sample cancels in ``a[i] - b[i]``.

A probe's gain (``probes.probe_gain``) is also read against chance: two encoders both within
binomial noise of it are "at chance" (:func:`at_chance`), whatever the sign of their difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

from ..errors import WorkbenchError
from ..shortnames import labels_for

__all__ = ["NO_DIFFERENCE", "at_chance", "describe_difference", "gain_sentence", "gain_verdict", "mean_ci",
           "paired_difference", "t_quantile", "verdict"]

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


# ----------------------------------------------------------------- a probe gain against chance
def _chance_noise(gain: dict[str, Any], chance: float, z: float = 1.96) -> float:
    """Binomial noise (``z`` sigma) of an accuracy at ``chance`` over the gain's n_test examples."""
    return z * math.sqrt(chance * (1.0 - chance) / max(gain["n_test"], 1))


def at_chance(gain: dict[str, Any], chance: float, z: float = 1.96) -> bool:
    """Whether both encoders' test accuracies lie within binomial noise (``z`` sigma on n_test) of ``chance``."""
    noise = _chance_noise(gain, chance, z)
    return all(abs(acc[0] - chance) <= noise for acc in (gain["accuracy"], gain["baseline_accuracy"]))


def gain_verdict(gain: dict[str, Any], chance: float | None = None) -> str:
    """A probe gain's verdict: "at chance" when ``chance`` is given and both encoders are within noise of it, else the paired one."""
    return "at chance" if chance is not None and at_chance(gain, chance) else gain["gain"]["verdict"]


def gain_sentence(gain: dict[str, Any], scale: float = 100.0, chance: float | None = None) -> str:
    """The paired gain in words, encoders by short name: a gain or loss only when its CI excludes 0, else "no measurable gain".

    With ``chance`` (0.5 for a balanced binary probe), two encoders both within noise of it read
    "both at chance": a difference between two guesses is never read as a result.
    """
    d = gain["gain"]
    names = labels_for([gain["model"], gain["baseline"]])
    if chance is not None and at_chance(gain, chance):
        noise = _chance_noise(gain, chance)
        return (f"{names[gain['model']]} and {names[gain['baseline']]}: both at chance ({gain['accuracy'][0]:.3f} and "
                f"{gain['baseline_accuracy'][0]:.3f}, chance {chance:g} ± {noise:.3f} on {gain['n_test']} test examples); "
                "no result either way")
    level = f"{d['confidence']:.0%} CI"
    interval = (f"{level} unknown with {d['n']} seed" if math.isnan(d["low"])
                else f"{level} {d['low'] * scale:+.1f} to {d['high'] * scale:+.1f}")
    what = {"gain": "a measurable gain", "loss": "a measurable loss"}.get(d["verdict"], "no measurable gain")
    return (f"{names[gain['model']]} against {names[gain['baseline']]}: {what}, {d['mean'] * scale:+.1f} points "
            f"({interval}; {d['n']} seeds paired, {gain['n_test']} test examples)")
