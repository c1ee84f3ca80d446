"""Fine-tuning for sequence classification (single sentences or pairs), and learning curves.

One loop on accelerate, with the pretraining loop's speed features: bf16 autocast where the
hardware has it, sdpa attention on CUDA (eager on CPU, where it is faster), fused AdamW,
optional torch.compile, warm-up then linear decay, gradient clipping and dynamic padding.
Early stopping validates on a stratified sample and restores the best weights before the
test split is scored.

Bad input policy: a missing column, a single class, an empty split, a tokenizer/checkpoint
vocabulary mismatch raise a one-line :class:`WorkbenchError`. Test (and validation) examples
whose label never occurs in training are counted, warned about and left out of the scores
(their predictions are still saved, with ``scored`` false). Texts longer than ``max_length``
are truncated and counted in ``results.json``.
"""

from __future__ import annotations

import csv
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from . import trackers as tracking
from .allocator import retain_freed_memory
from .builtin import resolve_pretrained
from .checkpoint import check_model_checkpoint, latest_checkpoint
from .config import FinetuneConfig, parse_lr_grid
from .data import builtin_rt_polarity_path
from .delimited import delimited_rows
from .errors import WorkbenchError, pickle_refusal
from .outputs import OutputDir
from .provenance import collect as collect_provenance
from .stats import mean_ci, paired_difference
from .tokenizer import load_tokenizer
from .train import lr_multiplier, resolve_attention, resolve_precision

__all__ = [
    "BUILTIN_RT_POLARITY",
    "FinetuneResult",
    "TaskData",
    "TrainingDiverged",
    "classification_metrics",
    "curve_summary",
    "finetune",
    "learning_curve",
    "load_classifier",
    "load_task",
    "lr_grid",
    "stratified_sample",
    "stratified_split",
]

Callback = Callable[[dict[str, Any]], None]
BUILTIN_RT_POLARITY = "builtin:rt-polarity"
RESULTS_FILE, PREDICTIONS_FILE, MODEL_DIR = "results.json", "predictions.tsv", "model"
TEXT_COLUMNS = ("sentence", "text", "sentence1", "text_a", "question", "premise")
PAIR_COLUMNS = ("sentence2", "text_b", "question2", "hypothesis")
_SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
           "val": "validation", "test": "test"}
_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")
_LONG_ROW = 20  # lines: a task row spanning more is reported (its quote may be unmatched)
_MISSING = {"", "nan", "<na>"}  # label texts that mean "no label" (lower-cased): a NaN written as text
_INTEGRAL = re.compile(r"[+-]?\d+\.0+")


# ------------------------------------------------------------------------------ stratified splits
def _allocate(counts: np.ndarray, total: int, minimum: int = 0) -> np.ndarray:
    """Share ``total`` over classes in proportion to ``counts`` (largest remainder), each in [min, count]."""
    quota = total * counts / max(counts.sum(), 1)
    low = np.minimum(minimum, counts)
    take = np.clip(np.floor(quota).astype(np.int64), low, counts)
    while take.sum() < total and (take < counts).any():
        take[np.argmax(np.where(take < counts, quota - take, -np.inf))] += 1
    while take.sum() > total and (take > low).any():
        take[np.argmax(np.where(take > low, take - quota, -np.inf))] -= 1
    return take


def stratified_split(labels: Sequence[Any], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction of the whole plus the rest, each class split alike."""
    y = np.asarray(labels).astype(str)
    classes, inverse = np.unique(y, return_inverse=True)
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    used = np.zeros(len(classes), dtype=np.int64)
    parts = []
    for fraction in fractions:
        left = np.array([len(p) for p in pools]) - used
        take = _allocate(left, min(int(round(fraction * len(y))), int(left.sum())))
        parts.append(np.sort(np.concatenate([p[u:u + t] for p, u, t in zip(pools, used, take, strict=True)])))
        used += take
    parts.append(np.sort(np.concatenate([p[u:] for p, u in zip(pools, used, strict=True)])))
    return parts


def stratified_sample(labels: Sequence[Any], n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples in the classes' proportions, every class at least once."""
    y = np.asarray(labels).astype(str)
    classes, inverse = np.unique(y, return_inverse=True)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    take = _allocate(np.bincount(inverse, minlength=len(classes)), n, minimum=1)
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:t] for c, t in enumerate(take)]
    return np.sort(np.concatenate(chosen))


