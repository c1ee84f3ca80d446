"""Layer-wise linear probes: the regression, the pooled features, random twins, BShift and the headline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import BertForPreTraining

from workbench.config import ProbeConfig
from workbench.errors import WorkbenchError
from workbench.evaluation.heldout import topic_task
from workbench.evaluation.probes import (
    L2_GRID,
    bigram_shift,
    cap_examples,
    encode_layers,
    fit_probe,
    gain_sentence,
    headline_metrics,
    headline_table,
    load_encoder,
    probe_gain,
    probe_models,
    probe_summary,
)
from workbench.evaluation.stats import mean_ci, paired_difference
from workbench.notebook import plots
from workbench.training.model import preset_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_tokenizer) -> str:
    """A 2-layer H64 BertForPreTraining with minilm's vocabulary, saved as the trainer saves it."""
    path = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(123)  # not a seed the random twins below use: they would equal it
    config = preset_config("tiny", len(minilm_tokenizer), int(minilm_tokenizer.pad_token_id),
                           hidden_size=64, intermediate_size=256, num_attention_heads=2)
    BertForPreTraining(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def topics(wiki_documents):
    """Passage -> article for 3 real Wikipedia articles (long ones, so every class has 40+ passages)."""
    docs = sorted(enumerate(wiki_documents), key=lambda d: -len(d[1]))[:3]
    return topic_task([(i, list(doc[:150])) for i, doc in docs], "wiki-3", seed=0)


def test_fit_probe_reaches_the_optimum_and_separates_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 8))
    y = rng.integers(0, 3, 600)
    x = torch.tensor(centres[y] + rng.normal(0, 1, (600, 8)), dtype=torch.float32)
    probe = fit_probe(x[:400], y[:400], x[400:500], y[400:500], 3, l2_grid=(0.1,))
    assert (probe.predict(x[500:]) == y[500:]).mean() > 0.95
    # The L-BFGS solution is the optimum: the penalised loss's gradient vanishes there.
    mean, std = x[:400].double().mean(0), x[:400].double().std(0)
    z = (x[:400].double() - mean) / std
    w = torch.zeros(8, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, torch.from_numpy(y[:400])) + 0.05 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    reference = ((x[500:].double() - mean) / std @ w + b).argmax(1).numpy()
    assert (probe.predict(x[500:]) == reference).mean() > 0.98
    assert probe.l2 == 0.1


def test_fit_probe_picks_l2_on_validation_and_labels_without_signal_stay_at_chance():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(900, 50)), dtype=torch.float32)
    y = rng.integers(0, 2, 900)  # no relation to x
    probe = fit_probe(x[:300], y[:300], x[300:600], y[300:600], 2)
    assert abs((probe.predict(x[600:]) == y[600:]).mean() - 0.5) < 0.08
    assert probe.validation_accuracy == pytest.approx((probe.predict(x[300:600]) == y[300:600]).mean())
    assert probe.l2 in L2_GRID


def test_encode_layers_mean_pools_each_layer_without_padding(tiny):
    encoder, tok = load_encoder(tiny)
    texts = ["The cat sat.", "Apollo is one of the Olympian deities in classical Greek and Roman religion."]
    both = encode_layers(encoder, tok, texts)
    assert both.shape == (3, 2, 64)  # embeddings + 2 layers, 2 texts, hidden 64
    alone = encode_layers(encoder, tok, texts[:1])
    assert torch.allclose(both[:, 0], alone[:, 0], atol=1e-5)  # padding in the batch changes nothing
    ids = torch.tensor([tok(texts[0])["input_ids"]])
    with torch.no_grad():
        embedded = encoder.embeddings(input_ids=ids)  # (1, T, H)
    assert torch.allclose(both[0, 0], embedded[0].mean(0), atol=1e-5)


