"""Faults a hostile user meets (issue 15, items 1-3): output folders, damaged caches, damaged checkpoints.

Each case checks the exit status 2, the one-line message (no traceback) and that every file the
workbench did not write is byte-identical afterwards. Commands run in-process through
``cli.main`` (what ``python -m workbench`` calls); one subprocess checks the real entry point.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runs import build_world, command_argv
from cli_runs import no_work as _no_work
from cli_runs import refused as _refused
from cli_runs import run_cli as _run

from workbench.config import DataConfig, TrainConfig
from workbench.data import examples as pretraining_data
from workbench.data.examples import load_prepared, prepare_dataset
from workbench.outputs import MANIFEST, temp_name
from workbench.training.checkpoint import (
    TRAINING_STATE,
    WEIGHTS,
    checkpoint_problem,
    list_checkpoints,
)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A 10-document Wikipedia corpus, its prepared NSP data and a 2-step run with checkpoint-1 and -2."""
    return build_world(tmp_path_factory.mktemp("faults"))


def _data_cfg(corpus: Path, cache: Path, **overrides) -> DataConfig:
    base = dict(corpus=str(corpus), tokenizer="builtin:minilm", max_seq_length=32, dupe_factor=1,
                validation_fraction=0.25, cache_dir=str(cache))
    return DataConfig(**{**base, **overrides})


def _train_cfg(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", max_steps=2, batch_size=4, eval_every=0,
                save_every=0, progress=False, seed=1)
    return TrainConfig(**{**base, **overrides})


