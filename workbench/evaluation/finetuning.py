"""Fine-tuning for sequence classification (single sentences or pairs) on the training engine.

One loop on :mod:`workbench.training.engine`, with the pretraining loop's speed features: bf16 autocast
where the hardware has it, sdpa attention on CUDA (eager on CPU, where it is faster), fused AdamW,
optional torch.compile, warm-up then linear decay, gradient clipping and dynamic padding.
Early stopping validates on a stratified sample and restores the best weights before the
test split is scored. Tasks are read by :mod:`workbench.evaluation.tasks`; learning curves are
:mod:`workbench.evaluation.fair_curves`.

Bad input policy: a tokenizer/checkpoint vocabulary mismatch raises a one-line
:class:`WorkbenchError`. Test (and validation) examples whose label never occurs in training
are counted, warned about and left out of the scores (their predictions are still saved, with
``scored`` false). Texts longer than ``max_length`` are truncated and counted in ``results.json``.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from ..builtin import resolve_pretrained
from ..config import FinetuneConfig
from ..data.tokenizer import load_tokenizer
from ..errors import WorkbenchError, one_line, pickle_refusal
from ..outputs import OutputDir, check_writable_folder
from ..provenance import collect as collect_provenance
from ..training import trackers as tracking
from ..training.checkpoint import check_model_checkpoint, latest_checkpoint
from ..training.engine import Engine, TrainingDiverged, autocast, resolve_attention
from ..training.model import load_failure, quiet_transformers
from .splits import TaskData, stratified_sample
from .tasks import load_task

__all__ = [
    "FinetuneResult",
    "TrainingDiverged",
    "classification_metrics",
    "classifier_path",
    "finetune",
    "load_classifier",
]

Callback = Callable[[dict[str, Any]], None]
RESULTS_FILE, PREDICTIONS_FILE, MODEL_DIR = "results.json", "predictions.tsv", "model"


# --------------------------------------------------------------------------------------- model
def classifier_path(spec: str) -> str:
    """The local dir or hub name ``spec`` (a --model value) loads from: a run dir's newest checkpoint."""
    path = resolve_pretrained(spec)
    local = Path(path).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        last = latest_checkpoint(local)  # a workbench run dir: its newest checkpoint
        if last is None:
            raise WorkbenchError(f"--model {spec!r} has no config.json and no checkpoint-STEP dir; "
                                 "pass a dir saved with save_pretrained, a run dir or builtin:minilm")
        return str(last)
    if not local.exists() and spec.startswith(("/", ".", "~")):
        raise WorkbenchError(f"--model {spec!r} does not exist; pass a checkpoint dir, a hub name or builtin:minilm")
    if local.is_dir():
        check_model_checkpoint(local)  # a damaged checkpoint: one line offering the previous good one
    return str(local) if local.exists() else path


def load_classifier(spec: str, labels: Sequence[str], init: str = "pretrained", tokenizer: str = "",
                    dropout: float = 0.1, max_length: int = 128
                    ) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, dict[str, Any]]:
    """A sequence classifier on ``spec`` (random weights of its shape with ``random:`` or init=random)."""
    random_init = init == "random" or spec.startswith("random:")
    spec = spec.removeprefix("random:")
    path = classifier_path(spec)
    tok = load_tokenizer(tokenizer or (spec if spec.startswith("builtin:") else path))
    id2label = dict(enumerate(labels))
    try:
        config = AutoConfig.from_pretrained(
            path, num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout)
    except Exception as exc:  # hub unreachable, no config.json, unknown model type
        raise WorkbenchError(f"could not read the config of --model {spec!r}: {one_line(exc, 200)}; "
                             "pass a checkpoint dir, a hub name or builtin:minilm") from None
    if config.vocab_size != len(tok):
        raise WorkbenchError(f"--model {spec!r} has vocab_size {config.vocab_size} but its tokenizer has {len(tok)} "
                             f"tokens; pass the tokenizer it was trained with (--tokenizer DIR)")
    positions = getattr(config, "max_position_embeddings", max_length)
    if max_length > positions:
        raise WorkbenchError(f"--max-length {max_length} exceeds the {positions} positions of --model {spec!r}; "
                             f"pass --max-length {positions} or less")
    try:
        with quiet_transformers():  # the new classifier head is expected: no load report or bar
            if random_init:
                model, new = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa"), ["all"]
            else:
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    path, config=config, attn_implementation="sdpa", dtype=torch.float32, output_loading_info=True)
                new = sorted({k.rsplit(".", 1)[0] for k in info["missing_keys"]})
    except Exception as exc:
        refusal = pickle_refusal(exc, f"--model {spec!r}", path)
        reason = load_failure(exc, AutoModelForSequenceClassification, path, config=config, dtype=torch.float32)
        raise refusal or WorkbenchError(f"could not load --model {spec!r}: {reason}; "
                                        "pass a BERT checkpoint dir or builtin:minilm") from None
    info = {"checkpoint": path, "init": "random" if random_init else "pretrained", "new_parameters": new,
            "parameters": sum(p.numel() for p in model.parameters()),
            "shape": f"L{config.num_hidden_layers}/H{config.hidden_size}/A{config.num_attention_heads}"}
    return model.float(), tok, info



