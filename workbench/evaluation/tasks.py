"""Classification tasks for fine-tuning: read a file, a dir, the hub or a builtin into stratified splits.

Bad input policy: a missing column, a single class, an empty split raise a one-line
:class:`WorkbenchError`; rows with an empty text or label are counted in a warning and dropped.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import FinetuneConfig
from ..data.corpora import builtin_rt_polarity_path
from ..data.delimited import delimited_rows
from ..errors import WorkbenchError, one_line, special_kind
from .splits import TaskData, stratified_sample, stratified_split

__all__ = [
    "BUILTIN_RT_POLARITY",
    "PAIR_COLUMNS",
    "TEXT_COLUMNS",
    "load_task",
]

BUILTIN_RT_POLARITY = "builtin:rt-polarity"
TEXT_COLUMNS = ("sentence", "text", "sentence1", "text_a", "question", "premise")
PAIR_COLUMNS = ("sentence2", "text_b", "question2", "hypothesis")
_SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
           "val": "validation", "test": "test"}
_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")
_LONG_ROW = 20  # lines: a task row spanning more is reported (its quote may be unmatched)
_MISSING = {"", "nan", "<na>"}  # label texts that mean "no label" (lower-cased): a NaN written as text
_INTEGRAL = re.compile(r"[+-]?\d+\.0+")


# ------------------------------------------------------------------------------ stratified splits
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
        raise WorkbenchError(f"could not read '{path}' as {ext[1:]}: {one_line(exc, 200)}; "
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
    kind = special_kind(path)
    if kind is not None:  # reading a FIFO would wait for a writer; a device never ends
        raise WorkbenchError(f"task '{path}' is {kind}, not a file or folder; save the data to a "
                             f"{'/'.join(_EXTENSIONS)} file and pass that")
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
                             f"hub ({one_line(exc, 200)}); pass a local dir such as ../shared/data/sst2, "
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
    from . import (
        heldout as downstream,  # imported here: only held-out specs need it (it loads datasets)
    )

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
        dropped = len(notes)
        splits[name] = _drop_unlabelled(out, here, cfg.label_column, notes)
        if len(splits[name]) == 0 and (len(raw) == 1 or name == "train"):  # refused alone, without the warnings
            what = (f"its {len(out)} row(s) all have an empty or NaN label {cfg.label_column!r} or an empty text"
                    if len(out) else "it has no data rows")
            raise WorkbenchError(f"{here} has no labelled rows: {what}; fill in the labels, or pass the column "
                                 "that holds them with --label-column NAME")
        for message in notes[dropped:]:
            print(f"warning: {message}", file=sys.stderr)
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
    """Rows with an empty text or an empty/NaN label, counted in a note (the caller warns) and left out."""
    no_label = (frame["label"] == "").to_numpy()
    no_text = (frame["text"].str.strip() == "").to_numpy() & ~no_label
    for mask, what in ((no_label, f"an empty or NaN label {label_column!r}"), (no_text, "an empty text")):
        if mask.any():
            message = f"{where}: dropped {int(mask.sum())} row(s) with {what} (first: data row {int(np.argmax(mask)) + 1})"
            notes.append(message)
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
