"""Checkpoints in Hugging Face format, plus the state that makes ``--resume`` continue exactly.

``OUT/checkpoint-STEP/`` holds:

- ``model.safetensors``, ``config.json``: the BertForPreTraining (``save_pretrained``), loadable with
  AutoModelForPreTraining, AutoModelForMaskedLM and ``pipeline("fill-mask", model=dir)``;
- the tokenizer files (``save_pretrained``) and ``workbench.json`` (the run's config);
- ``training_state.pt``: optimizer, scheduler, data position, masking generator, counters;
- ``rng_state_RANK.pt``: python, numpy and torch (and CUDA) generators of each process.

A checkpoint is written to a hidden temporary sibling and renamed into place, so a directory
named ``checkpoint-STEP`` is always complete when written; it is recorded in the folder's
manifest (:mod:`workbench.outputs`), and only recorded checkpoints are listed, pruned or
resumed from: a user's folder named ``checkpoint-7`` is left alone. A checkpoint damaged later
(a truncated copy, a full disk) is detected by :func:`checkpoint_problem` before it is loaded.
State files hold only tensors and plain containers and are read with
``torch.load(weights_only=True)``, never arbitrary pickle.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from transformers.utils import logging as hf_logging

from ..errors import WorkbenchError
from ..outputs import MANIFEST, DiskFullError, OutputDir, write_json_atomic

__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_CONFIG",
    "TRAINING_STATE",
    "capture_rng_state",
    "check_model_checkpoint",
    "checkpoint_problem",
    "checkpoint_step",
    "clean_stale",
    "latest_checkpoint",
    "list_checkpoints",
    "loadable_checkpoint",
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
WEIGHTS = "model.safetensors"
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_step(path: str | Path) -> int:
    """The step of a ``checkpoint-STEP`` directory."""
    match = _NAME.match(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not a checkpoint-STEP directory")
    return int(match.group(1))


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The workbench's checkpoints in ``out_dir``, oldest first (damaged ones included).

    In a folder with a manifest, only the checkpoints it records; in one written before
    manifests existed, the ``checkpoint-STEP`` dirs that hold a training state.
    """
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if _NAME.match(p.name) and p.is_dir()]
    if (out / MANIFEST).is_file():
        owner = OutputDir.read(out)
        found = [p for p in found if p.name in owner.entries and owner.owns(p.name)]
    else:
        found = [p for p in found if (p / TRAINING_STATE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint (it may be damaged: see :func:`loadable_checkpoint`), or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _owner(out_dir: str | Path | OutputDir) -> OutputDir:
    return out_dir if isinstance(out_dir, OutputDir) else OutputDir.open(out_dir, "pretrain")


def prune_checkpoints(out_dir: str | Path | OutputDir, keep: int, keep_every: int = 0) -> list[Path]:
    """Delete the workbench's checkpoints but the newest ``keep`` and those whose step is a multiple of
    ``keep_every`` (0: none); returns the deleted paths."""
    owner = _owner(out_dir)
    found = list_checkpoints(owner.path)
    doomed = [p for p in found[: max(len(found) - keep, 0)]
              if not (keep_every and checkpoint_step(p) % keep_every == 0)]
    return [path for path in doomed if owner.remove(path.name)]


def clean_stale(out_dir: str | Path) -> list[str]:
    """Remove temporaries left by a process killed while saving; returns their names."""
    if not Path(out_dir).is_dir():
        return []
    return OutputDir.open(out_dir, "pretrain", create=False).clean_temporaries()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, pickle.UnpicklingError):  # weights_only refused a non-tensor object
        return "it holds objects other than tensors, and no pickle is ever executed"
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split(". ")[0].rstrip(".")[:160]  # torch's zip errors go on for sentences


def checkpoint_problem(path: str | Path, state: bool = True) -> str | None:
    """What makes checkpoint ``path`` unusable (a missing, truncated or unreadable file), or None.

    Cheap: sizes against the manifest, the safetensors header, and the state files memory-mapped
    with ``weights_only=True``. ``state=False`` checks only what loading the model needs.
    """
    path = Path(path)
    if not path.is_dir():
        return "it is not a folder"
    owner = OutputDir.read(path.parent)
    if path.name in owner.entries and (why := owner.verify(path.name)):
        return why.removeprefix(f"{path.name}/")
    needed = ["config.json", WEIGHTS] + ([RUN_CONFIG, TRAINING_STATE] if state else [])
    for name in needed:
        if not (path / name).is_file():
            return f"{name} is missing"
    for name in ("config.json", RUN_CONFIG) if state else ("config.json",):
        try:
            json.loads((path / name).read_text())
        except (OSError, ValueError) as exc:
            return f"{name} is unreadable ({_reason(exc)})"
    try:
        with safe_open(str(path / WEIGHTS), "pt") as f:
            f.keys()  # the header is checked against the file size: a truncated file fails here
    except Exception as exc:  # SafetensorError, OSError: both mean unreadable
        return f"{WEIGHTS} is unreadable ({_reason(exc)})"
    if state:
        for file in [path / TRAINING_STATE, *sorted(path.glob("rng_state_*.pt"))]:
            try:
                torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # RuntimeError (zip), UnpicklingError, EOFError
                return f"{file.name} is unreadable ({_reason(exc)})"
    return None


def loadable_checkpoint(out_dir: str | Path, state: bool = True) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint in ``out_dir`` that loads, and the newer damaged ones with their problems."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(out_dir)):
        problem = checkpoint_problem(path, state)
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    return None, damaged


def check_model_checkpoint(path: str | Path, flag: str = "--model") -> None:
    """A one-line WorkbenchError if the model in checkpoint dir ``path`` is damaged, offering the previous good one."""
    path = Path(path)
    if not ((path / WEIGHTS).exists() or _NAME.match(path.name)):
        return  # not a saved model of this kind (a hub name, a sharded model): its loader decides
    problem = checkpoint_problem(path, state=False)
    if problem is None:
        return
    earlier = ([p for p in list_checkpoints(path.parent) if checkpoint_step(p) < checkpoint_step(path)]
               if _NAME.match(path.name) else [])
    good = next((p for p in reversed(earlier) if checkpoint_problem(p, state=False) is None), None)
    offer = (f"pass the previous good one, {flag} {good}" if good is not None
             else "pass another checkpoint (no earlier one here loads)")
    raise WorkbenchError(f"checkpoint {path} is damaged ({problem}); {offer}")


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


def save_checkpoint(out_dir: str | Path | OutputDir, step: int, model: Any, tokenizer: Any,
                    run_config: dict[str, Any], training_state: dict[str, Any],
                    rng_states: list[dict[str, Any]], keep: int, keep_every: int = 0) -> Path:
    """Write ``OUT/checkpoint-STEP`` atomically and record it; keep the newest ``keep`` and every ``keep_every``-th."""
    owner = _owner(out_dir)

    def build(tmp: Path) -> None:
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

    # e.g. re-saving a step after a resume: the old copy is swapped out, then dropped
    try:
        final = owner.replace_dir(f"{CHECKPOINT_PREFIX}{step}", build)
    except DiskFullError:  # the temporary is gone and nothing was pruned: the last good checkpoint stands
        good, _ = loadable_checkpoint(owner.path)
        kept = f"the last good checkpoint, {good}, is intact" if good else "no earlier checkpoint was saved"
        raise WorkbenchError(f"no space left on the device of {owner.path} to save {CHECKPOINT_PREFIX}{step}; "
                             f"{kept}; free some space and continue with --resume") from None
    prune_checkpoints(owner, keep, keep_every)
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
