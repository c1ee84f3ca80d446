"""NSP/SOP/MLM example building: balance, provenance, lengths, sharding and caching, on real Wikipedia text."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from workbench.config import DataConfig
from workbench.data.examples import build_examples, prepare_dataset, truncate_seq_pair
from workbench.errors import WorkbenchError

CLS, SEP = 101, 102  # minilm's [CLS] and [SEP]


def _build(docs, objective="nsp", seed=0, max_seq_length=128, **kw):
    return build_examples(docs, list(range(len(docs))), objective=objective,
                          max_seq_length=max_seq_length, short_seq_prob=0.1,
                          rng=random.Random(seed), cls_id=CLS, sep_id=SEP, vocab_size=30522, **kw)


def _segments(ids: list[int], types: list[int]) -> tuple[list[int], list[int]]:
    """Split ``[CLS] A [SEP] B [SEP]`` into A and B using the token types."""
    n_a = types.count(0)
    return ids[1:n_a - 1], ids[n_a:-1]


def _contains(haystack: list[int], needle: list[int]) -> bool:
    """Whether ``needle`` occurs contiguously in ``haystack``."""
    n = len(needle)
    first = needle[0]
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1) if haystack[i] == first)


def _flat(sentences) -> list[int]:
    return [t for s in sentences for t in s]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_nsp_is_half_is_next(wiki_token_docs, seed):
    ex = _build(wiki_token_docs, seed=seed)
    labels = np.array(ex["next_sentence_label"])
    assert len(labels) > 3000
    assert abs(np.mean(labels == 0) - 0.5) <= 0.02


def test_google_compat_reproduces_googles_imbalance(wiki_token_docs):
    # Google's defaults: dupe_factor 10, seed 12345. Its builder forces one-sentence chunks to
    # NotNext and draws the short target once per document: about 0.46 IsNext on this corpus.
    google = _build(wiki_token_docs, seed=12345, google_compat=True, dupe_factor=10)
    fraction = np.mean(np.array(google["next_sentence_label"]) == 0)
    assert 0.43 <= fraction <= 0.48, fraction
    balanced = _build(wiki_token_docs, seed=12345, dupe_factor=10)
    assert abs(np.mean(np.array(balanced["next_sentence_label"]) == 0) - 0.5) <= 0.01


def test_google_compat_one_sentence_document_is_always_not_next():
    docs = [[[5, 6, 7]], [[8, 9], [10, 11]], [[12, 13], [14]]]
    ex = _build(docs, google_compat=True, dupe_factor=5)
    for label, a_doc in zip(ex["next_sentence_label"], ex["a_doc"], strict=True):
        if a_doc == 0:
            assert label == 1


def test_google_compat_is_deterministic_and_seeded(wiki_token_docs):
    docs = wiki_token_docs[:20]
    assert _build(docs, seed=3, google_compat=True) == _build(docs, seed=3, google_compat=True)
    assert _build(docs, seed=3, google_compat=True) != _build(docs, seed=4, google_compat=True)


@pytest.mark.parametrize("google_compat", [False, True])
def test_pair_provenance(wiki_token_docs, google_compat):
    """IsNext B directly follows A in its document; NotNext B comes from another document."""
    docs = wiki_token_docs
    ex = _build(docs, google_compat=google_compat)
    n_checked = 0
    for i in range(len(ex["input_ids"])):
        a, b = _segments(ex["input_ids"][i], ex["token_type_ids"][i])
        a_doc, a_end, b_doc, b_start = (ex[k][i] for k in ("a_doc", "a_end", "b_doc", "b_start"))
        assert a and b
        # A ends at sentence a_end of its document (back truncation may cut its tail).
        assert _contains(_flat(docs[a_doc][:a_end]), a)
        assert _contains(_flat(docs[b_doc][b_start:]), b)
        if ex["next_sentence_label"][i] == 0:
            assert b_doc == a_doc and b_start == a_end
        else:
            assert b_doc != a_doc
        n_checked += 1
    assert n_checked > 3000


@pytest.mark.parametrize("objective", ["nsp", "sop", "mlm"])
@pytest.mark.parametrize("max_seq_length", [32, 128])
def test_no_example_exceeds_max_seq_length(wiki_token_docs, objective, max_seq_length):
    ex = _build(wiki_token_docs[:30], objective=objective, max_seq_length=max_seq_length)
    lengths = [len(x) for x in ex["input_ids"]]
    assert max(lengths) <= max_seq_length
    for ids, types in zip(ex["input_ids"], ex["token_type_ids"], strict=True):
        assert ids[0] == CLS and ids[-1] == SEP and len(types) == len(ids)
    if objective == "mlm":
        # Packed segments fill the sequence (all but the last per shard).
        assert sum(n == max_seq_length for n in lengths) >= len(lengths) - 1
        assert all(set(t) == {0} for t in ex["token_type_ids"])
    else:
        assert all(x.count(SEP) == 2 for x in ex["input_ids"])


def test_sop_labels_mean_order(wiki_token_docs):
    docs = wiki_token_docs[:40]
    ex = _build(docs, objective="sop")
    labels = np.array(ex["next_sentence_label"])
    assert abs(labels.mean() - 0.5) < 0.05
    for i in range(len(labels)):
        a, b = _segments(ex["input_ids"][i], ex["token_type_ids"][i])
        d, split = ex["a_doc"][i], ex["a_end"][i]
        first, second = (b, a) if labels[i] else (a, b)
        assert _contains(_flat(docs[d][:split]), first)
        assert _contains(_flat(docs[d][split:]), second)


def test_truncate_seq_pair_trims_longer_side():
    rng = random.Random(0)
    a, b = list(range(50)), list(range(100, 110))
    assert truncate_seq_pair(a, b, 30, rng)
    assert len(a) + len(b) == 30 and len(b) == 10
    # Both ends of A were trimmed at some point: random front/back.
    assert a[0] > 0 and a[-1] < 49
    assert not truncate_seq_pair([1], [2], 5, rng)


@pytest.fixture(scope="module")
def builtin_prepared(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = DataConfig(cache_dir=str(cache))
    return cfg, prepare_dataset(cfg)


def test_prepare_builtin_stats_and_cache(builtin_prepared):
    cfg, data = builtin_prepared
    s = data.stats
    for key in ("documents", "sentences", "tokens", "pairs", "is_next_fraction", "unk_rate",
                "truncated_fraction", "mean_pair_tokens", "build_seconds"):
        assert key in s
    assert s["documents"] >= 80 and s["tokens"] > 300_000 and s["pairs"] > 3000
    assert abs(s["is_next_fraction"] - 0.5) <= 0.02
    assert s["max_pair_tokens"] <= cfg.max_seq_length
    assert s["unk_rate"] < 0.01
    assert set(data.dataset) == {"train", "validation"}
    assert data.dataset["validation"].num_rows > 0
    # Train and validation documents are disjoint.
    train_docs = set(data.dataset["train"]["a_doc"]) | set(data.dataset["train"]["b_doc"])
    val_docs = set(data.dataset["validation"]["a_doc"])
    assert not train_docs & val_docs
    again = prepare_dataset(cfg)
    assert again.stats["cached"] is True and again.path == data.path
    assert again.dataset["train"]["input_ids"][:50] == data.dataset["train"]["input_ids"][:50]


def test_prepare_rebuilds_when_settings_change(builtin_prepared):
    cfg, data = builtin_prepared
    other = prepare_dataset(DataConfig(cache_dir=cfg.cache_dir, max_seq_length=64, max_documents=10))
    assert other.path != data.path and other.stats["cached"] is False
    assert other.stats["max_pair_tokens"] <= 64


def _write_corpus(path: Path, docs: list[list[str]]) -> Path:
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    return path


def test_sharded_build_draws_not_next_within_shard(tmp_path, wiki_documents):
    # 60 documents of real sentences; shard_size 10 makes several shards.
    sentences = [s for d in wiki_documents for s in d]
    docs = [sentences[i * 12:(i + 1) * 12] for i in range(60)]
    corpus = _write_corpus(tmp_path / "corpus.txt", docs)
    cfg = DataConfig(corpus=str(corpus), shard_size=10, min_doc_words=0, validation_fraction=0.0,
                     cache_dir=str(tmp_path / "cache"))
    data = prepare_dataset(cfg)
    train = data.dataset["train"]
    a_doc, b_doc = np.array(train["a_doc"]), np.array(train["b_doc"])
    labels = np.array(train["next_sentence_label"])
    assert set(a_doc) == set(range(60))
    not_next = labels == 1
    assert not_next.sum() > 50
    # Shards are consecutive runs of 10 documents: a NotNext partner never crosses one.
    assert np.all(a_doc[not_next] // 10 == b_doc[not_next] // 10)
    assert np.any(a_doc[not_next] != b_doc[not_next])


def _traced_peak(corpus: Path, n_docs: int, shard_size: int, cache: Path, tokenizer) -> int:
    cfg = DataConfig(corpus=str(corpus), shard_size=shard_size, min_doc_words=0,
                     max_documents=n_docs, cache_dir=str(cache))
    tracemalloc.start()
    try:
        prepare_dataset(cfg, tokenizer=tokenizer)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_bounded_by_shard_size(tmp_path, wiki_documents, minilm_tokenizer):
    sentences = [s for d in wiki_documents for s in d]
    docs = [sentences[(i * 7) % 15000:(i * 7) % 15000 + 15] for i in range(400)]
    corpus = _write_corpus(tmp_path / "big.txt", docs)
    small = _traced_peak(corpus, 100, 20, tmp_path / "a", minilm_tokenizer)
    large = _traced_peak(corpus, 400, 20, tmp_path / "b", minilm_tokenizer)
    whole = _traced_peak(corpus, 400, 400, tmp_path / "c", minilm_tokenizer)
    # With 20-document shards, 4x the corpus costs about the same Python memory...
    assert large < 1.3 * small, (small, large)
    # ...while one shard holding the whole corpus costs clearly more.
    assert whole > 1.3 * large, (large, whole)


def test_one_sentence_documents_suggest_mlm(tmp_path):
    corpus = _write_corpus(tmp_path / "one.txt", [["The cat sat on the mat today."]] * 5)
    cfg = DataConfig(corpus=str(corpus), min_doc_words=0, cache_dir=str(tmp_path / "c"))
    with pytest.raises(WorkbenchError, match="objective mlm"):
        prepare_dataset(cfg)
    data = prepare_dataset(DataConfig(corpus=str(corpus), min_doc_words=0, objective="mlm",
                                      cache_dir=str(tmp_path / "c"), validation_fraction=0.0))
    assert data.stats["pairs"] >= 1


def test_empty_corpus_is_a_clear_error(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n\n")
    with pytest.raises(WorkbenchError, match="no documents"):
        prepare_dataset(DataConfig(corpus=str(corpus), cache_dir=str(tmp_path / "c")))


def test_max_seq_length_above_position_limit(tmp_path):
    with pytest.raises(WorkbenchError, match="position limit 512"):
        prepare_dataset(DataConfig(max_seq_length=1024, cache_dir=str(tmp_path)))


def test_out_dir_keeps_unrelated_files_and_refuses_a_foreign_stats_json(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    data = prepare_dataset(DataConfig(max_documents=5, cache_dir=str(tmp_path / "c")), out_dir=tmp_path)
    assert data.stats["documents"] == 5 and (tmp_path / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "stats.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="holds stats.json, which workbench did not write"):
        prepare_dataset(DataConfig(max_documents=5, cache_dir=str(tmp_path / "c")), out_dir=other)
    assert sorted(p.name for p in other.iterdir()) == ["stats.json"]


def test_a_one_document_validation_split_joins_train(tmp_path, capsys):
    # 10 documents at 10%: one is drawn for validation, and NotNext has no other document there.
    cfg = DataConfig(tokenizer="builtin:minilm", max_documents=10, max_seq_length=32, validation_fraction=0.1,
                     dupe_factor=1, cache_dir=str(tmp_path))
    data = prepare_dataset(cfg)
    assert data.dataset["validation"].num_rows == 0 and data.stats["documents"] == 10
    assert len(set(data.dataset["train"]["a_doc"])) == 10
    assert "validation split drew one document" in capsys.readouterr().err
