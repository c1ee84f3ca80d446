"""Attention extraction, Clark et al. head statistics, JS head distances and head ablation.

Hand-built patterns check the statistics exactly; the builtin MiniLM (6 layers x 12 heads) on
real Wikipedia text checks that the pipeline finds the heads Clark et al. describe.
"""

from __future__ import annotations

import bz2
import math
import re
from importlib.resources import files

import numpy as np
import pytest
import torch

from workbench.analysis.attention import (
    STAT_COLUMNS,
    cluster_heads,
    collect_attentions,
    compute_head_stats,
    get_attentions,
    head_distances,
    head_importance,
    head_statistics,
    load_attention_model,
    mds_embedding,
    mlm_loss_metric,
    sample_segments,
    silence_heads,
)
from workbench.errors import WorkbenchError

N_SEGMENTS = 24


# ----------------------------------------------------------------------------- fixtures


def _wiki_documents(n_docs: int) -> list[list[str]]:
    try:
        from workbench.data.corpora import iter_documents
    except ImportError:  # fallback: read gensim's dump directly, split sentences crudely
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki

        dump = files("gensim") / (
            "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
        )
        docs = []
        for _, text, _ in extract_pages(bz2.open(str(dump)), filter_namespaces=("0",)):
            prose = re.sub(r"\s+", " ", filter_wiki(text))
            sentences = [s.strip() + "." for s in prose.split(". ") if len(s.split()) > 3]
            if len(sentences) >= 5:
                docs.append(sentences)
            if len(docs) >= n_docs:
                break
        return docs
    return list(iter_documents("builtin:wikipedia", max_documents=n_docs))


@pytest.fixture(scope="module")
def minilm():
    return load_attention_model("builtin:minilm", device="cpu")


@pytest.fixture(scope="module")
def segments(minilm):
    _, tokenizer = minilm
    return sample_segments(_wiki_documents(12), N_SEGMENTS, tokenizer, max_length=128, seed=0)


@pytest.fixture(scope="module")
def examples(minilm, segments):
    model, tokenizer = minilm
    return list(collect_attentions(model, tokenizer, segments, batch_size=8))


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """Heads given as (T, T) matrices -> a (1, n_heads, T, T) attention array."""
    return np.stack(rows)[None].astype(np.float32)


def _one_hot(targets: list[int]) -> np.ndarray:
    return np.eye(len(targets))[targets]


# ----------------------------------------------------------------------------- extraction


def test_attention_shapes_and_rows_sum_to_one(minilm) -> None:
    model, tokenizer = minilm
    result = get_attentions(model, tokenizer, ("The cat sat on the mat.", "It was happy."))
    n = len(result.tokens)
    assert result.tokens[0] == "[CLS]" and result.tokens.count("[SEP]") == 2
    assert result.attentions.shape == (6, 12, n, n)
    assert result.attentions.dtype == np.float32
    np.testing.assert_allclose(result.attentions.sum(-1), 1.0, atol=1e-5)


def test_collect_removes_padding_and_keeps_order(minilm) -> None:
    model, tokenizer = minilm
    texts = ["A short one.", ("A pair, first part.", "And a much longer second part of it."), "x"]
    batched = list(collect_attentions(model, tokenizer, texts, batch_size=3))
    assert len(batched) == 3
    for text, (tokens, att) in zip(texts, batched, strict=True):
        alone = get_attentions(model, tokenizer, text)
        assert tokens == alone.tokens and "[PAD]" not in tokens
        assert att.shape == (6, 12, len(tokens), len(tokens))
        np.testing.assert_allclose(att, alone.attentions, atol=1e-5)


def _small_config(tokenizer, layers: int):
    """A random BERT shape small enough for a test: hidden 32, 2 heads, ``layers`` layers."""
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=64)


def test_sdpa_model_is_refused(minilm) -> None:
    from transformers import BertModel

    _, tokenizer = minilm
    model = BertModel(_small_config(tokenizer, layers=1), add_pooling_layer=False).eval()
    model.set_attn_implementation("sdpa")
    with pytest.raises(WorkbenchError, match="eager"):
        get_attentions(model, tokenizer, "hello")


