"""workbench.outputs: the manifest of owned entries, atomic writes, refusals and stale temporaries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workbench.outputs as outputs
from workbench.errors import WorkbenchError
from workbench.outputs import (
    MANIFEST,
    OutputDir,
    check_out_path,
    temp_name,
    write_json_atomic,
    write_text_atomic,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed run's temporaries carry such a pid)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path):
    path = tmp_path / "eval.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    write_text_atomic(tmp_path / "note.txt", "x" * 10_000)
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "note.txt"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    write_json_atomic(path, {"a": 1})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_check_out_path_refuses_a_file_and_a_file_on_the_way(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    with pytest.raises(WorkbenchError, match=r"^--out .*report.pdf is a file, not a folder; pass a folder") as err:
        check_out_path(tmp_path / "report.pdf")
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="report.pdf is a file, not a folder; pass another --model-out"):
        check_out_path(tmp_path / "report.pdf" / "sub", "--model-out")
    assert check_out_path(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert (tmp_path / "report.pdf").read_bytes() == b"%PDF" and not (tmp_path / "new").exists()


def test_entries_written_are_owned_and_others_foreign(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoint-7").mkdir()
    out = OutputDir.open(tmp_path, "test")
    out.write_json("stats.json", {"pairs": 3})
    out.write_text("eval.json", "{}")
    out.replace_dir("dataset", lambda d: (d / "train.arrow").write_bytes(b"\0" * 100))
    assert out.owned() == ["dataset", "eval.json", "stats.json"]
    assert out.foreign() == ["checkpoint-7", "notes.txt"]
    # what a later command sees is the same record, read back from the manifest
    again = OutputDir.open(tmp_path, "other")
    assert again.owned() == out.owned() and again.foreign() == out.foreign()
    record = json.loads((tmp_path / MANIFEST).read_text())["entries"]["dataset"]
    assert record["command"] == "test" and record["files"] == {"train.arrow": 100}


def test_foreign_entries_are_never_replaced_or_removed(tmp_path):
    (tmp_path / "stats.json").write_text("my own stats")
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "rows.csv").write_text("1,2\n")
    out = OutputDir.open(tmp_path, "prepare")
    built = []
    with pytest.raises(WorkbenchError, match=r"holds stats.json, which workbench did not write .* pass another --out"):
        out.write_json("stats.json", {})
    with pytest.raises(WorkbenchError, match="holds dataset, which workbench did not write"):
        out.replace_dir("dataset", built.append)
    assert built == []  # refused before the (costly) build
    assert out.remove("stats.json") is False and out.remove("dataset") is False
    with pytest.raises(WorkbenchError, match="holds stats.json, dataset"):
        out.check_writable(["stats.json", "dataset", "tokenizer"])
    assert (tmp_path / "stats.json").read_text() == "my own stats"
    assert (tmp_path / "dataset" / "rows.csv").read_text() == "1,2\n"


def test_a_user_file_put_under_a_recorded_name_is_foreign(tmp_path):
    out = OutputDir.open(tmp_path, "pretrain")
    out.write_text("eval.json", '{"loss": 1}')
    (tmp_path / "eval.json").unlink()
    (tmp_path / "eval.json").write_text("my notes about this run")
    assert not out.owns("eval.json") and out.foreign() == ["eval.json"]
    assert out.remove("eval.json") is False
    assert (tmp_path / "eval.json").read_text() == "my notes about this run"


def test_owned_entries_are_removed_and_replaced_atomically(tmp_path):
    out = OutputDir.open(tmp_path, "pretrain")
    out.replace_dir("checkpoint-1", lambda d: (d / "model.safetensors").write_bytes(b"1"))
    out.replace_dir("checkpoint-1", lambda d: (d / "model.safetensors").write_bytes(b"22"))
    assert (tmp_path / "checkpoint-1" / "model.safetensors").read_bytes() == b"22"

    def crash(d: Path) -> None:
        (d / "model.safetensors").write_bytes(b"half")
        raise OSError("killed")

    with pytest.raises(OSError, match="killed"):
        out.replace_dir("checkpoint-1", crash)
    assert (tmp_path / "checkpoint-1" / "model.safetensors").read_bytes() == b"22"
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "checkpoint-1"]
    assert out.remove("checkpoint-1") is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST] and out.owned() == []


def test_a_kill_between_record_and_rename_leaves_the_old_entry_owned(tmp_path, monkeypatch):
    out = OutputDir.open(tmp_path, "pretrain")
    out.write_text("run.json", "{}")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the manifest write, before the rename

    monkeypatch.setattr(outputs.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        out.write_text("run.json", '{"new": 1}')
    monkeypatch.undo()
    later = OutputDir.open(tmp_path, "pretrain")
    assert later.owns("run.json") and later.foreign() == []


def test_temporaries_of_dead_processes_are_cleaned_and_user_hidden_files_kept(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / temp_name("checkpoint-5", pid=dead)  # a save killed part-way
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    (tmp_path / temp_name("dataset", "old", pid=dead)).mkdir()
    (tmp_path / temp_name("stats.json", pid=dead)).write_text("{")
    live = tmp_path / temp_name("eval.json")  # a run still going (this process)
    live.write_text("{")
    # A user's files named like temporaries (an older workbench's patterns, a forged token): kept, foreign.
    look_alikes = [f".checkpoint-5.tmp-{dead}", f".dataset.old-{dead}.0a1b", f".stats.json.tmp-{dead}.ff00",
                   ".env.tmp-31337", ".thesis.old-2024", stale.name[:-1] + ("0" if stale.name[-1] != "0" else "1")]
    for name in look_alikes:
        (tmp_path / name).write_text("mine")
    (tmp_path / ".gitignore").write_text("*.pt\n")
    (tmp_path / ".draft.tmp").write_text("mine")
    out = OutputDir.open(tmp_path, "pretrain")
    assert len(list(tmp_path.iterdir())) == 4 + len(look_alikes) + 2  # opening removes nothing
    out.write_text("run.json", "{}")  # the first write cleans
    kept = sorted([".draft.tmp", ".gitignore", live.name, "run.json", MANIFEST, *look_alikes])
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    assert out.foreign() == sorted([".draft.tmp", ".gitignore", *look_alikes])
    assert all((tmp_path / name).read_text() == "mine" for name in look_alikes)


def test_another_machines_temporaries_on_a_shared_filesystem_are_kept_for_a_day(tmp_path, monkeypatch):
    from workbench import atomic

    dead = _dead_pid()
    own = tmp_path / atomic.temp_name("run.json", pid=dead)  # this machine's, its process gone
    other = "0123" if atomic.HOST_TAG != "0123" else "4567"
    monkeypatch.setattr(atomic, "HOST_TAG", other)  # names as a job on another node writes them
    busy = tmp_path / atomic.temp_name("index.html", pid=dead)  # written now: its pid cannot be looked up here
    stale = tmp_path / atomic.temp_name("figures", pid=dead)
    monkeypatch.undo()
    for p in (own, busy, stale):
        p.write_text("x")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    assert atomic.temp_host(busy.name) == other and atomic.temp_host(own.name) == atomic.HOST_TAG
    out = OutputDir.open(tmp_path, "sweep")
    assert len(list(tmp_path.iterdir())) == 3  # opening removes nothing
    out.write_text("run.json", "{}")  # the first write cleans: this machine's dead one and the day-old one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, "run.json", MANIFEST])


def test_verify_names_a_truncated_or_missing_file(tmp_path):
    out = OutputDir.open(tmp_path, "prepare")

    def build(d: Path) -> None:
        (d / "train").mkdir()
        (d / "train" / "data.arrow").write_bytes(b"\1" * 4096)
        (d / "state.json").write_text("{}")

    out.replace_dir("dataset", build)
    assert out.verify("dataset") is None
    with open(tmp_path / "dataset" / "train" / "data.arrow", "r+b") as f:
        f.truncate(1000)
    assert out.verify("dataset") == "dataset/train/data.arrow has 1000 bytes, 4096 were written"
    assert out.owns("dataset")  # damaged, still ours: it may be rebuilt
    (tmp_path / "dataset" / "state.json").unlink()
    assert out.verify("dataset") == "dataset/state.json is missing"
    assert out.verify("tokenizer") == "tokenizer was not written by workbench"


def test_a_copied_folder_keeps_its_ownership(tmp_path):
    out = OutputDir.open(tmp_path / "a", "prepare")
    out.write_json("stats.json", {"pairs": 3})
    out.replace_dir("dataset", lambda d: (d / "x.arrow").write_bytes(b"abc"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # new inodes: ownership by content
    (tmp_path / "b" / "notes.txt").write_text("mine")
    copy = OutputDir.open(tmp_path / "b", "prepare")
    assert copy.owned() == ["dataset", "stats.json"] and copy.foreign() == ["notes.txt"]


def test_writers_of_one_folder_merge_their_records(tmp_path):
    first, second = OutputDir.open(tmp_path, "pretrain"), OutputDir.open(tmp_path, "heads")
    first.write_text("run.json", "{}")
    second.write_text("head_stats.csv", "layer,head\n")  # its in-memory record predates run.json
    assert OutputDir.open(tmp_path, "x").owned() == ["head_stats.csv", "run.json"]


def test_a_damaged_manifest_owns_nothing_and_is_refused(tmp_path):
    out = OutputDir.open(tmp_path, "prepare")
    out.write_json("stats.json", {})
    (tmp_path / MANIFEST).write_text('{"entries": ')
    view = OutputDir.read(tmp_path)  # read-only: owning nothing is the safe reading
    assert view.owned() == [] and view.foreign() == ["stats.json"]
    with pytest.raises(WorkbenchError, match=r"is damaged \(it is not JSON: .*\), so workbench cannot tell"):
        OutputDir.open(tmp_path, "prepare")
    with pytest.raises(WorkbenchError, match="is damaged"):
        out.write_json("stats.json", {"new": 1})  # opened before the damage: the write is refused too
    assert json.loads((tmp_path / "stats.json").read_text()) == {}
    assert (tmp_path / MANIFEST).read_text() == '{"entries": '


def test_claimed_logs_stay_owned_while_they_grow(tmp_path):
    out = OutputDir.open(tmp_path, "pretrain")
    log = out.claim("metrics.jsonl")
    with open(log, "a") as f:
        f.write('{"step": 1}\n')
    later = OutputDir.open(tmp_path, "pretrain")
    assert later.owns("metrics.jsonl")
    later.claim("metrics.jsonl")
    assert log.read_text() == '{"step": 1}\n'


def test_a_copied_log_that_grew_stays_owned(tmp_path):
    out = OutputDir.open(tmp_path / "a", "pretrain")
    with open(out.claim("metrics.jsonl"), "a") as f:
        f.write('{"step": 1}\n')
    out.refresh("metrics.jsonl")  # as at each checkpoint
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # new inodes
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 2}\n')
    assert OutputDir.open(tmp_path / "b", "pretrain").owns("metrics.jsonl")
    (tmp_path / "b" / "metrics.jsonl").write_text("my own log, same name\n")
    assert OutputDir.open(tmp_path / "b", "pretrain").foreign() == ["metrics.jsonl"]
