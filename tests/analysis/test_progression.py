"""When pretraining starts to help: keep every k-th checkpoint, then probe and measure each."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.analysis.progression import by_step, run_evals
from workbench.config import DataConfig, ProbeConfig, TrainConfig
from workbench.data.examples import prepare_dataset
from workbench.errors import WorkbenchError
from workbench.evaluation.heldout import load_downstream_task
from workbench.evaluation.splits import TaskData, stratified_sample
from workbench.notebook import plots
from workbench.outputs import OutputDir
from workbench.training.checkpoint import TRAINING_STATE, prune_checkpoints
from workbench.training.pretraining import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """16 real articles, 30% held out; a tiny model pretrained 6 steps, saved every 2, every 4th kept."""
    root = tmp_path_factory.mktemp("progression")
    torch.set_num_threads(1)  # module fixtures run before the autouse one above
    data = DataConfig(objective="mlm", vocab_size=2000, max_seq_length=64, max_documents=16,
                      validation_fraction=0.3, dupe_factor=1, cache_dir=str(root / "cache"))
    prepare_dataset(data, out_dir=root / "prep")
    cfg = TrainConfig(data=str(root / "prep"), out=str(root / "run"), max_steps=6, batch_size=8, eval_every=4,
                      save_every=2, keep_checkpoints=1, keep_every=4, progress=False, seed=3)
    pretrain(cfg)
    return root


@pytest.fixture(scope="module")
def task(run) -> TaskData:
    """The held-out topic task of the run's data, a stratified share of each split (fast probes)."""
    full = load_downstream_task(f"heldout:{run / 'prep'}")
    sizes = {"train": 120, "validation": 40, "test": 80}
    splits = {k: f.iloc[stratified_sample(f["label"], sizes[k], 0)].reset_index(drop=True) for k, f in full.splits.items()}
    return TaskData(full.name, splits, full.labels, full.pairs, full.notes)


def test_prune_keeps_the_newest_and_every_kth(tmp_path):
    owner = OutputDir.open(tmp_path, "pretrain")  # pruning deletes only checkpoints the workbench wrote
    for step in (3, 6, 9, 12, 15):
        owner.replace_dir(f"checkpoint-{step}", lambda d: (d / TRAINING_STATE).write_bytes(b""))
    deleted = prune_checkpoints(tmp_path, keep=1, keep_every=6)
    assert sorted(p.name for p in deleted) == ["checkpoint-3", "checkpoint-9"]
    kept = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert kept == ["checkpoint-12", "checkpoint-15", "checkpoint-6"]
    assert prune_checkpoints(tmp_path, keep=1) != []  # keep_every 0: only the newest stays
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["checkpoint-15"]


def test_keep_every_is_validated():
    assert TrainConfig(save_every=500, keep_every=1000).keep_every == 1000
    with pytest.raises(WorkbenchError, match="keep_every -1"):
        TrainConfig(keep_every=-1)


def test_pretraining_keeps_every_kth_checkpoint(run):
    assert sorted(p.name for p in (run / "run").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    evals = run_evals(run / "run")
    assert list(evals["step"]) == [4, 6]
    assert evals["mlm_accuracy"].between(0, 1).all() and evals["nsp_accuracy"].isna().all()  # MLM only


def test_by_step_probes_and_measures_each_checkpoint(run, task):
    steps = by_step(run / "run", task, ProbeConfig(probe_seeds=2, progression_segments=4, probe_max_length=64),
                    l2_grid=(1.0, 0.01))
    frame = steps.frame
    assert list(frame["step"]) == [4, 6]
    logged = {m["step"]: m for m in map(json.loads, (run / "run" / "metrics.jsonl").read_text().splitlines())
              if m["type"] == "eval"}
    assert list(frame["mlm_accuracy"]) == [logged[4]["mlm_accuracy"], logged[6]["mlm_accuracy"]]
    assert frame["probe_accuracy"].between(0, 1).all()
    assert (frame["probe_low"] <= frame["probe_accuracy"]).all() and (frame["probe_accuracy"] <= frame["probe_high"]).all()
    # attention rows sum to 1, so mean attention to [CLS] and [SEP] is a share; entropy is positive
    assert frame["heads_attn_cls"].between(0, 1).all() and (frame["heads_entropy"] > 0).all()
    assert frame["heads_prev_max"].ge(frame["heads_attn_prev"]).all()
    mean, low, high = steps.random_accuracy
    assert 0 <= mean <= 1 and low <= mean <= high
    assert steps.gain["n"] == 2 and not math.isnan(steps.gain["mean"])
    assert (steps.task, steps.seeds, steps.n_test) == (task.name, [0, 1], len(task.splits["test"]))
    figure = plots.by_step(steps)
    assert {t.name for t in figure.data} >= {"probe", "mlm_accuracy", "heads_attn_cls"}
    # the twin's mean is the dashed line: from the object, or from its frame and that field
    assert [s["y0"] for s in figure.layout.shapes] == [mean]
    assert [s["y0"] for s in plots.by_step(frame, random_accuracy=mean).layout.shapes] == [mean]
    assert not plots.by_step(frame).layout.shapes
    html = steps._repr_html_()
    assert "random twin" in html and "checkpoint-4" not in html and f"{100 * mean:.1f}" in html
    # a probe_gain of the same seeds gives the twin's accuracy without probing it again
    given = {"seeds": [0, 1], "baseline_accuracy": (0.25, 0.2, 0.3)}
    again = by_step(run / "run", task, ProbeConfig(probe_seeds=2, progression_segments=4, probe_max_length=64),
                    baseline=given, l2_grid=(1.0, 0.01))
    assert again.random_accuracy == (0.25, 0.2, 0.3) and again.gain is None
    assert again.frame["probe_accuracy"].tolist() == frame["probe_accuracy"].tolist()
    with pytest.raises(WorkbenchError, match=r"seeds \[0, 1, 2\], by_step probes \[0, 1\]"):
        by_step(run / "run", task, ProbeConfig(probe_seeds=2), baseline={**given, "seeds": [0, 1, 2]})


def test_by_step_refuses_a_dir_without_checkpoints(task, tmp_path):
    with pytest.raises(WorkbenchError, match="no checkpoint-STEP"):
        by_step(tmp_path, task)
