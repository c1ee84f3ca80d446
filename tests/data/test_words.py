"""Word boundaries for any fast tokenizer: byte-level BPE and Unigram trained on the builtin Wikipedia text."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from workbench.config import MaskingConfig
from workbench.data.masking import (
    ACTION_KEEP,
    ACTION_MASK,
    ACTION_RANDOM,
    PretrainingCollator,
    VocabInfo,
    mask_tokens,
)
from workbench.data.words import WordTable, _check_against_word_ids, word_table
from workbench.errors import WorkbenchError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_TOKENS = 100_000
SEQ = 128


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


@pytest.fixture(scope="module")
def sentences(wiki_documents) -> list[str]:
    flat = [s for doc in wiki_documents for s in doc]
    return flat[:5000]  # about 130k tokens with a 2k vocabulary


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def byte_bpe(sentences) -> PreTrainedTokenizerFast:
    """GPT-2/RoBERTa style: byte-level pre-tokenizer (no prefix space), BPE, 'Ġ' marks a space."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(sentences[:2000], trainers.BpeTrainer(
        vocab_size=2000, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return _wrap(backend)


@pytest.fixture(scope="module")
def unigram(sentences) -> PreTrainedTokenizerFast:
    """SentencePiece style: a Unigram model behind a Metaspace pre-tokenizer, '▁' marks a word start."""
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(sentences[:1000], trainers.UnigramTrainer(
        vocab_size=2000, special_tokens=SPECIALS, unk_token="[UNK]", show_progress=False))
    return _wrap(backend)


