"""When does pretraining start to help? Probes and head statistics at every kept checkpoint of a run.

:func:`by_step` loads each ``checkpoint-STEP`` of a pretraining run (keep them with
``TrainConfig.keep_every``), fits the layer probes of :mod:`workbench.evaluation.probes` on a downstream
task (the held-out topic task in notebook 04), measures Clark et al.'s head statistics on
held-out texts, and puts the run's own evaluation at that step (MLM and NSP accuracy from
``metrics.jsonl``) beside them, one row per step. A random twin of the same shape, probed with
the same seeds, gives the line a pretrained step has to clear. The probes' settings come from a
:class:`~workbench.config.ProbeConfig`; the answer is a :class:`~workbench.evaluation.results.ByStep`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ProbeConfig
from ..errors import WorkbenchError
from ..evaluation.probes import (
    L2_GRID,
    best_layer,
    layer_features,
    load_encoder,
    probe_models,
    probe_seeds,
)
from ..evaluation.results import ByStep
from ..evaluation.splits import TaskData
from ..evaluation.stats import mean_ci, paired_difference
from ..training.checkpoint import checkpoint_step, list_checkpoints
from .attention import compute_head_stats

__all__ = ["EVAL_COLUMNS", "HEAD_COLUMNS", "by_step", "head_summary", "run_evals"]

EVAL_COLUMNS = ["mlm_accuracy", "nsp_accuracy", "mlm_loss", "unigram_accuracy", "nsp_majority_accuracy"]
# Per checkpoint: the mean over heads of these statistics, and the strongest previous/next-token head.
HEAD_COLUMNS = ["attn_cls", "attn_sep", "attn_prev", "attn_next", "entropy"]
Callback = Callable[[str], None]


def run_evals(run_dir: str | Path) -> pd.DataFrame:
    """The run's held-out evaluations from ``metrics.jsonl``: one row per step, :data:`EVAL_COLUMNS`."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return pd.DataFrame(columns=["step", *EVAL_COLUMNS])
    rows = []
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("type") == "eval":
            rows.append({"step": int(record["step"]), **{k: record.get(k) for k in EVAL_COLUMNS}})
    frame = pd.DataFrame(rows, columns=["step", *EVAL_COLUMNS])
    # A resumed run may log a step twice: keep the last record of each.
    return frame.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True).astype(
        {k: float for k in EVAL_COLUMNS})


def head_summary(stats: pd.DataFrame) -> dict[str, float]:
    """Mean over heads of :data:`HEAD_COLUMNS` (``heads_<stat>``), and the strongest prev/next-token head."""
    out = {f"heads_{name}": float(stats[name].mean()) for name in HEAD_COLUMNS}
    out["heads_prev_max"] = float(stats["attn_prev"].max())
    out["heads_next_max"] = float(stats["attn_next"].max())
    return out


def _probe_seeds(features: Any, data: TaskData, seeds: Sequence[int], train_size: int,
                 l2_grid: Sequence[float]) -> tuple[list[float], list[int]]:
    """Per seed: test accuracy of the layer best on validation, and that layer."""
    best = best_layer(probe_seeds(features, data, seeds, train_size, l2_grid).assign(init=""), "").loc[list(seeds)]
    return best["test_accuracy"].astype(float).tolist(), best["layer"].astype(int).tolist()


def by_step(run_dir: str | Path, data: TaskData, cfg: ProbeConfig | None = None, *,
            baseline: bool | Mapping[str, Any] = True, l2_grid: Sequence[float] = L2_GRID,
            progress: Callback | None = None) -> ByStep:
    """One row per kept checkpoint: step, probe accuracy (mean, CI over seeds), head statistics, MLM/NSP accuracy.

    From ``cfg``: the probes' seeds, train size, max length and batch size (as
    :func:`~workbench.evaluation.probes.probe_models`), and ``progression_segments`` held-out texts for the
    head statistics. ``baseline``: True probes a random twin of the last checkpoint with the same
    seeds (its accuracy and the last step's paired gain over it); a ``probes.probe_gain`` result
    of this run against its twin, with the same seeds, gives its twin's accuracy without probing
    again; False: no baseline.
    """
    cfg = cfg or ProbeConfig()
    seeds, train_size = list(range(cfg.probe_seeds)), cfg.probe_train_size
    max_length, batch_size = cfg.probe_max_length, cfg.probe_batch_size
    if isinstance(baseline, Mapping) and list(baseline["seeds"]) != seeds:
        raise WorkbenchError(f"the baseline was probed with seeds {list(baseline['seeds'])}, by_step probes {seeds}; "
                             "pass the probe_gain of the same ProbeConfig, or baseline=True to probe the twin here")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise WorkbenchError(f"{run_dir} has no checkpoint-STEP dirs; pass a pretraining run dir "
                             "(keep more than the last with --keep-every)")
    rng = np.random.default_rng(0)
    test = data.splits["test"]["text"].tolist()
    n_texts = min(cfg.progression_segments, len(test))
    texts = [test[i] for i in np.sort(rng.choice(len(test), n_texts, replace=False))]
    rows = []
    for path in checkpoints:
        model, tok = load_encoder(str(path), attention="eager")  # eager: attention weights for the heads
        features = layer_features(model, tok, data, max_length, batch_size, path.name)
        accuracies, layers = _probe_seeds(features, data, seeds, train_size, l2_grid)
        mean, low, high = mean_ci(accuracies)
        heads = head_summary(compute_head_stats(model, texts, tok, max_length=max_length))
        rows.append({"step": checkpoint_step(path), "checkpoint": str(path), "probe_accuracy": mean,
                     "probe_low": low, "probe_high": high, "probe_layer": int(np.bincount(layers).argmax()),
                     **heads})
        if progress is not None:
            progress(f"step {rows[-1]['step']}: probe {mean:.3f}, mean attention to [CLS] {heads['heads_attn_cls']:.2f}")
    frame = pd.DataFrame(rows).merge(run_evals(run_dir), on="step", how="left")
    result = ByStep(frame, data.name, seeds, len(data.splits["test"]))
    if isinstance(baseline, Mapping):  # the twin this run was already probed against: its accuracy is the line
        result.random_accuracy = tuple(baseline["baseline_accuracy"])
    elif baseline:  # the line to clear: a random twin, same shape, seeds and layer selection; accuracies: last step's
        twin = f"random:{checkpoints[-1]}"
        best = best_layer(probe_models([twin], data, cfg, l2_grid=l2_grid), twin)
        result.random_accuracy = mean_ci(best.loc[seeds, "test_accuracy"].tolist())
        result.gain = paired_difference(accuracies, best.loc[seeds, "test_accuracy"].tolist())
    return result
