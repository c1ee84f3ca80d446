"""The training loop: schedules, data order, the Python API, exact resume, scale-out, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench import cli
from workbench.config import DataConfig, MaskingConfig, TrainConfig
from workbench.data.examples import prepare_dataset
from workbench.errors import WorkbenchError
from workbench.training.model import PretrainingModule
from workbench.training.pretraining import Pretrainer, ResumableBatchSampler, pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nsp_data(tmp_path_factory) -> Path:
    """Six Wikipedia documents as NSP pairs (about 360 train and 90 validation pairs)."""
    base = tmp_path_factory.mktemp("nsp")
    prepare_dataset(DataConfig(max_documents=6, validation_fraction=0.2, cache_dir=str(base / "cache")),
                    out_dir=base / "data")
    return base / "data"


def _cfg(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", max_steps=6, batch_size=8,
                eval_every=0, save_every=0, progress=False, seed=3)
    return TrainConfig(**{**base, **overrides})


def _losses(out: Path, kind: str = "train", key: str = "loss") -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m[key] for m in lines if m["type"] == kind}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench", "pretrain", *args]


# ------------------------------------------------------------------------------ pieces of the loop
def test_sampler_covers_each_epoch_and_resumes_mid_epoch():
    sampler = ResumableBatchSampler(10, 3, seed=1)
    it = iter(sampler)
    epoch0 = [next(it) for _ in range(3)]  # 3 full batches per epoch, the 10th example dropped
    assert len({i for b in epoch0 for i in b}) == 9
    after = [next(it) for _ in range(2)]
    state = sampler.state_dict()
    expected = [next(it) for _ in range(4)]
    again = ResumableBatchSampler(10, 3, seed=1)
    again.load_state_dict(state)
    resumed = iter(again)
    assert [next(resumed) for _ in range(4)] == expected
    assert after != epoch0[:2]  # a new permutation each epoch


def test_eager_and_sdpa_attention_train_alike(nsp_data, tmp_path):
    losses = {}
    for attention in ("eager", "sdpa"):
        trainer = Pretrainer(_cfg(nsp_data, tmp_path / attention, attention=attention, precision="fp32",
                                  max_steps=3))
        assert trainer.model.config._attn_implementation == attention
        trainer.train()
        losses[attention] = [m["loss"] for m in trainer.history if m["type"] == "train"]
    assert len(losses["eager"]) == 3 and all(math.isfinite(x) for x in losses["eager"])
    assert losses["eager"] == pytest.approx(losses["sdpa"], rel=1e-4)  # one kernel choice, the same maths


# ------------------------------------------------------------------------------------ Python API
def test_pretrain_api_logs_evaluates_checkpoints(nsp_data, tmp_path):
    seen: list[dict] = []
    out = tmp_path / "run"
    result = pretrain(_cfg(nsp_data, out, eval_every=3, save_every=3, keep_checkpoints=1),
                      MaskingConfig(mask_rate=0.2), callbacks=[seen.append])
    assert [m["step"] for m in seen if m["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in seen if m["type"] == "eval"] == [3, 6]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == seen  # the file and the callbacks see the same dicts
    assert all(math.isfinite(m["loss"]) and m["tokens_per_second"] > 0 for m in seen if m["type"] == "train")
    report = json.loads((out / "eval.json").read_text())
    for key in ("mlm_loss", "perplexity", "mlm_accuracy", "unigram_accuracy", "nsp_accuracy",
                "tokens_per_second", "steps"):
        assert report[key] is not None, key
    assert report["steps"] == 6 and report["unigram_token"] == "the"
    assert report["perplexity"] == pytest.approx(math.exp(report["mlm_loss"]))
    assert 0 < report["unigram_accuracy"] < 0.2
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]  # keep_checkpoints=1
    assert result.checkpoint == out / "checkpoint-6" and result.steps == 6
    assert result.eval["mlm_accuracy"] == report["mlm_accuracy"]
    evals = [m["mlm_loss"] for m in seen if m["type"] == "eval"]
    assert evals[1] < evals[0]  # it learns


def test_mlm_objective_trains_without_sentence_head(tmp_path):
    data = prepare_dataset(DataConfig(objective="mlm", max_documents=4, validation_fraction=0.25,
                                      cache_dir=str(tmp_path / "cache")), out_dir=tmp_path / "data")
    trainer = Pretrainer(_cfg(tmp_path / "data", tmp_path / "run", max_steps=2), data=data)
    assert not any(p.requires_grad for p in trainer.model.cls.seq_relationship.parameters())
    trainer.train()
    result = trainer.finish()
    assert result.eval["nsp_accuracy"] is None and result.eval["objective"] == "mlm"
    assert math.isfinite(result.eval["mlm_loss"])


# -------------------------------------------------------------------------- resume and scale-out
def test_sigkill_then_resume_gives_the_same_loss_curve(nsp_data, tmp_path):
    args = ["--data", str(nsp_data), "--preset", "tiny", "--max-steps", "30", "--batch-size", "8",
            "--save-every", "10", "--eval-every", "10", "--seed", "5", "--no-progress"]
    # One thread each: the reference runs beside the victim without oversubscribing the cores.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    ref = subprocess.Popen(_cli(*args, "--out", str(tmp_path / "ref")), cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_out = tmp_path / "killed"
    victim = subprocess.Popen(_cli(*args, "--out", str(killed_out)), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed_out / "checkpoint-10").is_dir():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (killed_out / "eval.json").exists()  # killed part-way
    done = subprocess.run(_cli(*args, "--out", str(killed_out), "--resume"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]
    ref_losses, resumed = _losses(tmp_path / "ref"), _losses(killed_out)
    assert list(resumed) == list(range(1, 31))
    assert resumed == ref_losses  # bit-identical floats
    assert _losses(killed_out, "eval", "mlm_loss") == _losses(tmp_path / "ref", "eval", "mlm_loss")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(nsp_data, tmp_path):
    # accelerate 1.x's `launch --cpu --num_processes 2` starts ONE process (multi-CPU needs
    # mpirun); its torchrun launcher with ACCELERATE_USE_CPU=1 starts two, on gloo.
    common = ["--data", str(nsp_data), "--preset", "tiny", "--max-steps", "5", "--precision", "fp32",
              "--eval-every", "0", "--no-progress", "--seed", "7"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "workbench", "pretrain", *common,
           "--batch-size", "4", "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert report["processes"] == 2 and report["global_batch"] == 8
    one = pretrain(_cfg(nsp_data, tmp_path / "one", max_steps=5, batch_size=8, precision="fp32", seed=7))
    assert one.eval["processes"] == 1
    two_losses, one_losses = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert list(two_losses) == [1, 2, 3, 4, 5]
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=1e-4), step
    assert report["mlm_loss"] == pytest.approx(one.eval["mlm_loss"], rel=1e-4)


# ------------------------------------------------------------------------------------- bad input
def test_out_dir_with_unrelated_files_is_refused_unless_overwrite(nsp_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(WorkbenchError, match="not a workbench run.*notes.txt.*--overwrite"):
        pretrain(_cfg(nsp_data, out, max_steps=1))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    pretrain(_cfg(nsp_data, out, max_steps=1, overwrite=True))
    assert (out / "notes.txt").read_text() == "precious" and (out / "eval.json").is_file()


def test_previous_run_needs_resume_or_overwrite(nsp_data, tmp_path):
    out = tmp_path / "run"
    pretrain(_cfg(nsp_data, out, max_steps=2))
    with pytest.raises(WorkbenchError, match="previous run .*step 2.*--resume.*--overwrite"):
        pretrain(_cfg(nsp_data, out, max_steps=2))
    with pytest.raises(WorkbenchError, match=r"different config: lr 0\.002 -> 0\.005; mask_rate 0\.15 -> 0\.3"):
        pretrain(_cfg(nsp_data, out, max_steps=2, lr=5e-3, resume=True), MaskingConfig(mask_rate=0.3))
    # changing only where and how often things are written is fine
    result = pretrain(_cfg(nsp_data, out, max_steps=2, resume=True, eval_every=1))
    assert result.steps == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(nsp_data, tmp_path, monkeypatch):
    forward = PretrainingModule.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:  # the third training step
                out.loss = out.loss * float("nan")
                out.mlm_loss_sum = out.mlm_loss_sum * float("nan")
        return out

    monkeypatch.setattr(PretrainingModule, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(WorkbenchError, match=r"loss nan at step 3; stopped, the last good checkpoint .*checkpoint-2"):
        pretrain(_cfg(nsp_data, out, max_steps=6, save_every=2))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(str(out / "checkpoint-2"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cuda_oom_names_a_smaller_batch(nsp_data, tmp_path, monkeypatch):
    def oom(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Pretrainer, "train_step", oom)
    with pytest.raises(WorkbenchError, match=r"out of GPU memory during step 1 .*--batch-size 4 --grad-accum 2"):
        pretrain(_cfg(nsp_data, tmp_path / "run", batch_size=8))


def test_objective_must_match_the_data(nsp_data, tmp_path):
    with pytest.raises(WorkbenchError, match="--objective sop but the data .* was prepared for nsp"):
        pretrain(_cfg(nsp_data, tmp_path / "run", objective="sop"))


def test_cli_reports_bad_input_in_one_line_with_exit_2(nsp_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "data.csv").write_text("x")
    rc = cli.main(["pretrain", "--data", str(nsp_data), "--out", str(out), "--preset", "tiny",
                   "--max-steps", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --out ")
    rc = cli.main(["pretrain", "--data", str(nsp_data), "--out", str(tmp_path / "x"), "--preset", "huge"])
    assert rc == 2 and "preset 'huge' is not one of" in capsys.readouterr().err