def test_random_twin_is_seeded_and_shaped_like_its_checkpoint(tiny):
    saved = BertForPreTraining.from_pretrained(tiny).bert.embeddings.word_embeddings.weight
    pretrained, _ = load_encoder(tiny, seed=5)
    a, _ = load_encoder(f"random:{tiny}", seed=0)
    b, _ = load_encoder(f"random:{tiny}", seed=0)
    c, _ = load_encoder(f"random:{tiny}", seed=1)
    weight = lambda m: m.embeddings.word_embeddings.weight  # noqa: E731
    assert torch.equal(weight(pretrained), saved)
    assert weight(a).shape == saved.shape and not torch.equal(weight(a), saved)
    assert torch.equal(weight(a), weight(b)) and not torch.equal(weight(a), weight(c))


def test_bigram_shift_swaps_two_adjacent_words_in_half_and_keeps_splits_apart(topics):
    task = bigram_shift(topics, seed=0, max_examples=300)
    assert task.labels == ["original", "swapped"] and set(task.splits) == {"train", "validation", "test"}
    source = {name: " ".join(frame["text"]) for name, frame in topics.splits.items()}
    for name, frame in task.splits.items():
        counts = frame["label"].value_counts()
        assert abs(counts["swapped"] - counts["original"]) <= 0.1 * len(frame)
        for text, label in frame.itertuples(index=False):
            words = text.split()
            if label == "original":
                assert text in source[name]
                continue
            undone = [words[:i] + [words[i + 1], words[i]] + words[i + 2:] for i in range(len(words) - 1)]
            assert any(" ".join(u) in source[name] for u in undone), text  # one adjacent swap away
            assert text not in source[name]
    train = set(task.splits["train"]["text"])
    assert not train & set(task.splits["test"]["text"])


def test_probe_gain_picks_the_layer_on_validation_and_pairs_by_seed():
    rows = []
    for seed, (good, base) in enumerate([(0.80, 0.60), (0.82, 0.61), (0.84, 0.65)]):
        # layer 1 has the best validation accuracy; layer 2 the best test accuracy (never chosen)
        rows += [{"init": "ckpt", "seed": seed, "layer": 0, "validation_accuracy": 0.5, "test_accuracy": 0.5},
                 {"init": "ckpt", "seed": seed, "layer": 1, "validation_accuracy": 0.9, "test_accuracy": good},
                 {"init": "ckpt", "seed": seed, "layer": 2, "validation_accuracy": 0.8, "test_accuracy": 0.99},
                 {"init": "twin", "seed": seed, "layer": 0, "validation_accuracy": 0.7, "test_accuracy": base},
                 {"init": "twin", "seed": seed, "layer": 1, "validation_accuracy": 0.7, "test_accuracy": 0.1}]
    runs = pd.DataFrame(rows).assign(n_train=100, n_test=531)
    result = probe_gain(runs, "ckpt", "twin")
    assert result["layers"] == [1, 1, 1] and result["baseline_layers"] == [0, 0, 0]  # ties: the lower layer
    assert result["gain"] == paired_difference([0.80, 0.82, 0.84], [0.60, 0.61, 0.65])
    assert result["gain"]["mean"] == pytest.approx(0.2) and result["gain"]["verdict"] == "gain"
    assert result["accuracy"] == mean_ci([0.80, 0.82, 0.84]) and result["n_test"] == 531
    summary = probe_summary(runs)
    row = summary[(summary["init"] == "ckpt") & (summary["layer"] == 2)].iloc[0]
    assert row["seeds"] == 3 and row["accuracy_mean"] == pytest.approx(0.99)
    with pytest.raises(WorkbenchError, match="no probe runs"):
        probe_gain(runs, "ckpt", "nothing")
    metrics = headline_metrics(result, "builtin:wikipedia-topics")
    assert metrics["downstream_gain"] == pytest.approx(0.2) and metrics["downstream_n_test"] == 531
    assert metrics["downstream_accuracy"] == pytest.approx(0.82) and metrics["downstream_random_accuracy"] == pytest.approx(0.62)
    assert metrics["downstream_gain_ci_low"] == result["gain"]["low"] > 0 and metrics["downstream_n_train"] == 100
    assert "a measurable gain, +20.0 points" in gain_sentence(result)
    table = headline_table(runs)
    assert table.loc["ckpt", "layers"] == "1, 1, 1" and table.loc["twin", "accuracy_mean"] == pytest.approx(0.62)


