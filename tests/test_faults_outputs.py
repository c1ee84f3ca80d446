"""Never lose a user's files, second pass (issue 19, items 1-6): look-alike temporaries, trackers' folders,
files added inside owned folders, concurrent cache builders, unwritable or full folders, changed caches.

Each case checks the exit status, the one-line message and that every file the workbench did not write
(hidden look-alikes of its temporaries, files inside its folders, targets of symlinks) is byte-identical
afterwards. Commands run in-process through ``cli.main``; concurrency runs real processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from cli_runs import build_world, command_argv
from cli_runs import no_work as _no_work
from cli_runs import refused as _refused
from cli_runs import run_cli as _run

from workbench.config import DataConfig
from workbench.data import examples as pretraining_data
from workbench.data.examples import prepare_dataset
from workbench.training import checkpoint as ckpt
from workbench.training.checkpoint import checkpoint_problem, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A 10-document Wikipedia corpus, its prepared NSP data and a 2-step run with checkpoint-1 and -2."""
    return build_world(tmp_path_factory.mktemp("faults_outputs"))


def _argv(command: str, world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """The tiniest arguments of each command (finetune reads checkpoint-2)."""
    return command_argv(command, world, out, *extra, finetune_model=world["run"] / "checkpoint-2")




def _note(err: str, *fragments: str) -> str:
    """The one `note:` line of stderr that holds every fragment."""
    lines = [line for line in err.splitlines() if line.startswith("note: ") and all(f in line for f in fragments)]
    assert len(lines) == 1, err
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every file (bytes), folder (None) and link (its target) under ``root``, links not followed."""
    snap: dict[str, bytes | str | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            snap[rel] = os.readlink(p) if p.is_symlink() else None if p.is_dir() else p.read_bytes()
    return snap


_LOOK_ALIKES = (".thesis.old-2024", ".env.tmp-31337", ".checkpoint-2.tmp-4194999.00ff",
                ".run.json.tmp-4194999.0123abcd0123456789abcdef")


def _look_alikes(out: Path) -> None:
    """The issue's hidden files named like the workbench's temporaries, and older versions' patterns."""
    (out / ".thesis.old-2024").mkdir(parents=True)
    (out / ".thesis.old-2024" / "ch1.tex").write_text("ch1\n")
    (out / ".env.tmp-31337").write_text("KEY=1\n")
    (out / ".checkpoint-2.tmp-4194999.00ff").mkdir()  # pid 4194999 never runs (above Linux's pid_max)
    (out / ".checkpoint-2.tmp-4194999.00ff" / "model.safetensors").write_bytes(b"my weights")
    (out / ".run.json.tmp-4194999.0123abcd0123456789abcdef").write_text("{}")  # today's pattern, forged check


# ------------------------------------------------------------- 1. temporaries and refusals
@pytest.mark.parametrize(("command", "clash"), [("prepare", "stats.json"), ("report", "index.html")])
def test_a_refused_command_changes_nothing_not_even_look_alike_temporaries(command, clash, world, tmp_path,
                                                                         capsys, monkeypatch):
    out = tmp_path / "o"
    _look_alikes(out)
    (out / clash).write_text("{}\n")
    before = _snapshot(out)
    _no_work(monkeypatch)
    rc, err = _run(_argv(command, world, out), capsys)
    _refused(rc, err, f"{out} holds {clash}, which workbench did not write", "pass another --out")
    assert _snapshot(out) == before


@pytest.mark.parametrize("command", ["pretrain", "heads", "finetune"])
def test_commands_that_write_keep_look_alike_temporaries(command, world, tmp_path, capsys):
    out = tmp_path / "o"
    if command == "pretrain":
        shutil.copytree(world["run"], out)
    _look_alikes(out)
    before = _snapshot(out)
    rc, err = _run(_argv(command, world, out, *(["--overwrite"] if command == "pretrain" else [])), capsys)
    assert rc == 0, err
    after = _snapshot(out)
    looks = {k: v for k, v in before.items() if k.split("/")[0] in _LOOK_ALIKES}
    assert len(looks) == 6 and {k: after.get(k) for k in looks} == looks


# ------------------------------------------------------------------------- 2. trackers' folders
@pytest.mark.parametrize("linked", [True, False])
def test_finetune_never_clears_a_tensorboard_folder_it_did_not_write(linked, world, tmp_path, capsys):
    out, tb = tmp_path / "o", tmp_path / "tb"
    out.mkdir()
    events = (out / "tensorboard") if not linked else tb
    events.mkdir()
    (events / "events.out.tfevents.1.lab.7.0").write_text("x\n")
    if linked:
        (out / "tensorboard").symlink_to(tb)
    before, target = _snapshot(out), _snapshot(tb) if linked else None
    rc, err = _run(_argv("finetune", world, out, "--report-to", "none"), capsys)
    assert rc == 0, err
    after = _snapshot(out)
    assert {k: after.get(k) for k in before} == before
    if linked:
        assert _snapshot(tb) == target and (out / "tensorboard").is_symlink()


# -------------------------------------------------------------- 3. files added to owned folders
def test_overwrite_moves_files_added_to_checkpoints_aside(world, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(world["run"], out)
    (out / "checkpoint-1" / "my_eval.json").write_text('{"f1": 0.5}\n')
    (out / "checkpoint-2" / "notes").mkdir()
    (out / "checkpoint-2" / "notes" / "NOTES.md").write_text("# what I saw\n")
    rc, err = _run(_argv("pretrain", world, out, "--overwrite"), capsys)
    assert rc == 0, err
    _note(err, f"moved the files you added to {out / 'checkpoint-1'} aside to {out / 'checkpoint-1.user-files'}",
          "my_eval.json")
    _note(err, f"aside to {out / 'checkpoint-2.user-files'}", "notes/NOTES.md")
    assert (out / "checkpoint-1.user-files" / "my_eval.json").read_text() == '{"f1": 0.5}\n'
    assert (out / "checkpoint-2.user-files" / "notes" / "NOTES.md").read_text() == "# what I saw\n"
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]  # the new run's
    assert checkpoint_problem(out / "checkpoint-2") is None


def test_a_rebuild_keeps_files_added_to_the_dataset_folder(world, tmp_path, capsys):
    out = tmp_path / "prepared"
    shutil.copytree(world["data"], out)
    (out / "dataset" / "README.md").write_text("# my dataset card\n")
    rc, err = _run(_argv("prepare", world, out, "--max-seq-length", "48"), capsys)  # a new key: a rebuild
    assert rc == 0, err
    _note(err, f"kept the files you added to {out / 'dataset'} in the new dataset: README.md")
    assert (out / "dataset" / "README.md").read_text() == "# my dataset card\n"
    assert pretraining_data.load_prepared(out).stats["max_seq_length"] == 48


# ---------------------------------------------------------------- 4. concurrent cache builders
def _small_corpus(world: dict[str, Path], path: Path) -> Path:
    shutil.copy(world["corpus"], path)
    return path


@pytest.mark.slow
def test_two_prepares_of_one_cache_at_once_both_succeed(world, tmp_path):
    corpus, cache = _small_corpus(world, tmp_path / "small.txt"), tmp_path / "cache"
    argv = [sys.executable, "-m", "workbench", "prepare", "--corpus", str(corpus), "--tokenizer", "train",
            "--vocab-size", "300", "--min-doc-words", "0", "--max-seq-length", "32", "--cache-dir", str(cache)]
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outs, strict=True):
        assert p.returncode == 0, stderr
        assert "error:" not in stderr and "Traceback" not in stderr
    keys = [p for p in cache.iterdir() if p.name != "tokenizers" and not p.name.startswith(".")]
    assert len(keys) == 1 and len(list((cache / "tokenizers").glob("*/tokenizer.json"))) == 1
    assert sorted("cached" in o and "True" in o.split("cached")[1].split("\n")[0] for o, _ in outs) in (
        [False, True], [True, True])  # one built; the other reused it (or both found it built)


