"""Downstream tasks made of documents that pretraining never saw: passage -> source document.

``heldout:DATA_DIR`` rebuilds the held-out (validation) documents of a prepared dataset from
the settings its stats.json records, checks them against the dataset's own provenance
columns (``a_doc``/``b_doc``) and drops any document the train split drew from.
``builtin:wikipedia-topics`` does the same for the builtin corpus under the default
:class:`DataConfig`: the 9 articles that ``workbench pretrain`` without ``--data`` holds out.

Each held-out document is cut into passages of consecutive sentences (at least
``MIN_PASSAGE_WORDS`` words, never across documents); a passage's label is its document.
Documents with fewer than ``MIN_CLASS_PASSAGES`` passages are dropped (a note says which);
exact duplicate passages are dropped so no test text is also a training text. The passages
are split stratified by class into train/validation/test (``TEST_FRACTION``,
``VALIDATION_FRACTION``, seeded by the fine-tune's ``split_seed``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..data.corpora import iter_documents
from ..data.examples import is_held_out
from ..errors import WorkbenchError
from .splits import TaskData, stratified_split

__all__ = [
    "BUILTIN_WIKIPEDIA_TOPICS",
    "HELDOUT_PREFIX",
    "MIN_CLASS_PASSAGES",
    "MIN_PASSAGE_WORDS",
    "TEST_FRACTION",
    "VALIDATION_FRACTION",
    "heldout_documents",
    "is_downstream_spec",
    "load_downstream_task",
    "make_passages",
    "prepared_config",
    "pretraining_documents",
    "topic_task",
]

BUILTIN_WIKIPEDIA_TOPICS = "builtin:wikipedia-topics"
HELDOUT_PREFIX = "heldout:"
# 15 words: ~1.5 sentences of Wikipedia, so the 9 builtin held-out articles give ~1,800
# passages: >= 500 test examples and still 1,000 labels to train on.
MIN_PASSAGE_WORDS = 15
MIN_CLASS_PASSAGES = 40  # a class below this has < 12 test passages: too noisy to score, dropped
TEST_FRACTION = 0.3
VALIDATION_FRACTION = 0.1
# Fields of stats.json that decide which documents are held out (see data/examples.py, is_held_out).
_SPLIT_FIELDS = ("corpus", "text_column", "min_doc_words", "max_documents", "validation_fraction", "seed")

Document = tuple[int, list[str]]  # (doc id among the corpus's kept documents, sentences)


def is_downstream_spec(spec: str) -> bool:
    """Whether ``spec`` names a held-out task of this module (``heldout:DIR``, ``builtin:wikipedia-topics``)."""
    return spec == BUILTIN_WIKIPEDIA_TOPICS or spec.startswith(HELDOUT_PREFIX)


def make_passages(sentences: Sequence[str], min_words: int = MIN_PASSAGE_WORDS) -> list[str]:
    """Consecutive sentences joined until each passage has ``min_words`` words; a short tail joins the last."""
    passages, current, words = [], [], 0
    for sentence in sentences:
        current.append(sentence.strip())
        words += len(sentence.split())
        if words >= min_words:
            passages.append(" ".join(current))
            current, words = [], 0
    if current:  # a tail shorter than min_words: part of the passage before it, or alone if none
        tail = " ".join(current)
        passages[-1:] = [f"{passages[-1]} {tail}"] if passages else [tail]
    return passages


def _label(doc_id: int, sentences: Sequence[str]) -> str:
    words = re.sub(r"[^\w\s-]", " ", sentences[0]).split()[:3]
    return f"{doc_id}:{' '.join(words)}"  # the id keeps labels unique; the words make them readable


def heldout_documents(cfg: DataConfig) -> list[Document]:
    """The documents ``cfg`` puts in the validation split, with their ids, in corpus order."""
    docs = iter_documents(cfg.corpus, text_column=cfg.text_column, min_doc_words=cfg.min_doc_words,
                          errors=cfg.errors, max_documents=cfg.max_documents)
    return [(i, doc) for i, doc in enumerate(docs) if is_held_out(i, cfg)]


@lru_cache(maxsize=1)
def _builtin_heldout() -> tuple[Document, ...]:
    return tuple(heldout_documents(DataConfig()))  # parsing the dump takes ~13 s: once per process


def topic_task(docs: Sequence[Document], name: str, seed: int = 0, notes: Sequence[str] = (), *,
               min_words: int = MIN_PASSAGE_WORDS, min_class: int = MIN_CLASS_PASSAGES,
               test_fraction: float = TEST_FRACTION, validation_fraction: float = VALIDATION_FRACTION) -> TaskData:
    """Passage -> source document examples from ``docs``, split stratified into train/validation/test."""
    notes = list(notes)
    rows = [(p, _label(doc_id, sentences)) for doc_id, sentences in docs for p in make_passages(sentences, min_words)]
    texts = Counter(text for text, _ in rows)
    repeated = {text for text, k in texts.items() if k > 1}
    if repeated:
        rows = [r for r in rows if r[0] not in repeated]
        notes.append(f"dropped {sum(texts[t] for t in repeated)} passage(s) whose text occurs more than once")
    counts = Counter(label for _, label in rows)
    small = sorted(label for label, k in counts.items() if k < min_class)
    if small:
        notes.append(f"dropped {len(small)} document(s) with fewer than {min_class} passages: "
                     + ", ".join(f"{s} ({counts[s]})" for s in small))
    rows = [r for r in rows if counts[r[1]] >= min_class]
    labels = sorted({label for _, label in rows}, key=lambda s: int(s.split(":")[0]))  # corpus order
    if len(labels) < 2:
        raise WorkbenchError(f"task {name!r}: {len(labels)} held-out document(s) have {min_class} or more passages of "
                             f"{min_words}+ words, and a topic task needs 2 or more; hold out more or longer documents "
                             "(prepare with a larger --validation-fraction)")
    frame = pd.DataFrame(rows, columns=["text", "label"])
    test, val, train = stratified_split(frame["label"], [test_fraction, validation_fraction], seed)
    notes.append(f"passage -> source document: {len(frame)} passages of {min_words}+ words from {len(labels)} "
                 f"held-out documents, stratified {1 - test_fraction - validation_fraction:.0%}/"
                 f"{validation_fraction:.0%}/{test_fraction:.0%} train/validation/test (seed {seed})")
    splits = {k: frame.iloc[idx].reset_index(drop=True) for k, idx in
              (("train", train), ("validation", val), ("test", test))}
    return TaskData(name, splits, labels, False, notes)


def prepared_config(data_dir: str | Path) -> tuple[DataConfig, list[str]]:
    """The DataConfig whose held-out documents a prepared dir used, read from its stats.json; and notes."""
    stats_file = Path(data_dir) / "stats.json"
    if not stats_file.is_file() or not (Path(data_dir) / "dataset").is_dir():
        raise WorkbenchError(f"{data_dir} is not a prepared dataset (no stats.json/dataset); pass heldout:DIR "
                             "with a dir written by `workbench prepare --out DIR`")
    stats = json.loads(stats_file.read_text())
    missing = [k for k in _SPLIT_FIELDS if k not in stats]
    notes = [f"stats.json does not record {', '.join(missing)}: assumed the defaults, checked against the "
             "validation split's provenance"] if missing else []
    values = {k: stats[k] for k in (*_SPLIT_FIELDS, "objective", "max_seq_length") if k in stats}
    corpus = str(values.get("corpus", ""))
    if not corpus.startswith("builtin:") and not Path(corpus).expanduser().exists():
        raise WorkbenchError(f"the corpus {corpus!r} that {data_dir} was prepared from is not found from "
                             f"{Path.cwd()}; run from the directory `workbench prepare` ran in")
    return DataConfig(**values), notes


def pretraining_documents(data_dir: str | Path, split: str) -> set[int]:
    """Ids of the documents a prepared split's examples were drawn from (a_doc and b_doc columns)."""
    from datasets import load_from_disk

    table = load_from_disk(str(Path(data_dir) / "dataset"))[split].data.table
    ids = np.concatenate([table.column(c).to_numpy() for c in ("a_doc", "b_doc")])
    return {int(i) for i in np.unique(ids) if i >= 0}  # b_doc is -1 for packed MLM segments


