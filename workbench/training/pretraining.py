"""BERT pretraining on Hugging Face accelerate: one loop for CPU, one GPU and ``accelerate launch``.

Every process collates the whole global batch (batch_size x processes x grad_accum examples)
with the same masking generator and takes its own rows, and losses are normalised by the
global counts of masked tokens and pairs. So the masks, the gradient and the logged loss of
a step do not depend on how the batch is split over processes and accumulation steps, and
``--resume`` continues exactly: the data position, the masking generator, the optimizer,
the scheduler and every RNG are in the checkpoint.

Who owns what: :mod:`workbench.training.engine` the device, precision, optimizer and optimizer step;
:mod:`workbench.training.runfolder` the --out folder and what a resume loads; this module the loop.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import BertForPreTraining

from .. import __version__
from ..config import MaskingConfig, TrainConfig
from ..data.examples import PretrainingData
from ..data.labels import IGNORE_INDEX
from ..data.masking import PretrainingCollator
from ..errors import WorkbenchError
from ..provenance import collect as collect_provenance
from . import trackers as tracking
from .checkpoint import CHECKPOINT_PREFIX, capture_rng_state, checkpoint_step, restore_rng_state
from .engine import Engine, resolve_attention
from .model import PretrainingModule
from .run_setup import (
    build_pretraining_model,
    check_data,
    load_data,
    majority_accuracy,
    unigram_token,
)
from .runfolder import RunFolder

__all__ = ["Callback", "PretrainResult", "Pretrainer", "ResumableBatchSampler", "pretrain"]

Callback = Callable[[dict[str, Any]], None]
_COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label")
_EVAL_SEED_OFFSET = 1_000_003  # eval masks: fixed per run, never the training stream


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless global batches from a seeded permutation per epoch; (epoch, position) is the state."""

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.epoch, self.position = 0, 0  # position: batches already handed out this epoch

    def __len__(self) -> int:
        return self.num_examples // self.batch_size  # full batches per epoch; the rest are dropped

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            g = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
            order = torch.randperm(self.num_examples, generator=g)
            while self.position < len(self):
                start = self.position * self.batch_size
                self.position += 1  # counted when handed out: num_workers=0 never prefetches
                yield order[start:start + self.batch_size].tolist()
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """Where the next batch comes from."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


@dataclass
class PretrainResult:
    """What a run produced."""

    out: Path
    checkpoint: Path | None
    eval: dict[str, Any]
    history: list[dict[str, Any]] = field(repr=False)
    model: BertForPreTraining = field(repr=False)
    tokenizer: Any = field(repr=False)
    steps: int = 0
    tokens_per_second: float = 0.0
    wall_seconds: float = 0.0
    is_main_process: bool = True


def _micro_batch(batch: dict[str, torch.Tensor], objective: str, chunk: int, size: int,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """Rows [chunk * size, (chunk + 1) * size) of a collated batch, (size, T) each, on ``device``."""
    keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    if objective != "mlm":
        keys += ("next_sentence_label",)
    return {k: batch[k].narrow(0, chunk * size, size).to(device, non_blocking=True) for k in keys}


def _step_metrics(sums: list[float], objective: str) -> dict[str, float | None]:
    """A step's global losses and accuracies from its summed counts (6 numbers, over every process)."""
    mlm_sum, mlm_n, mlm_ok, nsp_sum, nsp_n, nsp_ok = sums
    mlm_loss = mlm_sum / max(mlm_n, 1)
    nsp_loss = nsp_sum / max(nsp_n, 1) if objective != "mlm" else None
    return {"loss": mlm_loss + (nsp_loss or 0.0), "mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
            "mlm_accuracy": mlm_ok / max(mlm_n, 1),
            "nsp_accuracy": nsp_ok / max(nsp_n, 1) if nsp_loss is not None else None}


def _eval_metrics(sums: list[float], step: int, objective: str, unigram: str, majority: float) -> dict[str, Any]:
    """An evaluation's metrics from its summed counts (8 numbers, over every process)."""
    mlm_sum, mlm_n, mlm_ok, uni_ok, nsp_sum, nsp_n, nsp_ok, tokens = sums
    mlm_loss = mlm_sum / max(mlm_n, 1)
    has_pairs = objective != "mlm"
    return {
        "type": "eval", "step": step,
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "mlm_accuracy": mlm_ok / max(mlm_n, 1),
        "unigram_accuracy": uni_ok / max(mlm_n, 1),
        "unigram_token": unigram,
        "nsp_loss": nsp_sum / max(nsp_n, 1) if has_pairs else None,
        "nsp_accuracy": nsp_ok / max(nsp_n, 1) if has_pairs else None,
        "nsp_majority_accuracy": majority if has_pairs else None,
        "objective": objective,
        "masked_tokens": int(mlm_n), "pairs": int(nsp_n), "tokens": int(tokens),
    }