@pytest.mark.slow
def test_a_parallel_sweep_on_a_corpus_first_use_runs_every_combination(world, tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('corpus = ""\ncache_dir = ""\nmask_rate = 0.1\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# prepare"), params, nbformat.v4.new_code_cell(
        "from workbench.config import DataConfig\nfrom workbench.data.examples import prepare_dataset\n"
        "data = prepare_dataset(DataConfig(corpus=corpus, tokenizer='train', vocab_size=300, min_doc_words=0,\n"
        "                                  max_seq_length=32, cache_dir=cache_dir))\nprint(data.stats['pairs'])")]
    nbformat.write(nb, nbs / "01_prepare.ipynb")
    corpus = _small_corpus(world, tmp_path / "small.txt")
    done = subprocess.run([sys.executable, "-m", "workbench", "sweep", "--param", "mask_rate=0.1,0.2", "--jobs", "2",
                           "--notebooks-dir", str(nbs), "--out", str(out), "-p", f"corpus={corpus}",
                           "-p", f"cache_dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert "error:" not in done.stderr


# ---------------------------------------------------------------- 5. unwritable or full folders
@contextlib.contextmanager
def _mounted(target: Path, *options: str) -> Iterator[None]:
    """Mount ``options`` on ``target`` for the block (root only; skipped where mounts are not allowed)."""
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", *options, str(target)], capture_output=True).returncode:
        pytest.skip("needs root and mount")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only: a read-only bind mount as root (root ignores permissions), else chmod 555."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    with _mounted(folder, "--bind", str(folder)):
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode:
            pytest.skip("needs a read-only remount")
        yield


@pytest.mark.parametrize("command", ["prepare", "pretrain", "heads", "finetune", "report"])
def test_a_read_only_out_is_refused_before_any_work(command, world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    (out / "thesis.tex").write_text("mine\n")
    _look_alikes(out)
    before = _snapshot(out)
    _no_work(monkeypatch)
    with _read_only(out):  # pretrain --overwrite: the foreign file alone would not stop it
        rc, err = _run(_argv(command, world, out, *(["--overwrite"] if command == "pretrain" else [])), capsys)
    _refused(rc, err, f"--out {out} cannot be written", "pass a folder you can write to as --out")
    assert _snapshot(out) == before


def test_a_full_device_is_refused_before_any_work(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    with _mounted(out, "-t", "tmpfs", "-o", "size=64k", "tmpfs"):
        (out / "filler").write_bytes(b"\0" * 60_000)
        _no_work(monkeypatch)
        rc, err = _run(_argv("finetune", world, out), capsys)
        _refused(rc, err, f"--out {out}: no space left on its device", "free some space or pass another --out")
        assert sorted(p.name for p in out.iterdir()) == ["filler"]


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "small-disk"
    size = _dir_size(world["run"] / "checkpoint-1")
    with _mounted(out, "-t", "tmpfs", "-o", f"size={size + size // 2}", "tmpfs"):  # checkpoint-1 fits, -2 not
        (out / "notes.txt").write_text("mine\n")
        rc, err = _run(_argv("pretrain", world, out, "--save-every", "1", "--overwrite"), capsys)
        _refused(rc, err, f"no space left on the device of {out} to save checkpoint-2",
                 f"the last good checkpoint, {out / 'checkpoint-1'}, is intact", "--resume")
        assert checkpoint_problem(out / "checkpoint-1") is None
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".checkpoint")) == []
        assert (out / "notes.txt").read_text() == "mine\n"


def test_a_save_that_fails_for_space_is_one_line_anywhere(world, tmp_path, capsys, monkeypatch):
    """torch's own failure on a full disk ("unexpected pos"), simulated where no small disk can be mounted."""
    out = tmp_path / "run"
    real_save, full = ckpt.torch.save, {"now": False}

    def save(obj, f, *args, **kwargs):
        if Path(f).name == ckpt.TRAINING_STATE and "checkpoint-2" in str(f):
            full["now"] = True
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4544 vs 4434")
        return real_save(obj, f, *args, **kwargs)

    real_usage = shutil.disk_usage
    monkeypatch.setattr(ckpt.torch, "save", save)
    monkeypatch.setattr("workbench.atomic.shutil.disk_usage",
                        lambda p: real_usage(p)._replace(free=0) if full["now"] else real_usage(p))
    rc, err = _run(_argv("pretrain", world, out, "--save-every", "1"), capsys)
    _refused(rc, err, f"no space left on the device of {out} to save checkpoint-2",
             f"the last good checkpoint, {out / 'checkpoint-1'}, is intact")
    assert checkpoint_problem(out / "checkpoint-1") is None
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    assert not [p for p in out.iterdir() if p.name.startswith(".checkpoint-2")]


# ------------------------------------------------------------------- 6. caches are checksummed
def _same_size_edit(path: Path) -> None:
    """Overwrite bytes in the middle of ``path``, keeping its size (what a size check cannot see)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def test_a_same_size_edit_of_a_data_dir_is_refused(world, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    (data / "notes.txt").write_text("mine\n")
    arrow = sorted((data / "dataset" / "train").glob("*.arrow"))[0]
    size = arrow.stat().st_size
    _same_size_edit(arrow)
    assert arrow.stat().st_size == size
    before = _snapshot(data)
    rc, err = _run(_argv("pretrain", world, tmp_path / "run", "--data", str(data)), capsys)
    _refused(rc, err, f"prepared dataset {data} is damaged",
             f"dataset/train/{arrow.name} differs from what was written", "rebuild it with `workbench prepare")
    assert _snapshot(data) == before and not (tmp_path / "run").exists()


def test_a_same_size_edit_of_a_cached_dataset_is_rebuilt(world, tmp_path, capsys, minilm_tokenizer):
    cfg = DataConfig(corpus=str(world["corpus"]), tokenizer="builtin:minilm", max_seq_length=32, dupe_factor=1,
                     validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    first = prepare_dataset(cfg, tokenizer=minilm_tokenizer)
    rows = first.dataset["train"].num_rows
    arrow = sorted((first.path / "dataset" / "train").glob("*.arrow"))[0]
    _same_size_edit(arrow)
    capsys.readouterr()
    again = prepare_dataset(cfg, tokenizer=minilm_tokenizer)
    err = capsys.readouterr().err
    _note(err, f"the prepared dataset in {first.path} is damaged (dataset/train/{arrow.name} differs from what "
               "was written); rebuilding it")
    assert again.stats["cached"] is False and again.dataset["train"].num_rows == rows
    assert prepare_dataset(cfg, tokenizer=minilm_tokenizer).stats["cached"] is True


def test_a_same_size_edit_of_a_cached_tokenizer_is_trained_again(world, tmp_path, capsys):
    cfg = DataConfig(corpus=str(world["corpus"]), tokenizer="train", vocab_size=300, min_doc_words=0,
                     cache_dir=str(tmp_path / "cache"))
    first = pretraining_data._resolve_tokenizer(cfg)
    cached = next((tmp_path / "cache" / "tokenizers").glob("*/tokenizer.json"))
    good = cached.read_bytes()
    cached.write_text(cached.read_text().replace('"[UNK]": 1', '"[UNK]": 9', 1))  # same size, valid JSON
    assert len(cached.read_bytes()) == len(good) and cached.read_bytes() != good
    capsys.readouterr()
    again = pretraining_data._resolve_tokenizer(cfg)
    err = capsys.readouterr().err
    _note(err, f"the cached tokenizer {cached.parent} is damaged (tokenizer.json differs from what was written); "
               "training it again")
    assert cached.read_bytes() == good and again.get_vocab() == first.get_vocab()
