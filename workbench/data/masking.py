"""Dynamic MLM masking: BERT's 80/10/10 token masking, whole-word masking and SpanBERT spans.

Masks are drawn at batch time (RoBERTa's dynamic masking) by :class:`PretrainingCollator`, the
DataLoader ``collate_fn``. All randomness comes from an explicit ``torch.Generator``, so a run
and a resumed run see exactly the same masks. Each row gets exactly ``round(n * mask_rate)``
predicted tokens (as in Google's create_pretraining_data.py), not a Bernoulli draw per token.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

import torch

from ..config import MaskingConfig
from ..errors import WorkbenchError
from .labels import IGNORE_INDEX
from .words import WordTable, word_starts, word_table

__all__ = [
    "ACTION_KEEP",
    "ACTION_MASK",
    "ACTION_NONE",
    "ACTION_RANDOM",
    "MaskedBatch",
    "PretrainingCollator",
    "VocabInfo",
    "mask_tokens",
]

# Codes of MaskedBatch.action.
ACTION_NONE, ACTION_MASK, ACTION_RANDOM, ACTION_KEEP = 0, 1, 2, 3
_SEQUENCE_LABELS = ("next_sentence_label", "sentence_order_label")


@dataclass
class MaskedBatch:
    """The result of masking a batch: new inputs, MLM labels and what was done where."""

    input_ids: torch.Tensor  # (B, T) long, after replacement
    labels: torch.Tensor  # (B, T) long, original id where predicted, -100 elsewhere
    masked: torch.Tensor  # (B, T) bool, positions to predict (labels != -100)
    action: torch.Tensor  # (B, T) uint8: 0 untouched, 1 [MASK], 2 random token, 3 kept


@dataclass(frozen=True, eq=False)
class VocabInfo:
    """What masking needs to know about a vocabulary."""

    mask_token_id: int
    special_ids: (
        torch.Tensor
    )  # (S,) long: ids never masked ([CLS], [SEP], [PAD], [MASK]; not [UNK])
    random_ids: torch.Tensor  # (R,) long: ids a random replacement is drawn from (no special ids)
    size: int  # V: ids run 0..V-1
    words: WordTable | None = None  # word boundaries (workbench.data.words); None: see word_error
    word_error: str | None = None  # why this vocabulary has no word boundaries

    @property
    def is_continuation(self) -> torch.Tensor:
        """(V,) bool: the token continues the word of the token before it."""
        return self.words.continues if self.words is not None else torch.zeros(self.size, dtype=torch.bool)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> VocabInfo:
        """Read the mask id, special ids and word boundaries from a Hugging Face tokenizer."""
        if tokenizer.mask_token_id is None:
            raise WorkbenchError(
                "the tokenizer has no mask token; add one with "
                "tokenizer.add_special_tokens({'mask_token': '[MASK]'})"
            )
        vocab = tokenizer.get_vocab()  # token -> id, added tokens included
        size = max(len(tokenizer), max(vocab.values()) + 1)
        all_special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        # [UNK] stands for real text, so it may be predicted; it is no use as a random replacement.
        unk = tokenizer.unk_token_id
        special = all_special[all_special != (-1 if unk is None else unk)]
        ids = torch.arange(size)
        random_ids = ids[~torch.isin(ids, all_special)]
        try:  # token masking needs no words: a vocabulary without them fails only whole-word/span masking
            words, error = word_table(tokenizer), None
        except WorkbenchError as exc:
            words, error = None, str(exc)
        return cls(int(tokenizer.mask_token_id), special, random_ids, size, words, error)

    def check_words(self, config: MaskingConfig) -> None:
        """Refuse whole-word or span masking, in one line, when the vocabulary has no word boundaries."""
        if (config.whole_word or config.span) and self.words is None:
            raise WorkbenchError(f"{'span' if config.span else 'whole-word'} masking: {self.word_error}")


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    vocab: VocabInfo,
    config: MaskingConfig,
    generator: torch.Generator,
) -> MaskedBatch:
    """Pick about mask_rate of each row's non-special tokens and apply the 80/10/10 split."""
    if input_ids.dim() != 2:
        raise WorkbenchError(
            f"input_ids has shape {tuple(input_ids.shape)}; pass a (batch, seq) tensor"
        )
    if special_mask.shape != input_ids.shape:
        raise WorkbenchError(
            f"special_mask has shape {tuple(special_mask.shape)} but input_ids "
            f"{tuple(input_ids.shape)}; "
            "pass one flag per token"
        )
    vocab.check_words(config)
    valid = ~special_mask.bool()  # (B, T) tokens that may be predicted
    n_valid = valid.sum(dim=1)  # (B,)
    # (B,) tokens to predict per row: at least one, none in a row of only special tokens
    k = torch.round(n_valid.double() * config.mask_rate).long().clamp(min=1) * (n_valid > 0)
    if config.span:
        masked = _select_spans(input_ids, valid, k, vocab, config, generator)
    elif config.whole_word:
        masked = _select_whole_words(input_ids, valid, k, vocab, generator)
    else:
        masked = _select_tokens(valid, k, generator)
    return _replace(input_ids, masked, vocab, config, generator)


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``generator``, moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table[ids] for a 1-D table; index_select, because advanced indexing of a small batch
    goes multi-threaded and stalls for milliseconds when another process holds a core."""
    return table.index_select(0, ids.reshape(-1)).view(ids.shape)


def _rank(scores: torch.Tensor, stable: bool = False) -> torch.Tensor:
    """(B, T) position of each score in its row's ascending order."""
    order = scores.argsort(dim=1, stable=stable)  # (B, T)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _select_tokens(
    valid: torch.Tensor, k: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Exactly k[b] random valid positions per row: the k lowest of uniform scores."""
    scores = _rand(valid.shape, generator, valid.device).masked_fill_(~valid, 2.0)  # specials last
    return _rank(scores) < k[:, None]


def _words(
    input_ids: torch.Tensor, valid: torch.Tensor, vocab: VocabInfo
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) bool: token starts a word; (B, T) long: position of each token's word start."""
    start = word_starts(input_ids, valid, vocab.words)  # vocab.words: checked by mask_tokens
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    start_pos = torch.where(start, positions, 0).cummax(dim=1).values
    return start, start_pos