def _argv(command: str, world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """The tiniest arguments of each command (finetune reads the run folder)."""
    return command_argv(command, world, out, *extra)




def _snapshot(root: Path, names: list[str] | None = None) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``root``'s entries ``names`` (default: all)."""
    tops = [root / n for n in names] if names is not None else sorted(root.iterdir())
    snap: dict[str, bytes | None] = {}
    for top in tops:
        for p in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            snap[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return snap


# ----------------------------------------------------------------------- 1. output folders
def test_out_that_names_a_file_is_refused_by_the_real_entry_point(tmp_path):
    target = tmp_path / "results.csv"
    target.write_bytes(b"id,score\n1,0.5\n")
    done = subprocess.run([sys.executable, "-m", "workbench", "prepare", "--max-documents", "5",
                           "--out", str(target)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = _refused(done.returncode, done.stderr, f"--out {target} is a file, not a folder")
    assert done.stderr.strip() == line
    assert target.read_bytes() == b"id,score\n1,0.5\n"


@pytest.mark.parametrize("command", ["prepare", "pretrain", "heads", "finetune"])
def test_out_that_names_a_file_is_refused_before_any_work(command, world, tmp_path, capsys, monkeypatch):
    target = tmp_path / "thesis.pdf"
    target.write_bytes(b"%PDF-1.7 draft")
    _no_work(monkeypatch)
    rc, err = _run(_argv(command, world, target), capsys)
    _refused(rc, err, f"--out {target} is a file, not a folder; pass a folder")
    assert target.read_bytes() == b"%PDF-1.7 draft"


@pytest.mark.parametrize(("command", "name"), [("prepare", "stats.json"), ("prepare", "dataset"),
                                               ("heads", "head_stats.csv"), ("finetune", "results.json"),
                                               ("pretrain", "metrics.jsonl"), ("pretrain", "checkpoint-2")])
def test_a_foreign_entry_under_a_workbench_name_is_refused_before_any_work(command, name, world, tmp_path,
                                                                           capsys, monkeypatch):
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "src" / "main.py").write_text("print('mine')\n")
    if name in ("dataset", "checkpoint-2"):
        (out / name).mkdir()
        (out / name / "notes.md").write_text("my folder")
    else:
        (out / name).write_text("my own file")
    before = _snapshot(out)
    _no_work(monkeypatch)
    extra = ["--overwrite"] if command == "pretrain" else []  # --overwrite still keeps foreign files
    rc, err = _run(_argv(command, world, out, *extra), capsys)
    _refused(rc, err, f"{out} holds {name}, which workbench did not write", "pass another --out")
    assert _snapshot(out) == before


def test_prepare_keeps_user_files_beside_the_dataset_and_across_rebuilds(world, tmp_path, capsys):
    out = tmp_path / "prepared"
    (out / "drafts").mkdir(parents=True)
    (out / "notes.txt").write_text("corpus notes")
    (out / "drafts" / "a.md").write_text("draft")
    rc, err = _run(_argv("prepare", world, out), capsys)
    assert rc == 0, err
    (out / "added-later.txt").write_text("written after the first prepare")
    before = _snapshot(out, ["notes.txt", "drafts", "added-later.txt"])
    rc, err = _run(_argv("prepare", world, out, "--max-seq-length", "48"), capsys)  # a rebuild, new key
    assert rc == 0, err
    assert _snapshot(out, ["notes.txt", "drafts", "added-later.txt"]) == before
    assert load_prepared(out).stats["max_seq_length"] == 48


def test_overwrite_never_deletes_a_foreign_checkpoint_named_folder(world, tmp_path, capsys):
    out = tmp_path / "run"
    for name in ("checkpoint-7", "checkpoint-10"):  # not steps this run writes; 10 is newer than ours
        (out / name).mkdir(parents=True)
        (out / name / "model.safetensors").write_bytes(b"my weights")
        (out / name / TRAINING_STATE).write_bytes(b"my state")
    before = _snapshot(out)
    rc, err = _run(_argv("pretrain", world, out), capsys)
    _refused(rc, err, f"--out {out} holds files that are not a workbench run", "--overwrite")
    for extra in (["--overwrite", "--save-every", "1", "--keep-checkpoints", "1"], ["--overwrite"]):
        rc, err = _run(_argv("pretrain", world, out, *extra), capsys)  # keep 1: pruning runs
        assert rc == 0, err
        assert _snapshot(out, ["checkpoint-7", "checkpoint-10"]) == before
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]  # ours only


def test_temporaries_of_a_killed_run_are_cleaned_by_the_next(world, tmp_path, capsys):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    out = tmp_path / "run"
    shutil.copytree(world["run"], out)
    stale = out / temp_name("checkpoint-3", pid=dead)  # a save killed part-way
    stale.mkdir()
    (stale / WEIGHTS).write_bytes(b"half")
    (out / ".my-hidden-notes").write_text("mine")
    rc, err = _run(_argv("pretrain", world, out, "--overwrite"), capsys)
    assert rc == 0, err
    assert not stale.exists() and (out / ".my-hidden-notes").read_text() == "mine"


# ------------------------------------------------------------------------------- 2. caches
def _truncate(path: Path, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(path.stat().st_size * keep))


def _arrow_file(data: Path) -> Path:
    return sorted((data / "dataset" / "train").glob("*.arrow"))[0]


def test_a_damaged_data_dir_is_refused_with_one_line(world, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    (data / "notes.txt").write_text("mine")
    arrow = _arrow_file(data)
    _truncate(arrow)
    rc, err = _run(_argv("pretrain", world, tmp_path / "run", "--data", str(data)), capsys)
    line = _refused(rc, err, f"prepared dataset {data} is damaged", f"{arrow.name} has ",
                    f"rebuild it with `workbench prepare --out {data}`")
    assert "ArrowInvalid" not in line and not (tmp_path / "run").exists()
    # Without a manifest (prepared by an older workbench) the load itself notices.
    (data / MANIFEST).unlink()
    rc, err = _run(_argv("pretrain", world, tmp_path / "run", "--data", str(data)), capsys)
    _refused(rc, err, f"prepared dataset {data} is damaged (dataset is unreadable")
    (data / MANIFEST).write_bytes((world["data"] / MANIFEST).read_bytes())
    shutil.copy(_arrow_file(world["data"]), arrow)
    (data / "stats.json").write_text('{"documents": 1')  # a full disk mid-write
    rc, err = _run(_argv("pretrain", world, tmp_path / "run", "--data", str(data)), capsys)
    _refused(rc, err, f"prepared dataset {data} is damaged (stats.json")
    assert (data / "notes.txt").read_text() == "mine"


def test_a_damaged_dataset_cache_is_rebuilt(world, tmp_path, capsys, minilm_tokenizer):
    cfg = _data_cfg(world["corpus"], tmp_path / "cache")
    first = prepare_dataset(cfg, tokenizer=minilm_tokenizer)
    rows = first.dataset["train"].num_rows
    _truncate(_arrow_file(first.path), 0.3)
    capsys.readouterr()
    again = prepare_dataset(cfg, tokenizer=minilm_tokenizer)
    err = capsys.readouterr().err
    assert f"note: the prepared dataset in {first.path} is damaged" in err and "rebuilding it" in err
    assert again.stats["cached"] is False and again.dataset["train"].num_rows == rows
    assert prepare_dataset(cfg, tokenizer=minilm_tokenizer).stats["cached"] is True
    (first.path / "dataset" / "dataset_dict.json").unlink()  # a killed copy: a file missing
    assert prepare_dataset(cfg, tokenizer=minilm_tokenizer).dataset["train"].num_rows == rows


def test_a_damaged_tokenizer_cache_is_trained_again(world, tmp_path, capsys):
    cfg = _data_cfg(world["corpus"], tmp_path / "cache", tokenizer="train", vocab_size=400, min_doc_words=0)
    first = pretraining_data._resolve_tokenizer(cfg)
    cached = next((tmp_path / "cache" / "tokenizers").glob("*/tokenizer.json"))
    (tmp_path / "cache" / "tokenizers" / "my-notes.txt").write_text("mine")
    cached.write_text(cached.read_text()[:500])  # truncated mid-JSON
    capsys.readouterr()
    again = pretraining_data._resolve_tokenizer(cfg)
    err = capsys.readouterr().err
    assert f"note: the cached tokenizer {cached.parent} is damaged" in err and "Traceback" not in err
    assert json.loads(cached.read_text())["model"]["type"] == "WordPiece"
    assert len(again) == len(first) and again("a sentence")["input_ids"][0] == again.cls_token_id
    assert (tmp_path / "cache" / "tokenizers" / "my-notes.txt").read_text() == "mine"


# -------------------------------------------------------------------------- 3. checkpoints
class _Payload:
    """Pickled as a call to os.mkdir: loading it would create the marker folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(world, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(world["run"], out)
    _truncate(out / "checkpoint-2" / WEIGHTS)
    rc, err = _run(_argv("pretrain", world, out, "--save-every", "1", "--resume"), capsys)
    assert rc == 0, err
    assert (f"warning: --resume: checkpoint {out / 'checkpoint-2'} is damaged ({WEIGHTS} has " in err
            and "resuming from checkpoint-1, the newest checkpoint that loads" in err)
    assert f"resumed from {out / 'checkpoint-1'} (step 1)" in err and "Traceback" not in err
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]
    assert list_checkpoints(out)[-1].joinpath(WEIGHTS).stat().st_size == (world["run"] / "checkpoint-2" / WEIGHTS).stat().st_size


def test_a_pickle_in_the_training_state_is_never_executed(world, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(world["run"], out)
    marker = tmp_path / "pickle-ran"
    resume = _argv("pretrain", world, out, "--save-every", "1", "--resume")
    torch.save({"step": _Payload(marker)}, out / "checkpoint-2" / TRAINING_STATE)
    rc, err = _run(resume, capsys)
    assert rc == 0, err
    assert (f"warning: --resume: checkpoint {out / 'checkpoint-2'} is damaged ({TRAINING_STATE} has " in err
            and "resuming from checkpoint-1" in err and not marker.exists())
    for step in (1, 2):  # the resumed run saved checkpoint-2 again; now poison both
        torch.save({"step": _Payload(marker)}, out / f"checkpoint-{step}" / TRAINING_STATE)
    rc, err = _run(resume, capsys)
    line = _refused(rc, err, f"--resume: every checkpoint in {out} is damaged (checkpoint-2: {TRAINING_STATE} has ",
                    "pass --overwrite to start over")
    assert "weights_only" not in line and not marker.exists()
    # Outside a recorded folder no size list catches it: the weights-only load refuses it.
    loose = tmp_path / "loose"
    shutil.copytree(out / "checkpoint-1", loose)
    assert checkpoint_problem(loose) == (f"{TRAINING_STATE} is unreadable (it holds objects other than tensors, "
                                         "and no pickle is ever executed)")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["finetune", "heads"])
def test_a_damaged_model_checkpoint_offers_the_previous_one(command, world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    _truncate(run / "checkpoint-2" / WEIGHTS, 0.9)
    for model in (run, run / "checkpoint-2"):  # a run dir resolves to its newest checkpoint
        rc, err = _run(_argv(command, world, tmp_path / "out", "--model", str(model)), capsys)
        _refused(rc, err, f"checkpoint {run / 'checkpoint-2'} is damaged ({WEIGHTS} has ",
                 f"pass the previous good one, --model {run / 'checkpoint-1'}")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- property: random trees
_NAMES = ["stats.json", "notes.txt", "src", "dataset", "tokenizer", "checkpoint-3", "checkpoint-7", "checkpoint-2",
          "metrics.jsonl", "eval.json", "run.json", "results.json", "predictions.tsv", "head_stats.csv", "model",
          ".hidden", "data.arrow", "README.md", "checkpoint-2.user-files",
          # The workbench's own temporary patterns, with a pid that never runs and no valid token:
          # older versions' names, the issue's look-alikes, and today's pattern with a forged check.
          ".stats.json.tmp-4194999", ".dataset.old-4194999.0a1b", ".checkpoint-2.tmp-4194999.00ff",
          ".env.tmp-31337", ".thesis.old-2024", ".run.json.tmp-4194999.0123abcd0123456789abcdef"]


def _random_tree(root: Path, rng: random.Random) -> None:
    """Foreign files and folders, named like the workbench's outputs or not, nested up to 3 deep."""
    def fill(folder: Path, depth: int) -> None:
        for name in rng.sample(_NAMES, rng.randint(1, 4)):
            if depth < 3 and rng.random() < 0.4:
                (folder / name).mkdir()
                fill(folder / name, depth + 1)
            else:
                (folder / name).write_bytes(rng.randbytes(rng.randint(0, 64)))

    root.mkdir(parents=True)
    fill(root, 1)


def test_random_foreign_trees_survive_every_command(world, tmp_path, capsys):
    commands = [("prepare", []), ("pretrain", ["--overwrite", "--save-every", "1", "--keep-checkpoints", "1"]),
                ("pretrain", ["--resume"]), ("pretrain", ["--overwrite"]), ("heads", []), ("finetune", [])]
    outcomes = []
    for seed in range(3):
        out = tmp_path / f"out{seed}"
        _random_tree(out, random.Random(seed))
        foreign = _snapshot(out)
        for command, extra in commands:
            rc, err = _run(_argv(command, world, out, *extra), capsys)
            if rc != 0:
                _refused(rc, err, str(out))
            outcomes.append(rc)
            assert {k: v for k, v in _snapshot(out).items() if k in foreign} == foreign, (seed, command)
            assert all(k in _snapshot(out) for k in foreign)
    assert outcomes.count(0) >= 6 and outcomes.count(2) >= 3  # both sides of the property were exercised
