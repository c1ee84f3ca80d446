"""Held-out downstream tasks: passages of documents pretraining never saw, and no leak into it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.config import DataConfig, FinetuneConfig
from workbench.data.examples import is_held_out, prepare_dataset
from workbench.data.tokenizer import load_tokenizer
from workbench.errors import WorkbenchError
from workbench.evaluation.heldout import (
    BUILTIN_WIKIPEDIA_TOPICS,
    make_passages,
    pretraining_documents,
    topic_task,
)
from workbench.evaluation.tasks import load_task

NGRAM = 10  # token windows: a test passage's 10-gram found in pretraining text would be a leak


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small real prepared dataset: 16 builtin articles, 30% held out, packed MLM (all text kept)."""
    root = tmp_path_factory.mktemp("heldout")
    cfg = DataConfig(tokenizer="builtin:minilm", objective="mlm", max_documents=16, validation_fraction=0.3,
                     dupe_factor=1, cache_dir=str(root / "cache"))
    prepare_dataset(cfg, out_dir=root / "prep")
    return root / "prep"


def _ngrams(rows: list[list[int]]) -> set[tuple[int, ...]]:
    return {tuple(r[i:i + NGRAM]) for r in rows for i in range(len(r) - NGRAM + 1)}


def test_passages_reach_the_word_count_and_keep_every_sentence():
    sentences = ["One two three.", "Four five six seven.", "Eight nine.", "Ten eleven twelve thirteen fourteen.", "End."]
    passages = make_passages(sentences, min_words=6)
    assert passages == ["One two three. Four five six seven.", "Eight nine. Ten eleven twelve thirteen fourteen. End."]
    assert make_passages(["Short one."], min_words=6) == ["Short one."]


def test_heldout_task_has_no_test_text_in_the_pretraining_train_split(prepared):
    task = load_task(FinetuneConfig(task=f"heldout:{prepared}"))
    assert len(task.labels) >= 2 and min(task.sizes.values()) > 0
    cfg = DataConfig(max_documents=16, validation_fraction=0.3)
    doc_ids = {int(label.split(":")[0]) for label in task.labels}
    assert all(is_held_out(i, cfg) for i in doc_ids)
    assert not doc_ids & pretraining_documents(prepared, "train")
    # Text level: tokenize each test passage as pretraining did; none of its 10-token windows is in train.
    from datasets import load_from_disk

    tok = load_tokenizer(str(prepared / "tokenizer"))
    ds = load_from_disk(str(prepared / "dataset"))
    train = _ngrams(ds["train"]["input_ids"])
    test_ids = tok(task.splits["test"]["text"].tolist(), add_special_tokens=False)["input_ids"]
    assert sum(len(x) >= NGRAM for x in test_ids) >= 100
    assert not _ngrams(test_ids) & train
    # The check can fail: the same passages are all in the validation split, which is pretraining's held-out text.
    held = _ngrams(ds["validation"]["input_ids"])
    assert np.mean([bool(_ngrams([x]) & held) for x in test_ids if len(x) >= NGRAM]) > 0.95
    # And no test text is a training text of the task.
    assert not set(task.splits["test"]["text"]) & set(task.splits["train"]["text"])


def test_heldout_task_refuses_a_stats_json_that_does_not_match_its_splits(prepared, tmp_path):
    import shutil

    copy = tmp_path / "prep"
    shutil.copytree(prepared, copy)
    stats = json.loads((copy / "stats.json").read_text())
    stats["validation_fraction"] = 0.1
    (copy / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(WorkbenchError, match="do not match its validation split"):
        load_task(FinetuneConfig(task=f"heldout:{copy}"))
    with pytest.raises(WorkbenchError, match="not a prepared dataset"):
        load_task(FinetuneConfig(task=f"heldout:{tmp_path / 'nowhere'}"))


def test_small_classes_are_dropped_with_a_note_and_duplicates_removed():
    docs = [(0, ["Alpha beta gamma delta epsilon."] * 2 + [f"Sentence {i} of the first document here." for i in range(30)]),
            (1, [f"Line {i} of the second document goes on." for i in range(30)]),
            (2, ["Too short to be a class of its own here."] * 1)]
    task = topic_task(docs, "toy", min_words=5, min_class=5)
    assert [lab.split(":")[0] for lab in task.labels] == ["0", "1"]
    assert any("fewer than 5 passages" in n and "2:" in n for n in task.notes)
    assert any("occurs more than once" in n for n in task.notes)
    with pytest.raises(WorkbenchError, match="needs 2 or more"):
        topic_task(docs[:1], "toy", min_words=5, min_class=5)


@pytest.mark.slow
def test_builtin_topics_are_the_default_held_out_articles(wiki_documents):
    task = load_task(FinetuneConfig(task=BUILTIN_WIKIPEDIA_TOPICS))
    assert task.sizes["test"] >= 500 and task.sizes["train"] >= 1000 and len(task.labels) >= 5
    cfg = DataConfig()
    doc_ids = {int(label.split(":")[0]) for label in task.labels}
    assert all(is_held_out(i, cfg) for i in doc_ids)
    # No test sentence occurs in a document the default pretraining trains on.
    trained = {s for i, doc in enumerate(wiki_documents) if not is_held_out(i, cfg) for s in doc}
    sentences = [s for i, doc in enumerate(wiki_documents) if i in doc_ids for s in doc]
    test_text = " ".join(task.splits["test"]["text"])
    assert not [s for s in sentences if s in trained and s in test_text and len(s.split()) >= 5]