def _oom(cfg: TrainConfig, what: str) -> WorkbenchError:
    """Out of GPU memory: a one-line error offering a smaller batch (the same global batch)."""
    b, accum = cfg.batch_size, cfg.grad_accum
    if b > 1:
        hint = f"try --batch-size {b // 2} --grad-accum {accum * 2} (same global batch)"
    else:
        hint = "try a smaller --preset or shorter sequences (workbench prepare --max-seq-length 64)"
    return WorkbenchError(f"out of GPU memory during {what} with --batch-size {b}; {hint}")


class Pretrainer:
    """Sets up a run (engine, out dir, data, model, resume) and trains it step by step."""

    def __init__(self, cfg: TrainConfig, masking: MaskingConfig | None = None,
                 data: PretrainingData | None = None, callbacks: Sequence[Callback] = ()) -> None:
        self.start_time = time.perf_counter()
        self.cfg, self.masking, self.callbacks = cfg, masking or MaskingConfig(), list(callbacks)
        # Engine: accelerator, device, precision; trackers are per Accelerator instance.
        self.report_to = tracking.parse_report_to(cfg.report_to)
        tracking.check_installed(self.report_to)  # a missing wandb/mlflow: one line now, not a warning mid-run
        self.engine = Engine(cfg.precision, tracking.make_trackers(self.report_to, cfg.out))
        self.acc, self.device, self.precision = self.engine.accelerator, self.engine.device, self.engine.precision
        self.world, self.rank, self.is_main = self.engine.world, self.engine.rank, self.engine.is_main
        # Out folder: checked before any work, so a refusal costs nothing.
        self.folder = RunFolder(cfg, self.report_to, self.is_main)
        set_seed(cfg.seed)  # python, numpy, torch and CUDA: initialisation is reproducible
        self._setup_data(data)
        # Claim --out (a resumed run's config must match this one), then start the trackers.
        self.run_config = self._run_config()
        self.folder.claim(self.run_config, self.acc.wait_for_everyone)
        self._start_trackers()
        # Model, optimizer and LR schedule on the engine.
        self.model = build_pretraining_model(cfg, self.data, self.objective, self.device,
                                             self.folder.resume_from, self.is_main)
        self.raw_module = PretrainingModule(self.model)
        self.module = self.engine.prepare(
            self.raw_module, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps, total=cfg.max_steps, warmup=int(round(cfg.warmup_fraction * cfg.max_steps)),
            schedule=cfg.schedule, max_grad_norm=cfg.max_grad_norm, on_nonfinite=self._nonfinite)
        # Data order and masks: both part of the resumable state.
        self.sampler = ResumableBatchSampler(len(self.train_set), self.global_batch, cfg.seed)
        self.collator = PretrainingCollator(self.tokenizer, self.masking, seed=cfg.seed)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self.collator,
                                 num_workers=0, pin_memory=self.device.type == "cuda")
        self.step, self.tokens, self.train_seconds = 0, 0, 0.0
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] | None = None
        self.last_checkpoint: Path | None = None
        if self.folder.resume_from is not None:
            self._resume()
        self._batches: Iterator[dict[str, torch.Tensor]] | None = None

    # ----------------------------------------------------------------------------------- setup
    def _setup_data(self, data: PretrainingData | None) -> None:
        cfg = self.cfg
        self.data = data if data is not None else load_data(cfg, self.acc)
        self.tokenizer = self.data.tokenizer
        self.train_set = self.data.dataset["train"].select_columns(list(_COLUMNS))
        self.val_set = self.data.dataset["validation"].select_columns(list(_COLUMNS))
        self.global_batch = cfg.batch_size * self.world * cfg.grad_accum
        self.objective = check_data(cfg, self.data, len(self.train_set), len(self.val_set), self.global_batch,
                                    self.world)
        self.unigram_id = unigram_token(self.data)
        self.majority_accuracy = majority_accuracy(np.asarray(self.val_set["next_sentence_label"]))

    def _run_config(self) -> dict[str, Any]:
        cache_key = self.data.stats.get("cache_key")
        return {
            "workbench_version": __version__,
            "train": asdict(self.cfg),
            "masking": asdict(self.masking),
            "data": {"path": str(self.data.path), "cache_key": cache_key, "objective": self.objective},
            "processes": self.world,
            "global_batch": self.global_batch,
            "precision": self.precision,
            "provenance": collect_provenance(
                precision=self.precision, attention=resolve_attention(self.cfg.attention, self.device),
                num_processes=self.world, seed=self.cfg.seed, data_cache_key=cache_key),
        }

    def _start_trackers(self) -> None:
        # A fresh run drops the event files of an earlier one, only from a TensorBoard folder of ours.
        outdir = self.folder.outdir
        fresh = outdir if self.folder.resume_from is None else None
        tracking.start(self.acc, self.cfg.out, {**asdict(self.cfg), **asdict(self.masking)}, fresh=fresh)
        self.folder.adopt_trackers()

    def _resume(self) -> None:
        state, rng = self.folder.resume_state(self.rank)
        self.engine.load_state_dict(state)  # optimizer and scheduler
        self.sampler.load_state_dict(state["sampler"])
        self.collator.load_state_dict(state["collator"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.train_seconds = float(state["train_seconds"])
        if rng is not None:
            restore_rng_state(rng)
        self.last_checkpoint = self.folder.resume_from
        self.history = self.folder.resumed_history(self.step, self.acc.wait_for_everyone)
        evals = [m for m in self.history if m.get("type") == "eval"]
        self.last_eval = evals[-1] if evals else None
        if self.is_main:
            print(f"resumed from {self.last_checkpoint} (step {self.step})", file=sys.stderr)

    # -------------------------------------------------------------------------------- training
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on a collated global batch; returns the step's global metrics."""
        cfg, labels = self.cfg, batch["labels"]
        # Global counts (every process holds the whole batch): the loss is a token mean over it.
        n_mlm = max(int(labels.ne(IGNORE_INDEX).sum()), 1)
        n_pairs = max(int(batch["next_sentence_label"].ne(IGNORE_INDEX).sum()), 1) if self.objective != "mlm" else 1
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        for a in range(cfg.grad_accum):
            micro = _micro_batch(batch, self.objective, a * self.world + self.rank, cfg.batch_size, self.device)
            last = a == cfg.grad_accum - 1
            with self.engine.accumulate(last):
                # DDP averages gradients over processes, hence the norms divided by world size;
                # 0-dim tensors, not floats, so a compiled module does not specialise on them.
                out = self.module(**micro, mlm_norm=torch.tensor(n_mlm / self.world),
                                  nsp_norm=torch.tensor(n_pairs / self.world))
            sums += torch.stack([out.mlm_loss_sum, out.mlm_count, out.mlm_correct, out.nsp_loss_sum,
                                 out.nsp_count, out.nsp_correct]).to(torch.float64)
            if not last:
                self.engine.backward(out.loss)
        # The step's one host sync: the summed counts, once backward and clipping are queued.
        return self.engine.step(out.loss, lambda: _step_metrics(self.engine.reduce(sums).tolist(), self.objective))

    def _nonfinite(self, loss: float, grad: float) -> WorkbenchError:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad}"
        where = (f"the last good checkpoint is {self.last_checkpoint} (step {checkpoint_step(self.last_checkpoint)})"
                 if self.last_checkpoint else "no checkpoint was written before it")
        return WorkbenchError(
            f"{what} at step {self.step + 1}; stopped, {where}; start over with a lower --lr "
            f"(e.g. {self.cfg.lr / 4:g}) and --overwrite, or in a new --out"
        )

    def _next_batch(self) -> dict[str, torch.Tensor]:
        if self._batches is None:
            self._batches = iter(self.loader)
        return next(self._batches)

    def train(self, until: int | None = None) -> None:
        """Train up to step ``until`` (default max_steps): log, evaluate and checkpoint on schedule."""
        cfg = self.cfg
        until = cfg.max_steps if until is None else min(until, cfg.max_steps)
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="pretrain", unit="step",
                   disable=not (self.is_main and cfg.progress), dynamic_ncols=True)
        try:
            while self.step < until:
                # One optimizer step on the next global batch.
                start = time.perf_counter()
                batch = self._next_batch()
                tokens = int(batch["attention_mask"].sum())
                try:
                    metrics = self.train_step(batch)
                except torch.OutOfMemoryError:
                    raise _oom(self.cfg, f"step {self.step + 1}") from None
                self.step += 1
                self.tokens += tokens
                seconds = time.perf_counter() - start
                self.train_seconds += seconds
                # Log, evaluate and checkpoint on schedule.
                tps = self.tokens / max(self.train_seconds, 1e-9)
                if self.step % cfg.log_every == 0 or self.step == until:
                    self._log({"type": "train", "step": self.step, **metrics, "tokens": self.tokens,
                               "tokens_per_second": tps, "step_seconds": seconds,
                               "epoch": self.step * self.global_batch / len(self.train_set)})
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                bar.update(1)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
        finally:
            bar.close()

    def _log(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        if not self.is_main:
            return
        self.folder.log(metrics)
        tracking.log(self.acc, metrics)  # train/mlm_loss, eval/nsp_accuracy, ...
        for callback in self.callbacks:
            callback(dict(metrics))

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Validation MLM loss, perplexity and accuracy, NSP/SOP accuracy and the unigram baseline."""
        # Fixed masks at every evaluation, so numbers are comparable across steps.
        collator = PretrainingCollator(self.tokenizer, self.masking, seed=self.cfg.seed + _EVAL_SEED_OFFSET)
        self.model.eval()
        sums = torch.zeros(8, dtype=torch.float64, device=self.device)
        n, size = len(self.val_set), self.cfg.eval_batch_size
        try:
            for i, start in enumerate(range(0, n, size)):
                batch = collator(self.val_set.__getitems__(list(range(start, min(start + size, n)))))
                if i % self.world != self.rank:  # every process draws every mask, runs its share
                    continue
                micro = _micro_batch(batch, self.objective, 0, batch["input_ids"].shape[0], self.device)
                with self.engine.autocast():
                    out = self.raw_module(**micro)  # not the DDP wrapper: shares differ in count
                unigram_ok = (micro["labels"] == self.unigram_id).sum()
                sums += torch.stack([out.mlm_loss_sum, out.mlm_count, out.mlm_correct, unigram_ok,
                                     out.nsp_loss_sum, out.nsp_count, out.nsp_correct,
                                     micro["attention_mask"].sum()]).to(torch.float64)
        except torch.OutOfMemoryError:
            raise _oom(self.cfg, f"evaluation at step {self.step} (--eval-batch-size {size})") from None
        finally:
            self.model.train()
        metrics = _eval_metrics(self.engine.reduce(sums).tolist(), self.step, self.objective,
                                self.tokenizer.convert_ids_to_tokens(self.unigram_id), self.majority_accuracy)
        self.last_eval = metrics
        self._log(metrics)
        return metrics

    # ----------------------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        """Checkpoint the current step (model, tokenizer, config and the full training state)."""
        state = {
            "step": self.step, "tokens": self.tokens, "train_seconds": self.train_seconds,
            **self.engine.state_dict(),  # optimizer, scheduler
            "sampler": self.sampler.state_dict(), "collator": self.collator.state_dict(),
        }
        rng = capture_rng_state()
        rngs = gather_object([rng]) if self.world > 1 else [rng]
        path = Path(self.cfg.out) / f"{CHECKPOINT_PREFIX}{self.step}"
        if self.is_main:
            path = self.folder.save(self.step, self.model, self.tokenizer, self.run_config, state, rngs)
        self.acc.wait_for_everyone()
        self.last_checkpoint = path
        return path

    def finish(self) -> PretrainResult:
        """Final evaluation and checkpoint, then ``OUT/eval.json``."""
        if self.last_eval is None or self.last_eval["step"] != self.step:
            self.evaluate()
        if self.last_checkpoint is None or checkpoint_step(self.last_checkpoint) != self.step:
            self.save()
        wall = time.perf_counter() - self.start_time
        tps = self.tokens / max(self.train_seconds, 1e-9)
        train = [m for m in self.history if m.get("type") == "train"]
        summary = {
            **{k: v for k, v in (self.last_eval or {}).items() if k != "type"},
            "steps": self.step, "tokens_per_second": tps, "train_tokens": self.tokens,
            "train_seconds": self.train_seconds, "wall_seconds": wall,
            "train_loss": train[-1]["loss"] if train else None,
            "preset": self.cfg.preset if not self.cfg.init else None, "init": self.cfg.init or None,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "precision": self.precision, "processes": self.world, "global_batch": self.global_batch,
            "checkpoint": str(self.last_checkpoint),
        }
        self.folder.write_summary(summary)
        tracking.finish(self.acc)
        self.folder.adopt_trackers()  # as they are now: every event file of this run is listed
        return PretrainResult(Path(self.cfg.out), self.last_checkpoint, summary, self.history, self.model,
                              self.tokenizer, self.step, tps, wall, self.is_main)


def pretrain(cfg: TrainConfig, masking: MaskingConfig | None = None, data: PretrainingData | None = None,
             callbacks: Sequence[Callback] = ()) -> PretrainResult:
    """Run (or resume) a pretraining job; each callback gets every train and eval metrics dict."""
    trainer = Pretrainer(cfg, masking, data, callbacks)
    trainer.train()
    return trainer.finish()
