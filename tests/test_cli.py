"""The CLI: `workbench prepare` on real text, and one-line errors with a non-zero exit for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip() and "examples/s" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def corpus_dir(tmp_path, wiki_documents) -> Path:
    """A small .txt corpus of real Wikipedia documents."""
    path = tmp_path / "wiki.txt"
    path.write_text("\n\n".join("\n".join(d[:30]) for d in wiki_documents[:12]) + "\n")
    return path


def test_prepare_writes_stats_json_and_table(tmp_path, corpus_dir, capsys):
    out = tmp_path / "prepared"
    code, stdout, _ = _run(["prepare", "--corpus", str(corpus_dir), "--out", str(out),
                            "--max-seq-length", "64", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    for key in ("documents", "sentences", "tokens", "pairs", "is_next_fraction", "unk_rate",
                "truncated_fraction", "mean_pair_tokens", "build_seconds"):
        assert key in stats and key in stdout
    assert stats["documents"] == 12 and stats["max_pair_tokens"] <= 64
    # A second run is a cached reload of the same data.
    code, stdout, _ = _run(["prepare", "--corpus", str(corpus_dir), "--out", str(out),
                            "--max-seq-length", "64", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0 and "cached" in stdout and "True" in stdout


def test_prepare_trains_a_tokenizer(tmp_path, corpus_dir, capsys):
    out = tmp_path / "p"
    code, _, _ = _run(["prepare", "--corpus", str(corpus_dir), "--out", str(out), "--tokenizer", "train",
                       "--vocab-size", "1500", "--objective", "sop", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["objective"] == "sop"
    from transformers import AutoTokenizer
    assert len(AutoTokenizer.from_pretrained(str(out / "tokenizer"))) <= 1500


def test_missing_path(tmp_path, capsys):
    code, _, err = _run(["prepare", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line_error(code, err, "missing.txt", "does not exist")


def test_empty_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, _, err = _run(["prepare", "--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o"),
                         "--cache-dir", str(tmp_path / "c")], capsys)
    _assert_one_line_error(code, err, "no documents")


def test_one_sentence_documents(tmp_path, capsys):
    (tmp_path / "one.txt").write_text("The cat sat on the mat.\n\nA dog ran in the park.\n\nBirds sing.\n")
    code, _, err = _run(["prepare", "--corpus", str(tmp_path / "one.txt"), "--min-doc-words", "0",
                         "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")], capsys)
    _assert_one_line_error(code, err, "one sentence", "--objective mlm")


def test_invalid_utf8_strict_then_replace(tmp_path, wiki_documents, capsys):
    good = "\n".join(wiki_documents[0][:20]).encode()
    bad = good + b"\nBroken \xff\xfe bytes here in this sentence.\n\n" + "\n".join(wiki_documents[1][:20]).encode()
    path = tmp_path / "bad.txt"
    path.write_bytes(bad)
    code, _, err = _run(["prepare", "--corpus", str(path), "--out", str(tmp_path / "o"),
                         "--cache-dir", str(tmp_path / "c")], capsys)
    _assert_one_line_error(code, err, "bad.txt", f"offset {len(good) + 8}", "--errors replace")
    code, _, err = _run(["prepare", "--corpus", str(path), "--out", str(tmp_path / "o"), "--errors", "replace",
                         "--cache-dir", str(tmp_path / "c"), "--validation-fraction", "0"], capsys)
    assert code == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["replaced_bytes"] >= 1 and "warning:" in err


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "model.txt"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    code, _, err = _run(["prepare", "--corpus", str(path), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line_error(code, err, "model.txt", "binary")


def test_max_seq_length_above_position_limit(tmp_path, capsys):
    code, _, err = _run(["prepare", "--max-seq-length", "1024", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line_error(code, err, "1024", "position limit 512", "--max-seq-length 512")


def test_vocab_smaller_than_special_tokens(tmp_path, corpus_dir, capsys):
    code, _, err = _run(["prepare", "--corpus", str(corpus_dir), "--tokenizer", "train", "--vocab-size", "3",
                         "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")], capsys)
    _assert_one_line_error(code, err, "vocab_size 3", "special tokens")


def test_invalid_config_values(tmp_path, capsys):
    code, _, err = _run(["prepare", "--objective", "clm", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line_error(code, err, "objective")
    code, _, err = _run(["prepare", "--short-seq-prob", "lots", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line_error(code, err, "not a number")


def test_console_script_exit_status_and_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "workbench", "prepare", "--corpus", str(tmp_path / "nope.txt")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