# ----------------------------------------------------------------------------------- task data
@dataclass
class TaskData:
    """Train/validation/test frames with columns text, text_b (pairs only) and label (str)."""

    name: str
    splits: dict[str, pd.DataFrame]
    labels: list[str]  # class names, in model output order
    pairs: bool
    notes: list[str] = field(default_factory=list)  # how the splits were made, rows dropped

    @property
    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {k: len(v) for k, v in self.splits.items()}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _read_table(path: Path) -> pd.DataFrame:
    ext = path.suffix.lower()
    try:
        if ext in (".tsv", ".csv"):  # quoted fields as the csv module writes them (AG News has some)
            sep = "\t" if ext == ".tsv" else ","
            _check_quoting(path, sep)
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
        if ext == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"file '{path}' is not valid UTF-8 (byte offset {exc.start}); re-save it as UTF-8") from None
    except (ValueError, OSError) as exc:  # parser errors, empty files, broken parquet
        raise WorkbenchError(f"could not read '{path}' as {ext[1:]}: {_one_line(exc)}; "
                             "fix the file or pass another") from None


def _check_quoting(path: Path, sep: str) -> None:
    """Stop at an unmatched quote, which pandas reads as one field holding the rows after it."""
    warnings: list[str] = []
    with open(path, encoding="utf-8", newline="") as lines:
        for _ in delimited_rows(lines, path, sep, warnings, long_row=_LONG_ROW):
            pass
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _label_text(value: Any) -> str:
    """A label as text, alike in every format: 1, 1.0 and "1.0" are "1"; None, NaN, "nan" are ""."""
    if isinstance(value, float | np.floating) and not math.isnan(value) and float(value).is_integer():
        return str(int(value))  # a jsonl/parquet integer column with a missing value is float
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    if _INTEGRAL.fullmatch(text):  # "1.0": pandas wrote an integer column that had a NaN
        return text[:text.index(".")].lstrip("+")
    return "" if text.lower() in _MISSING else text


def _read_rt_polarity() -> dict[str, pd.DataFrame]:
    # "__label__neg text" per line, in Windows-1252 (gensim's test file).
    rows = [line.partition(" ") for line in builtin_rt_polarity_path().read_bytes().decode("cp1252").splitlines()]
    frame = pd.DataFrame([(t.strip(), lab.removeprefix("__label__")) for lab, _, t in rows if t.strip()],
                         columns=["text", "label"])
    return {"all": frame}