def _rows(tok, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, SEQ) ids of [CLS] sentences... [SEP] rows, their padding/special mask, and each token's word.

    Words are numbered from the tokenizer's own word_ids() per sentence (-1 on special tokens),
    i.e. independently of workbench.data.words.
    """
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    enc = tok(sentences, add_special_tokens=False)
    rows, words, row, row_words, next_word, total = [], [], [], [], 0, 0
    for i, ids in enumerate(enc["input_ids"]):
        sentence_words = enc.word_ids(i)
        if len(row) + len(ids) > SEQ - 2:
            if row:
                rows.append([cls, *row, sep] + [pad] * (SEQ - 2 - len(row)))
                words.append([-1, *row_words] + [-1] * (SEQ - 1 - len(row)))
                total += len(row)
            row, row_words = [], []
            if total >= MIN_TOKENS:
                break
        ids = ids[: SEQ - 2]
        row += ids
        row_words += [next_word + w for w in sentence_words[: len(ids)]]
        next_word += max(sentence_words) + 1
    ids = torch.tensor(rows)
    return ids, torch.isin(ids, torch.tensor([cls, sep, pad])), torch.tensor(words)


def _splits_a_word(words: torch.Tensor, masked: torch.Tensor) -> int:
    """How many neighbouring tokens of one word (per word_ids()) are masked differently."""
    same = (words[:, 1:] == words[:, :-1]) & (words[:, 1:] >= 0)
    return int((same & (masked[:, 1:] != masked[:, :-1])).sum())


@pytest.mark.parametrize("name", ["byte_bpe", "unigram"])
def test_whole_word_and_span_masking_never_split_a_word_and_keep_80_10_10(name, request):
    tok = request.getfixturevalue(name)
    ids, special, words = _rows(tok, request.getfixturevalue("sentences"))
    n_tokens = int((~special).sum())
    assert n_tokens >= MIN_TOKENS
    vocab = VocabInfo.from_tokenizer(tok)
    assert vocab.words.kind == {"byte_bpe": "byte-level", "unigram": "metaspace"}[name]
    multi = (words[:, 1:] == words[:, :-1]) & (words[:, 1:] >= 0)
    assert multi.sum() > 10_000  # plenty of words of several tokens: the check has teeth
    token_level = mask_tokens(ids, special, vocab, MaskingConfig(), torch.Generator().manual_seed(0))
    assert _splits_a_word(words, token_level.masked) > 1_000
    for extra in ({"whole_word": True}, {"span": True}):
        out = mask_tokens(ids, special, vocab, MaskingConfig(mask_rate=0.15, **extra), torch.Generator().manual_seed(1))
        assert _splits_a_word(words, out.masked) == 0, extra
        masked = int(out.masked.sum())
        assert abs(masked / n_tokens - 0.15) < 0.01, extra
        for action, share in ((ACTION_MASK, 0.8), (ACTION_RANDOM, 0.1), (ACTION_KEEP, 0.1)):
            assert abs(int((out.action == action).sum()) / masked - share) < 0.01, (extra, action)
    # words are no coarser than whitespace words, so masking units stay small
    starts = vocab.words.continues.logical_not()[ids] & ~special
    assert int(starts.sum()) >= 0.9 * sum(len(s.split()) for s in tok.batch_decode(ids, skip_special_tokens=True))


def test_byte_level_table_reads_spaces_and_newlines(byte_bpe):
    table = word_table(byte_bpe)
    vocab = byte_bpe.get_vocab()
    assert not table.continues[vocab["Ġthe"]] and table.continues[vocab["ing"]]
    assert table.ends_word[vocab["Ċ"]] and not table.ends_word[vocab["Ġ"]]
    assert word_table(byte_bpe) is table  # derived once per tokenizer


def test_collator_masks_whole_words_with_a_bpe_tokenizer(byte_bpe, sentences):
    ids, special, words = _rows(byte_bpe, sentences[:200])
    examples = [{"input_ids": [t for t in row if t != byte_bpe.pad_token_id]} for row in ids.tolist()]
    batch = PretrainingCollator(byte_bpe, MaskingConfig(mask_rate=0.3, whole_word=True), seed=0)(examples)
    masked = batch["labels"] != -100
    assert _splits_a_word(words[:, : masked.shape[1]], masked) == 0 and masked.any()


def test_a_table_that_splits_word_ids_words_is_refused(byte_bpe):
    size = len(byte_bpe)
    every_token_a_word = WordTable(torch.zeros(size, dtype=torch.bool), None, "byte-level")
    with pytest.raises(WorkbenchError, match="split its own word"):
        _check_against_word_ids(byte_bpe, every_token_a_word)


def test_a_fast_tokenizer_without_word_marks_is_refused_for_word_masking(sentences):
    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no mark on tokens: a word start is invisible
    backend.train_from_iterator(sentences[:500], trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS,
                                                                     show_progress=False))
    tok = _wrap(backend)
    PretrainingCollator(tok, MaskingConfig())  # token masking needs no words
    for extra in ({"whole_word": True}, {"span": True}):
        with pytest.raises(WorkbenchError, match="cannot tell word boundaries .* BPE tokenizer") as err:
            PretrainingCollator(tok, MaskingConfig(**extra))
        assert "\n" not in str(err.value)


class _SlowWhitespaceTokenizer(PreTrainedTokenizer):
    """A slow (pure Python) tokenizer: whitespace words, no word information on its ids."""

    def __init__(self, **kwargs):
        self._vocab = {t: i for i, t in enumerate([*SPECIALS, "the", "cat", "sat"])}
        super().__init__(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                         mask_token="[MASK]", **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text, **kwargs):
        return text.split()

    def _convert_token_to_id(self, token):
        return self._vocab.get(token, self._vocab["[UNK]"])

    def _convert_id_to_token(self, index):
        return {i: t for t, i in self._vocab.items()}[index]


def test_a_slow_tokenizer_is_refused_in_one_line():
    tok = _SlowWhitespaceTokenizer()
    assert not tok.is_fast
    PretrainingCollator(tok, MaskingConfig())
    with pytest.raises(WorkbenchError, match="slow tokenizer with no word boundaries; load its fast version") as err:
        PretrainingCollator(tok, MaskingConfig(whole_word=True))
    assert "\n" not in str(err.value)
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with pytest.raises(WorkbenchError, match="whole-word masking: "):
        mask_tokens(ids, ids < 5, VocabInfo.from_tokenizer(tok), MaskingConfig(whole_word=True), torch.Generator())