# ------------------------------------------------------------------------------------- batches
@dataclass
class _Encoded:
    ids: list[list[int]]
    types: list[list[int]] | None
    labels: np.ndarray  # (N,) class index, -1 for a label never seen in training
    truncated: int

    def __len__(self) -> int:
        return len(self.ids)


def _encode(tok: PreTrainedTokenizerBase, frame: pd.DataFrame, labels: Sequence[str], max_length: int) -> _Encoded:
    a = frame["text"].tolist()
    b = frame["text_b"].tolist() if "text_b" in frame else None
    enc = tok(a, b, truncation=False, verbose=False)  # full lengths first, to count truncations
    ids, types = enc["input_ids"], enc.get("token_type_ids")
    long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if long:
        cut = tok([a[i] for i in long], [b[i] for i in long] if b else None, truncation=True, max_length=max_length)
        for j, i in enumerate(long):
            ids[i] = cut["input_ids"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
    index = {name: k for k, name in enumerate(labels)}
    y = np.array([index.get(v, -1) for v in frame["label"]], dtype=np.int64)
    return _Encoded(ids, types, y, len(long))


def _collate(enc: _Encoded, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad rows to the longest of the batch: input_ids, attention_mask, token_type_ids (B, T), labels (B,)."""
    width = max(len(enc.ids[i]) for i in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for r, i in enumerate(rows):
        n = len(enc.ids[i])
        ids[r, :n], mask[r, :n] = enc.ids[i], 1
        if enc.types is not None:
            types[r, :n] = enc.types[i]
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
           "labels": torch.from_numpy(enc.labels[list(rows)])}
    if enc.types is not None:
        out["token_type_ids"] = torch.from_numpy(types)
    return out


def _train_batches(lengths: np.ndarray, batch_size: int, seed: int, group: bool, world: int) -> Iterator[np.ndarray]:
    """Endless global batches, a seeded permutation per epoch; grouped: similar lengths together."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(lengths))
        if group:  # sort within windows of 50 batches, then shuffle the batches: little padding
            window = batch_size * 50
            order = np.concatenate([w[np.argsort(lengths[w], kind="stable")]
                                    for w in np.array_split(order, max(1, math.ceil(len(order) / window)))])
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if len(batches) > 1 and len(batches[-1]) < world:  # every process needs a row
            batches[-2:] = [np.concatenate(batches[-2:])]
        yield from (batches[i] for i in (rng.permutation(len(batches)) if group else range(len(batches))))


# ------------------------------------------------------------------------------------- metrics
def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes in the labels or predictions, as scikit-learn), confusion, per class."""
    k = len(labels)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # (true, predicted)
    tp, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    present = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion_matrix": confusion.tolist(),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(labels)},
    }


# ------------------------------------------------------------------------------------ training
@dataclass
class FinetuneResult:
    """What a fine-tuning run produced; ``results`` is what results.json holds."""

    out: Path | None
    results: dict[str, Any]
    predictions: pd.DataFrame = field(repr=False)
    history: list[dict[str, Any]] = field(repr=False)
    model: torch.nn.Module = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)



@torch.no_grad()
def _predict(model: torch.nn.Module, enc: _Encoded, batch_size: int, pad_id: int, precision: str,
             device: torch.device) -> np.ndarray:
    """Class probabilities (N, C), batches sorted by length (little padding), rows in input order."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in enc.ids], kind="stable")
    probs = []
    try:
        for start in range(0, len(order), batch_size):
            batch = _collate(enc, order[start:start + batch_size], pad_id)
            batch.pop("labels")
            with autocast(precision, device):
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # (B, C)
            probs.append(logits.float().softmax(-1).cpu())
    finally:
        model.train(was_training)
    out = np.empty((len(order), probs[0].shape[1]), dtype=np.float32)
    out[order] = torch.cat(probs).numpy()
    return out


def _scores(probs: np.ndarray, enc: _Encoded, labels: Sequence[str]) -> dict[str, Any]:
    known = enc.labels >= 0
    metrics = classification_metrics(enc.labels[known], probs[known].argmax(1), labels)
    picked = probs[known, enc.labels[known]]  # (N_known,) probability of the true class
    metrics["loss"] = float(-np.log(np.clip(picked, 1e-12, None)).mean()) if known.any() else float("nan")
    return metrics


def _unseen(enc: _Encoded, frame: pd.DataFrame, split: str, warnings: list[str]) -> dict[str, int]:
    missing = frame["label"][enc.labels < 0].value_counts().to_dict()
    if missing:
        shown = ", ".join(f"{k!r} x{v}" for k, v in missing.items())
        warnings.append(f"{split}: {sum(missing.values())} example(s) with labels never seen in training ({shown}); "
                        "left out of the scores")
    return {str(k): int(v) for k, v in missing.items()}



@dataclass
class _Progress:
    """Where a fine-tuning run is: counters, timings, the metrics logged, the best validation score."""

    total: int  # planned optimizer steps
    step: int = 0
    seen: int = 0  # training examples stepped over
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped_early: bool = False
    bad_evals: int = 0  # validations in a row without a new best
    best: dict[str, Any] = field(default_factory=lambda: {"accuracy": -1.0, "loss": math.inf, "step": 0})
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def validated(self, val: dict[str, Any], model: torch.nn.Module) -> None:
        """Count a validation; keep the weights of a new best (a CPU copy: GPU memory stays free)."""
        better = (val["accuracy"], -val["loss"]) > (self.best["accuracy"], -self.best["loss"])
        if better:
            self.best = {"accuracy": val["accuracy"], "loss": val["loss"], "step": self.step}
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.bad_evals = 0 if better else self.bad_evals + 1


def _open_out(cfg: FinetuneConfig, report_to: Sequence[str]) -> OutputDir | None:
    """OUT, checked before any work: a file, or foreign entries under our names, are refused."""
    if not cfg.out:
        return None
    outdir = OutputDir.open(cfg.out, "finetune", create=False)
    outdir.check_writable([PREDICTIONS_FILE, RESULTS_FILE, *tracking.entries(report_to)]
                          + ([MODEL_DIR] if cfg.save_model else []))
    check_writable_folder(outdir.path, "--out")  # a read-only or full --out: now, not after the training
    return outdir


def _adopt_trackers(outdir: OutputDir, report_to: Sequence[str]) -> None:
    """Record the tracker files and dirs this run wrote in OUT's manifest (they were checked to be ours)."""
    for name in tracking.entries(report_to):
        if (outdir.path / name).exists():
            outdir.adopt(name, "log" if (outdir.path / name).is_file() else "dir")


def _train_frame(cfg: FinetuneConfig, data: TaskData, warnings: list[str]) -> pd.DataFrame:
    """The training split, or a stratified sample of ``cfg.train_size`` of it."""
    frame = data.splits["train"]
    if not cfg.train_size:
        return frame
    if cfg.train_size < len(data.labels):
        raise WorkbenchError(f"--train-size {cfg.train_size} is fewer than the {len(data.labels)} classes; "
                             f"pass {len(data.labels)} or more")
    if cfg.train_size > len(frame):
        warnings.append(f"--train-size {cfg.train_size} exceeds the {len(frame)} training examples; using all")
    return frame.iloc[stratified_sample(frame["label"], cfg.train_size, cfg.seed)]


def _encode_splits(tok: PreTrainedTokenizerBase, cfg: FinetuneConfig, data: TaskData, train: pd.DataFrame,
                   warnings: list[str]) -> tuple[dict[str, _Encoded], dict[str, dict[str, int]]]:
    """Token ids of every split, and the validation/test labels never seen in training (warned about)."""
    enc = {name: _encode(tok, frame, data.labels, cfg.max_length)
           for name, frame in (("train", train), ("validation", data.splits["validation"]),
                               ("test", data.splits["test"]))}
    unseen = {s: _unseen(enc[s], data.splits[s], s, warnings) for s in ("validation", "test")}
    if not (enc["validation"].labels >= 0).any() or not (enc["test"].labels >= 0).any():
        raise WorkbenchError(f"task {data.name!r}: no validation or test example has a label seen in training "
                             f"({', '.join(data.labels)}); check --label-column and the splits")
    truncated = {s: e.truncated for s, e in enc.items()}
    if sum(truncated.values()):
        warnings.append(f"truncated {sum(truncated.values())} example(s) longer than --max-length {cfg.max_length} "
                        f"({', '.join(f'{s} {n}' for s, n in truncated.items() if n)})")
    return enc, unseen


def _prepare(engine: Engine, model: torch.nn.Module, cfg: FinetuneConfig, n_train: int) -> tuple[Any, int]:
    """The model on the engine with AdamW and warm-up then linear decay; returns (module, planned steps)."""
    model.train()
    model.set_attn_implementation(resolve_attention("auto", engine.device))  # eager on CPU, sdpa on CUDA
    if cfg.compile:
        model.base_model.compile(dynamic=True)  # in place: state_dict keys stay the same
    steps_per_epoch = math.ceil(n_train / (cfg.batch_size * engine.world))
    total = cfg.max_steps or max(cfg.min_steps, math.ceil(cfg.epochs * steps_per_epoch))

    def diverged(loss: float, grad: float) -> TrainingDiverged:
        step = engine.scheduler.last_epoch + 1  # the scheduler counts the optimizer steps taken
        return TrainingDiverged(f"non-finite loss or gradient at step {step}; lower --lr (e.g. {cfg.lr / 4:g})")

    module = engine.prepare(model, lr=cfg.lr, weight_decay=cfg.weight_decay, total=total,
                            warmup=int(round(cfg.warmup_fraction * total)), schedule="linear",
                            max_grad_norm=cfg.max_grad_norm, on_nonfinite=diverged)
    return module, total


def _train_step(engine: Engine, module: Any, enc: _Encoded, rows: np.ndarray, pad_id: int) -> dict[str, Any]:
    """One optimizer step on global batch ``rows``; returns its global loss, lr and gradient norm."""
    world = engine.world
    mine = _collate(enc, rows[engine.rank::world], pad_id)  # this process's rows of the global batch
    batch = {k: v.to(engine.device, non_blocking=True) for k, v in mine.items()}
    labels = batch.pop("labels")
    with engine.autocast():
        logits = module(**batch).logits  # (B_local, C)
    # Sum over this process's rows / global batch, times world: DDP's gradient mean is the global mean.
    loss = F.cross_entropy(logits.float(), labels, reduction="sum") * world / len(rows)

    def measure() -> dict[str, float]:
        local = loss.detach() / world  # this process's share of the global mean
        return {"loss": float(engine.reduce(local) if world > 1 else local)}

    return engine.step(loss, measure)


def _validate(engine: Engine, model: torch.nn.Module, enc: _Encoded, cfg: FinetuneConfig, labels: Sequence[str],
              pad_id: int, run: _Progress) -> dict[str, Any]:
    """Score the validation split, keep the best weights; returns the eval metrics to log."""
    t0 = time.perf_counter()
    val = _scores(_predict(model, enc, cfg.eval_batch_size, pad_id, engine.precision, engine.device), enc, labels)
    run.eval_seconds += time.perf_counter() - t0
    run.validated(val, model)
    return {"type": "eval", "step": run.step, "accuracy": val["accuracy"], "macro_f1": val["macro_f1"],
            "loss": val["loss"], "best_accuracy": run.best["accuracy"]}


def _fit(engine: Engine, module: Any, model: torch.nn.Module, enc: dict[str, _Encoded], cfg: FinetuneConfig,
         labels: Sequence[str], run: _Progress, log: Callback, pad_id: int) -> None:
    """Train for ``run.total`` steps, validating every eval_every; early stopping ends it at a plateau."""
    n_train = len(enc["train"])
    eval_every = cfg.eval_every or max(1, math.ceil(run.total / 10))
    lengths = np.array([len(x) for x in enc["train"].ids])
    batches = _train_batches(lengths, cfg.batch_size * engine.world, cfg.seed, cfg.group_by_length, engine.world)
    bar = tqdm(total=run.total, desc="finetune", unit="step", disable=not (engine.is_main and cfg.progress),
               dynamic_ncols=True)
    try:
        while run.step < run.total:
            # One optimizer step on the next global batch.
            t0 = time.perf_counter()
            rows = next(batches)
            m = _train_step(engine, module, enc["train"], rows, pad_id)
            run.step, run.seen = run.step + 1, run.seen + len(rows)
            seconds = time.perf_counter() - t0
            run.train_seconds += seconds
            if run.step % cfg.log_every == 0 or run.step == run.total:
                log({"type": "train", "step": run.step, "loss": m["loss"], "lr": m["lr"], "grad_norm": m["grad_norm"],
                     "epoch": run.seen / n_train, "step_seconds": seconds,
                     "examples_per_second": run.seen / max(run.train_seconds, 1e-9)})
                bar.set_postfix(loss=f"{m['loss']:.3f}", refresh=False)
            bar.update(1)
            # Validate on schedule; stop once validation has not improved for `patience` evaluations.
            if run.step % eval_every == 0 or run.step == run.total:
                metrics = _validate(engine, model, enc["validation"], cfg, labels, pad_id, run)
                log(metrics)
                bar.set_postfix(val_acc=f"{metrics['accuracy']:.3f}", refresh=False)
                if cfg.patience and run.bad_evals >= cfg.patience and cfg.min_steps <= run.step < run.total:
                    run.stopped_early = True
                    break
    finally:
        bar.close()


def finetune(cfg: FinetuneConfig, data: TaskData | None = None, callbacks: Sequence[Callback] = ()) -> FinetuneResult:
    """Fine-tune ``cfg.model`` on ``cfg.task``; write OUT/results.json and OUT/predictions.tsv."""
    start_time = time.perf_counter()
    # Output folder and trackers: checked before any work; no --out, nothing written.
    report_to = tracking.parse_report_to(cfg.report_to) if cfg.out else ()
    tracking.check_installed(report_to)
    outdir = _open_out(cfg, report_to)
    # Engine: `accelerate launch` gives DDP, else one process; precision, allocator.
    engine = Engine(cfg.precision, tracking.make_trackers(report_to, cfg.out))
    # Task, then the classifier (the seed fixes its new head, or the whole random model) and encoded splits.
    data = data if data is not None else load_task(cfg)
    warnings: list[str] = []
    train_frame = _train_frame(cfg, data, warnings)
    set_seed(cfg.seed)  # python, numpy, torch
    model, tok, info = load_classifier(cfg.model, data.labels, cfg.init, cfg.tokenizer, cfg.dropout, cfg.max_length)
    pad_id = int(tok.pad_token_id)
    enc, unseen = _encode_splits(tok, cfg, data, train_frame, warnings)
    for w in warnings if engine.is_main else ():
        print(f"warning: {w}", file=sys.stderr)
    # Model, optimizer and LR schedule on the engine; trackers start.
    module, total = _prepare(engine, model, cfg, len(enc["train"]))
    run = _Progress(total)
    if outdir is not None:
        # A fresh run: TensorBoard events of an earlier run here go, only if that folder is the workbench's.
        tracking.start(engine.accelerator, cfg.out, asdict(cfg), fresh=outdir if engine.is_main else None)
        if engine.is_main:
            _adopt_trackers(outdir, report_to)
    # Train with early stopping, then restore the best weights.
    _fit(engine, module, model, enc, cfg, data.labels, run, lambda m: _log(engine, run, callbacks, m), pad_id)
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    # Test: score the test split, write results.json, predictions and the model.
    t0 = time.perf_counter()
    probs = _predict(model, enc["test"], cfg.eval_batch_size, pad_id, engine.precision, engine.device)  # (N_test, C)
    run.eval_seconds += time.perf_counter() - t0
    results = _results(engine, cfg, data, info, _scores(probs, enc["test"], data.labels), enc, unseen, run, warnings)
    results["wall_seconds"] = time.perf_counter() - start_time
    frame = _predictions(data, probs, enc["test"].labels >= 0)
    if outdir is not None and engine.is_main:
        _adopt_trackers(outdir, report_to)  # as they are now: every event file the run wrote is listed
        _write_outputs(outdir, results, frame, model, tok, cfg.save_model)
    engine.accelerator.wait_for_everyone()
    return FinetuneResult(outdir.path if outdir else None, results, frame, run.history, model, tok)


def _log(engine: Engine, run: _Progress, callbacks: Sequence[Callback], metrics: dict[str, Any]) -> None:
    run.history.append(metrics)
    if engine.is_main:
        tracking.log(engine.accelerator, metrics)  # train/loss, eval/accuracy, ...
        for callback in callbacks:
            callback(dict(metrics))


def _results(engine: Engine, cfg: FinetuneConfig, data: TaskData, info: dict[str, Any], test: dict[str, Any],
             enc: dict[str, _Encoded], unseen: dict[str, dict[str, int]], run: _Progress,
             warnings: list[str]) -> dict[str, Any]:
    """What results.json holds (wall_seconds is added last, by the caller)."""
    scored = enc["test"].labels >= 0
    n_train = len(enc["train"])
    tracking.log(engine.accelerator, {"type": "test", "step": run.step, "accuracy": test["accuracy"],
                                      "macro_f1": test["macro_f1"], "loss": test["loss"]})
    tracking.finish(engine.accelerator)
    precision, device, world = engine.precision, engine.device, engine.world
    return {
        "task": data.name, "model": cfg.model, **info, "labels": data.labels, "pairs": data.pairs,
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "test_loss": test["loss"],
        "n_train": n_train, "n_validation": int((enc["validation"].labels >= 0).sum()), "n_test": int(scored.sum()),
        "n_test_excluded": int((~scored).sum()), "unseen_labels": unseen,
        "confusion_matrix": test["confusion_matrix"], "per_class": test["per_class"],
        "best_validation_accuracy": run.best["accuracy"], "best_step": run.best["step"], "steps": run.step,
        "planned_steps": run.total, "stopped_early": run.stopped_early, "epochs": run.seen / n_train,
        "truncated": {s: e.truncated for s, e in enc.items()}, "max_length": cfg.max_length,
        "precision": precision, "device": str(device),
        "processes": world, "train_seconds": run.train_seconds, "eval_seconds": run.eval_seconds,
        "examples_per_second": run.seen / max(run.train_seconds, 1e-9),
        "wall_seconds": 0.0,
        "split_notes": data.notes, "warnings": warnings, "config": asdict(cfg),
        "provenance": collect_provenance(precision=precision, attention=resolve_attention("auto", device),
                                         num_processes=world, seed=cfg.seed, data_cache_key=None),
    }


def _predictions(data: TaskData, probs: np.ndarray, scored: np.ndarray) -> pd.DataFrame:
    """The test split with its predicted label, whether it was scored, and a probability per class."""
    frame = data.splits["test"].copy()
    frame["prediction"] = [data.labels[i] for i in probs.argmax(1)]
    frame["scored"] = scored
    for i, name in enumerate(data.labels):
        frame[f"p_{name}"] = probs[:, i].round(6)
    return frame


def _write_outputs(out: OutputDir, results: dict[str, Any], predictions: pd.DataFrame, model: torch.nn.Module,
                   tok: PreTrainedTokenizerBase, save_model: bool) -> None:
    """Predictions, model and results.json, each built in a temporary, renamed and recorded in OUT's manifest."""
    out.write_text(PREDICTIONS_FILE, predictions.to_csv(sep="\t", index=False, quoting=csv.QUOTE_MINIMAL))
    if save_model:
        out.replace_dir(MODEL_DIR, lambda tmp_dir: (model.save_pretrained(tmp_dir), tok.save_pretrained(tmp_dir)))
    out.write_json(RESULTS_FILE, results)  # last: its presence means the run finished


