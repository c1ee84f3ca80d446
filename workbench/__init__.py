"""workbench: notebook-driven research workbench for BERT-style MLM/NSP pretraining.

The package's face: the configs and verbs a notebook needs, importable from ``workbench`` alone
(``from workbench import DataConfig, prepare_dataset, pretrain``), so a module can move and only
the table below changes. Configs and the error type load at once; every other name loads its
module on first use (PEP 562), so ``import workbench`` (and the CLI's start) does not pull in torch.

The fine-tuning verb is ``finetune_model``: ``workbench.finetune`` is the submodule's name, and
Python rebinds a package attribute to the submodule whenever that submodule loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import (
    AttentionConfig,
    DataConfig,
    FinetuneConfig,
    MaskingConfig,
    ProbeConfig,
    TrainConfig,
)
from .errors import WorkbenchError

__version__ = "0.1.0"

# name -> (module, attribute in it); an attribute of None is the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    # data: the corpus and the pretraining examples
    "iter_documents": ("data", "iter_documents"),
    "prepare_dataset": ("pretraining_data", "prepare_dataset"),
    # pretraining
    "build_model": ("model", "build_model"),
    "pretrain": ("train", "pretrain"),
    "list_checkpoints": ("checkpoint", "list_checkpoints"),
    # attention heads
    "load_attention_model": ("attention", "load_attention_model"),
    "head_statistics": ("attention", "head_statistics"),
    "notable_heads": ("attention", "notable_heads"),
    "head_importance": ("attention", "head_importance"),
    "head_view": ("views", "head_view"),
    "model_view": ("views", "model_view"),
    # downstream: tasks, fine-tuning, probes, learning curves
    "load_task": ("tasks", "load_task"),
    "finetune_model": ("finetune", "finetune"),
    "learning_curve": ("curves", "learning_curve"),
    "curve_summary": ("curves", "curve_summary"),
    "lr_grid": ("curves", "lr_grid"),
    "probe_models": ("probes", "probe_models"),
    "probe_gain": ("probes", "probe_gain"),
    "by_step": ("progression", "by_step"),
    # results that show themselves
    "HeadView": ("views", "HeadView"),
    "LearningCurve": ("results", "LearningCurve"),
    "ProbeGain": ("results", "ProbeGain"),
    "StatsTable": ("results", "StatsTable"),
    "Table": ("results", "Table"),
    "mask_example": ("explore", "mask_example"),
    "pairs_view": ("explore", "pairs_view"),
    "stats_table": ("explore", "stats_table"),
    # notebook helpers
    "record_metrics": ("report", "record_metrics"),
    "LiveCurves": ("widgets", "LiveCurves"),
    "rerun_panel": ("widgets", "rerun_panel"),
    "masking_explorer": ("widgets", "masking_explorer"),
    "attention_explorer": ("widgets", "attention_explorer"),
    # modules used as namespaces in the notebooks
    "attention": ("attention", None),
    "demo": ("demo", None),
    "explore": ("explore", None),
    "plots": ("plots", None),
    "probes": ("probes", None),
    "views": ("views", None),
    "widgets": ("widgets", None),
}

__all__ = [
    "attention", "attention_explorer", "AttentionConfig", "build_model", "by_step", "curve_summary",
    "DataConfig", "demo", "explore", "finetune_model", "FinetuneConfig", "head_importance", "head_statistics",
    "head_view", "HeadView", "iter_documents", "learning_curve", "LearningCurve", "list_checkpoints",
    "LiveCurves", "load_attention_model", "load_task", "lr_grid", "mask_example", "masking_explorer",
    "MaskingConfig", "model_view", "notable_heads", "pairs_view", "plots", "prepare_dataset", "pretrain",
    "probe_gain", "probe_models", "ProbeConfig", "ProbeGain", "probes", "record_metrics", "rerun_panel",
    "stats_table", "StatsTable", "Table", "TrainConfig", "views", "widgets", "WorkbenchError", "__version__",
]


def __getattr__(name: str) -> Any:
    """Load a face name's module on first use and keep the name (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