def _select_whole_words(
    input_ids: torch.Tensor,
    valid: torch.Tensor,
    k: torch.Tensor,
    vocab: VocabInfo,
    generator: torch.Generator,
) -> torch.Tensor:
    """Whole words in random order while the tokens taken stay about k[b] (midpoint rule)."""
    start, start_pos = _words(input_ids, valid, vocab)
    word_scores = _rand(valid.shape, generator, valid.device).masked_fill_(~start, 2.0)
    token_scores = word_scores.gather(1, start_pos).masked_fill_(~valid, 2.0)  # (B, T) word's score
    # A stable sort keeps each word's tokens together and in order, so the rank of a word's first
    # token is the number of tokens of the words before it in score order.
    first_rank = _rank(token_scores, stable=True).gather(1, start_pos)  # (B, T)
    word_len = (
        torch.zeros_like(start_pos).scatter_add_(1, start_pos, valid.long()).gather(1, start_pos)
    )
    # Take a word if tokens-before + len/2 < k: the last word is in or out by whichever side of k
    # its middle falls, so the masked fraction is unbiased. The first word is always taken.
    take = (2 * first_rank + word_len < 2 * k[:, None]) | (first_rank == 0)
    return take & valid


def _select_spans(
    input_ids: torch.Tensor,
    valid: torch.Tensor,
    k: torch.Tensor,
    vocab: VocabInfo,
    config: MaskingConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """SpanBERT: geometric-length spans of words at random start words until about k[b] tokens."""
    B, T = valid.shape
    start, _ = _words(input_ids, valid, vocab)
    word_id = (start.cumsum(dim=1) - 1).clamp(min=0)  # (B, T) index of each token's word in its row
    word_len = torch.zeros(B, T, dtype=torch.long, device=valid.device).scatter_add_(
        1, word_id, valid.long()
    )
    lens, n_words, budgets = word_len.tolist(), start.sum(dim=1).tolist(), k.tolist()
    # Span lengths follow SpanBERT's geometric distribution truncated to 1..max_span_length and
    # renormalized (mean 3.8 words for p=0.2, M=10), drawn by inverting its CDF.
    log_q = math.log1p(-config.span_p) if config.span_p < 1.0 else None
    mass = 1.0 - (1.0 - config.span_p) ** config.max_span_length  # P(L <= M) untruncated
    draws_per_row = max(budgets, default=0) + 1
    draws = _rand((B, draws_per_row, 2), generator, torch.device("cpu")).tolist()
    flat: list[int] = []  # b * T + word index of every masked word
    for b in range(B):
        n, budget, lengths = n_words[b], budgets[b], lens[b]
        taken = [False] * n
        count, row_draws = 0, iter(draws[b])
        while count < budget:
            u = next(row_draws, None)
            if u is None:  # rare: a row used up its draws on already-masked start words
                row_draws = iter(_rand((draws_per_row, 2), generator, torch.device("cpu")).tolist())
                continue
            span = 1 if log_q is None else 1 + int(math.log1p(-u[0] * mass) / log_q)
            first = min(int(u[1] * n), n - 1)
            if taken[first]:  # as SpanBERT: a new anchor rather than a span over masked words
                continue
            for w in range(first, min(first + min(span, config.max_span_length), n)):
                if taken[w]:
                    continue
                if count > 0 and 2 * count + lengths[w] >= 2 * budget:  # midpoint rule, as above
                    budget = count
                    break
                taken[w] = True
                count += lengths[w]
        flat += [b * T + w for w in range(n) if taken[w]]
    word_masked = torch.zeros(B * T, dtype=torch.bool, device=valid.device)
    word_masked.index_fill_(0, torch.tensor(flat, dtype=torch.long, device=valid.device), True)
    return word_masked.view(B, T).gather(1, word_id) & valid


def _replace(
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    vocab: VocabInfo,
    config: MaskingConfig,
    generator: torch.Generator,
) -> MaskedBatch:
    """Per chosen token: [MASK] (mask_token_prob), a random id (random_token_prob) or kept."""
    u = _rand(masked.shape, generator, masked.device)  # (B, T) one independent decision per token
    to_mask = masked & (u < config.mask_token_prob)
    to_random = masked & ~to_mask & (u < config.mask_token_prob + config.random_token_prob)
    to_keep = masked & ~to_mask & ~to_random
    random_ids = vocab.random_ids.to(input_ids.device)
    if to_random.any() and random_ids.numel() == 0:
        raise WorkbenchError(
            "the vocabulary has no non-special tokens to draw from; set random_token_prob=0"
        )
    pick = torch.randint(
        max(random_ids.numel(), 1), masked.shape, generator=generator, device=generator.device
    )
    random_tokens = (
        _lookup(random_ids, pick.to(input_ids.device)) if random_ids.numel() else input_ids
    )
    new_ids = torch.where(
        to_mask, vocab.mask_token_id, torch.where(to_random, random_tokens, input_ids)
    )
    labels = torch.where(masked, input_ids, IGNORE_INDEX).long()
    action = to_mask.to(torch.uint8) * ACTION_MASK + to_random.to(torch.uint8) * ACTION_RANDOM
    action += to_keep.to(torch.uint8) * ACTION_KEEP
    return MaskedBatch(new_ids.long(), labels, masked, action)


def _as_list(x: Any) -> list[int]:
    return x.tolist() if isinstance(x, torch.Tensor) else x


def _pad_rows(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    """(B, length) long tensor of ``rows`` right-padded with ``value``."""
    # array('q') + frombuffer converts Python ints faster than torch.tensor(list)
    flat, fill = array("q"), array("q", [value]) * length
    for row in rows:
        flat.extend(row)
        flat.extend(fill[: length - len(row)])
    return torch.frombuffer(flat, dtype=torch.long).view(len(rows), length)


class PretrainingCollator:
    """Pads a list of examples and masks them: the DataLoader collate_fn for pretraining.

    With ``num_workers > 0`` every worker holds its own copy; each reseeds once from the
    worker's seed (different per worker and per epoch, reproducible under ``torch.manual_seed``).
    ``state_dict`` resumes masks exactly in the main process (``num_workers=0``).
    """

    def __init__(
        self,
        tokenizer: Any,
        config: MaskingConfig,
        seed: int = 0,
        pad_to_multiple_of: int | None = 8,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise WorkbenchError(
                "the tokenizer has no pad token; set tokenizer.pad_token = '[PAD]' first"
            )
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise WorkbenchError(
                f"pad_to_multiple_of {pad_to_multiple_of} must be None or 1 or more; 8 suits GPUs"
            )
        self.vocab = VocabInfo.from_tokenizer(tokenizer)
        self.vocab.check_words(config)  # at set-up, not at the first batch
        self.config = config
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_token_id = int(tokenizer.pad_token_id)
        self._is_special = torch.zeros(self.vocab.size, dtype=torch.bool)  # (V,)
        self._is_special[self.vocab.special_ids] = True
        self.generator = torch.Generator().manual_seed(seed)
        self._worker_seeded = False

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest example (rounded up to pad_to_multiple_of) and mask."""
        if not examples:
            raise WorkbenchError("the collator got an empty batch; check the dataset is not empty")
        info = torch.utils.data.get_worker_info()
        if info is not None and not self._worker_seeded:
            self.generator.manual_seed((self.seed * 1_000_003 + info.seed) % 2**63)
            self._worker_seeded = True
        ids = [_as_list(e["input_ids"]) for e in examples]
        lengths = torch.tensor([len(x) for x in ids])  # (B,)
        if int(lengths.min()) == 0:
            raise WorkbenchError(
                "an example has no input_ids; drop empty examples before collating"
            )
        T = int(lengths.max())
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        attention = torch.arange(T)[None, :] < lengths[:, None]  # (B, T) bool
        input_ids = _pad_rows(ids, T, self.pad_token_id)  # (B, T)
        if "token_type_ids" in examples[0]:
            types = [_as_list(e["token_type_ids"]) for e in examples]
            if [len(t) for t in types] != lengths.tolist():
                raise WorkbenchError(
                    "token_type_ids and input_ids differ in length; build both from the same tokens"
                )
            token_type_ids = _pad_rows(types, T, 0)
        else:
            token_type_ids = torch.zeros_like(input_ids)
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= len(self._is_special):
            raise WorkbenchError(
                f"token id {high if high >= len(self._is_special) else low} is outside the "
                f"vocabulary (0..{len(self._is_special) - 1}); "
                "tokenize with the collator's tokenizer"
            )
        special_mask = _lookup(self._is_special, input_ids) | ~attention
        out = mask_tokens(input_ids, special_mask, self.vocab, self.config, self.generator)
        batch = {
            "input_ids": out.input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention.long(),
            "labels": out.labels,
        }
        for key in _SEQUENCE_LABELS:
            if key in examples[0]:
                if not all(key in e for e in examples):
                    raise WorkbenchError(
                        f"only some examples have {key}; build all examples the same way"
                    )
                batch[key] = torch.tensor([int(e[key]) for e in examples], dtype=torch.long)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The generator state, so a resumed run draws the same masks."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
