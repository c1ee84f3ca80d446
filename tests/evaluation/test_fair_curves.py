"""The fair protocol of learning curves: lr grid chosen on validation, minimum budget, paired gains."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.evaluation.test_finetuning import _tiny
from workbench.config import FinetuneConfig
from workbench.data.corpora import iter_documents
from workbench.data.tokenizer import load_tokenizer
from workbench.errors import WorkbenchError
from workbench.evaluation.fair_curves import _choose_lr, curve_summary, learning_curve, lr_grid
from workbench.evaluation.heldout import topic_task
from workbench.notebook import plots

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(_tiny(tmp_path_factory.mktemp("tiny"), load_tokenizer("builtin:minilm")))


@pytest.fixture(scope="module")
def topics():
    """Real text: passages of 3 Wikipedia articles, labelled by article (easy to learn from words)."""
    docs = list(enumerate(iter_documents("builtin:wikipedia", max_documents=3)))
    return topic_task(docs, "three-articles", min_words=15, min_class=20)


def test_lr_grid_is_chosen_on_validation_and_runs_get_the_minimum_budget(tiny, topics):
    base = FinetuneConfig(lr_grid="1e-7,3e-3", lr_grid_seeds=1, min_steps=20, curve_min_steps=25, curve_epochs=1,
                          patience=1, eval_every=5, progress=False, eval_batch_size=64, max_length=32)
    runs = learning_curve([tiny], topics, sizes=[96], seeds=[0, 1], base=base, verbose=False)
    # The grid on seed 0; seed 1 only at the lr validation chose.
    assert [(r.lr, r.seed) for r in runs.itertuples()] == [(1e-7, 0), (3e-3, 0), (3e-3, 1)]
    assert (runs["steps"] >= 25).all()  # patience 1 would stop sooner: the minimum budget holds it back
    absurd, good = runs.iloc[0], runs.iloc[1]
    assert good["best_validation_accuracy"] > absurd["best_validation_accuracy"] + 0.15  # validation rejects 1e-7
    assert list(runs["chosen"]) == [False, True, True]
    summary = curve_summary(runs)
    assert len(summary) == 1 and summary.iloc[0]["lr"] == 3e-3 and summary.iloc[0]["runs"] == 2
    assert summary.iloc[0]["accuracy_ci_low"] <= summary.iloc[0]["accuracy_mean"] <= summary.iloc[0]["accuracy_ci_high"]


def test_auto_grid_follows_the_model_width(tiny):
    assert lr_grid(tiny, FinetuneConfig()) == [3e-4, 1e-3, 3e-3]
    assert lr_grid(f"random:{tiny}", FinetuneConfig()) == [3e-4, 1e-3, 3e-3]
    assert lr_grid("builtin:minilm", FinetuneConfig()) == [3e-5, 1e-4]
    assert lr_grid(tiny, FinetuneConfig(lr_grid="none", lr=5e-4)) == [5e-4]
    assert lr_grid(tiny, FinetuneConfig(lr_grid="1e-4, 2e-4")) == [1e-4, 2e-4]
    with pytest.raises(WorkbenchError, match="lr_grid"):
        FinetuneConfig(lr_grid="fast")


def test_a_grid_that_only_diverges_is_an_error():
    block = [{"lr": 10.0, "best_validation_accuracy": math.nan, "diverged": True},
             {"lr": 1e-3, "best_validation_accuracy": 0.4, "diverged": False}]
    assert _choose_lr(block) == 1e-3
    with pytest.raises(WorkbenchError, match="diverged"):
        _choose_lr(block[:1])


def test_summary_pairs_each_init_with_its_random_twin_by_seed():
    rows = []
    for seed, (a, b) in enumerate([(0.70, 0.60), (0.72, 0.65), (0.69, 0.61)]):
        rows += [{"init": "ckpt", "n_train": 100, "seed": seed, "lr": 1e-3, "chosen": True, "accuracy": a, "macro_f1": a},
                 {"init": "random:ckpt", "n_train": 100, "seed": seed, "lr": 3e-3, "chosen": True, "accuracy": b,
                  "macro_f1": b},
                 {"init": "random:ckpt", "n_train": 100, "seed": seed, "lr": 1e-3, "chosen": False, "accuracy": 0.0,
                  "macro_f1": 0.0}]  # a grid point validation rejected: not in the summary
    summary = curve_summary(pd.DataFrame(rows[::-1]))  # order of rows must not matter for the pairing
    ckpt = summary[summary["init"] == "ckpt"].iloc[0]
    assert ckpt["baseline"] == "random:ckpt" and ckpt["verdict"] == "gain"
    # By hand (tests/evaluation/test_stats.py): differences 0.10, 0.07, 0.08 -> 0.08333 +- 0.037946.
    assert ckpt["gain"] == pytest.approx(0.083333, abs=1e-6)
    assert ckpt["gain_ci_low"] == pytest.approx(0.045387, abs=1e-5)
    assert ckpt["gain_ci_high"] == pytest.approx(0.121279, abs=1e-5)
    twin = summary[summary["init"] == "random:ckpt"].iloc[0]
    assert twin["lr"] == 3e-3 and twin["accuracy_mean"] == pytest.approx(0.62) and twin["baseline"] == ""


def test_learning_curve_and_summary(tiny):
    base = FinetuneConfig(max_steps=3, eval_every=3, lr_grid="none", progress=False, eval_batch_size=64)
    done: list[dict] = []
    runs = learning_curve([tiny, f"random:{tiny}"], "builtin:rt-polarity", sizes=[10, 0, 1000], seeds=[0, 1],
                          base=base, verbose=False, on_run=done.append)
    assert done == runs.to_dict("records")
    assert list(runs.columns[:5]) == ["n_train", "init", "seed", "accuracy", "macro_f1"]
    assert len(runs) == 8 and sorted(set(runs["n_train"])) == [10, 140]  # 0 and 1000 both mean all 140
    summary = curve_summary(runs)
    assert list(summary["init"]) == [tiny, tiny, f"random:{tiny}", f"random:{tiny}"]
    assert {"n_train", "init", "accuracy_mean", "accuracy_std", "runs"} <= set(summary.columns)
    assert (summary["runs"] == 2).all() and (runs["chosen"]).all() and (runs["lr"] == base.lr).all()
    assert summary.iloc[0]["baseline"] == f"random:{tiny}" and summary.iloc[2]["baseline"] == ""
    first = runs[(runs["init"] == tiny) & (runs["n_train"] == 10)]["accuracy"]
    assert summary.iloc[0]["accuracy_mean"] == pytest.approx(first.mean())
    assert summary.iloc[0]["accuracy_std"] == pytest.approx(first.std())
    plots.learning_curve(summary)
