"""Token ids as flat arrays: tokenized sentences, shards of documents as nested Arrow lists, and
packed MLM segments, all built with array operations so that time and memory stay linear in a
document's length (a 50 MB one-line corpus is one document)."""

from __future__ import annotations

import array
import itertools
import random
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from .labels import IGNORE_INDEX

__all__ = ["flat_documents", "mlm_table", "nested_documents", "token_ids"]


def token_ids(tokenizer: PreTrainedTokenizerBase, sentences: list[str], chunk: int = 8192
              ) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``sentences`` end to end (T,) and the count of each sentence (S,)."""
    tokens, lengths = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
    for i in range(0, len(sentences), chunk):
        # Batched calls: the Rust tokenizer parallelises over a call's sentences, and a chunk's
        # encodings (offsets, strings: ~100 bytes a token) are freed before the next.
        enc = tokenizer(sentences[i:i + chunk], add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
        lengths.append(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)))
        tokens.append(np.fromiter(itertools.chain.from_iterable(enc), dtype=np.int32))
    return np.concatenate(tokens), np.concatenate(lengths)


def _offsets(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.append(0, np.cumsum(lengths)).astype(np.int32))


def nested_documents(tokens: np.ndarray, sentence_lengths: np.ndarray, doc_sentences: np.ndarray
                     ) -> pa.ListArray:
    """One row holding the documents as document -> sentence -> token ids, from flat arrays.

    ``tokens`` (T,), ``sentence_lengths`` (S,) tokens per sentence, ``doc_sentences`` (D,)
    sentences per document; no Python list per token or sentence.
    """
    sentences = pa.ListArray.from_arrays(_offsets(sentence_lengths), pa.array(tokens))
    by_doc = pa.ListArray.from_arrays(_offsets(doc_sentences), sentences)
    return pa.ListArray.from_arrays(_offsets(np.array([len(doc_sentences)])), by_doc)


def flat_documents(docs: pa.ListScalar) -> tuple[np.ndarray, np.ndarray]:
    """The inverse for one row: (tokens (T,) end to end, tokens per document (D,))."""
    by_doc = docs.values  # document -> sentence -> token ids
    sentences = by_doc.flatten()
    token_end = np.append(0, np.cumsum(pc.list_value_length(sentences).to_numpy()))
    sentence_end = np.append(0, np.cumsum(pc.list_value_length(by_doc).to_numpy()))
    return sentences.flatten().to_numpy(), np.diff(token_end[sentence_end])


def _mlm_stream(tokens: np.ndarray, doc_lengths: np.ndarray, block: int, sep_id: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Documents end to end with a [SEP] at each boundary inside a segment: (stream (L,), doc starts (D,))."""
    seps = np.zeros(len(doc_lengths), dtype=bool)
    starts = np.empty(len(doc_lengths), dtype=np.int64)
    pos = 0
    for d, n in enumerate(doc_lengths.tolist()):  # a walk over documents, not tokens
        seps[d] = pos % block != 0  # no [SEP] opens a segment
        pos += int(seps[d])
        starts[d] = pos
        pos += n
    first_token = np.cumsum(doc_lengths) - doc_lengths  # (D,) offset of each document in `tokens`
    return np.insert(tokens, first_token[seps], sep_id), starts


def mlm_table(tokens: np.ndarray, doc_lengths: np.ndarray, ids: Sequence[int], max_num_tokens: int,
              cls_id: int, sep_id: int, dupe_factor: int, rng: random.Random, schema: pa.Schema) -> pa.Table:
    """Full-length segments packed across sentence and document boundaries (RoBERTa, Cramming).

    ``tokens`` (T,) are the documents' tokens end to end, ``doc_lengths`` (D,) their counts and
    ``ids`` their document ids. Rows are ``[CLS] block [SEP]`` in the pretraining ``schema``,
    ``dupe_factor`` copies in the order one ``rng.shuffle`` of their row numbers gives.
    """
    block = max_num_tokens + 1  # one more token than a pair's budget: [CLS] block [SEP]
    stream, starts = _mlm_stream(tokens, doc_lengths, block, sep_id)
    full, rest = divmod(len(stream), block)
    rows = np.empty((full, block + 2), dtype=np.int32)  # (full, block + 2) [CLS] block [SEP]
    rows[:, 0], rows[:, -1] = cls_id, sep_id
    rows[:, 1:-1] = stream[:full * block].reshape(full, block)
    last = np.concatenate([[cls_id], stream[full * block:], [sep_id]]).astype(np.int32)  # (rest + 2,)
    n = full + bool(rest)
    # Shuffled as a list of row numbers would be (the same draws), on 8-byte ints rather than
    # Python ints (36 bytes each); copies are the same rows.
    order = array.array("q", range(n * dupe_factor))
    rng.shuffle(order)
    picks = np.frombuffer(order, dtype=np.int64) % max(n, 1)  # (n * dupe_factor,) row of each example
    values, offsets = _gather_rows(rows, last if rest else None, picks)
    # Provenance: the document each segment starts in.
    row_starts = np.arange(n, dtype=np.int64) * block
    first_doc = np.asarray(ids, dtype=np.int64)[np.searchsorted(starts, row_starts, side="right") - 1]
    m, none = len(picks), np.full(len(picks), -1, np.int64)
    offsets = pa.array(offsets)
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(offsets, pa.array(values)),
        "token_type_ids": pa.ListArray.from_arrays(offsets, pa.array(np.zeros(len(values), np.int8))),
        "next_sentence_label": np.full(m, IGNORE_INDEX, np.int64), "truncated": np.zeros(m, bool),
        "a_doc": first_doc[picks], "a_end": none, "b_doc": none, "b_start": none,
    }, schema=schema)


def _gather_rows(rows: np.ndarray, last: np.ndarray | None, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``picks`` of ``rows`` (R, W) and the shorter ``last`` row (index R) end to end, and their offsets.

    Numpy indexing a run of full rows at a time: Arrow's take on a list column would build an
    8-byte index per token (most of the memory of a 50 MB build).
    """
    width = rows.shape[1]
    lengths = np.where(picks == len(rows), 0 if last is None else len(last), width)
    offsets = np.append(0, np.cumsum(lengths)).astype(np.int32)  # (M + 1,)
    values = np.empty(offsets[-1], dtype=np.int32)
    cuts = np.flatnonzero(picks == len(rows))  # where the short row goes: runs of full rows between
    for start, stop in zip(np.append(0, cuts + 1), np.append(cuts, len(picks)), strict=True):
        values[offsets[start]:offsets[stop]] = rows[picks[start:stop]].reshape(-1)
        if stop < len(picks):
            values[offsets[stop]:offsets[stop + 1]] = last
    return values, offsets
