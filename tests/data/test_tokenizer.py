"""Tokenizers: train a WordPiece on real text, save in HF format, load builtin/local/hub specs."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from workbench.data.tokenizer import (
    SPECIAL_TOKENS,
    load_tokenizer,
    position_limit,
    tokenizer_fingerprint,
    train_tokenizer,
)
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def wiki_sentences(wiki_documents) -> list[str]:
    return [s for d in wiki_documents[:40] for s in d]


def test_train_saves_hf_format_loadable_with_autotokenizer(tmp_path, wiki_sentences):
    tok = train_tokenizer(wiki_sentences, vocab_size=2000, lowercase=True, out_dir=tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert 1500 <= len(loaded) <= 2000
    for t in SPECIAL_TOKENS:
        assert t in loaded.get_vocab()
    enc = loaded("Autism is a disorder.", "It affects the brain.")
    tokens = loaded.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2
    assert enc["token_type_ids"][-1] == 1 and enc["token_type_ids"][0] == 0
    assert tokens[1] == "autism"  # lower-cased
    # Same encoding from the in-memory tokenizer and the reloaded one.
    assert tok("Autism is a disorder.")["input_ids"] == loaded("Autism is a disorder.")["input_ids"]
    # Rare words split into ## continuation pieces rather than [UNK].
    pieces = loaded.tokenize("neurodevelopmentally")
    assert len(pieces) > 1 and pieces[1].startswith("##") and "[UNK]" not in pieces


def test_cased_training_keeps_case(wiki_sentences):
    tok = train_tokenizer(wiki_sentences, vocab_size=2000, lowercase=False)
    assert "The" in tok.tokenize("The autism")


def test_vocab_smaller_than_special_tokens_is_rejected(wiki_sentences):
    with pytest.raises(WorkbenchError, match="special tokens") as err:
        train_tokenizer(wiki_sentences, vocab_size=3)
    assert "\n" not in str(err.value)


def test_builtin_minilm(minilm_tokenizer):
    assert len(minilm_tokenizer) == 30522
    assert minilm_tokenizer.tokenize("Paris is the capital") == ["paris", "is", "the", "capital"]
    assert position_limit(minilm_tokenizer) == 512


def test_fingerprint_follows_vocabulary(minilm_tokenizer, wiki_sentences):
    a = train_tokenizer(wiki_sentences, vocab_size=1000)
    b = train_tokenizer(wiki_sentences, vocab_size=1200)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(train_tokenizer(wiki_sentences, vocab_size=1000))
    assert len({tokenizer_fingerprint(a), tokenizer_fingerprint(b), tokenizer_fingerprint(minilm_tokenizer)}) == 3


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(WorkbenchError, match="could not load tokenizer") as err:
        load_tokenizer(str(tmp_path / "junk"))
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="unknown builtin"):
        load_tokenizer("builtin:nope")


def test_hub_name_offline_is_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1, as on a machine with no network.
    with pytest.raises(WorkbenchError, match="hub"):
        load_tokenizer("bert-base-uncased-not-cached")
