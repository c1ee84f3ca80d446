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

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertForPreTraining

from workbench.analysis.attention import (
    ablation_batches,
    collect_attentions,
    head_importance,
    load_ablation_model,
    load_attention_model,
    mlm_loss_metric,
)
from workbench.cli import build_parser, main
from workbench.config import FinetuneConfig, MaskingConfig, ProbeConfig
from workbench.data import corpora as data_module
from workbench.data.corpora import CorpusReport, iter_documents, source_fingerprint
from workbench.data.examples import build_examples, truncate_seq_pair
from workbench.data.tokenizer import tokenizer_fingerprint, train_tokenizer
from workbench.errors import WorkbenchError
from workbench.evaluation.finetuning import finetune, load_classifier
from workbench.evaluation.tasks import load_task
from workbench.training.model import build_model


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


# ============================================================== issue 19: input validation
REPO_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _only_line(code: int, err: str) -> str:
    """The one line on stderr (no warning before it either): an `error:` line with exit status 2."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("rows, what", [
    ([(f"a film number {i}", "") for i in range(20)], "its 20 row(s) all have an empty or NaN label 'label' or an empty text"),
    ([(f"a film number {i}", float("nan")) for i in range(20)], "its 20 row(s) all have an empty or NaN label 'label' or an empty text"),
    ([], "it has no data rows"),
])
@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_a_task_without_labelled_rows_is_one_line(tmp_path, capsys, rows, what, suffix):
    path = tmp_path / f"task{suffix}"
    if rows:
        _write_task(path, rows)
    else:
        path.write_text("sentence\tlabel\n" if suffix == ".tsv" else "")
    code, _, err = _run(["finetune", "--task", str(path), "--model", "builtin:minilm", "--out", str(tmp_path / "f")],
                        capsys)
    if not rows and suffix == ".jsonl":  # an empty .jsonl has no columns at all: its own line
        assert _only_line(code, err).startswith(f"error: task '{path}' has no text column")
        return
    assert _only_line(code, err) == (
        f"error: task '{path}' split all has no labelled rows: {what}; fill in the labels, or pass the column "
        "that holds them with --label-column NAME")
    assert not (tmp_path / "f").exists()


def test_params_that_are_not_utf8_are_one_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_bytes("max_steps: 5\nnote: café\n".encode("latin-1"))
    code, _, err = _run(["report", "--params", str(params), "--out", str(tmp_path / "r"),
                         "--notebooks-dir", str(REPO_NOTEBOOKS)], capsys)
    assert _only_line(code, err) == (f"error: parameters file {params} is not valid UTF-8 (byte offset 22); "
                                     "re-save it as UTF-8")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, line", [
    (["finetune", "--epochs", "1e309"], "error: epochs inf is not a finite number; pass a finite value such as --epochs 3"),
    (["finetune", "--lr", "inf"], "error: lr inf is not a finite number; pass a finite value such as --lr 0.0001"),
    (["finetune", "--lr", "nan"], "error: lr nan is not a finite number; pass a finite value such as --lr 0.0001"),
    (["pretrain", "--lr", "inf"], "error: lr inf is not a finite number; pass a finite value such as --lr 0.002"),
    (["pretrain", "--warmup-fraction", "nan"],
     "error: warmup_fraction nan is not a finite number; pass a finite value such as --warmup-fraction 0.1"),
])
def test_non_finite_numbers_are_refused_up_front(tmp_path, capsys, argv, line):
    code, _, err = _run([*argv, "--out", str(tmp_path / "o")], capsys)
    assert _only_line(code, err) == line
    assert not (tmp_path / "o").exists()


def test_a_fifo_or_device_is_named_for_what_it_is(tmp_path, capsys):
    fifo = tmp_path / "task.tsv"
    os.mkfifo(fifo)
    code, _, err = _run(["finetune", "--task", str(fifo), "--model", "builtin:minilm", "--out", str(tmp_path / "f")],
                        capsys)  # reading it would wait for a writer forever
    assert _only_line(code, err) == (f"error: task '{fifo}' is a FIFO (named pipe), not a file or folder; save the "
                                     "data to a .tsv/.csv/.jsonl/.parquet file and pass that")
    supported = ".txt, .jsonl, .csv, .tsv, .parquet, .xml, .xml.bz2"
    for corpus, kind in ((fifo, "a FIFO (named pipe)"), (Path("/dev/null"), "a character device")):
        code, _, err = _run(["prepare", "--corpus", str(corpus), "--out", str(tmp_path / "o")], capsys)
        assert _only_line(code, err) == (f"error: corpus '{corpus}' is {kind}, not a file or folder; save the text "
                                         f"to a file ({supported}) and pass that")
    code, _, err = _run(["prepare", "--out", str(fifo)], capsys)
    assert _only_line(code, err) == (f"error: --out {fifo} is a FIFO (named pipe), not a folder; pass a folder "
                                     "(new or existing) as --out")
    code, _, err = _run(["heads", "--out", "/dev/null/heads"], capsys)
    assert _only_line(code, err) == ("error: --out /dev/null/heads: /dev/null is a character device, not a folder; "
                                     "pass another --out")
    code, _, err = _run(["report", "--params", str(fifo), "--out", str(tmp_path / "r"),
                         "--notebooks-dir", str(REPO_NOTEBOOKS)], capsys)
    assert _only_line(code, err) == (f"error: parameters file {fifo} is a FIFO (named pipe), not a file; pass a "
                                     "YAML file to --params")
    assert not (tmp_path / "f").exists() and not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------ damaged manifests
def _damaged(why: str, folder: Path, flag: str = "--out") -> str:
    return (f"error: {folder / '.workbench-manifest.json'} is damaged ({why}), so workbench cannot tell what it "
            f"wrote in {folder} and changes nothing there; restore that file, or pass another {flag} (moving it "
            f"away makes every entry in {folder} count as yours: kept, never replaced)")


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("make, why", [
    (lambda m: m.mkdir(), "it is a folder, not a file"),
    (lambda m: m.write_text("my notes on this folder\n"), "it is not JSON: Expecting value at line 1"),
    (lambda m: m.write_bytes(b"notes \xff\n"), "it is not UTF-8 text"),
    (lambda m: m.write_text('["not", "a", "manifest"]'), "it is not a workbench manifest"),
    (lambda m: os.mkfifo(m), "it is a FIFO (named pipe), not a file"),
])
def test_a_damaged_manifest_is_refused_and_kept(tmp_path, capsys, wiki_documents, make, why):
    corpus = tmp_path / "wiki.txt"
    corpus.write_text("\n\n".join(" ".join(d) for d in wiki_documents[:12]) + "\n")
    out = tmp_path / "o"
    out.mkdir()
    make(out / ".workbench-manifest.json")
    (out / "stats.json").write_text("{}\n")  # the user's, or the workbench's: nothing can tell now
    before = _snapshot(out)
    for argv in (["prepare", "--corpus", str(corpus), "--tokenizer", "builtin:minilm", "--out", str(out),
                  "--cache-dir", str(tmp_path / "c")],
                 ["finetune", "--task", "builtin:rt-polarity", "--out", str(out)],
                 ["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(out)],
                 ["report", "--out", str(out), "--notebooks-dir", str(REPO_NOTEBOOKS)]):
        code, _, err = _run(argv, capsys)
        line = _only_line(code, err)
        assert line == _damaged(why, out), argv
        assert "did not write" not in line
        assert _snapshot(out) == before, argv  # never overwritten, nothing added


def test_a_non_json_manifest_alone_is_not_overwritten(tmp_path, capsys, wiki_documents):
    corpus = tmp_path / "wiki.txt"
    corpus.write_text("\n\n".join(" ".join(d) for d in wiki_documents[:12]) + "\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / ".workbench-manifest.json").write_text("my notes\n")  # the folder holds nothing else
    code, _, err = _run(["prepare", "--corpus", str(corpus), "--tokenizer", "builtin:minilm", "--min-doc-words", "0",
                         "--out", str(out), "--cache-dir", str(tmp_path / "c")], capsys)
    assert _only_line(code, err) == _damaged("it is not JSON: Expecting value at line 1", out)
    assert [p.name for p in out.iterdir()] == [".workbench-manifest.json"]
    assert (out / ".workbench-manifest.json").read_text() == "my notes\n"


# ----------------------------------------------------------------- parameters checked early
def test_probe_seeds_below_two_is_refused_before_anything_runs(tmp_path, capsys):
    code, _, err = _run(["report", "-p", "probe_seeds=1", "--out", str(tmp_path / "r"),
                         "--notebooks-dir", str(REPO_NOTEBOOKS)], capsys)
    assert _only_line(code, err) == (
        "error: probe_seeds 1 must be 2 or more: the comparison with the random twin is a CI over seeds, which needs "
        "two (3 or more for a useful one) (ProbeConfig of 04_finetuning, from probe_seeds; nothing ran)")
    assert not (tmp_path / "r").exists()
    assert ProbeConfig(probe_seeds=2).probe_seeds == 2


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
@pytest.mark.parametrize("command", ["report", "sweep"])
def test_a_timeout_must_be_positive(tmp_path, capsys, value, command):
    argv = [command, f"--timeout={value}", "--out", str(tmp_path / "r"), "--notebooks-dir", str(REPO_NOTEBOOKS)]
    code, _, err = _run(argv + (["--param", "mask_rate=0.2,0.3"] if command == "sweep" else []), capsys)
    assert _only_line(code, err) == (f"error: --timeout {float(value):g} must be a positive number of seconds; pass "
                                     "e.g. --timeout 600, or leave it out for no limit")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("values, given", [("0.2,0.20", "0.2 and 0.20"), ("0.2,0.3,2e-1", "0.2 and 2e-1")])
def test_sweep_values_are_compared_as_the_notebook_reads_them(tmp_path, capsys, values, given):
    code, _, err = _run(["sweep", "--param", f"mask_rate={values}", "--out", str(tmp_path / "r"),
                         "--notebooks-dir", str(REPO_NOTEBOOKS), "--notebooks", "02"], capsys)
    assert _only_line(code, err) == (f"error: --param mask_rate lists {given}, which are the same value (0.2) to the "
                                     "notebook; list each once")
    assert not (tmp_path / "r").exists()
    code, _, err = _run(["sweep", "--param", "whole_word=true,yes", "--out", str(tmp_path / "r"),
                         "--notebooks-dir", str(REPO_NOTEBOOKS), "--notebooks", "02"], capsys)
    assert _only_line(code, err) == ("error: --param whole_word lists true and yes, which are the same value (True) "
                                     "to the notebook; list each once")


def test_a_vocabulary_too_small_for_the_alphabet_is_refused(tmp_path, capsys, wiki_documents):
    corpus = tmp_path / "wiki.txt"
    corpus.write_text("\n\n".join(" ".join(d) for d in wiki_documents[:3]) + "\n")
    code, _, err = _run(["prepare", "--corpus", str(corpus), "--vocab-size", "5", "--min-doc-words", "0",
                         "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")], capsys)
    line = _only_line(code, err)
    assert line.startswith("error: vocab_size 5 is too small for this corpus: the 5 special tokens, its "), line
    needed = int(line.split("--vocab-size ")[1].split()[0])
    assert line.endswith(f"take {needed}, which the tokenizer would hold anyway; pass --vocab-size {needed} or more "
                         "(8192 is the default)")
    assert not (tmp_path / "o").exists()
    # The number is what such a tokenizer really holds: exactly that many at that size, more above it.
    sentences = [s for d in iter_documents(str(corpus), min_doc_words=0) for s in d]
    assert len(train_tokenizer(sentences, vocab_size=needed)) == needed
    assert len(train_tokenizer(sentences, vocab_size=needed + 10)) == needed + 10
    with pytest.raises(WorkbenchError, match=f"pass --vocab-size {needed} or more"):
        train_tokenizer(sentences, vocab_size=needed - 1)


# ------------------------------------------------------------- a report that is not above
def _edited_config(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    config["intermediate_size"] = 128  # the weights hold 256
    (model / "config.json").write_text(json.dumps(config))


def test_weights_that_do_not_fit_the_config_are_named(tmp_path, capsys, tiny_bert, minilm_tokenizer):
    _edited_config(tiny_bert)
    capsys.readouterr()  # the fixture's save progress
    shapes = "is [256] in the weights but [128] by the config (was config.json edited?)"
    code, _, err = _run(["finetune", "--model", str(tiny_bert), "--task", "builtin:rt-polarity",
                         "--out", str(tmp_path / "f")], capsys)
    assert _only_line(code, err) == (
        f"error: could not load --model '{tiny_bert}': 6 weight tensor(s) do not fit its config.json, e.g. "
        f"bert.encoder.layer.0.intermediate.dense.bias {shapes}; pass a BERT checkpoint dir or builtin:minilm")
    for load, what in ((load_attention_model, "encoder.layer.0"), (load_ablation_model, "bert.encoder.layer.0")):
        with pytest.raises(WorkbenchError) as refused:
            load(str(tiny_bert), device="cpu")
        assert f"(6 weight tensor(s) do not fit its config.json, e.g. {what}.intermediate.dense.bias {shapes})" \
            in str(refused.value)
        assert "above report" not in str(refused.value)
    with pytest.raises(WorkbenchError) as refused:
        build_model("tiny", minilm_tokenizer, init=str(tiny_bert))  # `pretrain --init`
    assert str(refused.value) == (
        f"could not load --init '{tiny_bert}': 6 weight tensor(s) do not fit its config.json, e.g. "
        f"bert.encoder.layer.0.intermediate.dense.bias {shapes}; pass a BERT checkpoint dir or builtin:minilm")


# ------------------------------------------------------- a tokenizer without token_type_ids
def test_head_ablation_works_for_a_tokenizer_without_token_type_ids(tiny_bert, wiki_documents, minilm_tokenizer):
    AutoTokenizer.from_pretrained(tiny_bert, model_input_names=["input_ids", "attention_mask"]).save_pretrained(tiny_bert)
    model, tokenizer, has_head = load_ablation_model(str(tiny_bert), device="cpu")  # as notebook 03 loads it
    pair = (wiki_documents[0][0], wiki_documents[0][1])
    assert "token_type_ids" not in tokenizer(*pair) and has_head  # the case: the tokenizer leaves them out
    segments = [(d[0], d[1]) for d in wiki_documents[:6]] + [d[2] for d in wiki_documents[:2]]
    batches = ablation_batches(tokenizer, segments, MaskingConfig(), seed=0, batch_size=4)
    reference = ablation_batches(minilm_tokenizer, segments, MaskingConfig(), seed=0, batch_size=4)
    for got, want in zip(batches, reference, strict=True):  # the same batches as a tokenizer that returns them
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert int(batches[0]["token_type_ids"].sum()) > 0  # sentence B is segment 1, as pretraining made it
    importance = head_importance(model, batches, mlm_loss_metric)
    assert importance.shape == (2, 2) and np.isfinite(importance).all() and np.abs(importance).max() > 0
    encoder, attention_tokenizer = load_attention_model(str(tiny_bert), device="cpu")
    examples = list(collect_attentions(encoder, attention_tokenizer, segments[:2], max_length=64))
    assert len(examples) == 2