def _read_local(path: Path) -> dict[str, pd.DataFrame]:
    if path.is_file():
        if path.suffix.lower() not in _EXTENSIONS:
            raise WorkbenchError(f"task file '{path}' is not one of {', '.join(_EXTENSIONS)}; convert it or pass a dir")
        return {"all": _read_table(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _EXTENSIONS)
    named = {_SPLITS[p.stem.lower()]: p for p in files if p.stem.lower() in _SPLITS}
    if named:
        return {split: _read_table(p) for split, p in named.items()}
    if len(files) == 1:
        return {"all": _read_table(files[0])}
    raise WorkbenchError(f"task dir '{path}' has {len(files)} data files but none named train/validation/test; "
                         f"name them train.tsv, validation.tsv, test.tsv (or .csv/.jsonl/.parquet)")


def _read_hub(name: str, label_column: str) -> dict[str, pd.DataFrame]:
    import datasets

    repo, _, config = name.partition(":")
    if not config and repo.count("/") == 1 and repo.split("/")[0] in ("glue", "super_glue"):
        repo, config = repo.split("/")  # glue/sst2 -> load_dataset("glue", "sst2")
    try:
        loaded = datasets.load_dataset(repo, config or None)
    except Exception as exc:  # offline, unknown name, gated: the same to the user
        raise WorkbenchError(f"task {name!r} is not a local file or dir and could not be loaded from the Hugging Face "
                             f"hub ({_one_line(exc)}); pass a local dir such as ../shared/data/sst2, "
                             f"{BUILTIN_RT_POLARITY}, or a hub name when online") from None
    frames = {}
    for split, ds in loaded.items():
        frame = ds.to_pandas()
        names = getattr(ds.features.get(label_column), "names", None)
        if names is not None:  # ClassLabel ids -> names; -1 (GLUE's hidden test labels) -> ""
            frame[label_column] = [names[i] if 0 <= i < len(names) else "" for i in frame[label_column]]
            if (frame[label_column] == "").all():
                continue  # an unlabelled test split: carved from train instead
        frames[_SPLITS.get(split, split)] = frame
    return frames


def _pick(columns: Sequence[str], wanted: str, candidates: Sequence[str], what: str, flag: str, where: str) -> str:
    if wanted:
        if wanted not in columns:
            raise WorkbenchError(f"{where} has no {what} column {wanted!r} (columns: {', '.join(map(str, columns))}); "
                                 f"pass {flag} NAME")
        return wanted
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise WorkbenchError(f"{where} has no {what} column (looked for {', '.join(candidates)}; columns: "
                             f"{', '.join(map(str, columns))}); pass {flag} NAME")
    return found


def _sort_labels(values: Sequence[str]) -> list[str]:
    unique = sorted(set(values))
    try:
        return sorted(unique, key=float)  # 0, 1, 2, ... 10 in numeric order
    except ValueError:
        return unique


def load_task(cfg: FinetuneConfig) -> TaskData:
    """Read ``cfg.task`` into train/validation/test frames, making stratified splits as needed."""
    from . import downstream  # imported here: downstream builds on TaskData

    spec = cfg.task
    if downstream.is_downstream_spec(spec):  # held-out passages of a pretraining corpus: splits made there
        return downstream.load_downstream_task(spec, cfg.split_seed)
    if spec == BUILTIN_RT_POLARITY:
        raw = _read_rt_polarity()
    elif spec.startswith("builtin:"):
        raise WorkbenchError(f"unknown builtin task {spec!r}; the builtin tasks are {BUILTIN_RT_POLARITY} "
                             f"and {downstream.BUILTIN_WIKIPEDIA_TOPICS}")
    elif Path(spec).expanduser().exists():
        raw = _read_local(Path(spec).expanduser())
    elif spec.startswith(("/", ".", "~")) or Path(spec).suffix.lower() in _EXTENSIONS:
        raise WorkbenchError(f"task path {spec!r} does not exist; pass a data file or dir, or {BUILTIN_RT_POLARITY}")
    else:
        raw = _read_hub(spec, cfg.label_column)
    notes: list[str] = []
    first = next(iter(raw.values()))
    where = f"task {spec!r}"
    text = _pick(list(first.columns), cfg.text_column, TEXT_COLUMNS, "text", "--text-column", where)
    pair = None
    if cfg.text_pair_column != "none":
        if cfg.text_pair_column or any(c in first.columns for c in PAIR_COLUMNS):
            pair = _pick(list(first.columns), cfg.text_pair_column, PAIR_COLUMNS, "text pair", "--text-pair-column", where)
    splits: dict[str, pd.DataFrame] = {}
    for name, frame in raw.items():
        here = f"{where} split {name}"
        for column, what, flag in ((text, "text", "--text-column"), (pair, "text pair", "--text-pair-column"),
                                   (cfg.label_column, "label", "--label-column")):
            if column is not None:
                _pick(list(frame.columns), column, (), what, flag, here)
        out = pd.DataFrame({"text": frame[text].fillna("").astype(str)})
        if pair is not None:
            out["text_b"] = frame[pair].fillna("").astype(str)
        out["label"] = [_label_text(v) for v in frame[cfg.label_column].tolist()]
        splits[name] = _drop_unlabelled(out, here, cfg.label_column, notes)
    splits = _arrange_splits(splits, cfg, notes, where)
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            raise WorkbenchError(f"{where}: the {name} split is empty; pass data with labelled {name} examples")
    labels = _sort_labels(splits["train"]["label"].tolist())
    if len(labels) < 2:
        raise WorkbenchError(f"{where}: the training labels have one class only ({labels[0]!r}); "
                             f"classification needs two or more (check --label-column)")
    if cfg.max_validation and len(splits["validation"]) > cfg.max_validation:
        keep = stratified_sample(splits["validation"]["label"], cfg.max_validation, cfg.split_seed)
        notes.append(f"validation: a stratified sample of {cfg.max_validation} of {len(splits['validation'])}")
        splits["validation"] = splits["validation"].iloc[keep].reset_index(drop=True)
    if len(splits["validation"]) == 0:
        raise WorkbenchError(f"{where}: the validation split is empty; pass more data or a larger --validation-fraction")
    return TaskData(spec, splits, labels, pair is not None, notes)


def _drop_unlabelled(frame: pd.DataFrame, where: str, label_column: str, notes: list[str]) -> pd.DataFrame:
    """Rows with an empty text or an empty/NaN label, counted in a warning and left out."""
    no_label = (frame["label"] == "").to_numpy()
    no_text = (frame["text"].str.strip() == "").to_numpy() & ~no_label
    for mask, what in ((no_label, f"an empty or NaN label {label_column!r}"), (no_text, "an empty text")):
        if mask.any():
            message = f"{where}: dropped {int(mask.sum())} row(s) with {what} (first: data row {int(np.argmax(mask)) + 1})"
            notes.append(message)
            print(f"warning: {message}", file=sys.stderr)
    return frame[~(no_label | no_text)].reset_index(drop=True)


def _arrange_splits(raw: dict[str, pd.DataFrame], cfg: FinetuneConfig, notes: list[str], where: str
                    ) -> dict[str, pd.DataFrame]:
    """train/validation/test from what the source has: given, carved from train, or all three made."""
    def take(frame: pd.DataFrame, idx: np.ndarray) -> pd.DataFrame:
        return frame.iloc[idx].reset_index(drop=True)

    if len(raw) == 1:  # one file: stratified train/validation/test
        frame = next(iter(raw.values()))
        test, val, train = stratified_split(frame["label"], [cfg.test_fraction, cfg.validation_fraction], cfg.split_seed)
        notes.append(f"one split: stratified {1 - cfg.test_fraction - cfg.validation_fraction:.0%}/"
                     f"{cfg.validation_fraction:.0%}/{cfg.test_fraction:.0%} train/validation/test (seed {cfg.split_seed})")
        return {"train": take(frame, train), "validation": take(frame, val), "test": take(frame, test)}
    if "train" not in raw:
        raise WorkbenchError(f"{where} has splits {', '.join(raw)} but no train split; name the training file train.*")
    train = raw["train"]
    if "test" not in raw and "validation" in raw:  # e.g. GLUE: its labelled dev split becomes the test split
        notes.append("no test split: validation used as test")
        raw = {"train": train, "test": raw["validation"]}
    if "test" not in raw:
        raise WorkbenchError(f"{where} has no test or validation split; add test.* or pass one file to split")
    if "validation" in raw:
        return {"train": train, "validation": raw["validation"], "test": raw["test"]}
    val, rest = stratified_split(train["label"], [cfg.validation_fraction], cfg.split_seed)
    notes.append(f"no validation split: stratified {cfg.validation_fraction:.0%} of train (seed {cfg.split_seed})")
    return {"train": take(train, rest), "validation": take(train, val), "test": raw["test"]}


# --------------------------------------------------------------------------------------- model
def _checkpoint_path(spec: str) -> str:
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
    path = _checkpoint_path(spec)
    tok = load_tokenizer(tokenizer or (spec if spec.startswith("builtin:") else path))
    id2label = dict(enumerate(labels))
    try:
        config = AutoConfig.from_pretrained(
            path, num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout)
    except Exception as exc:  # hub unreachable, no config.json, unknown model type
        raise WorkbenchError(f"could not read the config of --model {spec!r}: {_one_line(exc)}; "
                             "pass a checkpoint dir, a hub name or builtin:minilm") from None
    if config.vocab_size != len(tok):
        raise WorkbenchError(f"--model {spec!r} has vocab_size {config.vocab_size} but its tokenizer has {len(tok)} "
                             f"tokens; pass the tokenizer it was trained with (--tokenizer DIR)")
    positions = getattr(config, "max_position_embeddings", max_length)
    if max_length > positions:
        raise WorkbenchError(f"--max-length {max_length} exceeds the {positions} positions of --model {spec!r}; "
                             f"pass --max-length {positions} or less")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the new classifier head is expected: no load report or bar
    hf_logging.disable_progress_bar()
    try:
        if random_init:
            model, new = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa"), ["all"]
        else:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, config=config, attn_implementation="sdpa", dtype=torch.float32, output_loading_info=True)
            new = sorted({k.rsplit(".", 1)[0] for k in info["missing_keys"]})
    except Exception as exc:
        refusal = pickle_refusal(exc, f"--model {spec!r}", path)
        raise refusal or WorkbenchError(f"could not load --model {spec!r}: {_one_line(exc)}; "
                                        "pass a BERT checkpoint dir or builtin:minilm") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
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


