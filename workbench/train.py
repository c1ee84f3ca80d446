"""BERT pretraining on Hugging Face accelerate: one loop for CPU, one GPU and ``accelerate launch``.

Every process collates the whole global batch (batch_size x processes x grad_accum examples)
with the same masking generator and takes its own rows, and losses are normalised by the
global counts of masked tokens and pairs. So the masks, the gradient and the logged loss of
a step do not depend on how the batch is split over processes and accumulation steps, and
``--resume`` continues exactly: the data position, the masking generator, the optimizer,
the scheduler and every RNG are in the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import BertForPreTraining

from . import __version__
from . import trackers as tracking
from .allocator import retain_freed_memory
from .checkpoint import (
    CHECKPOINT_PREFIX,
    RUN_CONFIG,
    capture_rng_state,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_rng_state,
    load_training_state,
    loadable_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import DataConfig, MaskingConfig, TrainConfig
from .errors import WorkbenchError
from .masking import PretrainingCollator
from .model import PretrainingModule, build_model, quiet_transformers
from .outputs import OutputDir, check_out_path, read_json_object
from .pretraining_data import PretrainingData, load_prepared, prepare_dataset
from .provenance import collect as collect_provenance

__all__ = [
    "Callback",
    "PretrainResult",
    "Pretrainer",
    "ResumableBatchSampler",
    "cpu_supports_bf16",
    "lr_multiplier",
    "pretrain",
    "resolve_attention",
    "resolve_precision",
]

Callback = Callable[[dict[str, Any]], None]
RUN_FILE, METRICS_FILE, EVAL_FILE = "run.json", "metrics.jsonl", "eval.json"
# TrainConfig fields that may change on --resume: where outputs go and how often, not the maths.
_RUN_CONTROL = ("data", "out", "resume", "overwrite", "eval_every", "eval_batch_size",
                "save_every", "keep_checkpoints", "keep_every", "log_every", "progress", "attention", "report_to")
_COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label")
_EVAL_SEED_OFFSET = 1_000_003  # eval masks: fixed per run, never the training stream


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 autocast pays."""
    if "AMX" in torch.backends.cpu.get_cpu_capability():
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`bf16` or `fp32` for ``precision`` (auto|bf16|fp32) on ``device``."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not bf16:
            raise WorkbenchError("this GPU has no bf16 support; pass --precision fp32")
        return "bf16" if precision == "bf16" or (precision == "auto" and bf16) else "fp32"
    if precision == "auto":
        return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"
    return precision


def resolve_attention(attention: str, device: torch.device) -> str:
    """The transformers attention implementation for ``attention`` (auto|sdpa|eager) on ``device``.

    auto: sdpa on CUDA (flash kernels). On CPU eager: at seq 128 in bf16, torch's CPU flash
    backward took 43 ms a layer of BERT-Mini (batch 32) against 14 ms for matmul + softmax.
    """
    if attention != "auto":
        return attention
    return "eager" if device.type == "cpu" else "sdpa"


