"""A pretraining run's ``--out`` folder: what is in it, may this run write there, what it resumes.

Only entries the workbench recorded in OUT's manifest (:mod:`workbench.outputs`) are replaced
or deleted; a foreign entry under a name this run writes (run.json, metrics.jsonl, a
checkpoint-STEP it will save) is refused before any work, with or without --overwrite.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import WorkbenchError
from ..outputs import OutputDir, check_out_path, read_json_object
from . import trackers as tracking
from .checkpoint import (
    CHECKPOINT_PREFIX,
    RUN_CONFIG,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_rng_state,
    load_training_state,
    loadable_checkpoint,
    save_checkpoint,
)

__all__ = ["EVAL_FILE", "METRICS_FILE", "RUN_FILE", "RunFolder"]

RUN_FILE, METRICS_FILE, EVAL_FILE = "run.json", "metrics.jsonl", "eval.json"
# TrainConfig fields that may change on --resume: where outputs go and how often, not the maths.
_RUN_CONTROL = ("data", "out", "resume", "overwrite", "eval_every", "eval_batch_size",
                "save_every", "keep_checkpoints", "keep_every", "log_every", "progress", "attention", "report_to")
Barrier = Callable[[], None]


class RunFolder:
    """The one owner of a pretraining run's --out: checked on creation, claimed by :meth:`claim`."""

    def __init__(self, cfg: TrainConfig, report_to: Sequence[str], is_main: bool) -> None:
        # Every process checks, read-only, before any work: a refusal costs nothing.
        self.cfg, self.report_to, self.is_main = cfg, tuple(report_to), is_main
        self.path = check_out_path(cfg.out, writable=True)  # a read-only or full --out: one line, now
        self.outdir: OutputDir | None = None  # the main process's writer, once claimed
        self.resume_from, self.ours = self._check()

    def _check(self) -> tuple[Path | None, bool]:
        """The checkpoint to resume from, and whether OUT holds a run of ours; refuses what may not be written."""
        cfg, out = self.cfg, self.path
        view = OutputDir.read(out, strict=True)  # a damaged manifest is refused, not read as owning nothing
        foreign = view.foreign()
        ours = RUN_FILE in view.entries and (out / RUN_FILE).is_file() and view.owns(RUN_FILE)
        resume_from: Path | None = None
        if cfg.resume:
            if foreign and not ours:
                raise WorkbenchError(f"--resume: {out} holds no workbench run (no {RUN_FILE} written by workbench); "
                                     "pass the --out of the run to continue")
            resume_from = self._loadable_checkpoint() if ours else None
        elif ours and not cfg.overwrite:
            last = latest_checkpoint(out)
            where = f"its last checkpoint is step {checkpoint_step(last)}" if last else "it has no checkpoint"
            raise WorkbenchError(f"{out} holds a previous run ({where}); pass --resume to continue it or --overwrite to start over")
        elif foreign and not ours and not cfg.overwrite:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise WorkbenchError(
                f"--out {out} holds files that are not a workbench run ({shown}); "
                "pass an empty or new --out, or --overwrite to write beside them (they are kept)"
            )
        view.check_writable(self._planned_names(resume_from))
        return resume_from, ours

    def _planned_names(self, resume_from: Path | None) -> list[str]:
        """The entries this run will write in --out: its files and the checkpoints it will save."""
        cfg = self.cfg
        start = checkpoint_step(resume_from) if resume_from is not None else 0
        steps = set(range(cfg.save_every, cfg.max_steps + 1, cfg.save_every)) if cfg.save_every else set()
        steps.add(cfg.max_steps)
        return ([RUN_FILE, METRICS_FILE, EVAL_FILE] + tracking.entries(self.report_to)
                + [f"{CHECKPOINT_PREFIX}{s}" for s in sorted(steps) if s > start])

    def _loadable_checkpoint(self) -> Path | None:
        """The newest checkpoint that loads; each newer damaged one is named on stderr."""
        good, damaged = loadable_checkpoint(self.path)
        for path, problem in damaged if self.is_main else ():
            instead = f"resuming from {good.name}, the newest checkpoint that loads" if good else "none loads"
            print(f"warning: --resume: checkpoint {path} is damaged ({problem}); {instead}", file=sys.stderr)
        if damaged and good is None:
            raise WorkbenchError(f"--resume: every checkpoint in {self.path} is damaged ({damaged[0][0].name}: "
                                 f"{damaged[0][1]}); pass --overwrite to start over, or another --out")
        return good

    def claim(self, run_config: dict[str, Any], barrier: Barrier) -> None:
        """Compare a resumed run's config with this one, then the main process claims --out."""
        cfg, out, resume_from = self.cfg, self.path, self.resume_from
        if cfg.resume:
            previous = read_json_object(resume_from / RUN_CONFIG if resume_from else out / RUN_FILE) if self.ours else None
            if previous is not None:
                self._check_same_config(previous, run_config)
            if resume_from is None and self.is_main:
                print(f"--resume: no checkpoint in {out} yet; starting from step 0", file=sys.stderr)
        barrier()  # every process has checked before anything changes
        self.outdir = OutputDir.open(out, "pretrain") if self.is_main else None
        if self.outdir is not None and resume_from is None:
            if self.ours:  # --overwrite, or --resume before any checkpoint: drop only our own files
                for name in [p.name for p in list_checkpoints(out)] + [METRICS_FILE, EVAL_FILE]:
                    self.outdir.remove(name)
            self.outdir.write_json(RUN_FILE, run_config)
        if self.outdir is not None:
            self.outdir.claim(METRICS_FILE)  # appended to by log
        barrier()

    def _check_same_config(self, previous: dict[str, Any], now: dict[str, Any]) -> None:
        diffs = []
        for section in ("train", "masking"):
            for key, value in now[section].items():
                old = previous.get(section, {}).get(key, value)
                if section == "train" and key in _RUN_CONTROL:
                    continue
                if old != value:
                    diffs.append(f"{key} {old!r} -> {value!r}")
        old_key, new_key = previous.get("data", {}).get("cache_key"), now["data"]["cache_key"]
        if old_key != new_key:
            diffs.append(f"data (cache key {old_key} -> {new_key})")
        if diffs:
            raise WorkbenchError(
                f"--resume: {self.cfg.out} was run with a different config: {'; '.join(diffs)}; "
                "pass the original values, or a new --out (or --overwrite to start over)"
            )

    def adopt_trackers(self) -> None:
        """Record the tracker files and dirs a fresh start wrote in OUT's manifest."""
        for name in tracking.entries(self.report_to) if self.outdir is not None else ():
            if (self.path / name).exists():
                self.outdir.adopt(name, "log" if (self.path / name).is_file() else "dir")

    def resume_state(self, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The training state to resume from and this process's generator states (None: fewer processes then)."""
        return load_training_state(self.resume_from), load_rng_state(self.resume_from, rank)

    def resumed_history(self, step: int, barrier: Barrier) -> list[dict[str, Any]]:
        """The metrics logged up to ``step``; what a killed run logged after its last checkpoint is forgotten."""
        metrics = self.path / METRICS_FILE
        if not metrics.is_file():
            return []
        kept = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        history = [m for m in kept if m.get("step", 0) <= step]
        barrier()  # every process has read the file before the main one rewrites it
        if self.outdir is not None:
            self.outdir.write_text(METRICS_FILE, "".join(json.dumps(m) + "\n" for m in history), kind="log")
        return history

    def log(self, metrics: dict[str, Any]) -> None:
        """Append one metrics dict to OUT/metrics.jsonl (call on the main process)."""
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def save(self, step: int, model: Any, tokenizer: Any, run_config: dict[str, Any], state: dict[str, Any],
             rngs: list[dict[str, Any]]) -> Path:
        """Write OUT/checkpoint-STEP and prune old ones (call on the main process)."""
        path = save_checkpoint(self.outdir or self.cfg.out, step, model, tokenizer, run_config, state, rngs,
                               self.cfg.keep_checkpoints, self.cfg.keep_every)
        if self.outdir is not None:
            self.outdir.refresh(METRICS_FILE)  # a copy of the run folder is still recognised as ours
        return path

    def write_summary(self, summary: dict[str, Any]) -> None:
        """OUT/eval.json, the run's last word (main process only; a no-op elsewhere)."""
        if self.outdir is not None:
            self.outdir.write_json(EVAL_FILE, summary)
            self.outdir.refresh(METRICS_FILE)