class TrainingDiverged(WorkbenchError):
    """The loss or gradient became non-finite: the learning rate is too high."""


def _autocast(precision: str, device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


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
            with _autocast(precision, device):
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


def _optimizer(model: torch.nn.Module, cfg: FinetuneConfig, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW on CUDA and on CPU too: one kernel over all tensors, 6x faster than the
    # default per-tensor loop on a 2-core CPU (15 vs 88 ms a step for minilm's 23M parameters).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                             fused=True if device.type in ("cuda", "cpu") else None)


def _unseen(enc: _Encoded, frame: pd.DataFrame, split: str, warnings: list[str]) -> dict[str, int]:
    missing = frame["label"][enc.labels < 0].value_counts().to_dict()
    if missing:
        shown = ", ".join(f"{k!r} x{v}" for k, v in missing.items())
        warnings.append(f"{split}: {sum(missing.values())} example(s) with labels never seen in training ({shown}); "
                        "left out of the scores")
    return {str(k): int(v) for k, v in missing.items()}


def finetune(cfg: FinetuneConfig, data: TaskData | None = None, callbacks: Sequence[Callback] = ()) -> FinetuneResult:
    """Fine-tune ``cfg.model`` on ``cfg.task``; write OUT/results.json and OUT/predictions.tsv."""
    start_time = time.perf_counter()
    report_to = tracking.parse_report_to(cfg.report_to) if cfg.out else ()  # no --out: nothing written
    tracking.check_installed(report_to)
    outdir = OutputDir.open(cfg.out, "finetune", create=False) if cfg.out else None
    if outdir is not None:  # before any work: a file, or foreign entries under our names, are refused
        outdir.check_writable([PREDICTIONS_FILE, RESULTS_FILE, *tracking.entries(report_to)]
                              + ([MODEL_DIR] if cfg.save_model else []))
    # as pretraining: `accelerate launch` gives DDP, else one process; log_with is per instance
    acc = Accelerator(log_with=tracking.make_trackers(report_to, cfg.out) or None)
    device, world, rank, is_main = acc.device, acc.num_processes, acc.process_index, acc.is_main_process
    launched = str(acc.mixed_precision)
    if launched not in ("no", "bf16"):
        raise WorkbenchError(f"accelerate is set to mixed precision {launched}; launch with --mixed_precision no")
    precision = "bf16" if launched == "bf16" else resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        retain_freed_memory()  # activations reuse heap pages instead of faulting in anew
    data = data if data is not None else load_task(cfg)
    warnings: list[str] = []
    train_frame = data.splits["train"]
    if cfg.train_size:
        if cfg.train_size < len(data.labels):
            raise WorkbenchError(f"--train-size {cfg.train_size} is fewer than the {len(data.labels)} classes; "
                                 f"pass {len(data.labels)} or more")
        if cfg.train_size > len(train_frame):
            warnings.append(f"--train-size {cfg.train_size} exceeds the {len(train_frame)} training examples; using all")
        train_frame = train_frame.iloc[stratified_sample(train_frame["label"], cfg.train_size, cfg.seed)]

    set_seed(cfg.seed)  # python, numpy, torch: the classifier head (or whole random model) is reproducible
    model, tok, info = load_classifier(cfg.model, data.labels, cfg.init, cfg.tokenizer, cfg.dropout, cfg.max_length)
    pad_id = int(tok.pad_token_id)
    enc = {name: _encode(tok, frame, data.labels, cfg.max_length)
           for name, frame in (("train", train_frame), ("validation", data.splits["validation"]),
                               ("test", data.splits["test"]))}
    unseen = {s: _unseen(enc[s], data.splits[s], s, warnings) for s in ("validation", "test")}
    if not (enc["validation"].labels >= 0).any() or not (enc["test"].labels >= 0).any():
        raise WorkbenchError(f"task {data.name!r}: no validation or test example has a label seen in training "
                             f"({', '.join(data.labels)}); check --label-column and the splits")
    truncated = {s: e.truncated for s, e in enc.items()}
    if sum(truncated.values()):
        warnings.append(f"truncated {sum(truncated.values())} example(s) longer than --max-length {cfg.max_length} "
                        f"({', '.join(f'{s} {n}' for s, n in truncated.items() if n)})")
    if is_main:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)

    model.train()
    model.set_attn_implementation(resolve_attention("auto", device))  # eager on CPU, sdpa on CUDA
    if cfg.compile:
        model.base_model.compile(dynamic=True)  # in place: state_dict keys stay the same
    module = acc.prepare(model)  # device placement, DDP when launched
    optimizer = _optimizer(model, cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    global_batch = cfg.batch_size * world
    n_train = len(enc["train"])
    steps_per_epoch = math.ceil(n_train / global_batch)
    total = cfg.max_steps or max(cfg.min_steps, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = int(round(cfg.warmup_fraction * total))
    eval_every = cfg.eval_every or max(1, math.ceil(total / 10))
    lengths = np.array([len(x) for x in enc["train"].ids])
    batches = _train_batches(lengths, global_batch, cfg.seed, cfg.group_by_length, world)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"accuracy": -1.0, "loss": math.inf, "step": 0, "state": None}
    bad_evals, step, seen, train_seconds, eval_seconds, stopped_early = 0, 0, 0, 0.0, 0.0, False

    def log(metrics: dict[str, Any]) -> None:
        history.append(metrics)
        if is_main:
            tracking.log(acc, metrics)  # train/loss, eval/accuracy, ...
            for callback in callbacks:
                callback(dict(metrics))

    if outdir is not None:
        tracking.start(acc, cfg.out, asdict(cfg), fresh=True)  # the tracker dirs were checked to be ours
        for name in tracking.entries(report_to) if is_main else ():
            if (outdir.path / name).exists():
                outdir.adopt(name, "log" if (outdir.path / name).is_file() else "dir")
    bar = tqdm(total=total, desc="finetune", unit="step", disable=not (is_main and cfg.progress), dynamic_ncols=True)
    try:
        while step < total:
            t0 = time.perf_counter()
            rows = next(batches)
            lr = cfg.lr * lr_multiplier(step, total, warmup, "linear")
            for group in optimizer.param_groups:
                group["lr"] = lr
            mine = _collate(enc["train"], rows[rank::world], pad_id)  # this process's rows of the global batch
            batch = {k: v.to(device, non_blocking=True) for k, v in mine.items()}
            labels = batch.pop("labels")
            with _autocast(precision, device):
                logits = module(**batch).logits  # (B_local, C)
            # Sum over this process's rows / global batch, times world: DDP's gradient mean is the global mean.
            loss = F.cross_entropy(logits.float(), labels, reduction="sum") * world / len(rows)
            loss.backward()
            grad = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
            local = loss.detach() / world  # this process's share of the global mean
            loss_value, grad_value = float(acc.reduce(local, "sum") if world > 1 else local), float(grad)
            if not (math.isfinite(loss_value) and math.isfinite(grad_value)):
                raise TrainingDiverged(f"non-finite loss or gradient at step {step + 1}; lower --lr (e.g. {cfg.lr / 4:g})")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step, seen = step + 1, seen + len(rows)
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            if step % cfg.log_every == 0 or step == total:
                log({"type": "train", "step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_value,
                     "epoch": seen / n_train, "step_seconds": seconds,
                     "examples_per_second": seen / max(train_seconds, 1e-9)})
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            bar.update(1)
            if step % eval_every == 0 or step == total:
                t0 = time.perf_counter()
                val = _scores(_predict(model, enc["validation"], cfg.eval_batch_size, pad_id, precision, device),
                              enc["validation"], data.labels)
                eval_seconds += time.perf_counter() - t0
                better = (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"])
                if better:  # keep the best weights (a CPU copy: GPU memory stays free)
                    best.update(accuracy=val["accuracy"], loss=val["loss"], step=step,
                                state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                bad_evals = 0 if better else bad_evals + 1
                log({"type": "eval", "step": step, "accuracy": val["accuracy"], "macro_f1": val["macro_f1"],
                     "loss": val["loss"], "best_accuracy": best["accuracy"]})
                bar.set_postfix(val_acc=f"{val['accuracy']:.3f}", refresh=False)
                if cfg.patience and bad_evals >= cfg.patience and cfg.min_steps <= step < total:
                    stopped_early = True
                    break
    finally:
        bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])

    t0 = time.perf_counter()
    probs = _predict(model, enc["test"], cfg.eval_batch_size, pad_id, precision, device)  # (N_test, C)
    eval_seconds += time.perf_counter() - t0
    test = _scores(probs, enc["test"], data.labels)
    scored = enc["test"].labels >= 0
    tracking.log(acc, {"type": "test", "step": step, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                       "loss": test["loss"]})
    tracking.finish(acc)
    results = {
        "task": data.name, "model": cfg.model, **info, "labels": data.labels, "pairs": data.pairs,
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "test_loss": test["loss"],
        "n_train": n_train, "n_validation": int((enc["validation"].labels >= 0).sum()), "n_test": int(scored.sum()),
        "n_test_excluded": int((~scored).sum()), "unseen_labels": unseen,
        "confusion_matrix": test["confusion_matrix"], "per_class": test["per_class"],
        "best_validation_accuracy": best["accuracy"], "best_step": best["step"], "steps": step,
        "planned_steps": total, "stopped_early": stopped_early, "epochs": seen / n_train,
        "truncated": truncated, "max_length": cfg.max_length, "precision": precision, "device": str(device),
        "processes": world, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "examples_per_second": seen / max(train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - start_time,
        "split_notes": data.notes, "warnings": warnings, "config": asdict(cfg),
        "provenance": collect_provenance(precision=precision, attention=resolve_attention("auto", device),
                                         num_processes=world, seed=cfg.seed, data_cache_key=None),
    }
    frame = data.splits["test"].copy()
    frame["prediction"] = [data.labels[i] for i in probs.argmax(1)]
    frame["scored"] = scored
    for i, name in enumerate(data.labels):
        frame[f"p_{name}"] = probs[:, i].round(6)
    if outdir is not None and is_main:
        _write_outputs(outdir, results, frame, model, tok, cfg.save_model)
    acc.wait_for_everyone()
    return FinetuneResult(outdir.path if outdir else None, results, frame, history, model, tok)


def _write_outputs(out: OutputDir, results: dict[str, Any], predictions: pd.DataFrame, model: torch.nn.Module,
                   tok: PreTrainedTokenizerBase, save_model: bool) -> None:
    """Predictions, model and results.json, each built in a temporary, renamed and recorded in OUT's manifest."""
    tmp = out.tmp_path(PREDICTIONS_FILE)
    try:
        predictions.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_MINIMAL)
        out.commit(tmp, PREDICTIONS_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    if save_model:
        out.replace_dir(MODEL_DIR, lambda tmp_dir: (model.save_pretrained(tmp_dir), tok.save_pretrained(tmp_dir)))
    out.write_json(RESULTS_FILE, results)  # last: its presence means the run finished


# ----------------------------------------------------------------------------- learning curves
SMALL_MODEL_LRS = (3e-4, 1e-3, 3e-3)  # hidden <= 256 (tiny, mini): measured in benchmarks/pretraining_gain.py
LARGE_MODEL_LRS = (3e-5, 1e-4)  # wider pretrained encoders (MiniLM: hidden 384)


def lr_grid(spec: str, cfg: FinetuneConfig) -> list[float]:
    """The learning rates a learning curve tries for ``spec``: ``cfg.lr_grid``, or by model width when auto."""
    if cfg.lr_grid == "none":
        return [cfg.lr]
    if cfg.lr_grid != "auto":
        return parse_lr_grid(cfg.lr_grid)
    path = _checkpoint_path(spec.removeprefix("random:"))
    try:
        hidden = int(AutoConfig.from_pretrained(path).hidden_size)
    except Exception as exc:  # as load_classifier: no config, hub unreachable
        raise WorkbenchError(f"could not read the config of {spec!r}: {_one_line(exc)}; "
                             "pass a checkpoint dir or builtin:minilm") from None
    return list(SMALL_MODEL_LRS if hidden <= 256 else LARGE_MODEL_LRS)


def _curve_run(cfg: FinetuneConfig, data: TaskData) -> dict[str, Any]:
    """One fine-tune of a curve as a row; a diverged run is kept, with NaN scores, so the grid rejects it."""
    try:
        r = finetune(cfg, data).results
    except TrainingDiverged:
        return {"n_train": cfg.train_size or len(data.splits["train"]), "accuracy": math.nan, "macro_f1": math.nan,
                "best_validation_accuracy": math.nan, "best_step": 0, "steps": 0, "planned_steps": 0,
                "stopped_early": False, "plateau_steps": 0, "diverged": True, "train_seconds": 0.0,
                "wall_seconds": 0.0}
    return {"n_train": r["n_train"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
            "best_validation_accuracy": r["best_validation_accuracy"], "best_step": r["best_step"],
            "steps": r["steps"], "planned_steps": r["planned_steps"], "stopped_early": r["stopped_early"],
            # Steps trained past the best validation score: > 0 with stopped_early means the curve had flattened.
            "plateau_steps": r["steps"] - r["best_step"], "diverged": False, "train_seconds": r["train_seconds"],
            "wall_seconds": r["wall_seconds"]}


def _curve_point(base: FinetuneConfig, data: TaskData, init: str, n: int, lr: float, seed: int,
                 out: str | Path | None, verbose: bool) -> dict[str, Any]:
    """One run of a learning curve as its row (n == all training examples: train_size 0)."""
    name = init.replace("/", "_").replace(":", "-")
    run_out = str(Path(out) / name / f"n{n}-lr{lr:g}-seed{seed}") if out else ""
    n_all = len(data.splits["train"])
    cfg = replace(base, model=init, train_size=0 if n == n_all else n, seed=seed, lr=lr, out=run_out)
    r = _curve_run(cfg, data)
    if verbose:
        print(f"{init:>28}  n={n:<6} lr={lr:<7g} seed={seed}  acc={r['accuracy']:.4f}  "
              f"val={r['best_validation_accuracy']:.4f}  steps={r['steps']}  {r['wall_seconds']:.0f}s", file=sys.stderr)
    return {"n_train": r.pop("n_train"), "init": init, "seed": seed, **r, "lr": lr}


def _choose_lr(block: list[dict[str, Any]]) -> float:
    """The grid point with the best mean validation accuracy over seeds (ties: the first); NaN counts as -1."""
    by_lr: dict[float, list[float]] = {}
    for row in block:
        val = row["best_validation_accuracy"]
        by_lr.setdefault(row["lr"], []).append(-1.0 if math.isnan(val) else val)
    best = max(by_lr, key=lambda lr: float(np.mean(by_lr[lr])))
    if all(row["diverged"] for row in block if row["lr"] == best):
        raise WorkbenchError(f"every learning rate of the grid ({', '.join(f'{lr:g}' for lr in by_lr)}) diverged; "
                             "pass a lower --lr-grid")
    return best


def learning_curve(inits: Sequence[str], task: str | TaskData, sizes: Sequence[int] = (100, 300, 1000, 3000, 0),
                   seeds: Sequence[int] = (0, 1, 2), base: FinetuneConfig | None = None,
                   out: str | Path | None = None, verbose: bool = True,
                   on_run: Callback | None = None) -> pd.DataFrame:
    """Fine-tunes under the fair protocol; a row per (init, n_train, lr, seed), ``chosen`` marking the kept lr.

    Fair protocol: every init gets the same label samples (seeded by ``seed``) and seeds, its lr grid
    (``base.lr_grid``), a schedule of ``base.curve_epochs`` passes but at least ``base.curve_min_steps``
    steps, and early stopping on validation once past that minimum (``patience``, best weights kept).
    Per (init, n_train) the lr with the best mean validation accuracy over the first
    ``base.lr_grid_seeds`` seeds is chosen, and the other seeds run at it. ``inits`` are --model specs
    (``random:X``: the random twin of X); size 0 is the whole training split; the test split is the
    same for every run (split_seed). ``on_run`` gets each row once its (init, n_train) block is done.
    Aggregate with :func:`curve_summary`.
    """
    base = base or FinetuneConfig()
    base = replace(base, task=task.name if isinstance(task, TaskData) else task, progress=False,
                   min_steps=max(base.min_steps, base.curve_min_steps), epochs=max(base.epochs, base.curve_epochs))
    data = task if isinstance(task, TaskData) else load_task(base)
    n_all = len(data.splits["train"])
    counts = list(dict.fromkeys(n_all if size == 0 or size >= n_all else size for size in sizes))
    seeds = list(seeds)
    rows: list[dict[str, Any]] = []
    for init in inits:
        grid = lr_grid(init, base)
        # The grid on the first k seeds, the other seeds at the lr validation chose (one lr: every seed).
        k = base.lr_grid_seeds or len(seeds) if len(grid) > 1 else len(seeds)
        for n in counts:
            block = [_curve_point(base, data, init, n, lr, seed, out, verbose) for lr in grid for seed in seeds[:k]]
            chosen = _choose_lr(block)
            block += [_curve_point(base, data, init, n, chosen, seed, out, verbose) for seed in seeds[k:]]
            for row in block:
                row["chosen"] = row["lr"] == chosen
                rows.append(row)
                if on_run is not None:
                    on_run(dict(row))
    return pd.DataFrame(rows)


def curve_summary(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (init, n_train), over seeds at the chosen lr: mean, std and t interval of accuracy and macro-F1,
    and the paired gain over the random twin (``random:<init>``, matched by seed) with its interval."""
    kept = runs[runs["chosen"].astype(bool)] if "chosen" in runs else runs
    out = []
    for (init, n), part in kept.groupby(["init", "n_train"], sort=False):
        mean, low, high = mean_ci(part["accuracy"], confidence)
        row = {"init": init, "n_train": n, "runs": len(part), "lr": part["lr"].iloc[0] if "lr" in part else math.nan,
               "accuracy_mean": mean, "accuracy_std": float(part["accuracy"].std()) if len(part) > 1 else 0.0,
               "accuracy_ci_low": low, "accuracy_ci_high": high, "macro_f1_mean": float(part["macro_f1"].mean()),
               "macro_f1_std": float(part["macro_f1"].std()) if len(part) > 1 else 0.0,
               "baseline": "", "gain": math.nan, "gain_ci_low": math.nan, "gain_ci_high": math.nan, "verdict": ""}
        twin = kept[(kept["init"] == f"random:{init}") & (kept["n_train"] == n)]
        if not init.startswith("random:") and len(twin):
            pair = part.merge(twin, on="seed", suffixes=("", "_twin"))  # the same seeds: the same label samples
            if len(pair):
                d = paired_difference(pair["accuracy"], pair["accuracy_twin"], confidence)
                row.update(baseline=f"random:{init}", gain=d["mean"], gain_ci_low=d["low"], gain_ci_high=d["high"],
                           verdict=d["verdict"])
        out.append(row)
    summary = pd.DataFrame(out)
    return summary.sort_values(["init", "n_train"], kind="stable", key=_init_order(runs)).reset_index(drop=True)


def _init_order(runs: pd.DataFrame) -> Callable[[pd.Series], pd.Series]:
    order = {init: i for i, init in enumerate(dict.fromkeys(runs["init"]))}
    return lambda col: col.map(order) if col.name == "init" else col

