"""Classification tasks: stratified splits, reading files, dirs and builtins, and bad task input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.evaluation.test_finetuning import SHARED, _write
from workbench.config import FinetuneConfig
from workbench.errors import WorkbenchError
from workbench.evaluation.splits import stratified_sample, stratified_split
from workbench.evaluation.tasks import load_task


def test_stratified_split_proportions():
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    test, val, train = stratified_split(labels, [0.2, 0.1], seed=0)
    assert (len(test), len(val), len(train)) == (200, 100, 700)
    assert len(np.intersect1d(test, val)) == len(np.intersect1d(test, train)) == len(np.intersect1d(val, train)) == 0
    assert sorted(np.concatenate([test, val, train]).tolist()) == list(range(1000))
    y = np.array(labels)
    for part, share in ((test, 0.2), (val, 0.1), (train, 0.7)):
        assert {c: int((y[part] == c).sum()) for c in "abc"} == {"a": 600 * share, "b": 300 * share, "c": 100 * share}
    assert np.array_equal(stratified_split(labels, [0.2], 0)[0], stratified_split(labels, [0.2], 0)[0])
    assert not np.array_equal(stratified_split(labels, [0.2], 0)[0], stratified_split(labels, [0.2], 1)[0])
    sample = stratified_sample(["a"] * 97 + ["b"] * 2 + ["c"], 10, seed=3)
    assert len(sample) == 10 and set(np.array(["a"] * 97 + ["b"] * 2 + ["c"])[sample]) == {"a", "b", "c"}


def test_load_task_splits(tmp_path):
    rt = load_task(FinetuneConfig(task="builtin:rt-polarity"))
    assert rt.sizes == {"train": 140, "validation": 20, "test": 40}
    for split in rt.splits.values():  # the 100/100 balance holds in every split
        counts = split["label"].value_counts()
        assert counts["neg"] == counts["pos"]
    sst = load_task(FinetuneConfig(task=str(SHARED / "sst2"), max_validation=0))
    assert sst.sizes == {"train": 60614, "validation": 6735, "test": 872} and sst.labels == ["0", "1"] and not sst.pairs
    ag = load_task(FinetuneConfig(task=str(SHARED / "agnews")))  # train + test: validation carved from train
    assert ag.sizes == {"train": 9001, "validation": 1000, "test": 7600}
    assert ag.labels == ["Business", "Sci/Tech", "Sports", "World"]
    assert "no validation split" in ag.notes[0]
    pairs = tmp_path / "pairs.csv"  # one comma-separated file of sentence pairs
    pd.DataFrame({"sentence1": ["a cat, it sat"] * 40, "sentence2": ["a dog"] * 40,
                  "label": ["yes", "no"] * 20}).to_csv(pairs, index=False)
    task = load_task(FinetuneConfig(task=str(pairs)))
    assert task.pairs and list(task.splits["train"].columns) == ["text", "text_b", "label"]


@pytest.mark.parametrize("files, match", [
    ({"train.tsv": ("sentence", "y")}, "no label column 'label'"),
    ({"train.tsv": ("words", "label")}, "no text column"),
    ({"train.tsv": "one-class", "test.tsv": None}, "one class only"),
    ({"train.tsv": None, "test.tsv": "empty"}, "the test split is empty"),
    ({"validation.tsv": None, "test.tsv": None}, "no train split"),
])
def test_bad_task_files(tmp_path, files, match):
    for name, spec in files.items():
        if spec == "empty":
            rows, columns = [], ("sentence", "label")
        elif spec == "one-class":
            rows, columns = [(f"text {i}", "1") for i in range(20)], ("sentence", "label")
        else:
            columns = spec or ("sentence", "label")
            rows = [(f"text {i}", str(i % 2)) for i in range(20)]
        _write(tmp_path / name, rows, columns)
    with pytest.raises(WorkbenchError, match=match):
        load_task(FinetuneConfig(task=str(tmp_path)))


@pytest.mark.parametrize("task, match", [
    ("builtin:imdb", "unknown builtin task"),
    ("./no/such/dir", "does not exist"),
    ("glue/sst2", "could not be loaded from the Hugging Face hub"),  # offline in tests
])
def test_bad_task_specs(task, match):
    with pytest.raises(WorkbenchError, match=match):
        load_task(FinetuneConfig(task=task))
