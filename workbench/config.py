"""Configuration dataclasses shared by the CLI, the notebooks' `parameters` cells and papermill.

Every field has help text (``metadata["help"]``) and ``__post_init__`` validates it, so a bad
value fails with a one-line :class:`WorkbenchError` wherever it came from. Defaults describe a
run that finishes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import WorkbenchError

__all__ = [
    "DataConfig",
    "MaskingConfig",
    "OBJECTIVES",
    "config_from_dict",
    "config_fields",
    "coerce_value",
]

OBJECTIVES = ("nsp", "sop", "mlm")
C = TypeVar("C")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise WorkbenchError(message)


@dataclass
class DataConfig:
    """Where the corpus comes from and how pretraining examples are built from it."""

    corpus: str = _help(
        "Corpus: `builtin:wikipedia`, a file or folder (.txt/.jsonl/.csv/.tsv/.parquet or a "
        "Wikipedia .xml/.xml.bz2 dump), a dataset saved with `save_to_disk`, or a hub name "
        "`name[:config]` when online.",
        "builtin:wikipedia",
    )
    text_column: str = _help("Text column for .jsonl/.csv/.tsv/.parquet and datasets.", "text")
    tokenizer: str = _help(
        "Tokenizer: `builtin:minilm`, `train` (a new WordPiece on this corpus), a local dir or a hub name.",
        "builtin:minilm",
    )
    vocab_size: int = _help("Vocabulary size when training a tokenizer (`tokenizer=train`).", 8192)
    lowercase: bool = _help("Lower-case text when training a tokenizer.", True)
    objective: str = _help("Sentence objective: `nsp` (BERT), `sop` (ALBERT) or `mlm` (packed, MLM only).", "nsp")
    max_seq_length: int = _help("Tokens per example, [CLS] and [SEP]s included.", 128)
    short_seq_prob: float = _help("Probability of a shorter random target length (BERT: 0.1).", 0.1)
    dupe_factor: int = _help("Passes over the corpus, each with different pairings.", 1)
    google_compat: bool = _help(
        "Reproduce Google's create_pretraining_data.py exactly (about 46% IsNext on Wikipedia) "
        "instead of the balanced 50/50 default.",
        False,
    )
    shard_size: int = _help(
        "Documents per shard: NotNext partners are drawn within a shard, and peak memory is bounded by it.",
        1000,
    )
    min_doc_words: int = _help("Skip documents with fewer words than this (stubs, redirects).", 50)
    max_documents: int = _help("Use at most this many documents (0 = all).", 0)
    validation_fraction: float = _help("Fraction of documents held out for evaluation.", 0.05)
    errors: str = _help("Invalid UTF-8: `strict` stops with the file and byte offset, `replace` counts and goes on.", "strict")
    num_proc: int = _help("Processes for tokenizing and pair building.", 1)
    seed: int = _help("Seed for pair building and the validation split.", 12345)
    cache_dir: str = _help("Where built datasets are cached, under a key of corpus, tokenizer and settings.", "data/cache")

    def __post_init__(self) -> None:
        _check(self.objective in OBJECTIVES, f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}; pass --objective nsp, sop or mlm")
        _check(self.max_seq_length >= 8, f"max_seq_length {self.max_seq_length} is too small; use 8 or more (128 is typical)")
        _check(0.0 <= self.short_seq_prob < 1.0, f"short_seq_prob {self.short_seq_prob} must be in [0, 1); BERT uses 0.1")
        _check(self.dupe_factor >= 1, f"dupe_factor {self.dupe_factor} must be 1 or more")
        _check(self.shard_size >= 2, f"shard_size {self.shard_size} must be at least 2 documents (NotNext needs another document)")
        _check(self.vocab_size >= 1, f"vocab_size {self.vocab_size} must be positive")
        _check(self.min_doc_words >= 0, f"min_doc_words {self.min_doc_words} must be 0 or more")
        _check(self.max_documents >= 0, f"max_documents {self.max_documents} must be 0 (all) or more")
        _check(0.0 <= self.validation_fraction < 0.5, f"validation_fraction {self.validation_fraction} must be in [0, 0.5)")
        _check(self.errors in ("strict", "replace"), f"errors {self.errors!r} must be `strict` or `replace`")
        _check(self.num_proc >= 1, f"num_proc {self.num_proc} must be 1 or more")


@dataclass
class MaskingConfig:
    """Dynamic MLM masking, applied at batch time."""

    mask_rate: float = _help("Fraction of (non-special) tokens to predict; 0.15 in BERT, 0.3-0.4 per Wettig et al.", 0.15)
    mask_token_prob: float = _help("Of the chosen tokens, the fraction replaced by [MASK].", 0.8)
    random_token_prob: float = _help("Of the chosen tokens, the fraction replaced by a random token (the rest are kept).", 0.1)
    whole_word: bool = _help("Mask whole words (all WordPieces of a word together).", False)
    span: bool = _help("SpanBERT-style span masking (geometric span lengths over whole words).", False)
    span_p: float = _help("Geometric parameter of span lengths (SpanBERT: 0.2).", 0.2)
    max_span_length: int = _help("Longest span in words (SpanBERT: 10).", 10)

    def __post_init__(self) -> None:
        _check(0.0 < self.mask_rate < 1.0, f"mask_rate {self.mask_rate} must be between 0 and 1 (exclusive); 0.15 is BERT's")
        _check(0.0 <= self.mask_token_prob <= 1.0, f"mask_token_prob {self.mask_token_prob} must be in [0, 1]")
        _check(0.0 <= self.random_token_prob <= 1.0, f"random_token_prob {self.random_token_prob} must be in [0, 1]")
        _check(
            self.mask_token_prob + self.random_token_prob <= 1.0 + 1e-9,
            f"mask_token_prob + random_token_prob = {self.mask_token_prob + self.random_token_prob} exceeds 1; e.g. 0.8 and 0.1",
        )
        _check(0.0 < self.span_p <= 1.0, f"span_p {self.span_p} must be in (0, 1]")
        _check(self.max_span_length >= 1, f"max_span_length {self.max_span_length} must be 1 or more")

    @property
    def keep_prob(self) -> float:
        """Of the chosen tokens, the fraction left unchanged."""
        return max(0.0, 1.0 - self.mask_token_prob - self.random_token_prob)


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The dataclass fields of ``cls`` by name."""
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    tp = hints[name]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if args else str
    return tp


def coerce_value(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (often a string from a flag or YAML) to the type of field ``name``."""
    tp = _field_type(cls, name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise WorkbenchError(f"{name}={value!r} is not a boolean; use true or false")
    if tp is int:
        if isinstance(value, bool):
            raise WorkbenchError(f"{name}={value!r} is not an integer; pass a whole number")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{name}={value!r} is not an integer; pass a whole number") from None
    if tp is float:
        if isinstance(value, bool):
            raise WorkbenchError(f"{name}={value!r} is not a number; pass e.g. 0.15")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{name}={value!r} is not a number; pass e.g. 0.15") from None
    if tp is str:
        if not isinstance(value, str):
            raise WorkbenchError(f"{name}={value!r} is not a string; quote it")
        return value
    return value


def config_from_dict(cls: type[C], values: dict[str, Any], *, strict: bool = True) -> C:
    """Build ``cls`` from a flat dict, coercing types; unknown keys are an error when ``strict``."""
    fields = config_fields(cls)
    unknown = sorted(set(values) - set(fields))
    if strict and unknown:
        raise WorkbenchError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; valid names: {', '.join(fields)}"
        )
    kwargs = {k: coerce_value(cls, k, v) for k, v in values.items() if k in fields}
    return cls(**kwargs)
