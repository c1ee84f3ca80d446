"""Builtin names and run dirs resolve to model directories."""

from __future__ import annotations

import pytest

from workbench.builtin import minilm_path, resolve_pretrained
from workbench.errors import WorkbenchError


def test_minilm_resolves_to_the_wheel(tmp_path):
    path = resolve_pretrained("builtin:minilm")
    assert path == str(minilm_path()) and (minilm_path() / "model.safetensors").is_file()
    with pytest.raises(WorkbenchError, match="builtin:minilm"):
        resolve_pretrained("builtin:bert")


def test_run_dir_resolves_to_its_newest_complete_checkpoint(tmp_path):
    for step in (2, 10, 7):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "training_state.pt").write_bytes(b"")
    (tmp_path / "checkpoint-12").mkdir()  # incomplete: no training state yet
    assert resolve_pretrained(str(tmp_path)) == str(tmp_path / "checkpoint-10")
    # A dir with its own config.json, a dir without checkpoints and hub names pass through.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert resolve_pretrained(str(tmp_path / "model")) == str(tmp_path / "model")
    (tmp_path / "tok").mkdir()
    assert resolve_pretrained(str(tmp_path / "tok")) == str(tmp_path / "tok")
    assert resolve_pretrained("bert-base-uncased") == "bert-base-uncased"
