"""Input a hostile new user gives (issue 15): huge one-document corpora, broken quotes, unlabelled
rows, `--help`, pickle checkpoints, nondeterministic tokenizers and stale cache keys. Each case
checks the exit status and the one line the user sees."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import BertForPreTraining

from workbench import data as data_module
from workbench.attention import load_attention_model
from workbench.cli import build_parser, main
from workbench.config import FinetuneConfig
from workbench.data import CorpusReport, iter_documents, source_fingerprint
from workbench.errors import WorkbenchError
from workbench.finetune import finetune, load_classifier
from workbench.model import build_model
from workbench.pretraining_data import build_examples, truncate_seq_pair
from workbench.tasks import load_task
from workbench.tokenizer import tokenizer_fingerprint, train_tokenizer


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *needles: str) -> str:
    """The single `error:` line (exit status 2) holding every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip() and "examples/s" not in ln and not ln.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _real_text(sentences: list[str], chars: int, seed: int = 0) -> str:
    """Real Wikipedia sentences in a seeded random order, repeated up to `chars` characters, one line."""
    rng, out, size = random.Random(seed), [], 0
    while size < chars:
        out.append(sentences[rng.randrange(len(sentences))])
        size += len(out[-1]) + 1
    return " ".join(out)


# ----------------------------------------------------------------------------- linear time
def _best_cpu_seconds(fn, args: tuple, rounds: int = 2) -> list[float]:
    """Best CPU time of ``fn(arg)`` for each arg over interleaved rounds: robust to other jobs on the cores."""
    best = [math.inf] * len(args)
    for _ in range(rounds):
        for i, arg in enumerate(args):
            start = time.process_time()
            fn(arg)
            best[i] = min(best[i], time.process_time() - start)
    return best


