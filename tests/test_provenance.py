"""provenance.collect: every field, the right commit, fast, and never raising."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch  # noqa: F401 - provenance reads the GPU only through an already imported torch

from workbench import __version__, provenance

REPO = Path(__file__).resolve().parents[1]


def test_collect_has_every_field_and_the_callers_extras():
    record = provenance.collect(precision="fp32", seed=3, data_cache_key="abc", note="x")
    assert set(provenance.FIELDS) <= set(record)
    assert record["precision"] == "fp32" and record["seed"] == 3 and record["note"] == "x"
    assert record["attention"] is None and record["num_processes"] is None  # not given: None
    assert set(record["packages"]) == set(provenance.PACKAGES)
    assert record["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert record["packages"]["workbench"] == __version__
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["os"] and record["cpu"] and record["device"] == (record["gpu"] or record["cpu"])
    assert record["command"] == sys.argv


def test_git_commit_and_dirty_flag_of_this_checkout():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                            text=True, check=True).stdout
    commit, dirty = provenance.git_state()
    assert commit == head and dirty == bool(status.strip())


def test_not_a_checkout_and_no_git_give_none(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "_PACKAGE_ROOT", tmp_path)  # not a repository
    assert provenance.git_state() == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    record = provenance.collect()
    assert record["git_commit"] is None and record["git_dirty"] is None


def test_a_repository_above_the_package_is_not_its_checkout(monkeypatch, tmp_path):
    # site-packages inside some other repository (a venv in a checkout) is not the workbench's.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    inner = tmp_path / "venv" / "site-packages"
    inner.mkdir(parents=True)
    monkeypatch.setattr(provenance, "_PACKAGE_ROOT", inner)
    assert provenance.git_state() == (None, None)


def test_collect_never_raises_and_is_fast(monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no metadata")
    monkeypatch.setattr(provenance.importlib.metadata, "version", broken)
    monkeypatch.setattr(provenance.platform, "platform", broken)
    record = provenance.collect()
    assert record["packages"]["torch"] is None and record["os"] is None
    assert record["packages"]["workbench"] == __version__  # falls back on the package's own
    monkeypatch.undo()
    provenance.collect()
    start = time.perf_counter()
    provenance.collect()
    assert time.perf_counter() - start < 0.2


def test_heads_writes_run_json_with_every_provenance_field(tiny_bert, wiki_documents, tmp_path):
    import json

    from workbench import cli

    model = tiny_bert
    corpus = tmp_path / "corpus.txt"  # four real documents, a blank line between them
    corpus.write_text("\n\n".join(" ".join(doc[:6]) for doc in wiki_documents[:4]) + "\n")
    out = tmp_path / "heads"
    assert cli.main(["heads", "--model", str(model), "--corpus", str(corpus), "--num-segments", "4",
                     "--max-seq-length", "32", "--seed", "9", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert (out / "head_stats.csv").is_file() and run["command"] == "heads"
    assert run["config"]["model"] == str(model) and run["config"]["num_segments"] == 4
    record = run["provenance"]
    assert set(provenance.FIELDS) <= set(record)
    assert record["attention"] == "eager" and record["precision"] == "fp32"  # attentions need eager
    assert record["seed"] == 9 and record["num_processes"] == 1
    assert record["git_commit"] == provenance.git_state()[0] and record["packages"]["transformers"]
    assert record["command"] == sys.argv  # this process's command line (pytest's here)