def test_bad_model_spec_is_one_line_error() -> None:
    with pytest.raises(WorkbenchError) as err:
        load_attention_model("/nonexistent/checkpoint")
    assert "\n" not in str(err.value) and "checkpoint" in str(err.value)


# ----------------------------------------------------------------------------- statistics


def test_statistics_of_hand_built_heads() -> None:
    tokens = ["[CLS]", "the", "cat", ",", "sat", "[SEP]", "it", "[SEP]"]
    n = len(tokens)
    prev = _one_hot([1] + list(range(n - 1)))  # row 0 has no previous token: it looks right
    nxt = _one_hot(list(range(1, n)) + [n - 2])
    cls = _one_hot([0] * n)
    sep = np.zeros((n, n))
    sep[:, [5, 7]] = 0.5  # half the mass on each [SEP]
    uniform = np.full((n, n), 1 / n)
    self_ = np.eye(n)
    df = head_statistics([(tokens, _stack([prev, nxt, cls, sep, uniform, self_]))], "[CLS]", "[SEP]")
    assert list(df.columns) == ["layer", "head", *STAT_COLUMNS]
    assert len(df) == 6 and df.attrs["n_examples"] == 1
    p, x, c, s, u, i = (df.iloc[k] for k in range(6))
    assert p.argmax_prev == 1 and p.attn_prev == pytest.approx(1) and p.distance == pytest.approx(1)
    assert p.argmax_next == pytest.approx(1 / (n - 1))  # only row 0 looks right
    assert x.argmax_next == 1 and x.attn_next == pytest.approx(1) and x.distance == pytest.approx(1)
    assert c.attn_cls == pytest.approx(1) and c.attn_sep == 0 and c.entropy == pytest.approx(0)
    assert c.distance == pytest.approx(np.arange(n).mean())
    assert s.attn_sep == pytest.approx(1) and s.entropy == pytest.approx(math.log(2))
    assert u.entropy == pytest.approx(math.log(n), rel=1e-6)
    assert u.attn_punct == pytest.approx(1 / n)  # "," is the only punctuation token
    assert u.attn_cls == pytest.approx(1 / n) and u.attn_sep == pytest.approx(2 / n)
    assert i.attn_self == pytest.approx(1) and i.argmax_self == 1 and i.distance == 0
    assert i.attn_prev == 0 and i.attn_next == 0


def test_statistics_average_over_examples() -> None:
    # two uniform heads of different lengths: entropy is the mean of log(T) over examples
    examples = [
        (["[CLS]"] + ["w"] * (t - 2) + ["[SEP]"], _stack([np.full((t, t), 1 / t)])) for t in (4, 10)
    ]
    df = head_statistics(examples, "[CLS]", "[SEP]")
    assert df.entropy.item() == pytest.approx((math.log(4) + math.log(10)) / 2, rel=1e-6)
    assert df.attn_cls.item() == pytest.approx((1 / 4 + 1 / 10) / 2, rel=1e-6)


def test_statistics_reject_mismatched_shapes() -> None:
    with pytest.raises(WorkbenchError, match="does not match"):
        head_statistics([(["a", "b"], np.ones((1, 1, 3, 3)))], "[CLS]", "[SEP]")
    with pytest.raises(WorkbenchError, match="no examples"):
        head_statistics([], "[CLS]", "[SEP]")


# ----------------------------------------------------------------------------- distances


def test_js_distance_self_zero_disjoint_ln2() -> None:
    # natural log: JS divergence lies in [0, ln 2], ln 2 for disjoint supports
    n = 6
    tokens = ["[CLS]"] + ["w"] * (n - 2) + ["[SEP]"]
    left = np.zeros((n, n))
    left[:, 0] = 1.0
    right = np.zeros((n, n))
    right[:, -1] = 1.0
    uniform = np.full((n, n), 1 / n)
    att = _stack([left, right, uniform, left])
    d = head_distances([(tokens, att), (tokens, att)])
    assert d.shape == (4, 4)
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0) and d[0, 3] == pytest.approx(0, abs=1e-12)
    assert d[0, 1] == pytest.approx(math.log(2))
    assert 0 < d[0, 2] < math.log(2)


