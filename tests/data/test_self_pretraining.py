"""Self-pretraining corpora: a labelled file's text column, short documents kept, MLM objective."""

from __future__ import annotations

import json

import pandas as pd

from workbench.cli import main
from workbench.config import FinetuneConfig
from workbench.data.tokenizer import load_tokenizer
from workbench.evaluation.tasks import load_task


def test_prepare_takes_a_labelled_files_text_column_with_short_documents(tmp_path, capsys):
    # Real short documents: the 200 labelled movie-review sentences of builtin:rt-polarity, as a tsv.
    frame = load_task(FinetuneConfig(task="builtin:rt-polarity")).splits
    rows = pd.concat(frame.values(), ignore_index=True)
    tsv = tmp_path / "train.tsv"
    rows.to_csv(tsv, sep="\t", index=False)
    args = ["prepare", "--corpus", str(tsv), "--text-column", "text", "--objective", "mlm",
            "--tokenizer", "builtin:minilm", "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--out", str(tmp_path / "default")]) == 0  # the default 50 words drops all but one review
    err = capsys.readouterr().err
    assert "warning: skipped 199 of 200 documents" in err and "--min-doc-words 1" in err
    assert main([*args, "--min-doc-words", "1", "--out", str(tmp_path / "p")]) == 0
    stats = json.loads((tmp_path / "p" / "stats.json").read_text())
    assert stats["documents"] == len(rows) and stats["skipped_short_documents"] == 0
    assert stats["objective"] == "mlm" and stats["text_column"] == "text"
    # Only the text column is pretraining text: the token count is that of the reviews, labels left out.
    tok = load_tokenizer("builtin:minilm")
    assert stats["tokens"] == sum(len(x) for x in tok(rows["text"].tolist(), add_special_tokens=False)["input_ids"])