def test_one_huge_document_builds_in_linear_time(tmp_path, wiki_documents, wiki_token_docs):
    sentences = [s for d in wiki_documents for s in d]
    token_sentences = [s for d in wiki_token_docs for s in d]

    for megabytes in (2.5, 5.0):
        text = _real_text(sentences, int(megabytes * 1e6))
        (tmp_path / f"one-line-{megabytes}.txt").write_text(text + "\n", encoding="utf-8")

    def build(megabytes: float) -> None:
        chars = int(megabytes * 1e6)
        path = tmp_path / f"one-line-{megabytes}.txt"
        docs = list(iter_documents(str(path), min_doc_words=0))  # read + split into sentences
        assert len(docs) == 1 and len(docs[0]) > 1000 * megabytes
        # The same document tokenized (~4.5 characters a token): packed MLM segments of it.
        doc, n = [], 0
        while n < chars / 4.5:
            doc.append(token_sentences[len(doc) % len(token_sentences)])
            n += len(doc[-1])
        ex = build_examples([doc], [0], objective="mlm", max_seq_length=128, short_seq_prob=0.1,
                            rng=random.Random(0), cls_id=101, sep_id=102)
        assert len(ex["input_ids"]) == math.ceil(n / 126) and len(ex["input_ids"][0]) == 128
        # One pair whose A is a whole book: trimmed to fit, front and back.
        a = [t for s in doc[: len(doc) // 4] for t in s]
        assert truncate_seq_pair(a, [1, 2], 125, random.Random(0)) and len(a) == 123

    small, large = _best_cpu_seconds(build, (2.5, 5.0))
    # Linear: twice the text, about twice the time; quadratic code (`buf = buf[block:]`, del a[0]) gives ~4x.
    assert large / small < 3.0, (small, large)


def test_a_one_document_txt_gets_a_note(tmp_path, wiki_documents, capsys, monkeypatch):
    sentences = [s for d in wiki_documents for s in d]
    lines = tmp_path / "lines.txt"  # one sentence per line, no blank line: one document
    lines.write_text("\n".join(sentences[:400]) + "\n", encoding="utf-8")
    single = tmp_path / "single.txt"
    single.write_text(_real_text(sentences, 60_000) + "\n", encoding="utf-8")
    monkeypatch.setattr(data_module, "_HUGE_DOCUMENT", 20_000)
    report = CorpusReport()
    assert len(list(iter_documents(str(lines), report=report))) == 1
    assert report.warnings == [
        f"file '{lines}': lines 1-400 ({sum(map(len, sentences[:400])) / 1e6:.1f} MB), with no blank line "
        "between them, are read as one document; put a blank line between documents (or use .jsonl, "
        "one document per line)"]
    code, _, err = _run(["prepare", "--corpus", str(single), "--objective", "mlm", "--tokenizer", "builtin:minilm",
                         "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0
    assert f"warning: file '{single}': line 1 (0.1 MB) is read as one document; put a blank line" in err
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["documents"] == 1 and stats["pairs"] > 100


# ------------------------------------------------------------------- deterministic tokenizer
def _train_vocab(sentences: list[str]) -> tuple[list[str], str]:
    tok = train_tokenizer(sentences, vocab_size=5000)
    return sorted(tok.get_vocab(), key=tok.get_vocab().get), tokenizer_fingerprint(tok)


def test_tokenizer_training_is_deterministic(wiki_documents):
    # 15 documents and a 5000 vocabulary: merges of equal counts decide the last tokens, which
    # before this fix came out differently in about 7 of 10 runs.
    sentences = [s for d in wiki_documents[:15] for s in d]
    first = _train_vocab(sentences)
    assert _train_vocab(sentences) == first
    with multiprocessing.get_context("fork").Pool(2) as pool:  # two runs at the same moment
        concurrent = pool.map(_train_vocab, [sentences, sentences])
    assert concurrent == [first, first]
    assert len(first[0]) == 5000


# --------------------------------------------------------------------------- cache key
def test_fingerprint_follows_content_at_the_same_size_and_mtime(tmp_path, wiki_documents, monkeypatch):
    path = tmp_path / "corpus.txt"
    text = _real_text([s for d in wiki_documents for s in d], 200_000)
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    before = source_fingerprint(str(path))
    ascii_at = [i for i, c in enumerate(text) if c.isascii() and c != "X"]
    for position in (ascii_at[0], ascii_at[len(ascii_at) // 2], ascii_at[-1]):  # start, middle, end
        changed = text[:position] + "X" + text[position + 1:]  # the same number of bytes
        path.write_text(changed, encoding="utf-8")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
        assert source_fingerprint(str(path)) != before, position
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source_fingerprint(str(path)) == before
    # A big file is sampled (64 blocks of 64 KB), not read whole: the first block still counts.
    monkeypatch.setattr(data_module, "_FULL_HASH_BYTES", 100_000)
    sampled = source_fingerprint(str(path))
    first = ascii_at[0]  # in the first 64 KB block
    path.write_text(text[:first] + "X" + text[first + 1:], encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source_fingerprint(str(path)) != sampled


# ----------------------------------------------------------------------- unmatched quotes
BROKEN_QUOTE = 'sentence,label\nA fine film,1\n"A great movie,1\nTerrible film,0\n"Fine" said the critic,1\nok,0\n'


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_unmatched_quote_stops_with_its_line(tmp_path, capsys, suffix, sep):
    path = tmp_path / f"reviews{suffix}"
    path.write_text(BROKEN_QUOTE.replace(",", sep), encoding="utf-8")
    expected = (f"error: file '{path}' line 3: a quoted field that opens on this line is not closed properly "
                "(it closes on line 5 with text after the quote), which merges the rows after it; close the "
                'quote, or double a quote that is part of the text ("")')
    # The corpus reader (prepare) and the fine-tuning reader give the same line.
    code, _, err = _run(["prepare", "--corpus", str(path), "--text-column", "sentence", "--min-doc-words", "0",
                         "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert _one_line_error(code, err) == expected
    code, _, err = _run(["finetune", "--task", str(path), "--model", "builtin:minilm", "--out", str(tmp_path / "f")],
                        capsys)
    assert _one_line_error(code, err) == expected
    # No closing quote at all: the file ends inside the field.
    path.write_text("sentence,label\nA fine film,1\n\"A great movie,1\nTerrible film,0\n".replace(",", sep))
    with pytest.raises(WorkbenchError, match="line 3: .* [(]the file ends inside it[)]"):
        load_task(FinetuneConfig(task=str(path)))
    with pytest.raises(WorkbenchError, match="line 3: .* [(]the file ends inside it[)]"):
        list(iter_documents(str(path), text_column="sentence", min_doc_words=0))


def test_a_quote_closed_by_chance_is_warned_about(tmp_path, capsys):
    rows = [f"review number {i} is fine,{i % 2}" for i in range(40)]
    rows[5] = '"review five opens a quote,1'
    rows[30] = 'review thirty closes it",0'  # a clean close: 26 rows merged into one field
    path = tmp_path / "reviews.csv"
    path.write_text("sentence,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    task = load_task(FinetuneConfig(task=str(path)))
    assert sum(task.sizes.values()) == 40 - 25
    err = capsys.readouterr().err
    assert (f"warning: file '{path}': 1 row(s) span more than 20 lines, the first at line 7 (26 lines); if those "
            "fields should not hold line breaks, an unmatched quote on line 7 merged rows: fix it") in err


# ---------------------------------------------------------------------- fine-tuning labels
LABELLED = [(f"a truly good film number {i}", 1) if i % 2 else (f"a really bad film number {i}", 0)
            for i in range(40)]


def _write_task(path: Path, rows: list[tuple[str, object]]) -> Path:
    frame = pd.DataFrame(rows, columns=["sentence", "label"])  # None/NaN labels: a float column
    if path.suffix == ".jsonl":  # 1, null, NaN as Python's json writes them
        path.write_text("".join(json.dumps({"sentence": t, "label": lab}) + "\n" for t, lab in rows))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)  # writes 1.0, 0.0, ""
    return path


def test_unlabelled_rows_are_dropped_alike_in_every_format(tmp_path, capsys):
    rows = [*LABELLED, ("no label here", None), ("not a number", float("nan")), ("also none", None)]
    frames = {}
    for suffix in (".tsv", ".csv", ".jsonl", ".parquet"):
        path = _write_task(tmp_path / f"task{suffix}", rows)
        task = load_task(FinetuneConfig(task=str(path)))
        err = capsys.readouterr().err
        assert (f"warning: task '{path}' split all: dropped 3 row(s) with an empty or NaN label 'label' "
                "(first: data row 41)") in err
        assert task.labels == ["0", "1"], suffix
        frames[suffix] = pd.concat(task.splits.values()).sort_values("text").reset_index(drop=True)
    for suffix, frame in frames.items():
        assert frame.equals(frames[".tsv"]), suffix
    assert len(frames[".tsv"]) == 40 and set(frames[".tsv"]["label"]) == {"0", "1"}
    # A TSV written by hand with "nan" and an empty cell is read the same way.
    path = tmp_path / "hand.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in LABELLED) + "x\tnan\ny\t\n")
    assert load_task(FinetuneConfig(task=str(path))).sizes == {"train": 28, "validation": 4, "test": 8}


def test_integer_labels_stay_integers_in_results_and_predictions(tmp_path, tiny_bert):
    model = tiny_bert
    task = _write_task(tmp_path / "task.jsonl", [*LABELLED, ("no label here", None)])
    cfg = FinetuneConfig(model=str(model), task=str(task), out=str(tmp_path / "out"), max_steps=2,
                         progress=False, eval_batch_size=64)
    results = finetune(cfg).results
    assert results["labels"] == ["0", "1"] and set(results["per_class"]) == {"0", "1"}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["labels"] == ["0", "1"]
    predictions = (tmp_path / "out" / "predictions.tsv").read_text().splitlines()
    assert predictions[0].split("\t")[:4] == ["text", "label", "prediction", "scored"]
    assert predictions[0].split("\t")[4:] == ["p_0", "p_1"]
    assert {line.split("\t")[1] for line in predictions[1:]} == {"0", "1"}
    assert {line.split("\t")[2] for line in predictions[1:]} <= {"0", "1"}


# ------------------------------------------------------------------------------- --help
def _subcommands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0 and err == ""
    assert out.startswith(f"usage: workbench {command}") and len(out.splitlines()) > 3


def test_every_subcommand_is_covered():
    assert {"prepare", "pretrain", "heads", "finetune", "report", "sweep", "demo"} <= set(_subcommands())


# --------------------------------------------------------------------- pickle checkpoints
class _RunsCode:
    """An object whose unpickling would create `marker`: proof that no pickle code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def pickle_checkpoint(tmp_path, tiny_bert) -> Path:
    """A tiny BertForPreTraining whose weights are pytorch_model.bin, a pickle with training args in it."""
    path = tiny_bert
    model = BertForPreTraining.from_pretrained(path)
    (path / "model.safetensors").unlink()
    torch.save({**model.state_dict(), "args": argparse.Namespace(lr=1e-4),
                "hook": _RunsCode(tmp_path / "pickle-ran")}, path / "pytorch_model.bin")
    return path


def _refusal(what: str, path: Path) -> str:
    return (f"refusing to load {what}: its weights '{path / 'pytorch_model.bin'}' are a pickle holding Python "
            "objects such as argparse.Namespace, not only tensors, and unpickling it could run arbitrary code; "
            "re-save the model as safetensors where you trust it (model.save_pretrained(DIR) writes "
            "model.safetensors), or pass another checkpoint")


def test_a_pickle_checkpoint_is_refused_in_one_line(pickle_checkpoint, tmp_path, capsys, minilm_tokenizer):
    path = pickle_checkpoint
    code, _, err = _run(["finetune", "--model", str(path), "--task", "builtin:rt-polarity",
                         "--out", str(tmp_path / "f"), "--max-steps", "1"], capsys)
    line = _one_line_error(code, err)
    assert line == "error: " + _refusal(f"--model '{path}'", path)
    assert "weights_only" not in line and "\x1b" not in line
    with pytest.raises(WorkbenchError) as refused:
        load_attention_model(str(path), device="cpu")  # `heads` and the attention notebook
    assert str(refused.value) == _refusal(f"model '{path}'", path)
    with pytest.raises(WorkbenchError) as refused:
        build_model("tiny", minilm_tokenizer, init=str(path))  # `pretrain --init`
    assert str(refused.value) == _refusal(f"--init '{path}'", path)
    assert not (tmp_path / "pickle-ran").exists()


def test_a_tensors_only_pickle_still_loads(tmp_path, tiny_bert):
    path = tiny_bert
    model = BertForPreTraining.from_pretrained(path)
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")  # weights_only=True reads it safely
    classifier, _, info = load_classifier(str(path), ["0", "1"])
    assert info["parameters"] > 0
    assert torch.equal(classifier.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