def test_clusters_and_mds_on_real_heads(examples) -> None:
    d = head_distances(examples[:3])
    assert d.shape == (72, 72) and np.all(d >= 0) and np.all(d <= math.log(2) + 1e-9)
    labels = cluster_heads(d, 5)
    assert labels.shape == (72,) and set(labels) == set(range(5))
    xy = mds_embedding(d)
    assert xy.shape == (72, 2) and np.isfinite(xy).all()


def test_mds_recovers_points() -> None:
    pts = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    xy = mds_embedding(d)
    np.testing.assert_allclose(np.linalg.norm(xy[:, None] - xy[None], axis=-1), d, atol=1e-9)
    assert list(cluster_heads(d, 2)) in ([0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0])


# ----------------------------------------------------------------------------- ablation


def test_silence_heads(minilm) -> None:
    model, tokenizer = minilm
    enc = tokenizer("Silencing a head must change the output.", return_tensors="pt")
    dense = model.encoder.layer[2].attention.output.dense
    with torch.no_grad():
        base = model(**enc).last_hidden_state
        for nothing in ({}, [], {2: []}):
            with silence_heads(model, nothing):
                assert torch.equal(model(**enc).last_hidden_state, base)
        with silence_heads(model, {2: [3]}):
            assert len(dense._forward_pre_hooks) == 1
            silenced = model(**enc).last_hidden_state
        assert not dense._forward_pre_hooks  # hooks removed on exit
        assert not torch.allclose(silenced, base)
        assert torch.equal(model(**enc).last_hidden_state, base)
        with silence_heads(model, [(2, 3)]):  # list-of-pairs form is the same thing
            assert torch.equal(model(**enc).last_hidden_state, silenced)

        # independent check: zeroing head 3's value projection also zeroes its context slice
        value = model.encoder.layer[2].attention.self.value
        d = model.config.hidden_size // model.config.num_attention_heads
        saved = value.weight.clone(), value.bias.clone()
        try:
            value.weight[3 * d : 4 * d] = 0
            value.bias[3 * d : 4 * d] = 0
            torch.testing.assert_close(model(**enc).last_hidden_state, silenced)
        finally:
            value.weight.copy_(saved[0])
            value.bias.copy_(saved[1])
    with pytest.raises(WorkbenchError, match="out of range"):
        with silence_heads(model, [(6, 0)]):
            pass
    assert not any(layer.attention.output.dense._forward_pre_hooks for layer in model.encoder.layer)


def test_head_importance_tiny_mlm(minilm, segments) -> None:
    from transformers import BertForMaskedLM

    _, tokenizer = minilm
    torch.manual_seed(0)
    model = BertForMaskedLM(_small_config(tokenizer, layers=2)).eval()
    texts = [s if isinstance(s, str) else s[0] for s in segments[:8]]
    enc = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    gen = torch.Generator().manual_seed(0)
    special = torch.tensor(
        [
            [tokenizer.convert_ids_to_tokens(i) in tokenizer.all_special_tokens for i in row]
            for row in enc["input_ids"].tolist()
        ]
    )
    masked = (torch.rand(enc["input_ids"].shape, generator=gen) < 0.15) & ~special
    labels = torch.where(masked, enc["input_ids"], torch.full_like(enc["input_ids"], -100))
    inputs = enc["input_ids"].masked_fill(masked, tokenizer.mask_token_id)
    batches = [
        {
            "input_ids": inputs[i : i + 4],
            "attention_mask": enc["attention_mask"][i : i + 4],
            "token_type_ids": enc["token_type_ids"][i : i + 4],
            "labels": labels[i : i + 4],
        }
        for i in (0, 4)
    ]
    base = mlm_loss_metric(model, batches)
    assert base == pytest.approx(math.log(len(tokenizer)), rel=0.1)  # untrained: ~uniform
    importance = head_importance(model, batches, mlm_loss_metric)
    assert importance.shape == (2, 2) and np.isfinite(importance).all()
    assert np.any(importance != 0)
    assert mlm_loss_metric(model, batches) == base  # no hook left behind
    with pytest.raises(WorkbenchError, match="labels"):
        mlm_loss_metric(model, [{"input_ids": inputs[:2]}])