def _heldout_dir_task(spec: str, seed: int) -> TaskData:
    data_dir = Path(spec.removeprefix(HELDOUT_PREFIX)).expanduser()
    cfg, notes = prepared_config(data_dir)
    docs = heldout_documents(cfg)
    ids = {doc_id for doc_id, _ in docs}
    validation = pretraining_documents(data_dir, "validation")
    if not validation <= ids:
        raise WorkbenchError(f"the held-out documents rebuilt from {data_dir}/stats.json do not match its validation "
                             f"split ({len(validation - ids)} unexpected); prepare it again with this workbench")
    trained = ids & pretraining_documents(data_dir, "train")
    if trained:  # e.g. NSP moves a lone held-out document into train: never test on it
        notes.append(f"dropped {len(trained)} held-out document(s) the train split draws from: {sorted(trained)}")
        docs = [d for d in docs if d[0] not in trained]
    return topic_task(docs, spec, seed, notes)


def load_downstream_task(spec: str, seed: int = 0) -> TaskData:
    """The task ``spec`` names (``heldout:DIR`` or ``builtin:wikipedia-topics``), splits seeded by ``seed``."""
    if spec == BUILTIN_WIKIPEDIA_TOPICS:
        return topic_task(_builtin_heldout(), spec, seed,
                          ["documents: those `workbench pretrain` holds out of builtin:wikipedia by default"])
    if not spec.startswith(HELDOUT_PREFIX) or not spec.removeprefix(HELDOUT_PREFIX):
        raise WorkbenchError(f"task {spec!r} is not a held-out task; pass heldout:DATA_DIR or {BUILTIN_WIKIPEDIA_TOPICS}")
    return _heldout_dir_task(spec, seed)