def test_a_ci_that_contains_zero_reads_no_measurable_gain():
    runs = pd.DataFrame([{"init": init, "seed": seed, "layer": 0, "validation_accuracy": 0.5, "test_accuracy": acc,
                          "n_train": 50, "n_test": 500}
                         for init, accs in (("ckpt", (0.70, 0.60, 0.66)), ("twin", (0.62, 0.64, 0.63)))
                         for seed, acc in enumerate(accs)])
    result = probe_gain(runs, "ckpt", "twin")
    assert result["gain"]["low"] < 0 < result["gain"]["high"]
    assert "no measurable gain" in gain_sentence(result)
    assert headline_metrics(result, "t")["downstream_verdict"] == "no measurable difference"


def test_cap_examples_and_probe_config(topics):
    capped = cap_examples(topics, 30)
    assert all(len(f) == 30 for f in capped.splits.values()) and set(capped.splits["test"]["label"]) == set(topics.labels)
    assert cap_examples(topics, 0) is topics
    assert ProbeConfig().probe_seeds == 3
    for bad in ({"probe_seeds": 0}, {"probe_max_examples": -1}, {"probe_max_length": 4}, {"bshift_examples": -1}):
        with pytest.raises(WorkbenchError, match=next(iter(bad))):
            ProbeConfig(**bad)


def test_probe_models_on_a_checkpoint_and_its_twin(tiny, topics):
    runs = probe_models([tiny, f"random:{tiny}"], topics, ProbeConfig(probe_seeds=2, probe_train_size=60, probe_max_length=64))
    assert len(runs) == 2 * 2 * 3  # inits x seeds x (embeddings + 2 layers)
    assert set(runs["n_train"]) == {60} and set(runs["n_test"]) == {len(topics.splits["test"])}
    assert runs["test_accuracy"].between(0, 1).all()
    # real article passages are separable from a random model's bag of embeddings: well above chance (1/3)
    assert runs.groupby("init")["test_accuracy"].max().min() > 0.5
    figure = plots.probe_by_layer(probe_summary(runs))
    assert len(figure.data) == 2 and list(figure.data[0].x) == [0, 1, 2]
    with pytest.raises(WorkbenchError, match="fewer than the 3 classes"):
        probe_models([tiny], topics, ProbeConfig(probe_train_size=2))


def test_probe_models_refuses_a_missing_checkpoint(topics, tmp_path):
    with pytest.raises(WorkbenchError):
        probe_models([str(Path(tmp_path) / "nothing")], topics)


def test_two_encoders_within_noise_of_chance_read_at_chance_never_a_sign():
    from workbench.evaluation.probes import at_chance

    def gain(a: float, b: float, n: int) -> dict:
        diff = {"mean": a - b, "low": a - b - 0.01, "high": a - b + 0.01, "n": 3, "confidence": 0.95, "verdict": "loss"}
        return {"model": "ckpt", "baseline": "random:ckpt", "n_test": n, "n_train": 100, "accuracy": (a, a, a),
                "baseline_accuracy": (b, b, b), "gain": diff}

    near = gain(0.482, 0.502, 1000)  # 1.96 * sqrt(0.25 / 1000) = 0.031: both inside
    assert at_chance(near, 0.5)
    text = gain_sentence(near, chance=0.5)
    assert "both at chance (0.482 and 0.502, chance 0.5 ± 0.031 on 1000 test examples)" in text
    assert "loss" not in text and "-2.0" not in text
    assert not at_chance(gain(0.60, 0.50, 1000), 0.5)  # one encoder clearly above chance: a real comparison
    assert "measurable" in gain_sentence(gain(0.60, 0.50, 1000), chance=0.5)
    assert at_chance(gain(0.60, 0.50, 20), 0.5)  # 20 examples: 0.60 is within noise (± 0.219)
    assert headline_metrics(near, "bigram shift", prefix="bshift", chance=0.5)["bshift_verdict"] == "at chance"
    assert headline_metrics(near, "bigram shift", prefix="bshift")["bshift_verdict"] == "loss"  # without chance: as paired


