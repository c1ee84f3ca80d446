"""Corpus and masking exploration for the notebooks: length summaries, vocab coverage, HTML views.

Everything that renders text escapes it first: corpus text is data, never markup. The views
(:class:`MaskView`, :class:`PairView`, :class:`PairsView`, :class:`~workbench.notebook.results.StatsTable`)
show themselves when a notebook cell ends with them.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import MaskingConfig
from ..data.labels import IGNORE_INDEX
from ..data.masking import (
    ACTION_KEEP,
    ACTION_MASK,
    ACTION_NONE,
    ACTION_RANDOM,
    VocabInfo,
    mask_tokens,
)
from ..evaluation.results import StatsTable

__all__ = [
    "stats_frame",
    "stats_table",
    "tokenize_documents",
    "masking_stats",
    "LengthSummary",
    "MaskView",
    "length_summary",
    "vocab_coverage",
    "PairView",
    "PairsView",
    "pair_view",
    "pairs_view",
    "pair_html",
    "mask_example",
    "mask_html",
    "fill_mask",
]

_A, _B = "#dbeafe", "#fde68a"  # segment colours: A blue, B amber
_ACTION_STYLE = {
    ACTION_MASK: ("masked → [MASK]", "#fecaca"),
    ACTION_RANDOM: ("replaced by a random token", "#ddd6fe"),
    ACTION_KEEP: ("kept (still predicted)", "#bbf7d0"),
}


@dataclass
class LengthSummary:
    """Per-document, per-sentence and per-example lengths."""

    sentences_per_document: np.ndarray
    tokens_per_sentence: np.ndarray
    tokens_per_example: np.ndarray


def stats_frame(stats: dict[str, Any]) -> Any:
    """A one-column pandas table of a statistics dict, for display in a notebook."""
    return StatsTable(stats).frame


def stats_table(stats: dict[str, Any], title: str = "") -> StatsTable:
    """A statistics dict as a table that shows itself (its ``.frame`` is :func:`stats_frame`'s)."""
    return StatsTable(dict(stats), title)


def tokenize_documents(tokenizer: Any, documents: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Documents of sentences -> documents of token-id sentences (one batched tokenizer call)."""
    flat = [s for doc in documents for s in doc]
    enc = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, k = [], 0
    for doc in documents:
        out.append(enc[k:k + len(doc)])
        k += len(doc)
    return out


def masking_stats(tokenizer: Any, sequences: Sequence[Sequence[int]], config: MaskingConfig,
                  seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """Mask ``sequences`` (input_ids) as training would; measure the rate and the 80/10/10 split."""
    from ..data.masking import PretrainingCollator

    collate = PretrainingCollator(tokenizer, config, seed=seed)
    special = set(collate.vocab.special_ids.tolist())
    counts: Counter[str] = Counter()
    for i in range(0, len(sequences), batch_size):
        batch = [{"input_ids": list(ids)} for ids in sequences[i:i + batch_size]]
        out = collate(batch)
        predicted = out["labels"] != IGNORE_INDEX  # (B, T)
        counts["maskable"] += sum(t not in special for e in batch for t in e["input_ids"])
        counts["predicted"] += int(predicted.sum())
        counts["mask"] += int((out["input_ids"][predicted] == tokenizer.mask_token_id).sum())
        counts["kept"] += int((out["input_ids"][predicted] == out["labels"][predicted]).sum())
    n = max(counts["predicted"], 1)
    return {
        "tokens": counts["maskable"],
        "masked_fraction": counts["predicted"] / max(counts["maskable"], 1),
        "mask_share": counts["mask"] / n,
        "random_share": (n - counts["mask"] - counts["kept"]) / n,
        "keep_share": counts["kept"] / n,
    }


def length_summary(token_docs: Sequence[Sequence[Sequence[int]]], examples: Sequence[Sequence[int]]) -> LengthSummary:
    """Lengths from tokenized documents (doc -> sentence -> ids) and built examples' input_ids."""
    return LengthSummary(
        np.array([len(d) for d in token_docs]),
        np.array([len(s) for d in token_docs for s in d]),
        np.array([len(x) for x in examples]),
    )


def vocab_coverage(tokenizer: Any, documents: Sequence[Sequence[str]], max_words: int = 200_000) -> dict[str, Any]:
    """How well the vocabulary covers the corpus: whole-word rate, pieces per word, UNK rate."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    norm = tokenizer.backend_tokenizer.normalizer
    counts: Counter[str] = Counter()
    for doc in documents:
        for sentence in doc:
            text = norm.normalize_str(sentence) if norm is not None else sentence
            counts.update(w for w, _ in pre.pre_tokenize_str(text))
        if sum(counts.values()) >= max_words:
            break
    pieces = {w: tokenizer.tokenize(w) for w in counts}
    total = sum(counts.values())
    unk = tokenizer.unk_token
    whole = sum(c for w, c in counts.items() if len(pieces[w]) == 1 and pieces[w][0] != unk)
    n_pieces = sum(c * len(pieces[w]) for w, c in counts.items())
    unk_words = Counter({w: c for w, c in counts.items() if unk in pieces[w]})
    return {
        "words": total,
        "word_types": len(counts),
        "whole_word_rate": whole / max(total, 1),
        "pieces_per_word": n_pieces / max(total, 1),
        "unk_word_rate": sum(unk_words.values()) / max(total, 1),
        "top_unk_words": unk_words.most_common(10),
        "vocab_size": len(tokenizer),
    }


def _chip(text: str, colour: str, title: str = "") -> str:
    tip = f' title="{html.escape(title)}"' if title else ""
    return (f'<span style="background:{colour};padding:1px 3px;margin:1px;border-radius:3px;'
            f'display:inline-block;font-family:monospace"{tip}>{html.escape(text)}</span>')


_PAIR_LABELS = {0: "IsNext (B follows A) / in order", 1: "NotNext (B from another document) / swapped"}


@dataclass
class PairView:
    """One NSP/SOP example: its word pieces, their segment (0 = A, 1 = B) and its label."""

    tokens: list[str]
    segments: list[int]
    label: int  # next_sentence_label; IGNORE_INDEX (-100) for a packed MLM segment

    @property
    def caption(self) -> str:
        """What the label means, in words."""
        return _PAIR_LABELS.get(self.label, "packed MLM segment")

    def _repr_html_(self) -> str:
        chips = "".join(_chip(t, _B if s else _A) for t, s in zip(self.tokens, self.segments, strict=True))
        return (f'<div style="line-height:1.9"><b>{html.escape(self.caption)}</b> · {len(self.tokens)} tokens'
                f"<br>{chips}</div>")


@dataclass
class PairsView:
    """Several examples shown one under the other."""

    pairs: list[PairView]

    def _repr_html_(self) -> str:
        return "".join(p._repr_html_() for p in self.pairs)


def pair_view(tokenizer: Any, example: dict[str, Any]) -> PairView:
    """One NSP/SOP example (a row of the prepared dataset) as a :class:`PairView`."""
    tokens = tokenizer.convert_ids_to_tokens(list(example["input_ids"]))
    segments = list(example.get("token_type_ids") or [0] * len(tokens))
    return PairView(tokens, segments, int(example.get("next_sentence_label", IGNORE_INDEX)))


def pairs_view(tokenizer: Any, examples: Sequence[dict[str, Any]]) -> PairsView:
    """Examples of the prepared dataset as a :class:`PairsView` (segment A blue, B amber, the label)."""
    return PairsView([pair_view(tokenizer, e) for e in examples])


def pair_html(tokenizer: Any, example: dict[str, Any]) -> str:
    """One NSP/SOP example as HTML: segment A blue, segment B amber, and its label."""
    return pair_view(tokenizer, example)._repr_html_()


@dataclass
class MaskView:
    """One sentence after masking: tokens before and after, and what happened to each."""

    tokens: list[str]
    shown: list[str]
    actions: list[int]
    n_maskable: int  # tokens other than [CLS], [SEP] and [PAD]

    @property
    def n_predicted(self) -> int:
        """Tokens the model must predict."""
        return sum(a != ACTION_NONE for a in self.actions)

    @property
    def fraction(self) -> float:
        """Predicted tokens as a fraction of the maskable ones."""
        return self.n_predicted / max(self.n_maskable, 1)

    def _repr_html_(self) -> str:
        return mask_html(self)


def mask_example(tokenizer: Any, text: str, config: MaskingConfig, seed: int = 0) -> MaskView:
    """Mask ``text`` once with ``config`` and a seeded generator (the same call the training uses)."""
    enc = tokenizer(text, truncation=True, max_length=512, return_special_tokens_mask=True)
    ids = torch.tensor([enc["input_ids"]])  # (1, T)
    special = torch.tensor([enc["special_tokens_mask"]], dtype=torch.bool)  # (1, T)
    out = mask_tokens(ids, special, VocabInfo.from_tokenizer(tokenizer), config,
                      torch.Generator().manual_seed(seed))
    return MaskView(
        tokenizer.convert_ids_to_tokens(ids[0].tolist()),
        tokenizer.convert_ids_to_tokens(out.input_ids[0].tolist()),
        out.action[0].tolist(),
        int((~special).sum()),
    )


def mask_html(view: MaskView) -> str:
    """HTML of a :class:`MaskView`: masked, replaced and kept tokens coloured, with a legend."""
    chips = []
    for token, shown, action in zip(view.tokens, view.shown, view.actions, strict=True):
        if action == ACTION_NONE:
            chips.append(_chip(token, "#f3f4f6"))
            continue
        what, colour = _ACTION_STYLE[action]
        text = f"{shown} ← {token}" if action == ACTION_RANDOM else shown
        chips.append(_chip(text, colour, f"{token}: {what}"))
    legend = " ".join(_chip(what, colour) for what, colour in _ACTION_STYLE.values())
    summary = (f'<span class="wb-mask-fraction">{view.n_predicted} of {view.n_maskable} tokens '
               f"predicted ({100 * view.fraction:.1f}%)</span>")
    return f'<div style="line-height:1.9">{summary} · {legend}<br>{"".join(chips)}</div>'


@torch.no_grad()
def fill_mask(model: Any, tokenizer: Any, texts: Sequence[str], top_k: int = 5) -> Any:
    """Top-k predictions for the first [MASK] of each text, as a pandas table (a fill-mask probe)."""
    import pandas as pd

    model.eval()
    device = next(model.parameters()).device
    rows = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt").to(device)
        where = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        if len(where) == 0:
            rows.append({"text": text, "predictions": "(no [MASK] in the text)"})
            continue
        out = model(**enc)
        logits = getattr(out, "prediction_logits", None)
        logits = out.logits if logits is None else logits  # (1, T, V)
        probs = logits[0, int(where[0])].float().softmax(-1)
        top = probs.topk(top_k)
        words = tokenizer.convert_ids_to_tokens(top.indices.tolist())
        rows.append({"text": text, "predictions": ", ".join(f"{w} ({p:.2f})" for w, p in zip(words, top.values.tolist(), strict=True))})
    return pd.DataFrame(rows)
