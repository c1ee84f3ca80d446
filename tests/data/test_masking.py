"""Masking on real text: the shipped MiniLM WordPiece tokenizer over gensim's Wikipedia sample."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from workbench.config import MaskingConfig
from workbench.data.masking import (
    ACTION_KEEP,
    ACTION_MASK,
    ACTION_NONE,
    ACTION_RANDOM,
    PretrainingCollator,
    VocabInfo,
    mask_tokens,
)
from workbench.errors import WorkbenchError

SEQ = 128
MIN_TOKENS = 130_000  # non-special tokens in the corpus: enough for +-0.005 on the fraction
MODES = {"token": {}, "whole_word": {"whole_word": True}, "span": {"span": True}}


def _build_corpus(tok, stream: list[int]) -> dict:
    """(N, 128) rows: single segments, sentence pairs, padded rows and one row with no text."""
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    gen = torch.Generator().manual_seed(0)
    rows, pos, i = [], 0, 0
    while pos + SEQ - 3 <= len(stream):
        if i % 4 == 3:  # a sentence pair: [CLS] A [SEP] B [SEP]
            a, b = stream[pos : pos + 60], stream[pos + 60 : pos + SEQ - 3]
            rows.append([cls, *a, sep, *b, sep])
            pos += SEQ - 3
        elif i % 16 == 5:  # a short row, padded
            n = int(torch.randint(1, SEQ - 2, (1,), generator=gen))
            rows.append([cls, *stream[pos : pos + n], sep] + [pad] * (SEQ - n - 2))
            pos += n
        else:
            rows.append([cls, *stream[pos : pos + SEQ - 2], sep])
            pos += SEQ - 2
        i += 1
    rows.append([cls, sep] + [pad] * (SEQ - 2))  # nothing to mask
    ids = torch.tensor(rows)
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    return {
        "tok": tok,
        "ids": ids,
        "special": torch.isin(ids, torch.tensor([cls, sep, pad])),
        # '##' pieces read from the vocabulary here, independently of VocabInfo
        "cont": torch.tensor([p.startswith("##") and len(p) > 2 for p in pieces]),
        "vocab": VocabInfo.from_tokenizer(tok),
    }


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


@pytest.fixture(scope="module")
def corpus(minilm_tokenizer, wiki_token_docs) -> dict:
    stream = [t for doc in wiki_token_docs for sentence in doc for t in sentence]
    return _build_corpus(minilm_tokenizer, stream[: MIN_TOKENS + 20_000])


def _mask(corpus: dict, seed: int = 0, **kw):
    g = torch.Generator().manual_seed(seed)
    return mask_tokens(corpus["ids"], corpus["special"], corpus["vocab"], MaskingConfig(**kw), g)


def _fraction(corpus: dict, out) -> float:
    return float(out.masked.sum() / (~corpus["special"]).sum())


def _mean_run(masked: torch.Tensor) -> float:
    """Mean length of contiguous runs of masked positions."""
    starts = masked & ~torch.nn.functional.pad(masked[:, :-1], (1, 0), value=False)
    return float(masked.sum() / starts.sum())


def _splits_a_word(corpus: dict, masked: torch.Tensor) -> bool:
    """True if some '##' piece is masked differently from the token before it."""
    ids, valid = corpus["ids"], ~corpus["special"]
    cont = corpus["cont"][ids] & valid
    cont[:, 1:] &= valid[:, :-1]
    return bool((cont[:, 1:] & (masked[:, 1:] != masked[:, :-1])).any())


def test_corpus_is_big_and_real(corpus):
    assert (~corpus["special"]).sum() >= 100_000
    assert corpus["ids"].shape[1] == SEQ
    assert corpus["cont"][corpus["ids"]].sum() > 5_000  # many multi-piece words
    assert torch.equal(corpus["vocab"].is_continuation, corpus["cont"])


@pytest.mark.parametrize("rate", [0.15, 0.3, 0.4])
def test_token_masking_fraction_is_exact_per_row(corpus, rate):
    out = _mask(corpus, mask_rate=rate)
    assert abs(_fraction(corpus, out) - rate) < 0.005
    n_valid = (~corpus["special"]).sum(1)
    k = torch.round(n_valid.double() * rate).long().clamp(min=1) * (n_valid > 0)
    assert torch.equal(out.masked.sum(1), k)
    assert out.masked[-1].sum() == 0  # the [CLS] [SEP] [PAD]... row


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "split",
    [(0.8, 0.1), (0.5, 0.25), (1.0, 0.0), (0.0, 0.0)],
    ids=["80-10-10", "50-25-25", "all-mask", "all-keep"],
)
def test_replacement_split(corpus, mode, split):
    p_mask, p_random = split
    out = _mask(
        corpus, mask_rate=0.3, mask_token_prob=p_mask, random_token_prob=p_random, **MODES[mode]
    )
    n = out.masked.sum()
    assert n > 30_000
    for code, p in [
        (ACTION_MASK, p_mask),
        (ACTION_RANDOM, p_random),
        (ACTION_KEEP, 1 - p_mask - p_random),
    ]:
        assert abs(float((out.action == code).sum() / n) - p) < 0.015


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_outputs_are_consistent(corpus, mode, rate):
    ids, special, vocab = corpus["ids"], corpus["special"], corpus["vocab"]
    out = _mask(corpus, mask_rate=rate, **MODES[mode])
    m, a = out.masked, out.action
    assert out.input_ids.dtype == out.labels.dtype == torch.long and m.dtype == torch.bool
    assert not (m & special).any()
    assert torch.equal(out.input_ids[special], ids[special])
    assert torch.equal(out.labels[m], ids[m])
    assert (out.labels[~m] == -100).all()
    assert torch.equal(out.input_ids[~m], ids[~m])
    assert torch.equal(m, a != ACTION_NONE)
    assert (out.input_ids[a == ACTION_MASK] == vocab.mask_token_id).all()
    assert torch.equal(out.input_ids[a == ACTION_KEEP], ids[a == ACTION_KEEP])
    randoms = out.input_ids[a == ACTION_RANDOM]
    assert torch.isin(randoms, vocab.random_ids).all()
    assert not torch.isin(randoms, torch.tensor(corpus["tok"].all_special_ids)).any()
    # a random replacement is usually a different token (it may hit the original by chance)
    assert (randoms != ids[a == ACTION_RANDOM]).float().mean() > 0.99


@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_whole_word_masking_keeps_words_whole(corpus, rate):
    out = _mask(corpus, mask_rate=rate, whole_word=True)
    assert not _splits_a_word(corpus, out.masked)
    assert abs(_fraction(corpus, out) - rate) < 0.01
    # the check has teeth: token-level masking splits words, and masked words do have pieces
    assert _splits_a_word(corpus, _mask(corpus, mask_rate=rate).masked)
    assert (out.masked & corpus["cont"][corpus["ids"]]).sum() > 1_000


@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_span_masking_keeps_words_whole_in_long_runs(corpus, rate):
    out = _mask(corpus, mask_rate=rate, span=True)
    assert not _splits_a_word(corpus, out.masked)
    assert abs(_fraction(corpus, out) - rate) < 0.01
    token_runs = _mean_run(_mask(corpus, mask_rate=rate).masked)
    word_runs = _mean_run(_mask(corpus, mask_rate=rate, whole_word=True).masked)
    span_runs = _mean_run(out.masked)
    assert span_runs > 2.0 and span_runs > 1.5 * token_runs and span_runs > word_runs


def test_single_word_spans_and_short_max_length(corpus):
    out = _mask(corpus, span=True, span_p=1.0)  # every span is one word
    assert not _splits_a_word(corpus, out.masked)
    assert abs(_fraction(corpus, out) - 0.15) < 0.01
    longer = _mask(corpus, span=True, max_span_length=3)
    assert (
        _mean_run(out.masked)
        < _mean_run(longer.masked)
        < _mean_run(_mask(corpus, span=True).masked)
    )


@pytest.mark.parametrize("mode", MODES)
def test_seed_determines_masks(corpus, mode):
    rows = slice(0, 200)
    part = {**corpus, "ids": corpus["ids"][rows], "special": corpus["special"][rows]}
    before = torch.get_rng_state()
    a, b, c = (_mask(part, seed=s, **MODES[mode]) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), before)  # only the given generator is used
    for field in ("input_ids", "labels", "masked", "action"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.masked, c.masked)


@pytest.mark.parametrize("rate", [0, 1, -0.1, 1.5])
def test_invalid_mask_rate(rate):
    with pytest.raises(WorkbenchError, match="mask_rate"):
        MaskingConfig(mask_rate=rate)


def test_bad_shapes_raise(corpus):
    ids, vocab, g = corpus["ids"], corpus["vocab"], torch.Generator()
    with pytest.raises(WorkbenchError, match="batch, seq"):
        mask_tokens(ids[0], corpus["special"][0], vocab, MaskingConfig(), g)
    with pytest.raises(WorkbenchError, match="special_mask"):
        mask_tokens(ids, corpus["special"][:, :5], vocab, MaskingConfig(), g)


def test_vocab_info_from_tokenizer(corpus):
    tok, vocab = corpus["tok"], corpus["vocab"]
    assert vocab.mask_token_id == tok.mask_token_id
    assert set(vocab.special_ids.tolist()) == set(tok.all_special_ids) - {tok.unk_token_id}
    assert len(vocab.random_ids) == len(tok) - len(tok.all_special_ids)
    assert vocab.is_continuation.shape == (len(tok),)


def _word_level_tokenizer(**special):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##ab", "cd"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **special)


def test_non_wordpiece_vocab_has_no_continuations():
    tok = _word_level_tokenizer(
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    vocab = VocabInfo.from_tokenizer(tok)
    assert vocab.mask_token_id == 4
    assert not vocab.is_continuation.any()  # '##ab' is a plain word here
    assert vocab.random_ids.tolist() == [5, 6]
    with pytest.raises(WorkbenchError, match="mask token"):
        VocabInfo.from_tokenizer(_word_level_tokenizer(pad_token="[PAD]"))


def _examples(corpus: dict, lengths: list[int], nsp: bool = True) -> list[dict]:
    out = []
    for i, n in enumerate(lengths):
        ids = corpus["ids"][i, : n - 1].tolist() + [corpus["tok"].sep_token_id]
        types = [0] * (n // 2) + [1] * (n - n // 2)
        ex = {"input_ids": ids, "token_type_ids": types}
        if nsp:
            ex["next_sentence_label"] = i % 2
        out.append(ex)
    return out


def test_collator_pads_and_masks(corpus):
    tok = corpus["tok"]
    lengths = [5, 37, 100, 123]
    batch = PretrainingCollator(tok, MaskingConfig(mask_rate=0.4), seed=1)(
        _examples(corpus, lengths)
    )
    B, T = batch["input_ids"].shape
    assert (B, T) == (4, 128) and T % 8 == 0
    assert set(batch) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "labels",
        "next_sentence_label",
    }
    real = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    assert torch.equal(batch["attention_mask"], real.long())
    assert (batch["input_ids"][~real] == tok.pad_token_id).all()
    assert (batch["token_type_ids"][~real] == 0).all()
    assert (batch["labels"][~real] == -100).all()
    assert batch["token_type_ids"][3, 122] == 1 and batch["token_type_ids"][3, 0] == 0
    assert batch["next_sentence_label"].tolist() == [0, 1, 0, 1]
    masked = batch["labels"] != -100
    special = torch.isin(batch["input_ids"], torch.tensor([tok.cls_token_id, tok.sep_token_id]))
    assert not (masked & special).any() and (masked.sum(1) > 0).all()
    for key, value in batch.items():
        assert value.dtype == torch.long, key

    plain = PretrainingCollator(tok, MaskingConfig(), pad_to_multiple_of=None)
    batch = plain(_examples(corpus, [9, 13], nsp=False))
    assert batch["input_ids"].shape == (2, 13) and "next_sentence_label" not in batch


def test_collator_state_dict_resumes_masks(corpus):
    tok, config = corpus["tok"], MaskingConfig(whole_word=True)
    first, second = _examples(corpus, [128] * 16), _examples(corpus, [90] * 16)
    collator = PretrainingCollator(tok, config, seed=3)
    collator(first)
    state = collator.state_dict()
    expected = collator(second)
    resumed = PretrainingCollator(tok, config, seed=99)
    resumed.load_state_dict(state)
    got = resumed(second)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert not torch.equal(
        PretrainingCollator(tok, config, seed=99)(second)["labels"], expected["labels"]
    )


def test_collator_rejects_bad_batches(corpus):
    collator = PretrainingCollator(corpus["tok"], MaskingConfig())
    with pytest.raises(WorkbenchError, match="empty batch"):
        collator([])
    with pytest.raises(WorkbenchError, match="no input_ids"):
        collator([{"input_ids": []}])
    with pytest.raises(WorkbenchError, match="token_type_ids"):
        collator([{"input_ids": [101, 102], "token_type_ids": [0]}])
    with pytest.raises(WorkbenchError, match="outside the vocabulary"):
        collator([{"input_ids": [101, 10**6, 102]}])
