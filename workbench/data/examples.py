"""Pretraining examples from a corpus: NSP pairs (BERT), SOP pairs (ALBERT) or packed MLM segments.

The NSP builder follows Google's ``create_pretraining_data.py`` (target length
``max_seq_length - 3``, a random shorter target with ``short_seq_prob``, A/B split at a random
sentence boundary, NotNext B from another document with unused sentences put back,
``truncate_seq_pair``). Google's builder is not 50/50: a one-sentence chunk is always NotNext and
the short target is drawn once per document, which gives about 46% IsNext on Wikipedia. The
default here is balanced (see :func:`_nsp_balanced`); ``google_compat=True`` reproduces
Google's behaviour, random-number stream included, for researchers who must match its data.

Documents stream through in shards of ``shard_size``: NotNext partners are drawn within a
shard, so peak memory is bounded by the shard, not the corpus. Examples are built with
``datasets.Dataset.map`` (batched, ``num_proc``) over one shard per row and cached on disk
under a key of corpus, tokenizer and settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import sys
import time
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, Sequence, Value, load_from_disk
from transformers import PreTrainedTokenizerBase

from ..config import DataConfig
from ..errors import WorkbenchError
from ..outputs import MANIFEST, OutputDir, check_writable_folder, read_json_object
from .corpora import CorpusReport, iter_documents, source_fingerprint
from .packing import flat_documents, mlm_table, nested_documents, token_ids
from .tokenizer import load_tokenizer, position_limit, tokenizer_fingerprint, train_tokenizer

__all__ = [
    "PretrainingData",
    "build_examples",
    "truncate_seq_pair",
    "prepare_dataset",
    "load_prepared",
    "cache_key",
    "is_held_out",
]

BUILDER_VERSION = 1
# Google's defaults for the masking whose random draws google_compat replays (see _google_masking_draws).
_GOOGLE_MASKED_LM_PROB = 0.15
_GOOGLE_MAX_PREDICTIONS = 20
_SHARD_SCHEMA = pa.schema([
    ("shard", pa.int64()),
    ("doc_ids", pa.list_(pa.int64())),
    ("docs", pa.list_(pa.list_(pa.list_(pa.int32())))),  # document -> sentence -> token ids
])
_GOLDEN = 0.6180339887498949
_TOKENIZE_SENTENCES = 8192
EXAMPLE_FEATURES = Features({
    "input_ids": Sequence(Value("int32")),
    "token_type_ids": Sequence(Value("int8")),
    "next_sentence_label": Value("int64"),  # 0 IsNext / in order, 1 NotNext / swapped, IGNORE_INDEX none (mlm)
    "truncated": Value("bool"),
    # Provenance: document of A, sentence index where A ends, document and first sentence of B.
    "a_doc": Value("int64"),
    "a_end": Value("int64"),
    "b_doc": Value("int64"),
    "b_start": Value("int64"),
})

Doc = Seq[Seq[int]]  # a document: sentences of token ids


@dataclass
class PretrainingData:
    """A built (or cached) pretraining dataset with its tokenizer and statistics."""

    dataset: DatasetDict  # "train" and "validation"
    tokenizer: PreTrainedTokenizerBase
    stats: dict[str, Any]
    path: Path


class _Columns:
    """Column lists of one shard's examples (one row per example)."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {
            k: [] for k in ("input_ids", "token_type_ids", "next_sentence_label", "truncated",
                            "a_doc", "a_end", "b_doc", "b_start")
        }

    def add(self, a: list[int], b: list[int] | None, label: int, truncated: bool, cls_id: int,
            sep_id: int, prov: tuple[int, int, int, int]) -> None:
        # [CLS] A [SEP] B [SEP]; token types 0 for [CLS] A [SEP], 1 for B [SEP].
        ids = [cls_id, *a, sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, sep_id]
            types += [1] * (len(b) + 1)
        c = self.cols
        c["input_ids"].append(ids)
        c["token_type_ids"].append(types)
        c["next_sentence_label"].append(label)
        c["truncated"].append(truncated)
        for k, v in zip(("a_doc", "a_end", "b_doc", "b_start"), prov, strict=True):
            c[k].append(v)

    def shuffled(self, rng: random.Random) -> dict[str, list]:
        order = list(range(len(self.cols["input_ids"])))
        rng.shuffle(order)
        return {k: [v[i] for i in order] for k, v in self.cols.items()}