# ----------------------------------------------------------------------------- real text


def test_sample_segments(minilm, segments) -> None:
    _, tokenizer = minilm
    assert len(segments) == N_SEGMENTS
    pairs = [s for s in segments if isinstance(s, tuple)]
    assert 0 < len(pairs) < N_SEGMENTS
    again = sample_segments(_wiki_documents(12), N_SEGMENTS, tokenizer, seed=0)
    assert again == segments  # deterministic for a seed
    lengths = [len(tokenizer(*s if isinstance(s, tuple) else (s,))["input_ids"]) for s in segments]
    assert np.median(lengths) > 64  # packed towards max_length, not single sentences
    with pytest.raises(WorkbenchError):
        sample_segments([[]], 1, tokenizer)


def test_minilm_has_clark_heads(minilm, segments, examples) -> None:
    # Clark et al. found heads that park attention on [CLS]/[SEP] and heads that attend to the
    # previous/next token in BERT-base; the distilled MiniLM has them too
    model, tokenizer = minilm
    df = head_statistics(examples, tokenizer.cls_token, tokenizer.sep_token)
    assert len(df) == 72 and df.attrs["n_examples"] == N_SEGMENTS
    assert df[STAT_COLUMNS].notna().all().all()
    assert (df[["attn_cls", "attn_sep"]].max(axis=1) > 0.5).any()
    assert (df[["argmax_prev", "argmax_next"]].max(axis=1) > 0.5).any()
    kept: list = []  # keep=: the (tokens, attention) pairs measured, for the clusters (notebook 03)
    again = compute_head_stats(model, segments[:4], tokenizer=tokenizer, keep=kept)
    np.testing.assert_allclose(again[STAT_COLUMNS].to_numpy(),
                               head_statistics(examples[:4], "[CLS]", "[SEP]")[STAT_COLUMNS].to_numpy(), atol=1e-4)
    assert [k.tokens for k in kept] == [e.tokens for e in examples[:4]]
    np.testing.assert_allclose(kept[3].attentions, examples[3].attentions, atol=1e-5)


def test_fit_to_model_clamps_layer_head_and_clusters(capsys):
    from types import SimpleNamespace

    from workbench.analysis.attention import fit_to_model
    from workbench.config import AttentionConfig

    tiny = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=2, num_attention_heads=2))
    cfg = fit_to_model(AttentionConfig(layer=2, head=0, n_clusters=6), tiny)
    assert (cfg.layer, cfg.head, cfg.n_clusters) == (1, 0, 4)
    assert "layer 2 -> 1, n_clusters 6 -> 4" in capsys.readouterr().err
    big = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=6, num_attention_heads=12))
    assert fit_to_model(AttentionConfig(layer=2, head=3), big) == AttentionConfig(layer=2, head=3)
    assert capsys.readouterr().err == ""


def test_ablate_heads_chooses_the_metric_from_the_checkpoint(tiny_bert, segments) -> None:
    from workbench.analysis.attention import (
        ablate_heads,
        ablation_batches,
        ablation_metric,
        load_ablation_model,
    )
    from workbench.config import AttentionConfig, MaskingConfig

    cfg = AttentionConfig(model=str(tiny_bert), ablation_segments=2, seed=3)
    result = ablate_heads(cfg, segments)
    # a pretraining checkpoint has a trained MLM head: its loss is the metric
    assert result.metric == "MLM loss increase" and result.importance.shape == (2, 2)
    model, tokenizer, has_head = load_ablation_model(str(tiny_bert), device="cpu")
    batches = ablation_batches(tokenizer, segments[:2], MaskingConfig(), 3)
    assert has_head
    np.testing.assert_allclose(result.importance, head_importance(model, batches, mlm_loss_metric), atol=1e-5)
    # without a trained head (builtin:minilm): the shift of the last layer from the intact model's
    metric, name = ablation_metric(model, batches, has_head=False)
    assert name == "representation shift (1 - cosine)"
    assert metric(model, batches) == pytest.approx(0.0, abs=1e-6)
    with silence_heads(model, [(1, 0)]):
        assert metric(model, batches) > 1e-6  # a random 2-layer model: small, never 0
