"""Checkpoints: Hugging Face loading, atomic writes, keep-last-N, weights-only state files."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, pipeline

import workbench.training.checkpoint as ckpt
from workbench.config import DataConfig, TrainConfig
from workbench.data.examples import prepare_dataset
from workbench.outputs import temp_name
from workbench.training.checkpoint import (
    capture_rng_state,
    clean_stale,
    latest_checkpoint,
    list_checkpoints,
    load_rng_state,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
    write_json_atomic,
)
from workbench.training.model import build_model
from workbench.training.pretraining import pretrain


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model after 3 real training steps on Wikipedia pairs."""
    base = tmp_path_factory.mktemp("ckpt")
    prepare_dataset(DataConfig(max_documents=6, validation_fraction=0.2, cache_dir=str(base / "cache")),
                    out_dir=base / "data")
    cfg = TrainConfig(data=str(base / "data"), out=str(base / "run"), preset="tiny", max_steps=3,
                      batch_size=8, eval_every=0, save_every=0, progress=False)
    return pretrain(cfg)


def test_checkpoint_loads_with_auto_classes_and_fill_mask(trained):
    path = trained.checkpoint
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert json.loads((path / "workbench.json").read_text())["train"]["preset"] == "tiny"
    expected = trained.model.state_dict()
    pre = AutoModelForPreTraining.from_pretrained(str(path))
    assert type(pre).__name__ == "BertForPreTraining"
    for key, value in pre.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    mlm = AutoModelForMaskedLM.from_pretrained(str(path))
    torch.testing.assert_close(mlm.cls.predictions.transform.dense.weight,
                               expected["cls.predictions.transform.dense.weight"], rtol=0, atol=0)
    assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    fill = pipeline("fill-mask", model=str(path), top_k=3)
    guesses = fill("the capital of france is [MASK].")
    assert len(guesses) == 3 and all("token_str" in g for g in guesses)


def test_training_state_is_complete_and_weights_only(trained):
    state = load_training_state(trained.checkpoint)
    assert state["step"] == 3 and set(state) >= {"optimizer", "scheduler", "sampler", "collator", "tokens"}
    assert state["sampler"]["position"] == 3
    rng = load_rng_state(trained.checkpoint, 0)
    assert rng is not None and isinstance(rng["torch"], torch.Tensor)
    assert load_rng_state(trained.checkpoint, 1) is None


class _Payload:
    """Anything that is not a tensor or a plain container."""


def test_arbitrary_pickle_is_never_loaded(tmp_path):
    (tmp_path / ckpt.TRAINING_STATE).write_bytes(pickle.dumps({"step": _Payload()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        load_training_state(tmp_path)


def test_rng_state_round_trip():
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


@pytest.fixture(scope="module")
def tiny(minilm_tokenizer):
    return build_model("tiny", minilm_tokenizer)


def _save(out: Path, step: int, tiny, tokenizer, keep: int = 2) -> Path:
    return save_checkpoint(out, step, tiny, tokenizer, {"step": step}, {"step": step},
                           [capture_rng_state()], keep=keep)


def test_keeps_the_last_n_checkpoints(tmp_path, tiny, minilm_tokenizer):
    for step in (5, 10, 15, 20):
        _save(tmp_path, step, tiny, minilm_tokenizer, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-15", "checkpoint-20"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-20"
    _save(tmp_path, 100, tiny, minilm_tokenizer, keep=1)  # numeric, not lexical, order
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-100"]


def test_a_crash_mid_save_leaves_no_partial_checkpoint(tmp_path, tiny, minilm_tokenizer, monkeypatch):
    _save(tmp_path, 1, tiny, minilm_tokenizer)
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        if Path(f).name == ckpt.TRAINING_STATE:
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2, tiny, minilm_tokenizer)
    monkeypatch.undo()
    assert not (tmp_path / "checkpoint-2").exists()  # never half-written under the real name
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    assert not list(tmp_path.glob(".checkpoint-2.tmp-*"))  # the failed save cleaned up after itself
    # A process killed while saving leaves its temporary: the next run removes it (its pid is gone).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / temp_name("checkpoint-2", pid=int(dead.stdout))
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".workbench-manifest.json", "checkpoint-1"]
    assert load_training_state(tmp_path / "checkpoint-1")["step"] == 1


def test_resaving_a_step_replaces_it_atomically(tmp_path, tiny, minilm_tokenizer):
    _save(tmp_path, 3, tiny, minilm_tokenizer)
    _save(tmp_path, 3, tiny, minilm_tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".workbench-manifest.json", "checkpoint-3"]


def test_write_json_atomic(tmp_path):
    path = tmp_path / "eval.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]
