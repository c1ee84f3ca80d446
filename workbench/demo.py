"""The demo's recipe: the notebook sequence on the builtin defaults, and what that recipe measured.

`workbench demo` runs 01-04 with papermill. 02 pretrains with :data:`DEMO_PARAMS`, a recipe
chosen with ``benchmarks/demo_recipe.py`` so that 04's question, "did pretraining help?", gets
the same answer for every pretraining seed and CPU: short segments (64 tokens), which make a
step about 2.2x cheaper than 128 on a CPU, and 8,000 steps (512k pairs), long enough that NSP has
learnt in every measured run (held-out NSP 0.71-0.73), so every run reads "gain" by 13 points or
more. A demo report is one pretraining run; :func:`recipe_note` puts beside its CI the spread the
recipe measured over pretraining seeds (:data:`RECIPE_RUNS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import PRECISIONS, FinetuneConfig
from .errors import WorkbenchError
from .evaluation.stats import mean_ci

__all__ = ["DEMO_PARAMS", "DEMO_SEQ_LENGTH", "DEMO_STEPS", "RECIPE_RUNS", "demo_params", "recipe_note", "recipe_spread"]

# 8,000 steps of 64 pairs x 64 tokens. The old demo's 1,500 steps x 128 tokens answered -0.9 to
# +6.6 points by seed; 3,500 x 64 (the same minutes) +4.9 to +13.2; 5,000 x 64 +5.6 to +15.1 (seed
# 42's NSP had not learnt: 0.564); 8,000 x 64 +13.7 to +18.5 over 3 seeds x fp32 and bf16
# (benchmarks/demo_recipe.py; NSP 0.71-0.73 in every run), about 2.3x the old demo's pretraining time.
DEMO_STEPS = 8000
DEMO_SEQ_LENGTH = 64
# 03 reads segments of the same length; 04 probes the whole held-out task over 5 seeds; 02 keeps
# 4 checkpoints for 04's curve over pretraining.
DEMO_PARAMS: dict[str, Any] = {
    "max_steps": DEMO_STEPS, "max_seq_length": DEMO_SEQ_LENGTH, "eval_every": DEMO_STEPS // 4,
    "save_every": DEMO_STEPS // 4, "keep_every": DEMO_STEPS // 4, "probe_seeds": 5, "probe_max_examples": 0,
    "bshift_examples": 1000, "min_steps": FinetuneConfig.min_steps,
}
# The recipe measured by benchmarks/demo_recipe.py (3 pretraining seeds per precision, each probed
# on the whole held-out task over 5 probe seeds): (precision, seed, held-out NSP, probe, twin, gain).
RECIPE_RUNS: tuple[tuple[str, int, float, float, float, float], ...] = (
    ('fp32', 42, 0.723, 0.783, 0.605, 0.1789),
    ('fp32', 0, 0.715, 0.774, 0.605, 0.1695),
    ('fp32', 1, 0.727, 0.774, 0.605, 0.1695),
    ('bf16', 42, 0.712, 0.789, 0.605, 0.1846),
    ('bf16', 0, 0.722, 0.742, 0.605, 0.13748),
    ('bf16', 1, 0.715, 0.761, 0.605, 0.1563),
)


def demo_params(precision: str = "auto") -> dict[str, Any]:
    """The demo's notebook parameters, pretraining in ``precision`` (auto, bf16 or fp32)."""
    if precision not in PRECISIONS:
        raise WorkbenchError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}; pass e.g. --precision fp32")
    return {**DEMO_PARAMS, "precision": precision}


def recipe_spread() -> dict[str, Any]:
    """The demo recipe's gain over its measured pretraining runs: runs, min, max, mean and 95% CI."""
    gains = [run[5] for run in RECIPE_RUNS]
    if len(gains) < 2:
        return {"runs": len(gains)}
    mean, low, high = mean_ci(gains)
    return {"runs": len(gains), "min": min(gains), "max": max(gains), "mean": mean, "low": low, "high": high,
            "precisions": sorted({run[0] for run in RECIPE_RUNS})}


def _is_demo_run(model: str) -> bool:
    """Whether ``model`` (a run dir or one of its checkpoints) was pretrained with the demo's steps and shape."""
    for folder in (Path(model), Path(model).parent):
        try:
            train = json.loads((folder / "run.json").read_text())["train"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return train.get("max_steps") == DEMO_STEPS and train.get("preset") == "tiny" and not train.get("init")
    return False


def recipe_note(gain: dict[str, Any], model: str = "") -> str:
    """Words for a one-run report: what its CI covers, and the recipe's spread over pretraining seeds."""
    n = gain["gain"]["n"]
    text = (f"This is one pretraining run: its 95% CI covers the probe's {n} seeds (random twins and label samples), "
            "not the pretraining seed, so it says how sure the comparison is for this checkpoint, not for the recipe.")
    spread = recipe_spread()
    if spread["runs"] < 2:
        return text
    whose = "This checkpoint's recipe (the demo's)" if model and _is_demo_run(model) else "For comparison, the demo's recipe"
    return (f"{text} {whose} measured over {spread['runs']} pretraining runs ({' and '.join(spread['precisions'])}): "
            f"gains from {100 * spread['min']:+.1f} to {100 * spread['max']:+.1f} points, mean {100 * spread['mean']:+.1f} "
            f"(95% CI {100 * spread['low']:+.1f} to {100 * spread['high']:+.1f}) "
            "(benchmarks/demo_recipe.py).")
