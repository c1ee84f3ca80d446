"""workbench: notebook-driven research workbench for BERT-style MLM/NSP pretraining.

The package's face: the configs and verbs a notebook needs, importable from ``workbench`` alone
(``from workbench import DataConfig, prepare_dataset, pretrain``), so a module can move and only
the table below changes. Configs and the error type load at once; every other name loads its
module on first use (PEP 562), so ``import workbench`` (and the CLI's start) does not pull in torch.

The modules live in stage subpackages (``data``, ``training``, ``evaluation``, ``analysis``,
``notebook``, ``report``); the table below maps each face name to its module. The fine-tuning verb
is ``finetune`` (its module is ``evaluation.finetuning``); ``finetune_model`` is its older name.
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
    "iter_documents": ("data.corpora", "iter_documents"),
    "prepare_dataset": ("data.examples", "prepare_dataset"),
    # pretraining
    "build_model": ("training.model", "build_model"),
    "pretrain": ("training.pretraining", "pretrain"),
    "list_checkpoints": ("training.checkpoint", "list_checkpoints"),
    # attention heads
    "load_attention_model": ("analysis.attention", "load_attention_model"),
    "head_statistics": ("analysis.attention", "head_statistics"),
    "notable_heads": ("analysis.attention", "notable_heads"),
    "head_importance": ("analysis.attention", "head_importance"),
    "head_view": ("notebook.views", "head_view"),
    "model_view": ("notebook.views", "model_view"),
    # downstream: tasks, fine-tuning, probes, learning curves
    "load_task": ("evaluation.tasks", "load_task"),
    "finetune": ("evaluation.finetuning", "finetune"),
    "finetune_model": ("evaluation.finetuning", "finetune"),
    "learning_curve": ("evaluation.fair_curves", "learning_curve"),
    "curve_summary": ("evaluation.fair_curves", "curve_summary"),
    "lr_grid": ("evaluation.fair_curves", "lr_grid"),
    "probe_models": ("evaluation.probes", "probe_models"),
    "probe_gain": ("evaluation.probes", "probe_gain"),
    "by_step": ("analysis.progression", "by_step"),
    # results that show themselves
    "HeadView": ("notebook.views", "HeadView"),
    "LearningCurve": ("evaluation.results", "LearningCurve"),
    "ProbeGain": ("evaluation.results", "ProbeGain"),
    "StatsTable": ("evaluation.results", "StatsTable"),
    "Table": ("evaluation.results", "Table"),
    "mask_example": ("notebook.explore", "mask_example"),
    "pairs_view": ("notebook.explore", "pairs_view"),
    "stats_table": ("notebook.explore", "stats_table"),
    # notebook helpers
    "record_metrics": ("report", "record_metrics"),
    "LiveCurves": ("notebook.widgets", "LiveCurves"),
    "rerun_panel": ("notebook.widgets", "rerun_panel"),
    "masking_explorer": ("notebook.widgets", "masking_explorer"),
    "attention_explorer": ("notebook.widgets", "attention_explorer"),
    # modules used as namespaces in the notebooks
    "attention": ("analysis.attention", None),
    "demo": ("demo", None),
    "explore": ("notebook.explore", None),
    "plots": ("notebook.plots", None),
    "probes": ("evaluation.probes", None),
    "views": ("notebook.views", None),
    "widgets": ("notebook.widgets", None),
}

__all__ = [
    "attention", "attention_explorer", "AttentionConfig", "build_model", "by_step", "curve_summary",
    "DataConfig", "demo", "explore", "finetune", "finetune_model", "FinetuneConfig", "head_importance", "head_statistics",
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
