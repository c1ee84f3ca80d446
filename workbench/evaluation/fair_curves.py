"""Learning curves under a fair protocol: fine-tunes per (init, n_train, lr, seed), and their summary."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import AutoConfig

from ..config import FinetuneConfig, parse_lr_grid
from ..errors import WorkbenchError, one_line
from ..training.engine import TrainingDiverged
from .finetuning import Callback, classifier_path, finetune
from .splits import TaskData
from .stats import mean_ci, paired_difference
from .tasks import load_task

__all__ = ["LARGE_MODEL_LRS", "SMALL_MODEL_LRS", "curve_summary", "learning_curve", "lr_grid"]

SMALL_MODEL_LRS = (3e-4, 1e-3, 3e-3)  # hidden <= 256 (tiny, mini): measured in benchmarks/pretraining_gain.py
LARGE_MODEL_LRS = (3e-5, 1e-4)  # wider pretrained encoders (MiniLM: hidden 384)


def lr_grid(spec: str, cfg: FinetuneConfig) -> list[float]:
    """The learning rates a learning curve tries for ``spec``: ``cfg.lr_grid``, or by model width when auto."""
    if cfg.lr_grid == "none":
        return [cfg.lr]
    if cfg.lr_grid != "auto":
        return parse_lr_grid(cfg.lr_grid)
    path = classifier_path(spec.removeprefix("random:"))
    try:
        hidden = int(AutoConfig.from_pretrained(path).hidden_size)
    except Exception as exc:  # as load_classifier: no config, hub unreachable
        raise WorkbenchError(f"could not read the config of {spec!r}: {one_line(exc, 200)}; "
                             "pass a checkpoint dir or builtin:minilm") from None
    return list(SMALL_MODEL_LRS if hidden <= 256 else LARGE_MODEL_LRS)


def _curve_run(cfg: FinetuneConfig, data: TaskData) -> dict[str, Any]:
    """One fine-tune of a curve as a row; a diverged run is kept, with NaN scores, so the grid rejects it."""
    try:
        r = finetune(cfg, data).results
    except TrainingDiverged:
        return {"n_train": cfg.train_size or len(data.splits["train"]), "accuracy": math.nan, "macro_f1": math.nan,
                "best_validation_accuracy": math.nan, "best_step": 0, "steps": 0, "planned_steps": 0,
                "stopped_early": False, "plateau_steps": 0, "diverged": True, "train_seconds": 0.0,
                "wall_seconds": 0.0}
    return {"n_train": r["n_train"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
            "best_validation_accuracy": r["best_validation_accuracy"], "best_step": r["best_step"],
            "steps": r["steps"], "planned_steps": r["planned_steps"], "stopped_early": r["stopped_early"],
            # Steps trained past the best validation score: > 0 with stopped_early means the curve had flattened.
            "plateau_steps": r["steps"] - r["best_step"], "diverged": False, "train_seconds": r["train_seconds"],
            "wall_seconds": r["wall_seconds"]}


def _curve_point(base: FinetuneConfig, data: TaskData, init: str, n: int, lr: float, seed: int,
                 out: str | Path | None, verbose: bool) -> dict[str, Any]:
    """One run of a learning curve as its row (n == all training examples: train_size 0)."""
    name = init.replace("/", "_").replace(":", "-")
    run_out = str(Path(out) / name / f"n{n}-lr{lr:g}-seed{seed}") if out else ""
    n_all = len(data.splits["train"])
    cfg = replace(base, model=init, train_size=0 if n == n_all else n, seed=seed, lr=lr, out=run_out)
    r = _curve_run(cfg, data)
    if verbose:
        print(f"{init:>28}  n={n:<6} lr={lr:<7g} seed={seed}  acc={r['accuracy']:.4f}  "
              f"val={r['best_validation_accuracy']:.4f}  steps={r['steps']}  {r['wall_seconds']:.0f}s", file=sys.stderr)
    return {"n_train": r.pop("n_train"), "init": init, "seed": seed, **r, "lr": lr}


def _choose_lr(block: list[dict[str, Any]]) -> float:
    """The grid point with the best mean validation accuracy over seeds (ties: the first); NaN counts as -1."""
    by_lr: dict[float, list[float]] = {}
    for row in block:
        val = row["best_validation_accuracy"]
        by_lr.setdefault(row["lr"], []).append(-1.0 if math.isnan(val) else val)
    best = max(by_lr, key=lambda lr: float(np.mean(by_lr[lr])))
    if all(row["diverged"] for row in block if row["lr"] == best):
        raise WorkbenchError(f"every learning rate of the grid ({', '.join(f'{lr:g}' for lr in by_lr)}) diverged; "
                             "pass a lower --lr-grid")
    return best


def learning_curve(inits: Sequence[str], task: str | TaskData, sizes: Sequence[int] = (100, 300, 1000, 3000, 0),
                   seeds: Sequence[int] = (0, 1, 2), base: FinetuneConfig | None = None,
                   out: str | Path | None = None, verbose: bool = True,
                   on_run: Callback | None = None) -> pd.DataFrame:
    """Fine-tunes under the fair protocol; a row per (init, n_train, lr, seed), ``chosen`` marking the kept lr.

    Fair protocol: every init gets the same label samples (seeded by ``seed``) and seeds, its lr grid
    (``base.lr_grid``), a schedule of ``base.curve_epochs`` passes but at least ``base.curve_min_steps``
    steps, and early stopping on validation once past that minimum (``patience``, best weights kept).
    Per (init, n_train) the lr with the best mean validation accuracy over the first
    ``base.lr_grid_seeds`` seeds is chosen, and the other seeds run at it. ``inits`` are --model specs
    (``random:X``: the random twin of X); size 0 is the whole training split; the test split is the
    same for every run (split_seed). ``on_run`` gets each row once its (init, n_train) block is done.
    Aggregate with :func:`curve_summary`.
    """
    base = base or FinetuneConfig()
    base = replace(base, task=task.name if isinstance(task, TaskData) else task, progress=False,
                   min_steps=max(base.min_steps, base.curve_min_steps), epochs=max(base.epochs, base.curve_epochs))
    data = task if isinstance(task, TaskData) else load_task(base)
    n_all = len(data.splits["train"])
    counts = list(dict.fromkeys(n_all if size == 0 or size >= n_all else size for size in sizes))
    seeds = list(seeds)
    rows: list[dict[str, Any]] = []
    for init in inits:
        grid = lr_grid(init, base)
        # The grid on the first k seeds, the other seeds at the lr validation chose (one lr: every seed).
        k = base.lr_grid_seeds or len(seeds) if len(grid) > 1 else len(seeds)
        for n in counts:
            block = [_curve_point(base, data, init, n, lr, seed, out, verbose) for lr in grid for seed in seeds[:k]]
            chosen = _choose_lr(block)
            block += [_curve_point(base, data, init, n, chosen, seed, out, verbose) for seed in seeds[k:]]
            for row in block:
                row["chosen"] = row["lr"] == chosen
                rows.append(row)
                if on_run is not None:
                    on_run(dict(row))
    return pd.DataFrame(rows)


def curve_summary(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (init, n_train), over seeds at the chosen lr: mean, std and t interval of accuracy and macro-F1,
    and the paired gain over the random twin (``random:<init>``, matched by seed) with its interval."""
    kept = runs[runs["chosen"].astype(bool)] if "chosen" in runs else runs
    out = []
    for (init, n), part in kept.groupby(["init", "n_train"], sort=False):
        mean, low, high = mean_ci(part["accuracy"], confidence)
        row = {"init": init, "n_train": n, "runs": len(part), "lr": part["lr"].iloc[0] if "lr" in part else math.nan,
               "accuracy_mean": mean, "accuracy_std": float(part["accuracy"].std()) if len(part) > 1 else 0.0,
               "accuracy_ci_low": low, "accuracy_ci_high": high, "macro_f1_mean": float(part["macro_f1"].mean()),
               "macro_f1_std": float(part["macro_f1"].std()) if len(part) > 1 else 0.0,
               "baseline": "", "gain": math.nan, "gain_ci_low": math.nan, "gain_ci_high": math.nan, "verdict": ""}
        twin = kept[(kept["init"] == f"random:{init}") & (kept["n_train"] == n)]
        if not init.startswith("random:") and len(twin):
            pair = part.merge(twin, on="seed", suffixes=("", "_twin"))  # the same seeds: the same label samples
            if len(pair):
                d = paired_difference(pair["accuracy"], pair["accuracy_twin"], confidence)
                row.update(baseline=f"random:{init}", gain=d["mean"], gain_ci_low=d["low"], gain_ci_high=d["high"],
                           verdict=d["verdict"])
        out.append(row)
    summary = pd.DataFrame(out)
    return summary.sort_values(["init", "n_train"], kind="stable", key=_init_order(runs)).reset_index(drop=True)


def _init_order(runs: pd.DataFrame) -> Callable[[pd.Series], pd.Series]:
    order = {init: i for i, init in enumerate(dict.fromkeys(runs["init"]))}
    return lambda col: col.map(order) if col.name == "init" else col
