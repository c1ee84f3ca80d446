"""Word boundaries of any vocabulary, as per-token tables: what whole-word and span masking read.

The collator sees token ids of prepared pairs, not text: no offsets and no ``word_ids()``. So
the tokenizer is read once, and each vocabulary id gets two flags:

- ``continues[id]``: the token continues the word of the token before it;
- ``ends_word[id]``: the token after it starts a new word whatever it is.

A token starts a word when it does not continue one, when the token before it ends one, or
when the token before it is special ([CLS], [SEP], padding). The flags come from the marks each
kind of vocabulary puts on its tokens:

- WordPiece: ``##`` (its ``continuing_subword_prefix``) marks a continuation. These are exactly
  the words of ``word_ids()`` (BERT's pre-tokenizer: whitespace and each punctuation mark).
- SentencePiece / Unigram or BPE with a ``Metaspace`` pre-tokenizer: ``▁`` starts a word; exactly
  ``word_ids()``'s whitespace-delimited words.
- byte-level BPE (``ByteLevel``, GPT-2/RoBERTa): ``Ġ`` (a space) or another whitespace byte
  starts a word, and a run of newlines/tabs ends one. These are whitespace-delimited words:
  ``word_ids()`` also splits "dog," into "dog" and ",", which needs the previous token's last
  character (and byte-level tokens may end inside a UTF-8 character), so such neighbours are
  masked together. Coarser, never finer: no word of ``word_ids()`` is ever split.
- BPE with ``end_of_word_suffix`` (``</w>``) or ``continuing_subword_prefix``; word-level models.

Anything else (a slow tokenizer other than BERT's, a fast one with no marks) is refused with
one line rather than quietly masking single tokens. A fast tokenizer's table is checked once
against its own ``word_ids()`` on a probe text: a table that would split one of its words is
refused too.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import WorkbenchError

__all__ = ["WordTable", "word_starts", "word_table"]

# Punctuation, digits, a contraction, accents, a hyphen, a newline and doubled spaces: the
# cases where vocabularies mark words differently.
_PROBE = ("The committee's 2023 report, (about 3,450 U.S. dollars) wasn't fine-tuned.\n"
          "Naïve café owners said: «déjà vu»  again!\tDone; e-mail x@y.org now.")
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class WordTable:
    """Per vocabulary id: does the token continue a word, does it end one (see the module doc)."""

    continues: torch.Tensor  # (V,) bool
    ends_word: torch.Tensor | None  # (V,) bool, or None when no token ends a word by itself
    kind: str  # wordpiece | metaspace | byte-level | end-of-word-suffix | word-level


def word_starts(ids: torch.Tensor, valid: torch.Tensor, table: WordTable) -> torch.Tensor:
    """(B, T) bool: the token at each valid position starts a word (ids, valid: (B, T))."""
    flat = ids.reshape(-1)
    # index_select: advanced indexing of a small batch goes multi-threaded and stalls on a busy machine
    cont = table.continues.to(ids.device).index_select(0, flat).view(ids.shape)  # (B, T)
    prev_valid = torch.nn.functional.pad(valid[:, :-1], (1, 0), value=False)
    # a continuation right after [CLS]/[SEP] has nothing to continue: it starts its own word
    start = valid & (~cont | ~prev_valid)
    if table.ends_word is not None:
        ends = table.ends_word.to(ids.device).index_select(0, flat).view(ids.shape)
        start |= valid & torch.nn.functional.pad(ends[:, :-1], (1, 0), value=False)
    return start


def _pre_tokenizers(backend: Any) -> list[dict[str, Any]]:
    """The pre-tokenizer steps of a fast tokenizer's backend, Sequences flattened."""
    pre = getattr(backend, "pre_tokenizer", None)
    if pre is None:
        return []
    stack, steps = [json.loads(pre.__getstate__())], []
    while stack:
        step = stack.pop(0)
        if step.get("type") == "Sequence":
            stack = list(step.get("pretokenizers", [])) + stack
        else:
            steps.append(step)
    return steps


