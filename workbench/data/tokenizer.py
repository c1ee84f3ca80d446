"""WordPiece tokenizers: train one on a corpus, or load an existing one (builtin, local dir, hub)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from ..builtin import resolve_pretrained
from ..errors import WorkbenchError

__all__ = [
    "SPECIAL_TOKENS",
    "load_tokenizer",
    "train_tokenizer",
    "tokenizer_fingerprint",
    "position_limit",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# BERT's learned position table has 512 rows; a tokenizer without a real limit gets this one.
DEFAULT_POSITION_LIMIT = 512
_COUNT_BATCH = 1024  # texts per normalizer call when counting words


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8192,
    lowercase: bool = True,
    out_dir: str | Path | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerBase:
    """Train a BERT WordPiece tokenizer on ``texts``; save it in Hugging Face format if ``out_dir``.

    The same texts and settings give the same vocabulary in every run (see :func:`_train_wordpiece`).
    """
    if vocab_size < len(SPECIAL_TOKENS):
        raise WorkbenchError(
            f"vocab_size {vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens "
            f"{' '.join(SPECIAL_TOKENS)}; use --vocab-size 8192 or so"
        )
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    # Same normalisation as Google's BERT: clean control chars, split CJK, strip accents iff lower-casing.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    counts = _word_counts(tok, texts)
    _check_room(counts, vocab_size)
    learned = _train_wordpiece(counts, vocab_size, min_frequency)
    # WordPiece only needs membership: canonical ids (specials, then sorted) keep the ids, and
    # so the dataset cache key, the same for the same vocabulary.
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *sorted(learned)])}
    tok.model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        model_max_length=DEFAULT_POSITION_LIMIT,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def _word_counts(tok: Tokenizer, texts: Iterable[str]) -> Counter[str]:
    """How often each word occurs after ``tok``'s normalizer and pre-tokenizer (what the trainer counts)."""
    counts: Counter[str] = Counter()
    kinds: dict[str, str] = {}  # character -> "word", "space" or "punct" to the pre-tokenizer
    texts = iter(texts)
    while chunk := list(itertools.islice(texts, _COUNT_BATCH)):
        # One Rust call per chunk of texts ("\n" is whitespace to both), not one per text.
        normalized = tok.normalizer.normalize_str("\n".join(chunk))
        for c in set(normalized) - kinds.keys():
            kinds[c] = _char_kind(tok, c)
        counts.update(_splitter(kinds).findall(normalized))
    return counts


def _check_room(counts: Counter[str], vocab_size: int) -> None:
    """Refuse a vocabulary too small for the special tokens and the corpus's characters, which every WordPiece holds."""
    starts = {word[0] for word in counts}
    continuing = {c for word in counts for c in word[1:]}
    alphabet = starts | continuing  # each character alone, and each that follows another as ##c
    needed = len(SPECIAL_TOKENS) + len(alphabet) + len(continuing)
    if vocab_size < needed:
        raise WorkbenchError(
            f"vocab_size {vocab_size} is too small for this corpus: the {len(SPECIAL_TOKENS)} special tokens, its "
            f"{len(alphabet)} characters and {len(continuing)} ##continuations alone take {needed}, which the "
            f"tokenizer would hold anyway; pass --vocab-size {needed} or more (8192 is the default)"
        )


def _char_kind(tok: Tokenizer, c: str) -> str:
    # The pre-tokenizer splits at each character on its own: ask it once per distinct character.
    pieces = [word for word, _ in tok.pre_tokenizer.pre_tokenize_str(f"a{c}a")]
    return "word" if len(pieces) == 1 else "space" if len(pieces) == 2 else "punct"


@functools.lru_cache(maxsize=64)
def _splitter_for(punct: str, space: str) -> re.Pattern[str]:
    punct, space = re.escape(punct), re.escape(space)
    return re.compile(f"[{punct}]|[^{punct}{space}]+" if punct else f"[^{space}]+")


def _splitter(kinds: dict[str, str]) -> re.Pattern[str]:
    """A regex that finds the words BertPreTokenizer makes: runs of word characters, or one punctuation mark."""
    punct = "".join(sorted(c for c, kind in kinds.items() if kind == "punct"))
    space = "".join(sorted(c for c, kind in kinds.items() if kind == "space"))
    return _splitter_for(punct, space or " ")


def _train_wordpiece(counts: Counter[str], vocab_size: int, min_frequency: int) -> list[str]:
    """The learned (non-special) tokens of a WordPiece vocabulary for these word counts.

    tokenizers' trainer numbers the continuing pieces ``##c`` in hash-map order, which changes
    from run to run, and breaks ties between equally frequent merges by those numbers, so the
    same corpus gave vocabularies that differed by a few tokens. Every ``##c`` the words need is
    therefore handed to it as a special token, in sorted order: the trainer makes exactly these
    pieces anyway (the same vocabulary budget), now with fixed numbers.
    """
    continuing = sorted({f"##{c}" for word in counts for c in word[1:]})
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuing],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    # The words are fed as counted (no normalizer, whitespace split), in sorted order.
    bare = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    bare.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fed = (" ".join(itertools.repeat(word, n)) for word, n in sorted(counts.items()))
    bare.train_from_iterator(fed, trainer=trainer, length=len(counts))
    return [t for t in bare.get_vocab() if t not in SPECIAL_TOKENS]


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer from `builtin:minilm`, a local directory, or a hub name (when online)."""
    path = resolve_pretrained(spec)
    local = Path(path)
    if not local.exists() and spec.startswith(("/", "./", "../", "~")):
        raise WorkbenchError(f"tokenizer path {spec!r} does not exist; pass a tokenizer dir, builtin:minilm or train")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # hub unreachable, not a tokenizer dir, corrupt files
        where = "local dir" if local.exists() else "hub name (the hub needs a network)"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"could not load tokenizer {spec!r} as a {where}: {reason[:160]}; pass builtin:minilm, train, or a saved tokenizer dir"
        ) from None
    if not tokenizer.is_fast:
        raise WorkbenchError(f"tokenizer {spec!r} has no fast (Rust) version; save it with tokenizers first")
    missing = [t for t in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tokenizer, t) is None]
    if missing:
        raise WorkbenchError(f"tokenizer {spec!r} lacks BERT special tokens ({', '.join(missing)}); use a BERT WordPiece tokenizer")
    return tokenizer


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A stable hash of the vocabulary and normalisation, for cache keys."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    payload = json.dumps(
        {"model": backend.get("model"), "normalizer": backend.get("normalizer"), "pre": backend.get("pre_tokenizer")},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def position_limit(tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest sequence the tokenizer's model can take (transformers uses a huge sentinel for none)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is None or limit > 100_000:
        return DEFAULT_POSITION_LIMIT
    return int(limit)
