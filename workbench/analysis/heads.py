"""One per-head attention statistics run (what `workbench heads` does): sample corpus segments,
collect a checkpoint's attentions over them, and write ``head_stats.csv`` and ``run.json``
through :class:`OutputDir`.

The heavy modules (torch, the model) are imported after the output folder is checked, so a
refused ``--out`` costs no model load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import AttentionConfig
from ..outputs import OutputDir, check_writable_folder

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HEADS_RUN", "HEAD_STATS", "HeadsResult", "run_heads"]

HEAD_STATS = "head_stats.csv"  # one row per (layer, head)
HEADS_RUN = "run.json"  # the config and the provenance of the numbers


@dataclass
class HeadsResult:
    """A finished heads run: the statistics, the heads that stand out, and where they were written."""

    stats: pd.DataFrame  # one row per (layer, head), attention.STAT_COLUMNS
    notable: pd.DataFrame  # the rows of heads with a share >= 0.5 on [CLS]/[SEP]/prev/next
    n_segments: int
    path: Path  # the head_stats.csv written


def run_heads(cfg: AttentionConfig, out_dir: str | Path) -> HeadsResult:
    """Per-head statistics of ``cfg.model`` over ``cfg.num_segments`` segments of ``cfg.corpus``, written to ``out_dir``."""
    out = OutputDir.open(out_dir, "heads", create=False)  # before any work: a file or a foreign csv is refused
    out.check_writable([HEAD_STATS, HEADS_RUN])
    check_writable_folder(out.path, "--out")

    from . import attention

    # Sample the segments, then measure every head at the tokenizer's own [CLS]/[SEP].
    model, tokenizer = attention.load_attention_model(cfg.model)
    segments = attention.corpus_segments(cfg, tokenizer)
    stats = attention.compute_head_stats(model, segments, tokenizer, max_length=cfg.max_seq_length)
    # The csv, then run.json: each written atomically and recorded in OUT's manifest.
    out.write_text(HEAD_STATS, stats.to_csv(index=False, float_format="%.5f"))
    out.write_json(HEADS_RUN, _run_record(cfg, model))
    return HeadsResult(stats, attention.notable_heads(stats), len(segments), out.path / HEAD_STATS)


def _run_record(cfg: AttentionConfig, model: Any) -> dict[str, Any]:
    """The run.json beside head_stats.csv: the config and where the numbers came from."""
    from ..provenance import collect

    dtype = next(model.parameters()).dtype
    record = collect(precision="bf16" if str(dtype) == "torch.bfloat16" else "fp32",
                     attention=getattr(model.config, "_attn_implementation", None), num_processes=1,
                     seed=cfg.seed, data_cache_key=None)
    return {"command": "heads", "config": dataclasses.asdict(cfg), "provenance": record}