def _byte_level_chars() -> dict[int, str]:
    """GPT-2's byte-to-unicode map (' ' -> 'Ġ', '\\n' -> 'Ċ'), which byte-level vocabularies are written in."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _flags(vocab: dict[str, int], size: int, test: Any) -> torch.Tensor:
    flags = torch.zeros(size, dtype=torch.bool)
    ids = [i for token, i in vocab.items() if test(token)]
    if ids:
        flags[torch.tensor(ids, dtype=torch.long)] = True
    return flags


def _from_marks(tokenizer: Any, vocab: dict[str, int], size: int) -> WordTable:
    """The table from the marks of the tokenizer's kind; WorkbenchError when it has none."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        if hasattr(tokenizer, "wordpiece_tokenizer"):  # a slow BertTokenizer
            return WordTable(_flags(vocab, size, lambda t: t.startswith("##") and len(t) > 2), None, "wordpiece")
        raise WorkbenchError(f"{type(tokenizer).__name__} is a slow tokenizer with no word boundaries; load its fast "
                             "version (AutoTokenizer with use_fast=True) for whole-word or span masking, or mask tokens")
    model = backend.model
    kind, steps = type(model).__name__, _pre_tokenizers(backend)
    types = {s.get("type") for s in steps}
    prefix = getattr(model, "continuing_subword_prefix", None)
    if kind == "WordPiece" or prefix:
        return WordTable(_flags(vocab, size, lambda t: t.startswith(prefix) and len(t) > len(prefix)), None,
                         "wordpiece")
    if kind == "WordLevel":  # every token is a word of its own
        return WordTable(torch.zeros(size, dtype=torch.bool), None, "word-level")
    if "Metaspace" in types:
        mark = next(s for s in steps if s.get("type") == "Metaspace").get("replacement", "▁")
        return WordTable(_flags(vocab, size, lambda t: not t.startswith(mark)), None, "metaspace")
    if "ByteLevel" in types:
        chars = _byte_level_chars()
        space, lone_space = {chars[b] for b in b" \t\n\r\x0b\x0c"}, chars[ord(" ")]
        # A lone 'Ġ' may precede its word's letters when BPE has no merge for them: not an end.
        ends = _flags(vocab, size, lambda t: t != lone_space and bool(t) and all(c in space for c in t))
        return WordTable(_flags(vocab, size, lambda t: not t or t[0] not in space), ends, "byte-level")
    suffix = getattr(model, "end_of_word_suffix", None)
    if suffix:
        return WordTable(torch.ones(size, dtype=torch.bool), _flags(vocab, size, lambda t: t.endswith(suffix)),
                         "end-of-word-suffix")
    raise WorkbenchError(f"cannot tell word boundaries from the tokens of this {kind} tokenizer (pre-tokenizer "
                         f"{', '.join(sorted(str(t) for t in types)) or 'none'}, no word marks); use token masking "
                         "(whole_word and span off) or a WordPiece, SentencePiece or byte-level BPE tokenizer")


def _check_against_word_ids(tokenizer: Any, table: WordTable) -> None:
    """Refuse a table that splits a word of the tokenizer's own ``word_ids()`` on the probe text."""
    enc = tokenizer(_PROBE, add_special_tokens=False)
    words = enc.word_ids()
    if len(set(words)) < 2:  # a pre-tokenizer that does not split (Metaspace split=False): nothing to compare
        return
    ids = torch.tensor([enc["input_ids"]])
    starts = word_starts(ids, torch.ones_like(ids, dtype=torch.bool), table)[0].tolist()
    split = [i for i in range(1, len(words)) if starts[i] and words[i] is not None and words[i] == words[i - 1]]
    if split:
        piece = tokenizer.convert_ids_to_tokens(ids[0, split[0] - 1: split[0] + 1].tolist())
        raise WorkbenchError(f"the {table.kind} word boundaries derived for {type(tokenizer).__name__} split its own "
                             f"word {piece!r}; use token masking (whole_word and span off) with this tokenizer")


def word_table(tokenizer: Any) -> WordTable:
    """The word table of ``tokenizer``, derived once per tokenizer object (and vocabulary size)."""
    size = len(tokenizer)
    try:
        cached = _CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None and cached[0] == size:
        return cached[1]
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    size = max(size, max(vocab.values()) + 1)
    table = _from_marks(tokenizer, vocab, size)
    # Added tokens are split off before pre-tokenization: words of their own. Not [UNK], which
    # stands for an unknown piece, inside a word as often as at its start.
    unk = getattr(tokenizer, "unk_token_id", None)
    added = [i for i in getattr(tokenizer, "added_tokens_decoder", {}) if i < size and i != unk]
    if added:
        table.continues[torch.tensor(added, dtype=torch.long)] = False
    if getattr(tokenizer, "is_fast", False):
        _check_against_word_ids(tokenizer, table)
    try:
        _CACHE[tokenizer] = (len(tokenizer), table)
    except TypeError:
        pass
    return table
