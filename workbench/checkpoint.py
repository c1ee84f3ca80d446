"""Checkpoints in Hugging Face format, plus the state that makes ``--resume`` continue exactly.

``OUT/checkpoint-STEP/`` holds:

- ``model.safetensors``, ``config.json``: the BertForPreTraining (``save_pretrained``), loadable with
  AutoModelForPreTraining, AutoModelForMaskedLM and ``pipeline("fill-mask", model=dir)``;
- the tokenizer files (``save_pretrained``) and ``workbench.json`` (the run's config);
- ``training_state.pt``: optimizer, scheduler, data position, masking generator, counters;
- ``rng_state_RANK.pt``: python, numpy and torch (and CUDA) generators of each process.

A checkpoint is written to a hidden temporary sibling and renamed into place, so a directory
named ``checkpoint-STEP`` is always complete. State files hold only tensors and plain
containers and are read with ``torch.load(weights_only=True)``, never arbitrary pickle.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_CONFIG",
    "TRAINING_STATE",
    "capture_rng_state",
    "checkpoint_step",
    "clean_stale",
    "latest_checkpoint",
    "list_checkpoints",
    "load_rng_state",
    "load_training_state",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "write_json_atomic",
]

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE = "training_state.pt"
RUN_CONFIG = "workbench.json"
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to a temporary sibling, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def checkpoint_step(path: str | Path) -> int:
    """The step of a ``checkpoint-STEP`` directory."""
    match = _NAME.match(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not a checkpoint-STEP directory")
    return int(match.group(1))


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``out_dir``, oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if _NAME.match(p.name) and (p / TRAINING_STATE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def prune_checkpoints(out_dir: str | Path, keep: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and those whose step is a multiple of
    ``keep_every`` (0: none); returns the deleted paths."""
    found = list_checkpoints(out_dir)
    doomed = [p for p in found[: max(len(found) - keep, 0)]
              if not (keep_every and checkpoint_step(p) % keep_every == 0)]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def clean_stale(out_dir: str | Path) -> None:
    """Remove temporary checkpoint dirs left by a process killed while saving."""
    out = Path(out_dir)
    if out.is_dir():
        for p in out.glob(f".{CHECKPOINT_PREFIX}*.tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch (CPU and CUDA) generator states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),  # (version, tuple of ints, None): plain containers
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str | Path, step: int, model: Any, tokenizer: Any,
                    run_config: dict[str, Any], training_state: dict[str, Any],
                    rng_states: list[dict[str, Any]], keep: int, keep_every: int = 0) -> Path:
    """Write ``OUT/checkpoint-STEP`` atomically; keep the newest ``keep`` and every ``keep_every``-th."""
    out = Path(out_dir)
    final = out / f"{CHECKPOINT_PREFIX}{step}"
    tmp = out / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    try:
        model.save_pretrained(str(tmp))  # safetensors; the tied decoder is stored once
        tokenizer.save_pretrained(str(tmp))
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    write_json_atomic(tmp / RUN_CONFIG, run_config)
    for rank, rng in enumerate(rng_states):
        torch.save(rng, tmp / f"rng_state_{rank}.pt")
    torch.save(training_state, tmp / TRAINING_STATE)
    if final.exists():  # e.g. re-saving a step after a resume: swap, then drop the old copy
        old = out / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    prune_checkpoints(out, keep, keep_every)
    return final


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint (tensors and plain containers only)."""
    return torch.load(Path(path) / TRAINING_STATE, map_location="cpu", weights_only=True)


def load_rng_state(path: str | Path, rank: int) -> dict[str, Any] | None:
    """Process ``rank``'s generator states in a checkpoint, or None if it had fewer processes."""
    file = Path(path) / f"rng_state_{rank}.pt"
    if not file.is_file():
        return None
    return torch.load(file, map_location="cpu", weights_only=True)