def truncate_seq_pair(a: list[int], b: list[int], max_num_tokens: int, rng: random.Random) -> bool:
    """Trim the longer of ``a``/``b`` in place, front or back at random, until both fit (Google's rule)."""
    # Count the cuts token by token (the same random draws as Google's loop), then slice once:
    # deleting a[0] once per token is quadratic in a long segment (a sentence of a whole book).
    lengths, front, back = [len(a), len(b)], [0, 0], [0, 0]
    while lengths[0] + lengths[1] > max_num_tokens:
        k = 0 if lengths[0] > lengths[1] else 1  # the longer one; b on a tie
        # Random side, so the model sees neither always-cut starts nor always-cut ends.
        if rng.random() < 0.5:
            front[k] += 1
        else:
            back[k] += 1
        lengths[k] -= 1
    for k, seq in enumerate((a, b)):
        del seq[front[k] + lengths[k]:]
        del seq[:front[k]]
    return front != [0, 0] or back != [0, 0]


def _concat(sentences: Seq[Seq[int]]) -> list[int]:
    return [t for s in sentences for t in s]


def _draw_target(max_num_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    # Short targets (10% in BERT) teach the model sequences shorter than max_seq_length.
    if rng.random() < short_seq_prob:
        return rng.randint(2, max_num_tokens)
    return max_num_tokens


def _random_b(docs: Seq[Doc], avoid: int, target_b: int, rng: random.Random) -> tuple[int, int, list[int]]:
    """B for a NotNext pair: sentences from a random start in another document, up to ``target_b``."""
    other = rng.randrange(len(docs) - 1)
    other += other >= avoid  # uniform over every document but ``avoid``
    doc = docs[other]
    start = rng.randrange(len(doc))
    b: list[int] = []
    for sentence in doc[start:]:
        b.extend(sentence)
        if len(b) >= target_b:
            break
    return other, start, b


def _nsp_balanced(docs: Seq[Doc], ids: Seq[int], out: _Columns, max_num_tokens: int,
                  short_seq_prob: float, rng: random.Random, cls_id: int, sep_id: int) -> None:
    """NSP pairs with IsNext drawn per pair at 50%, so the corpus-level fraction is 0.5.

    Two changes from Google make it balanced: (1) the label is drawn first, and an IsNext chunk
    takes at least two sentences, so one-sentence chunks are no longer forced NotNext; (2) the
    short target is drawn per pair, not per document. A chunk that can only be NotNext (the
    last sentence of a document) is recorded as a debt, paid by the next NotNext draw becoming
    IsNext, so the fraction stays at 0.5 on any corpus.
    """
    owed = 0
    for d, doc in enumerate(docs):
        i = 0
        while i < len(doc):
            target = _draw_target(max_num_tokens, short_seq_prob, rng)
            is_next = rng.random() < 0.5
            if not is_next and owed > 0:
                is_next, owed = True, owed - 1
            j, length = i, 0
            while j < len(doc) and (length < target or (is_next and j - i < 2)):
                length += len(doc[j])
                j += 1
            chunk = doc[i:j]
            if is_next and len(chunk) < 2:
                is_next, owed = False, owed + 1
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a, a_end_abs = _concat(chunk[:a_end]), i + a_end
            if is_next:
                b, b_doc, b_start = _concat(chunk[a_end:]), d, a_end_abs
                i = j
            else:
                b_doc, b_start, b = _random_b(docs, d, max(1, target - len(a)), rng)
                i = a_end_abs  # the chunk's unused sentences go back for the next pair
            truncated = truncate_seq_pair(a, b, max_num_tokens, rng)
            out.add(a, b, 0 if is_next else 1, truncated, cls_id, sep_id,
                    (ids[d], a_end_abs, ids[b_doc], b_start))


def _google_masking_draws(n_tokens: int, vocab_size: int, rng: random.Random) -> None:
    """Consume the random numbers Google's create_masked_lm_predictions draws for one instance.

    Masks here are dynamic (drawn at batch time), but Google's pair builder shares one RNG
    with its static masking; replaying those draws keeps the pair stream identical.
    """
    candidates = list(range(n_tokens - 3))  # every token but [CLS] and the two [SEP]s
    rng.shuffle(candidates)
    n_pred = min(_GOOGLE_MAX_PREDICTIONS, max(1, int(round(n_tokens * _GOOGLE_MASKED_LM_PROB))))
    for _ in range(min(n_pred, len(candidates))):
        if rng.random() >= 0.8 and rng.random() >= 0.5:
            rng.randint(0, vocab_size - 1)


def _nsp_google(docs: Seq[Doc], ids: Seq[int], out: _Columns, max_num_tokens: int,
                short_seq_prob: float, rng: random.Random, cls_id: int, sep_id: int,
                vocab_size: int, dupe_factor: int) -> None:
    """A line-for-line port of Google's create_instances_from_document (one shard = all documents)."""
    order = list(range(len(docs)))
    rng.shuffle(order)  # Google shuffles all_documents once before building
    shuffled = [docs[k] for k in order]
    for _ in range(dupe_factor):
        for d, doc in enumerate(shuffled):
            target = _draw_target(max_num_tokens, short_seq_prob, rng)  # once per document
            chunk: list[Seq[int]] = []
            length, i = 0, 0
            while i < len(doc):
                chunk.append(doc[i])
                length += len(doc[i])
                if i == len(doc) - 1 or length >= target:
                    a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                    a = _concat(chunk[:a_end])
                    if len(chunk) == 1 or rng.random() < 0.5:
                        is_next = False
                        target_b = target - len(a)
                        for _ in range(10):
                            r = rng.randint(0, len(shuffled) - 1)
                            if r != d:
                                break
                        rdoc = shuffled[r]
                        b_start = rng.randint(0, len(rdoc) - 1)
                        b = []
                        for sentence in rdoc[b_start:]:
                            b.extend(sentence)
                            if len(b) >= target_b:
                                break
                        b_doc = r
                        a_end_abs = i - len(chunk) + 1 + a_end
                        i -= len(chunk) - a_end
                    else:
                        is_next = True
                        b = _concat(chunk[a_end:])
                        b_doc, b_start = d, i - len(chunk) + 1 + a_end
                        a_end_abs = b_start
                    truncated = truncate_seq_pair(a, b, max_num_tokens, rng)
                    _google_masking_draws(len(a) + len(b) + 3, vocab_size, rng)
                    out.add(a, b, 0 if is_next else 1, truncated, cls_id, sep_id,
                            (ids[order[d]], a_end_abs, ids[order[b_doc]], b_start))
                    chunk, length = [], 0
                i += 1


def _sop(docs: Seq[Doc], ids: Seq[int], out: _Columns, max_num_tokens: int,
         short_seq_prob: float, rng: random.Random, cls_id: int, sep_id: int) -> None:
    """ALBERT's sentence-order prediction: two consecutive segments, swapped half the time (label 1)."""
    for d, doc in enumerate(docs):
        i = 0
        while i < len(doc):
            target = _draw_target(max_num_tokens, short_seq_prob, rng)
            j, length = i, 0
            while j < len(doc) and (length < target or j - i < 2):
                length += len(doc[j])
                j += 1
            chunk = doc[i:j]
            if len(chunk) < 2:  # a lone last sentence has no order to predict
                break
            a_end = rng.randint(1, len(chunk) - 1)
            a, b = _concat(chunk[:a_end]), _concat(chunk[a_end:])
            swapped = rng.random() < 0.5
            if swapped:
                a, b = b, a
            truncated = truncate_seq_pair(a, b, max_num_tokens, rng)
            out.add(a, b, int(swapped), truncated, cls_id, sep_id, (ids[d], i + a_end, ids[d], i + a_end))
            i = j


def build_examples(docs: Seq[Doc], doc_ids: Seq[int], *, objective: str,
                   max_seq_length: int, short_seq_prob: float, rng: random.Random, cls_id: int,
                   sep_id: int, google_compat: bool = False, vocab_size: int = 0,
                   dupe_factor: int = 1) -> dict[str, list]:
    """Build one shard's examples (columns of equal length) from tokenized documents."""
    max_num_tokens = max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    if objective == "mlm":
        tokens = np.fromiter((t for doc in docs for s in doc for t in s), dtype=np.int32)
        lengths = np.array([sum(len(s) for s in doc) for doc in docs], dtype=np.int64)
        return mlm_table(tokens, lengths, doc_ids, max_num_tokens, cls_id, sep_id, dupe_factor, rng,
                         EXAMPLE_FEATURES.arrow_schema).to_pydict()
    out = _Columns()
    if objective == "nsp" and google_compat:
        _nsp_google(docs, doc_ids, out, max_num_tokens, short_seq_prob, rng, cls_id, sep_id,
                    vocab_size, dupe_factor)
        return out.shuffled(rng)  # Google shuffles all instances at the end
    for _ in range(dupe_factor):
        if objective == "nsp":
            _nsp_balanced(docs, doc_ids, out, max_num_tokens, short_seq_prob, rng, cls_id, sep_id)
        else:
            _sop(docs, doc_ids, out, max_num_tokens, short_seq_prob, rng, cls_id, sep_id)
    return out.shuffled(rng)


def _build_shard_batch(batch: pa.Table, *, objective: str, max_seq_length: int,
                       short_seq_prob: float, seed: int, split: str, cls_id: int, sep_id: int,
                       google_compat: bool, vocab_size: int, dupe_factor: int) -> pa.Table:
    """datasets.map function (arrow format): each input row is one shard of documents; outputs its examples."""
    parts = []
    for row in range(batch.num_rows):
        shard, doc_ids = batch["shard"][row].as_py(), batch["doc_ids"][row].as_py()
        # One RNG per shard, keyed by seed, split and shard: results do not depend on num_proc.
        rng = random.Random(seed if google_compat and shard == 0 else f"{seed}:{split}:{shard}")
        if objective == "mlm":  # arrays all the way: one huge document stays linear and compact
            tokens, lengths = flat_documents(batch["docs"][row])
            parts.append(mlm_table(tokens, lengths, doc_ids, max_seq_length - 3, cls_id, sep_id,
                                   dupe_factor, rng, EXAMPLE_FEATURES.arrow_schema))
            continue
        part = build_examples(batch["docs"][row].as_py(), doc_ids, objective=objective,
                              max_seq_length=max_seq_length, short_seq_prob=short_seq_prob, rng=rng,
                              cls_id=cls_id, sep_id=sep_id, google_compat=google_compat,
                              vocab_size=vocab_size, dupe_factor=dupe_factor)
        parts.append(pa.Table.from_pydict(part, schema=EXAMPLE_FEATURES.arrow_schema))
    return pa.concat_tables(parts)


def _is_validation(doc_id: int, fraction: float, seed: int) -> bool:
    # A Weyl sequence spreads held-out documents evenly: N*fraction ± 1 of any N documents.
    return fraction > 0 and ((doc_id + 1) * _GOLDEN + (seed % 1000) * 1e-3) % 1.0 < fraction


def is_held_out(doc_id: int, cfg: DataConfig) -> bool:
    """Whether document ``doc_id`` (its index among the corpus's kept documents) is in the validation split."""
    return _is_validation(doc_id, cfg.validation_fraction, cfg.seed)


class _ShardWriter:
    """Tokenizes documents a shard at a time and appends each shard as one Arrow row.

    The last shard is held back until the next one fills, so that a final shard of a single
    document (no NotNext partner possible) is merged into the one before it.
    """

    def __init__(self, path: Path, shard_size: int, tokenizer: PreTrainedTokenizerBase,
                 counts: dict[str, int]) -> None:
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, _SHARD_SCHEMA)
        self.shard_size, self.tokenizer, self.counts = shard_size, tokenizer, counts
        self.buffer: list[tuple[int, list[str]]] = []
        self.pending: list[tuple[int, list[str]]] | None = None
        self.shards = 0
        self.documents = 0  # written (non-empty) documents

    def add(self, doc_id: int, sentences: list[str]) -> None:
        self.buffer.append((doc_id, sentences))
        if len(self.buffer) >= self.shard_size:
            self._push()

    def _push(self) -> None:
        if self.pending:
            self._write(self.pending)
        self.pending, self.buffer = self.buffer, []

    def close(self) -> None:
        if self.buffer and len(self.buffer) < 2 and self.pending:
            self.pending += self.buffer
        elif self.buffer:
            self._push()
        if self.pending:
            self._write(self.pending)
        self.writer.close()
        self.sink.close()

    def _write(self, docs: list[tuple[int, list[str]]]) -> None:
        tokens, lengths = token_ids(self.tokenizer, [s for _, sentences in docs for s in sentences],
                                    _TOKENIZE_SENTENCES)
        # Empty sentences are dropped, then the documents left with none.
        owner = np.repeat(np.arange(len(docs)), [len(sentences) for _, sentences in docs])  # (S,)
        kept = lengths > 0
        per_doc = np.bincount(owner[kept], minlength=len(docs))  # (D,) sentences kept
        live = per_doc > 0
        doc_ids = [doc_id for (doc_id, _), ok in zip(docs, live.tolist(), strict=True) if ok]
        unk, c = self.tokenizer.unk_token_id, self.counts
        self.documents += len(doc_ids)
        c["documents"] += len(doc_ids)
        c["sentences"] += int(kept.sum())
        c["multi_sentence_documents"] += int((per_doc >= 2).sum())
        c["tokens"] += len(tokens)
        c["unk_tokens"] += int((tokens == unk).sum()) if unk is not None else 0
        if not doc_ids:
            return
        shard_docs = nested_documents(tokens, lengths[kept], per_doc[live])
        self.writer.write_batch(pa.record_batch(
            [pa.array([self.shards], pa.int64()), pa.array([doc_ids], pa.list_(pa.int64())), shard_docs],
            schema=_SHARD_SCHEMA))
        self.shards += 1