def test_probe_models_takes_its_settings_from_a_probe_config(tiny, topics):
    from workbench.evaluation.probes import layer_features, probe_seeds

    cfg = ProbeConfig(probe_seeds=2, probe_train_size=45, probe_max_length=24, probe_batch_size=7)
    runs = probe_models([tiny, f"random:{tiny}"], topics, cfg, l2_grid=(1.0,))
    # The same numbers as the steps it stands for, each fed the config's field by hand (what the
    # positional call did): seeds 0..1, 45 examples per seed, 24 tokens, 7 texts per batch.
    expected = []
    for init, groups in ((tiny, [[0, 1]]), (f"random:{tiny}", [[0], [1]])):
        for group in groups:
            encoder, tok = load_encoder(init, group[0])
            features = layer_features(encoder, tok, topics, 24, 7, init)
            expected.append(probe_seeds(features, topics, group, 45, (1.0,)).assign(init=init))
    expected = pd.concat(expected, ignore_index=True)
    pd.testing.assert_frame_equal(runs, expected[runs.columns])
    assert set(runs["seed"]) == {0, 1} and set(runs["n_train"]) == {45}
    # max_length reaches the encoder: 24 tokens is not 128
    longer = probe_models([tiny], topics, ProbeConfig(probe_seeds=2, probe_train_size=45), l2_grid=(1.0,))
    assert not np.allclose(longer["validation_accuracy"], runs[runs["init"] == tiny]["validation_accuracy"])


def test_a_probe_gain_at_chance_reads_at_chance_everywhere():
    from workbench.evaluation.results import ProbeGain

    diff = {"mean": -0.02, "low": -0.03, "high": -0.01, "n": 3, "confidence": 0.95, "verdict": "loss"}
    near = {"model": "ckpt", "baseline": "random:ckpt", "n_test": 1000, "n_train": 100, "accuracy": (0.482,) * 3,
            "baseline_accuracy": (0.502,) * 3, "gain": diff, "seeds": [0, 1, 2]}
    headline = pd.DataFrame({"accuracy_mean": [0.482, 0.502]}, index=pd.Index(["ckpt", "random:ckpt"], name="init"))
    result = ProbeGain(near, headline, chance=0.5)
    assert result.verdict == "at chance" == headline_metrics(near, "b", prefix="bshift", chance=0.5)["bshift_verdict"]
    assert "both at chance" in result.sentence and "at chance" in result._repr_html_()
    assert "measurable loss" not in result._repr_html_()
    assert ProbeGain(near, headline).verdict == "loss"  # without chance: the paired verdict, as before
    assert result.accuracy == (0.482,) * 3 and result.baseline_accuracy == (0.502,) * 3


def test_probe_bigram_shift_returns_a_probe_gain_read_against_chance(tiny, topics):
    from workbench.evaluation.probes import probe_bigram_shift

    cfg = ProbeConfig(probe_seeds=2, probe_train_size=45, probe_max_length=32, bshift_examples=80)
    result = probe_bigram_shift(tiny, topics, cfg, l2_grid=(1.0,))
    shifted = bigram_shift(topics, seed=0, max_examples=80)
    # the same rows as the probe called on the task by hand, every train sentence used (not probe_train_size)
    runs = probe_models([tiny, f"random:{tiny}"], shifted, ProbeConfig(probe_seeds=2, probe_max_length=32),
                        l2_grid=(1.0,))
    pd.testing.assert_frame_equal(result.runs, runs)
    assert set(result.runs["n_train"]) == {len(shifted.splits["train"])}
    assert dict(result.gain) == probe_gain(runs, tiny, f"random:{tiny}") and result.chance == 0.5
    assert result.gain["n_test"] == len(shifted.splits["test"]) == 80
    metrics = headline_metrics(result.gain, "bigram shift", prefix="bshift", chance=result.chance)
    assert metrics["bshift_verdict"] == result.verdict
    assert list(result.headline.index) == [tiny, f"random:{tiny}"]
    # a random 2-layer model and its random twin cannot tell a swap on 80 test sentences (noise ±0.11)
    assert result.verdict == "at chance" and "both at chance" in result.sentence
    with pytest.raises(WorkbenchError, match="bshift_examples is 0"):
        probe_bigram_shift(tiny, topics, ProbeConfig(bshift_examples=0))
