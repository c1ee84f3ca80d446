"""Trackers: TensorBoard event files hold every metric at its step; W&B and MLflow where installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench import provenance
from workbench.config import DataConfig, FinetuneConfig, MaskingConfig, TrainConfig
from workbench.data.examples import prepare_dataset
from workbench.errors import WorkbenchError
from workbench.evaluation.finetuning import finetune
from workbench.training import trackers
from workbench.training.pretraining import pretrain


@pytest.fixture(scope="module")
def nsp_data(tmp_path_factory) -> Path:
    """Eight Wikipedia documents, one pairing, 64 tokens: a few hundred small NSP pairs, fast to evaluate."""
    base = tmp_path_factory.mktemp("nsp")
    prepare_dataset(DataConfig(max_documents=8, dupe_factor=1, max_seq_length=64, vocab_size=2000,
                               validation_fraction=0.25, cache_dir=str(base / "cache")), out_dir=base / "data")
    return base / "data"


def _cfg(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", max_steps=4, batch_size=8, eval_every=2,
                save_every=0, progress=False, seed=3, eval_batch_size=64)
    return TrainConfig(**{**base, **overrides})


def _events(logdir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_train_and_eval_scalars_and_run_json_provenance(nsp_data, tmp_path):
    out = tmp_path / "run"
    pretrain(_cfg(nsp_data, out), MaskingConfig(mask_rate=0.2))
    events = _events(out / trackers.TENSORBOARD_DIR)
    logged = _metrics(out)
    train = {m["step"]: m for m in logged if m["type"] == "train"}
    evals = {m["step"]: m for m in logged if m["type"] == "eval"}
    assert sorted(train) == [1, 2, 3, 4] and sorted(evals) == [2, 4]
    for key in ("mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "lr", "grad_norm", "tokens_per_second"):
        assert events[f"train/{key}"] == pytest.approx({s: m[key] for s, m in train.items()}, rel=1e-6), key
    for key in ("mlm_loss", "nsp_loss", "nsp_accuracy", "mlm_accuracy", "perplexity"):
        assert events[f"eval/{key}"] == pytest.approx({s: m[key] for s, m in evals.items()}, rel=1e-6), key
    assert not any("unigram_token" in tag or tag.endswith("/objective") for tag in events)  # strings are not scalars
    assert (out / "metrics.jsonl").is_file()  # still the workbench's own record

    # --overwrite starts afresh: the previous run's event files go, even without a tracker now
    pretrain(_cfg(nsp_data, out, max_steps=1, eval_every=0, overwrite=True, report_to="none", precision="fp32"))
    assert not list((out / trackers.TENSORBOARD_DIR).glob("events.out.tfevents.*"))

    # run.json records where the result came from
    run = json.loads((out / "run.json").read_text())
    record = run["provenance"]
    assert set(provenance.FIELDS) <= set(record)
    assert record["precision"] == "fp32" and record["attention"] == "eager"  # CPU: eager matmul-softmax
    assert record["num_processes"] == 1 and record["seed"] == 3
    assert record["data_cache_key"] == run["data"]["cache_key"] is not None
    assert record["packages"]["torch"] and record["packages"]["transformers"] and record["python"]
    assert record["device"] and record["os"] and record["command"]
    assert record["git_commit"] == provenance.git_state()[0]


def test_finetune_logs_train_eval_and_test_scalars_and_provenance(tiny_bert, tmp_path, one_thread):
    model = tiny_bert
    seen: list[dict] = []
    out = tmp_path / "ft"
    result = finetune(FinetuneConfig(model=str(model), task="builtin:rt-polarity", out=str(out), max_steps=6,
                                     eval_every=3, patience=0, batch_size=16, progress=False, seed=5),
                      callbacks=[seen.append])
    events = _events(out / trackers.TENSORBOARD_DIR)
    train = {m["step"]: m for m in seen if m["type"] == "train"}
    assert events["train/loss"] == pytest.approx({s: m["loss"] for s, m in train.items()}, rel=1e-6)
    assert sorted(events["train/lr"]) == sorted(events["train/grad_norm"]) == [1, 2, 3, 4, 5, 6]
    assert events["eval/accuracy"] == pytest.approx({m["step"]: m["accuracy"] for m in seen if m["type"] == "eval"})
    assert sorted(events["eval/accuracy"]) == [3, 6]
    assert events["test/accuracy"] == pytest.approx({6: result.results["accuracy"]})
    record = json.loads((out / "results.json").read_text())["provenance"]
    assert set(provenance.FIELDS) <= set(record)
    assert record["seed"] == 5 and record["num_processes"] == 1 and record["attention"] == "eager"
    assert record["precision"] in ("fp32", "bf16") and record["precision"] == result.results["precision"]
    assert record["git_commit"] == provenance.git_state()[0] and record["packages"]["datasets"]


def test_report_to_is_validated_and_a_missing_package_is_one_line(monkeypatch, tmp_path):
    assert trackers.parse_report_to("tensorboard, wandb") == ("tensorboard", "wandb")
    assert trackers.parse_report_to("none") == () and trackers.parse_report_to("") == ()
    with pytest.raises(WorkbenchError, match="comet is not one of tensorboard, wandb, mlflow"):
        TrainConfig(report_to="tensorboard,comet")
    with pytest.raises(WorkbenchError, match="mixes none"):
        FinetuneConfig(report_to="none,wandb")
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n))
    with pytest.raises(WorkbenchError, match=r"wandb package, which is not installed; run `pip install 'workbench\[wandb\]'`") as err:
        pretrain(TrainConfig(out=str(tmp_path / "run"), report_to="tensorboard,wandb"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_scalars_are_numbers_named_by_type():
    got = trackers.scalars({"type": "eval", "step": 3, "mlm_loss": 2.5, "nsp_accuracy": None,
                            "objective": "nsp", "pairs": 90, "flag": True})
    assert got == {"eval/mlm_loss": 2.5, "eval/pairs": 90.0}


def test_wandb_offline_run_lands_in_the_run_dir(nsp_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    pretrain(_cfg(nsp_data, out, max_steps=2, report_to="wandb"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_mlflow_local_store_in_the_run_dir(nsp_data, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    pretrain(_cfg(nsp_data, out, max_steps=2, report_to="mlflow"))
    assert (out / trackers.MLFLOW_DB).is_file()
    client = mlflow.tracking.MlflowClient(tracking_uri=trackers.mlflow_uri(out))
    run = client.search_runs([client.get_experiment_by_name(trackers.PROJECT).experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "train/mlm_loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/nsp_accuracy")] == [2]
    assert run.data.params["mask_rate"] == "0.15"