def lr_multiplier(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR factor of optimizer step ``step`` (0-based): linear warm-up/decay, or a cosine one-cycle."""
    if schedule == "linear":
        if step < warmup:
            return (step + 1) / warmup
        return max(total - step, 0) / max(total - warmup, 1)
    # one_cycle (as torch's OneCycleLR): cosine from peak/25 up to peak, then down to peak/25e4
    low, final = 1 / 25, 1 / 25e4
    if step < warmup:
        return low + (1 - low) * (1 - math.cos(math.pi * (step + 1) / warmup)) / 2
    t = min((step - warmup + 1) / max(total - warmup, 1), 1.0)
    return final + (1 - final) * (1 + math.cos(math.pi * t)) / 2


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


def _finite(x: float) -> bool:
    return math.isfinite(x)


class Pretrainer:
    """Sets up a run (data, model, optimizer, out dir, resume) and trains it step by step."""

    def __init__(self, cfg: TrainConfig, masking: MaskingConfig | None = None,
                 data: PretrainingData | None = None, callbacks: Sequence[Callback] = ()) -> None:
        self.start_time = time.perf_counter()
        self.cfg, self.masking = cfg, masking or MaskingConfig()
        self.callbacks = list(callbacks)
        # No mixed_precision argument: an Accelerator made earlier in this process (a notebook's
        # Trainer) or by `accelerate launch --mixed_precision` fixes it; _resolve_precision checks.
        # log_with is per instance (AcceleratorState, the shared part, does not hold it).
        self.report_to = tracking.parse_report_to(cfg.report_to)
        tracking.check_installed(self.report_to)  # a missing wandb/mlflow: one line now, not a warning mid-run
        self.acc = Accelerator(log_with=tracking.make_trackers(self.report_to, cfg.out) or None)
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.device = self.acc.device
        self.is_main = self.acc.is_main_process
        if self.world == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
            print("warning: launched for several processes but running in one: accelerate 1.x's "
                  "`launch --cpu --num_processes N` starts a single process (multi-CPU needs mpirun); "
                  "use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N` (torchrun, gloo)",
                  file=sys.stderr)
        checked_out = self._check_out()  # before any work: a refusal costs nothing
        set_seed(cfg.seed)  # python, numpy, torch and CUDA: initialisation is reproducible
        self.data = data if data is not None else self._load_data()
        self.tokenizer = self.data.tokenizer
        self.objective = self._check_objective()
        self.precision = self._resolve_precision()
        if self.device.type == "cpu":
            retain_freed_memory()  # big activations reuse heap pages instead of faulting in anew
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 mode: TF32 tensor cores
            torch.backends.cudnn.allow_tf32 = True

        self.train_set = self.data.dataset["train"].select_columns(list(_COLUMNS))
        self.val_set = self.data.dataset["validation"].select_columns(list(_COLUMNS))
        self.global_batch = cfg.batch_size * self.world * cfg.grad_accum
        self._check_sizes()
        self.unigram_id = self._unigram_token()
        labels = np.asarray(self.val_set["next_sentence_label"])
        # Chance level of the sentence task: always guessing the commoner validation label.
        self.majority_accuracy = float(max(np.mean(labels == 0), np.mean(labels == 1)))
        self.run_config = self._run_config()

        resume_from = self._prepare_out(*checked_out)
        # A fresh run drops the event files of an earlier one: the tracker dirs were checked to be ours.
        fresh = resume_from is None and self.outdir is not None and self.outdir.owns(tracking.TENSORBOARD_DIR)
        tracking.start(self.acc, cfg.out, {**asdict(cfg), **asdict(self.masking)}, fresh=fresh)
        if self.outdir is not None:
            for name in tracking.entries(self.report_to):
                if (Path(cfg.out) / name).exists():
                    self.outdir.adopt(name, "log" if (Path(cfg.out) / name).is_file() else "dir")
        self.model = self._build_model(resume_from)
        self.raw_module = PretrainingModule(self.model)
        self.module = self.acc.prepare(self.raw_module)  # device placement, DDP when launched
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._optimizer()
        warmup = int(round(cfg.warmup_fraction * cfg.max_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(s, cfg.max_steps, warmup, cfg.schedule))

        self.sampler = ResumableBatchSampler(len(self.train_set), self.global_batch, cfg.seed)
        self.collator = PretrainingCollator(self.tokenizer, self.masking, seed=cfg.seed)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self.collator,
                                 num_workers=0, pin_memory=self.device.type == "cuda")
        self.step, self.tokens, self.train_seconds = 0, 0, 0.0
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] | None = None
        self.last_checkpoint: Path | None = None
        if resume_from is not None:
            self._resume(resume_from)
        self._batches: Iterator[dict[str, torch.Tensor]] | None = None

    # ----------------------------------------------------------------------------------- setup
    def _load_data(self) -> PretrainingData:
        cfg = self.cfg
        with self.acc.main_process_first():  # one process builds, the others load its cache
            if cfg.data:
                return load_prepared(cfg.data)
            objective = "nsp" if cfg.objective == "auto" else cfg.objective
            return prepare_dataset(DataConfig(objective=objective))

    def _check_objective(self) -> str:
        have = self.data.stats.get("objective", "nsp")
        if self.cfg.objective not in ("auto", have):
            raise WorkbenchError(
                f"--objective {self.cfg.objective} but the data in {self.data.path} was prepared for {have}; "
                f"prepare it with `workbench prepare --objective {self.cfg.objective}` or pass --objective auto"
            )
        return have

    def _resolve_precision(self) -> str:
        launched = str(self.acc.mixed_precision)
        if launched not in ("no", "bf16"):
            raise WorkbenchError(f"accelerate is set to mixed precision {launched}, which workbench does not support; "
                                 "launch with --mixed_precision no (and --precision bf16 for bf16)")
        if launched == "bf16":  # accelerate autocasts the model's forward to bf16 already
            if self.cfg.precision == "fp32":
                raise WorkbenchError("accelerate is set to mixed precision bf16 but --precision is fp32; "
                                     "launch with --mixed_precision no, or pass --precision bf16")
            return "bf16"
        return resolve_precision(self.cfg.precision, self.device)

    def _check_sizes(self) -> None:
        n_train, n_val = len(self.train_set), len(self.val_set)
        if n_train < self.global_batch:
            raise WorkbenchError(
                f"the training split has {n_train} examples, fewer than one global batch of {self.global_batch} "
                f"(batch_size {self.cfg.batch_size} x {self.world} process(es) x grad_accum {self.cfg.grad_accum}); "
                "lower --batch-size or prepare more data"
            )
        if n_val == 0:
            raise WorkbenchError(
                f"the data in {self.data.path} has no validation examples; prepare it with --validation-fraction 0.05"
            )

    def _unigram_token(self) -> int:
        """The most frequent non-special token of the training split (the unigram baseline)."""
        counts = np.zeros(len(self.tokenizer), dtype=np.int64)
        column = self.data.dataset["train"].data.table.column("input_ids")
        for chunk in column.chunks:  # flat token ids chunk by chunk: memory stays bounded
            ids = chunk.flatten().to_numpy()
            counts += np.bincount(ids, minlength=len(counts))[: len(counts)]
        counts[self.tokenizer.all_special_ids] = 0
        return int(counts.argmax())

    def _run_config(self) -> dict[str, Any]:
        return {
            "workbench_version": __version__,
            "train": asdict(self.cfg),
            "masking": asdict(self.masking),
            "data": {"path": str(self.data.path), "cache_key": self.data.stats.get("cache_key"),
                     "objective": self.objective},
            "processes": self.world,
            "global_batch": self.global_batch,
            "precision": self.precision,
            "provenance": collect_provenance(
                precision=self.precision, attention=resolve_attention(self.cfg.attention, self.device),
                num_processes=self.world, seed=self.cfg.seed, data_cache_key=self.data.stats.get("cache_key")),
        }

    def _check_out(self) -> tuple[Path | None, bool]:
        """Check --out before any work (every process, read-only): the checkpoint to resume from, and
        whether OUT holds a run of ours.

        Only entries the workbench recorded in OUT's manifest are replaced or deleted; a foreign
        entry under a name this run writes (run.json, metrics.jsonl, a checkpoint-STEP it will
        save) is refused here, with or without --overwrite.
        """
        cfg = self.cfg
        out = check_out_path(cfg.out)
        view = OutputDir.read(out)
        foreign = view.foreign()
        ours = RUN_FILE in view.entries and (out / RUN_FILE).is_file() and view.owns(RUN_FILE)
        resume_from: Path | None = None
        if cfg.resume:
            if foreign and not ours:
                raise WorkbenchError(f"--resume: {out} holds no workbench run (no {RUN_FILE} written by workbench); "
                                     "pass the --out of the run to continue")
            resume_from = self._loadable_checkpoint(out) if ours else None
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

    def _prepare_out(self, resume_from: Path | None, ours: bool) -> Path | None:
        """Compare a resumed run's config with this one, then the main process claims --out."""
        cfg, out = self.cfg, Path(self.cfg.out)
        if cfg.resume:
            previous = read_json_object(resume_from / RUN_CONFIG if resume_from else out / RUN_FILE) if ours else None
            if previous is not None:
                self._check_same_config(previous)
            if resume_from is None and self.is_main:
                print(f"--resume: no checkpoint in {out} yet; starting from step 0", file=sys.stderr)
        self.acc.wait_for_everyone()  # every process has checked before anything changes
        self.outdir = OutputDir.open(out, "pretrain") if self.is_main else None
        if self.outdir is not None and resume_from is None:
            if ours:  # --overwrite, or --resume before any checkpoint: drop only our own files
                for name in [p.name for p in list_checkpoints(out)] + [METRICS_FILE, EVAL_FILE]:
                    self.outdir.remove(name)
            self.outdir.write_json(RUN_FILE, self.run_config)
        if self.outdir is not None:
            self.outdir.claim(METRICS_FILE)  # appended to by _log
        self.acc.wait_for_everyone()
        return resume_from

    def _planned_names(self, resume_from: Path | None) -> list[str]:
        """The entries this run will write in --out: its files and the checkpoints it will save."""
        cfg = self.cfg
        start = checkpoint_step(resume_from) if resume_from is not None else 0
        steps = set(range(cfg.save_every, cfg.max_steps + 1, cfg.save_every)) if cfg.save_every else set()
        steps.add(cfg.max_steps)
        return ([RUN_FILE, METRICS_FILE, EVAL_FILE] + tracking.entries(self.report_to)
                + [f"{CHECKPOINT_PREFIX}{s}" for s in sorted(steps) if s > start])

    def _loadable_checkpoint(self, out: Path) -> Path | None:
        """The newest checkpoint that loads; each newer damaged one is named on stderr."""
        good, damaged = loadable_checkpoint(out)
        for path, problem in damaged if self.is_main else ():
            instead = f"resuming from {good.name}, the newest checkpoint that loads" if good else "none loads"
            print(f"warning: --resume: checkpoint {path} is damaged ({problem}); {instead}", file=sys.stderr)
        if damaged and good is None:
            raise WorkbenchError(f"--resume: every checkpoint in {out} is damaged ({damaged[0][0].name}: "
                                 f"{damaged[0][1]}); pass --overwrite to start over, or another --out")
        return good

    def _check_same_config(self, previous: dict[str, Any]) -> None:
        now = self.run_config
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

    def _build_model(self, resume_from: Path | None) -> BertForPreTraining:
        cfg = self.cfg
        if resume_from is not None:
            with quiet_transformers():
                model = BertForPreTraining.from_pretrained(str(resume_from), attn_implementation="sdpa",
                                                           dtype=torch.float32)
        else:
            model = build_model(cfg.preset, self.tokenizer, cfg.init or None, dropout=cfg.dropout,
                                verbose=self.is_main)
        model.set_attn_implementation(resolve_attention(cfg.attention, self.device))
        limit = model.config.max_position_embeddings
        longest = int(self.data.stats.get("max_seq_length", 0))
        if longest > limit:
            raise WorkbenchError(
                f"the data has sequences of {longest} tokens but the model has {limit} positions; "
                f"prepare the data with --max-seq-length {limit}"
            )
        if self.objective == "mlm":  # no sentence task: the pooler and NSP head get no gradient
            for p in (*model.bert.pooler.parameters(), *model.cls.seq_relationship.parameters()):
                p.requires_grad_(False)
        model.train()
        if cfg.compile:  # in place, so state_dict keys stay those of BertForPreTraining
            for layer in model.bert.encoder.layer:  # the modules pretraining_loss calls: all but the attention maths
                for module in (layer.attention.output, layer.intermediate, layer.output):
                    module.compile()
        return model

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():  # tied weights appear once
            if p.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        kwargs = dict(lr=self.cfg.lr, betas=(self.cfg.adam_beta1, self.cfg.adam_beta2), eps=self.cfg.adam_eps)
        try:  # one fused kernel: on CUDA, and on CPU too (measured 7 ms vs 25-50 ms a step for mini)
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device without a fused AdamW
            return torch.optim.AdamW(groups, **kwargs)

    def _resume(self, path: Path) -> None:
        state = load_training_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.collator.load_state_dict(state["collator"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.train_seconds = float(state["train_seconds"])
        rng = load_rng_state(path, self.rank)
        if rng is not None:
            restore_rng_state(rng)
        self.last_checkpoint = path
        metrics = Path(self.cfg.out) / METRICS_FILE
        if metrics.is_file():  # forget what a killed run logged after its last checkpoint
            kept = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            self.history = [m for m in kept if m.get("step", 0) <= self.step]
            self.acc.wait_for_everyone()
            if self.outdir is not None:  # the main process
                self.outdir.write_text(METRICS_FILE, "".join(json.dumps(m) + "\n" for m in self.history), kind="log")
        evals = [m for m in self.history if m.get("type") == "eval"]
        self.last_eval = evals[-1] if evals else None
        if self.is_main:
            print(f"resumed from {path} (step {self.step})", file=sys.stderr)

    # -------------------------------------------------------------------------------- training
    def _autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _micro_batch(self, batch: dict[str, torch.Tensor], chunk: int, size: int) -> dict[str, torch.Tensor]:
        keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
        if self.objective != "mlm":
            keys += ("next_sentence_label",)
        return {k: batch[k].narrow(0, chunk * size, size).to(self.device, non_blocking=True) for k in keys}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on a collated global batch; returns the step's global metrics."""
        cfg, labels = self.cfg, batch["labels"]
        # Global counts (every process holds the whole batch): the loss is a token mean over it.
        n_mlm = max(int(labels.ne(-100).sum()), 1)
        n_pairs = max(int(batch["next_sentence_label"].ne(-100).sum()), 1) if self.objective != "mlm" else 1
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        for a in range(cfg.grad_accum):
            micro = self._micro_batch(batch, a * self.world + self.rank, cfg.batch_size)
            last = a == cfg.grad_accum - 1
            with (nullcontext() if last else self.acc.no_sync(self.module)), self._autocast():
                # DDP averages gradients over processes, hence the norms divided by world size;
                # 0-dim tensors, not floats, so a compiled module does not specialise on them.
                out = self.module(**micro, mlm_norm=torch.tensor(n_mlm / self.world),
                                  nsp_norm=torch.tensor(n_pairs / self.world))
            out.loss.backward()  # bf16/fp32 need no loss scaling, so not accelerator.backward
            sums += torch.stack([out.mlm_loss_sum, out.mlm_count, out.mlm_correct, out.nsp_loss_sum,
                                 out.nsp_count, out.nsp_correct]).to(torch.float64)
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        sums = self.acc.reduce(sums, reduction="sum")
        mlm_sum, mlm_n, mlm_ok, nsp_sum, nsp_n, nsp_ok = sums.tolist()  # the step's one host sync
        grad = float(grad_norm)
        mlm_loss = mlm_sum / max(mlm_n, 1)
        nsp_loss = nsp_sum / max(nsp_n, 1) if self.objective != "mlm" else None
        loss = mlm_loss + (nsp_loss or 0.0)
        if not (_finite(loss) and _finite(grad)):
            self.optimizer.zero_grad(set_to_none=True)
            self._raise_nonfinite(loss, grad)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss, "mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
                "mlm_accuracy": mlm_ok / max(mlm_n, 1),
                "nsp_accuracy": nsp_ok / max(nsp_n, 1) if nsp_loss is not None else None,
                "lr": lr, "grad_norm": grad}

    def _raise_nonfinite(self, loss: float, grad: float) -> None:
        what = f"loss {loss}" if not _finite(loss) else f"gradient norm {grad}"
        where = (f"the last good checkpoint is {self.last_checkpoint} (step {checkpoint_step(self.last_checkpoint)})"
                 if self.last_checkpoint else "no checkpoint was written before it")
        raise WorkbenchError(
            f"{what} at step {self.step + 1}; stopped, {where}; start over with a lower --lr "
            f"(e.g. {self.cfg.lr / 4:g}) and --overwrite, or in a new --out"
        )

    def _oom(self, what: str) -> WorkbenchError:
        b, accum = self.cfg.batch_size, self.cfg.grad_accum
        if b > 1:
            hint = f"try --batch-size {b // 2} --grad-accum {accum * 2} (same global batch)"
        else:
            hint = "try a smaller --preset or shorter sequences (workbench prepare --max-seq-length 64)"
        return WorkbenchError(f"out of GPU memory during {what} with --batch-size {b}; {hint}")

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
                start = time.perf_counter()
                batch = self._next_batch()
                tokens = int(batch["attention_mask"].sum())
                try:
                    metrics = self.train_step(batch)
                except torch.OutOfMemoryError:
                    raise self._oom(f"step {self.step + 1}") from None
                self.step += 1
                self.tokens += tokens
                seconds = time.perf_counter() - start
                self.train_seconds += seconds
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
        with open(Path(self.cfg.out) / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")
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
                micro = self._micro_batch(batch, 0, batch["input_ids"].shape[0])
                with self._autocast():
                    out = self.raw_module(**micro)  # not the DDP wrapper: shares differ in count
                unigram_ok = (micro["labels"] == self.unigram_id).sum()
                sums += torch.stack([out.mlm_loss_sum, out.mlm_count, out.mlm_correct, unigram_ok,
                                     out.nsp_loss_sum, out.nsp_count, out.nsp_correct,
                                     micro["attention_mask"].sum()]).to(torch.float64)
        except torch.OutOfMemoryError:
            raise self._oom(f"evaluation at step {self.step} (--eval-batch-size {size})") from None
        finally:
            self.model.train()
        mlm_sum, mlm_n, mlm_ok, uni_ok, nsp_sum, nsp_n, nsp_ok, tokens = self.acc.reduce(sums, "sum").tolist()
        mlm_loss = mlm_sum / max(mlm_n, 1)
        has_pairs = self.objective != "mlm"
        metrics = {
            "type": "eval", "step": self.step,
            "mlm_loss": mlm_loss,
            "perplexity": math.exp(min(mlm_loss, 700.0)),
            "mlm_accuracy": mlm_ok / max(mlm_n, 1),
            "unigram_accuracy": uni_ok / max(mlm_n, 1),
            "unigram_token": self.tokenizer.convert_ids_to_tokens(self.unigram_id),
            "nsp_loss": nsp_sum / max(nsp_n, 1) if has_pairs else None,
            "nsp_accuracy": nsp_ok / max(nsp_n, 1) if has_pairs else None,
            "nsp_majority_accuracy": self.majority_accuracy if has_pairs else None,
            "objective": self.objective,
            "masked_tokens": int(mlm_n), "pairs": int(nsp_n), "tokens": int(tokens),
        }
        self.last_eval = metrics
        self._log(metrics)
        return metrics

    # ----------------------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        """Checkpoint the current step (model, tokenizer, config and the full training state)."""
        state = {
            "step": self.step, "tokens": self.tokens, "train_seconds": self.train_seconds,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(), "collator": self.collator.state_dict(),
        }
        rng = capture_rng_state()
        rngs = gather_object([rng]) if self.world > 1 else [rng]
        path = Path(self.cfg.out) / f"{CHECKPOINT_PREFIX}{self.step}"
        if self.is_main:
            path = save_checkpoint(self.outdir or self.cfg.out, self.step, self.model, self.tokenizer, self.run_config,
                                   state, rngs, self.cfg.keep_checkpoints, self.cfg.keep_every)
            if self.outdir is not None:
                self.outdir.refresh(METRICS_FILE)  # a copy of the run folder is still recognised as ours
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
        if self.outdir is not None:  # the main process
            self.outdir.write_json(EVAL_FILE, summary)
            self.outdir.refresh(METRICS_FILE)
        tracking.finish(self.acc)
        return PretrainResult(Path(self.cfg.out), self.last_checkpoint, summary, self.history, self.model,
                              self.tokenizer, self.step, tps, wall, self.is_main)


def pretrain(cfg: TrainConfig, masking: MaskingConfig | None = None, data: PretrainingData | None = None,
             callbacks: Sequence[Callback] = ()) -> PretrainResult:
    """Run (or resume) a pretraining job; each callback gets every train and eval metrics dict."""
    trainer = Pretrainer(cfg, masking, data, callbacks)
    trainer.train()
    return trainer.finish()