def cache_key(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> str:
    """Key of a built dataset: corpus contents, tokenizer and every setting that changes examples."""
    settings = asdict(cfg)
    for irrelevant in ("num_proc", "cache_dir", "tokenizer", "vocab_size", "lowercase"):
        settings.pop(irrelevant)  # the tokenizer enters through its fingerprint instead
    payload = json.dumps({
        "version": BUILDER_VERSION,
        "corpus": source_fingerprint(cfg.corpus, cfg.text_column),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "settings": settings,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _corpus_documents(cfg: DataConfig, report: CorpusReport | None = None) -> Iterator[list[str]]:
    return iter_documents(cfg.corpus, text_column=cfg.text_column, min_doc_words=cfg.min_doc_words,
                          errors=cfg.errors, max_documents=cfg.max_documents, report=report)


def _resolve_tokenizer(cfg: DataConfig) -> PreTrainedTokenizerBase:
    """Load the configured tokenizer, or train one on the corpus (cached by corpus and settings).

    The cache entry is validated (sizes against the manifest, then a load), never trusted: a
    damaged one is trained again.
    """
    if cfg.tokenizer != "train":
        return load_tokenizer(cfg.tokenizer)
    key = hashlib.sha256(json.dumps([
        source_fingerprint(cfg.corpus, cfg.text_column), cfg.vocab_size, cfg.lowercase,
        cfg.min_doc_words, cfg.max_documents, cfg.text_column,
    ]).encode()).hexdigest()[:16]
    cache = OutputDir.open(Path(cfg.cache_dir) / "tokenizers", "prepare", flag="--cache-dir", create=False)
    path = cache.path / key
    tokenizer, _ = _cached_tokenizer(cache, key)
    if tokenizer is not None:
        return tokenizer
    check_writable_folder(cache.path, "--cache-dir")  # before the training
    with cache.building(f"the tokenizer {path}"):  # a concurrent builder of this key finishes first
        tokenizer, problem = _cached_tokenizer(cache, key)
        if tokenizer is not None:
            return tokenizer
        if problem is not None:
            print(f"note: the cached tokenizer {path} is damaged ({problem}); training it again", file=sys.stderr)
        texts = (s for doc in _corpus_documents(cfg) for s in doc)
        # atomic: a half-written tokenizer is never found by the check above
        cache.replace_dir(key, lambda tmp: train_tokenizer(texts, cfg.vocab_size, cfg.lowercase, out_dir=tmp))
    # Reloaded, not the in-memory one: a saved tokenizer serialises slightly differently, and
    # the dataset cache key (its fingerprint) must be the same on the first run and later ones.
    return load_tokenizer(str(path))


def _cached_tokenizer(cache: OutputDir, key: str) -> tuple[PreTrainedTokenizerBase | None, str | None]:
    """The cached tokenizer ``key`` if it is complete and unchanged (content hashes), else why not (None: absent)."""
    cache.reload()
    path = cache.path / key
    if key not in cache.entries and (path / "tokenizer.json").is_file():
        cache.adopt(key, "dir")  # cached before manifests: a key-named entry only workbench makes
    if not (path.is_dir() and cache.owns(key)):
        return None, None
    problem = (cache.verify(key, content=True) or "").removeprefix(f"{key}/") or None
    if problem is None:
        try:
            return load_tokenizer(str(path)), None
        except WorkbenchError as exc:
            problem = str(exc).split(": ", 1)[-1].split("; ")[0]
    return None, problem


def _summarise(ds: DatasetDict, counts: dict[str, int], cfg: DataConfig) -> dict[str, Any]:
    tables = [ds[s].data.table for s in ds]
    # Chunk by chunk: combining the memory-mapped column first would copy every token into RAM.
    lengths = np.concatenate([np.zeros(0, np.int32)] + [
        pc.list_value_length(chunk).to_numpy() for t in tables for chunk in t.column("input_ids").chunks])
    labels = np.concatenate([t.column("next_sentence_label").to_numpy() for t in tables])
    truncated = np.concatenate([t.column("truncated").to_numpy() for t in tables])
    pairs = int(len(lengths))
    return {
        "documents": counts["documents"],
        "sentences": counts["sentences"],
        "tokens": counts["tokens"],
        "pairs": pairs,
        "train_pairs": ds["train"].num_rows,
        "validation_pairs": ds["validation"].num_rows,
        # IsNext (nsp) or in-order (sop) fraction; packed MLM segments have no pair label.
        "is_next_fraction": float(np.mean(labels == 0)) if cfg.objective != "mlm" and pairs else None,
        "unk_rate": counts["unk_tokens"] / max(counts["tokens"], 1),
        "truncated_fraction": float(truncated.mean()) if pairs else 0.0,
        "mean_pair_tokens": float(lengths.mean()) if pairs else 0.0,
        "max_pair_tokens": int(lengths.max()) if pairs else 0,
        "objective": cfg.objective,
        "max_seq_length": cfg.max_seq_length,
        "corpus": cfg.corpus,
        "tokenizer": cfg.tokenizer,
        "google_compat": cfg.google_compat,
        # What decides the held-out documents (is_held_out), so a downstream task can rebuild them.
        "text_column": cfg.text_column,
        "min_doc_words": cfg.min_doc_words,
        "max_documents": cfg.max_documents,
        "validation_fraction": cfg.validation_fraction,
        "seed": cfg.seed,
    }


def _check_corpus(cfg: DataConfig, counts: dict[str, int]) -> None:
    if counts["documents"] == 0:
        raise WorkbenchError(
            f"corpus {cfg.corpus!r} has no documents with at least {cfg.min_doc_words} words; "
            "check the path and --text-column, or lower --min-doc-words"
        )
    if cfg.objective in ("nsp", "sop") and counts["multi_sentence_documents"] == 0:
        raise WorkbenchError(
            f"every document in {cfg.corpus!r} has one sentence, so {cfg.objective.upper()} "
            "has no sentence pairs to build; use --objective mlm"
        )
    if cfg.objective == "nsp" and counts["documents"] < 2:
        raise WorkbenchError(
            f"corpus {cfg.corpus!r} has one document, and NotNext pairs need another; "
            "add documents or use --objective sop or mlm"
        )


def _build(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, tmp: Path) -> dict[str, Any]:
    """Stream the corpus into shard files, build examples with datasets.map, save to ``tmp``."""
    start = time.perf_counter()
    counts = dict.fromkeys(("documents", "sentences", "tokens", "unk_tokens", "multi_sentence_documents"), 0)
    report = CorpusReport()
    tmp.mkdir(parents=True)
    shards_dir = tmp / "shards"
    shards_dir.mkdir()
    writers = {s: _ShardWriter(shards_dir / f"{s}.arrow", cfg.shard_size, tokenizer, counts)
               for s in ("train", "validation")}
    for doc_id, doc in enumerate(_corpus_documents(cfg, report)):
        split = "validation" if _is_validation(doc_id, cfg.validation_fraction, cfg.seed) else "train"
        writers[split].add(doc_id, doc)
    held_out = writers["validation"]
    if cfg.objective == "nsp" and held_out.pending is None and len(held_out.buffer) == 1:
        # One held-out document cannot make NotNext pairs (B must come from another document).
        writers["train"].add(*held_out.buffer.pop())
        print("note: the validation split drew one document, too few for NotNext pairs, so it is trained on; "
              "raise --validation-fraction for a held-out split", file=sys.stderr)
    for w in writers.values():
        w.close()
    _check_corpus(cfg, counts)
    if report.skipped_short > counts["documents"]:  # e.g. a labelled file's short texts under the default 50 words
        report.warnings.append(f"skipped {report.skipped_short} of {report.skipped_short + counts['documents']} "
                               f"documents shorter than --min-doc-words {cfg.min_doc_words}; for short texts "
                               "(a labelled file's sentences) pass --min-doc-words 1")
    if cfg.objective == "nsp" and writers["train"].documents == 1:
        raise WorkbenchError(
            "the train split has one document, and NotNext pairs need another; "
            f"lower --validation-fraction (now {cfg.validation_fraction:g}) or add documents"
        )

    fn_kwargs = dict(objective=cfg.objective, max_seq_length=cfg.max_seq_length,
                     short_seq_prob=cfg.short_seq_prob, seed=cfg.seed,
                     cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                     google_compat=cfg.google_compat, vocab_size=len(tokenizer),
                     dupe_factor=cfg.dupe_factor)
    splits = {}
    for split in ("train", "validation"):
        shards = Dataset.from_file(str(shards_dir / f"{split}.arrow")).with_format("arrow")
        if shards.num_rows == 0:  # e.g. validation_fraction=0
            splits[split] = Dataset.from_dict({k: [] for k in EXAMPLE_FEATURES}, features=EXAMPLE_FEATURES)
            continue
        splits[split] = shards.map(
            _build_shard_batch, batched=True, batch_size=1, with_indices=False,
            num_proc=min(cfg.num_proc, max(shards.num_rows, 1)) if cfg.num_proc > 1 else None,
            remove_columns=shards.column_names, fn_kwargs={**fn_kwargs, "split": split},
            features=EXAMPLE_FEATURES, writer_batch_size=256,
            cache_file_name=str(shards_dir / f"{split}-examples.arrow"),
            desc=f"building {split} {cfg.objective} examples",
        ).with_format(None)  # arrow in, python rows out: the saved dataset must not keep the build's format
    ds = DatasetDict(splits)
    stats = _summarise(ds, counts, cfg)
    # An empty split saved in "auto" shards cannot be loaded back (datasets 5): give it one shard.
    ds.save_to_disk(str(tmp / "dataset"), num_shards={s: 1 for s in ds if ds[s].num_rows == 0})
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    del ds, splits
    shutil.rmtree(shards_dir)
    stats.update(skipped_short_documents=report.skipped_short, replaced_bytes=report.replaced_bytes,
                 warnings=list(report.warnings), build_seconds=round(time.perf_counter() - start, 3))
    return stats


_ENTRIES = ("dataset", "tokenizer", "stats.json")  # what a prepared folder holds; nothing else is touched


class _Damaged(Exception):
    """A prepared dataset whose files are missing, truncated or unreadable (the message says which)."""


def _adopt_legacy(owner: OutputDir) -> None:
    """Record a folder prepared before manifests existed (stats.json with a cache key) as the workbench's."""
    if (owner.path / MANIFEST).exists() or not (owner.path / "dataset" / "dataset_dict.json").is_file():
        return
    stats = read_json_object(owner.path / "stats.json")
    if stats is not None and "cache_key" in stats and (owner.path / "tokenizer").is_dir():
        for name in _ENTRIES:
            owner.adopt(name, "file" if name == "stats.json" else "dir")


def _open_prepared(path: Path, tokenizer: PreTrainedTokenizerBase | None) -> PretrainingData:
    """Load a prepared folder, checking sizes against its manifest first; raises _Damaged."""
    owner = OutputDir.read(path)
    for name in _ENTRIES:
        problem = owner.verify(name, content=True) if name in owner.entries else (
            None if (path / name).exists() else f"{name} is missing")
        if problem:
            raise _Damaged(problem)
    stats = read_json_object(path / "stats.json")
    if stats is None:
        raise _Damaged("stats.json is unreadable")
    try:
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(str(path / "tokenizer"))
    except WorkbenchError as exc:
        raise _Damaged(f"tokenizer is unreadable: {str(exc).split(': ', 1)[-1].split('; ')[0]}") from None
    try:
        dataset = load_from_disk(str(path / "dataset"))  # reads every Arrow file's batch index
        if set(dataset) != {"train", "validation"}:
            raise ValueError(f"splits {sorted(dataset)}, not train and validation")
    except Exception as exc:  # ArrowInvalid, JSONDecodeError, OSError, FileNotFoundError: all unreadable
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise _Damaged(f"dataset is unreadable: {reason}") from None
    return PretrainingData(dataset, tokenizer, stats, path)


def load_prepared(path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> PretrainingData:
    """Load a dataset directory written by :func:`prepare_dataset` (memory-mapped, fast), validated first."""
    path = Path(path)
    recorded = set(_ENTRIES) & set(OutputDir.read(path).entries)
    if not recorded and (not (path / "stats.json").is_file() or not (path / "dataset").is_dir()):
        raise WorkbenchError(f"{path} is not a prepared dataset (no stats.json/dataset); run `workbench prepare --out {path}` first")
    try:
        return _open_prepared(path, tokenizer)
    except _Damaged as exc:
        raise WorkbenchError(f"prepared dataset {path} is damaged ({exc}); "
                             f"rebuild it with `workbench prepare --out {path}` and the same settings") from None


def prepare_dataset(cfg: DataConfig, out_dir: str | Path | None = None,
                    tokenizer: PreTrainedTokenizerBase | None = None) -> PretrainingData:
    """Build the pretraining dataset for ``cfg``, or reload it if built before with the same key.

    It lives in ``out_dir`` if given, else under ``cfg.cache_dir``. Only the folder's own entries
    (``dataset/``, ``tokenizer/``, ``stats.json``) are written, each built in a temporary and
    renamed into place; other files in the folder are kept. A cached build is validated, and
    rebuilt if damaged.
    """
    start = time.perf_counter()
    if out_dir is not None:  # refuse a file, foreign entries or an unwritable folder before any work
        out = _claimable(OutputDir.open(out_dir, "prepare", create=False), "--out")
        if "stats.json" not in out.entries:  # nothing there to reuse: it will be written
            check_writable_folder(out.path, "--out")
    tokenizer = tokenizer if tokenizer is not None else _resolve_tokenizer(cfg)
    limit = position_limit(tokenizer)
    if cfg.max_seq_length > limit:
        raise WorkbenchError(
            f"max_seq_length {cfg.max_seq_length} exceeds the model's position limit {limit}; "
            f"use --max-seq-length {limit} or less"
        )
    key = cache_key(cfg, tokenizer)
    target = Path(out_dir) if out_dir is not None else Path(cfg.cache_dir) / key
    flag = "--out" if out_dir is not None else "--cache-dir"
    owner = _claimable(OutputDir.open(target, "prepare", flag=flag, create=False), flag)
    with contextlib.suppress(_Damaged):  # damaged: said and rebuilt below, under the lock
        if (data := _reuse(owner, key, tokenizer, start)) is not None:
            return data
    check_writable_folder(target, flag)
    with owner.building(f"the prepared dataset {target}"):  # a concurrent builder of this key finishes first
        _claimable(owner, flag)
        try:
            if (data := _reuse(owner, key, tokenizer, start)) is not None:
                return data
        except _Damaged as exc:
            print(f"note: the prepared dataset in {target} is damaged ({exc}); rebuilding it", file=sys.stderr)
        tmp = owner.tmp_path("build")
        try:
            stats = _build(cfg, tokenizer, tmp)
            stats["cache_key"] = key
            owner.remove("stats.json")  # first: a folder without it is never taken for a complete build
            owner.commit(tmp / "dataset", "dataset")
            owner.commit(tmp / "tokenizer", "tokenizer")
            owner.write_json("stats.json", stats)  # last: its cache key says the build is complete
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    data = load_prepared(target, tokenizer)
    data.stats.update(cached=False)
    return data


def _reuse(owner: OutputDir, key: str, tokenizer: PreTrainedTokenizerBase, start: float) -> PretrainingData | None:
    """The complete build of ``key`` in ``owner``'s folder (content checked), None if there is none; raises _Damaged."""
    old = read_json_object(owner.path / "stats.json") if "stats.json" in owner.entries else None
    if old is None or old.get("cache_key") != key:
        return None
    data = _open_prepared(owner.path, tokenizer)
    data.stats.update(cached=True, load_seconds=round(time.perf_counter() - start, 3))
    return data


def _claimable(owner: OutputDir, flag: str) -> OutputDir:
    """``owner`` after adopting a pre-manifest build; refuses if a foreign entry holds one of our names."""
    _adopt_legacy(owner)
    owner.check_writable(_ENTRIES, hint=flag)
    return owner
