"""Fine-tuning: end to end on real text, split arithmetic, metrics, bad input and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertForPreTraining

from workbench import cli
from workbench.config import FinetuneConfig
from workbench.errors import WorkbenchError
from workbench.evaluation.finetuning import (
    _encode,
    _predict,
    classification_metrics,
    finetune,
    load_classifier,
)
from workbench.evaluation.tasks import load_task
from workbench.training.model import preset_config

SHARED = Path(__file__).parents[3] / "shared" / "data"
FAST = {"progress": False, "eval_batch_size": 64}


def _tiny(path: Path, tokenizer, vocab_size: int | None = None) -> Path:
    """A randomly initialised 2-layer H64 BertForPreTraining saved as the trainer saves it."""
    torch.manual_seed(0)
    config = preset_config("tiny", vocab_size or len(tokenizer), int(tokenizer.pad_token_id),
                           hidden_size=64, intermediate_size=256, num_attention_heads=2)
    BertForPreTraining(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny models: one thread is as fast, and another job on the cores cannot stall a thread barrier."""
    before = torch.get_num_threads()
    if "minilm" not in request.node.name:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_tokenizer) -> str:
    return str(_tiny(tmp_path_factory.mktemp("tiny"), minilm_tokenizer))


def _write(path: Path, rows: list[tuple], columns: tuple[str, ...] = ("sentence", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, sep="\t", index=False)
    return path


def _hand_macro_f1(true: list[str], pred: list[str]) -> float:
    f1s = []
    for c in sorted(set(true) | set(pred)):
        tp = sum(t == c and p == c for t, p in zip(true, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(true, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(true, pred, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(f1s) / len(f1s)


def test_end_to_end_rt_polarity(tiny, tmp_path):
    seen: list[dict] = []
    cfg = FinetuneConfig(model=tiny, task="builtin:rt-polarity", out=str(tmp_path), max_steps=24,
                         eval_every=4, patience=0, batch_size=16, lr=1e-3, **FAST)
    result = finetune(cfg, callbacks=[seen.append])
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("accuracy", "macro_f1", "n_train", "n_test", "confusion_matrix", "per_class", "labels",
                "wall_seconds", "steps", "best_validation_accuracy", "truncated"):
        assert key in results
    # 200 balanced sentences, stratified 70/10/20 split
    assert (results["n_train"], results["n_validation"], results["n_test"]) == (140, 20, 40)
    assert results["labels"] == ["neg", "pos"] and results["steps"] == 24
    pred = pd.read_csv(tmp_path / "predictions.tsv", sep="\t", keep_default_na=False)
    assert len(pred) == 40 and pred["scored"].all()
    assert results["accuracy"] == pytest.approx((pred["prediction"] == pred["label"]).mean())
    assert results["macro_f1"] == pytest.approx(_hand_macro_f1(pred["label"].tolist(), pred["prediction"].tolist()))
    probs = pred[["p_neg", "p_pos"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (np.array(["neg", "pos"])[probs.argmax(1)] == pred["prediction"]).all()
    confusion = np.array(results["confusion_matrix"])
    assert confusion.sum() == 40 and confusion.trace() == round(results["accuracy"] * 40)
    assert sum(m["support"] for m in results["per_class"].values()) == 40
    # callbacks: every step, and the evaluations; the best weights are the ones restored
    assert [m["step"] for m in seen if m["type"] == "train"] == list(range(1, 25))
    evals = [m for m in seen if m["type"] == "eval"]
    assert [m["step"] for m in evals] == [4, 8, 12, 16, 20, 24]
    assert results["best_validation_accuracy"] == max(m["accuracy"] for m in evals)
    data = load_task(cfg)
    enc = _encode(result.tokenizer, data.splits["validation"], data.labels, cfg.max_length)
    probs = _predict(result.model, enc, 64, 0, results["precision"], torch.device("cpu"))
    assert (probs.argmax(1) == enc.labels).mean() == pytest.approx(results["best_validation_accuracy"])


def test_minilm_learns_sst2_slice(tmp_path):
    """builtin:minilm on 256 SST-2 phrases beats chance clearly on GLUE's dev sentences."""
    cfg = FinetuneConfig(model="builtin:minilm", task=str(SHARED / "sst2"), train_size=256, max_steps=32,
                         batch_size=16, lr=2e-4, eval_every=8, max_validation=128, out="", seed=0, **FAST)
    results = finetune(cfg).results
    assert results["n_train"] == 256 and results["n_test"] == 872
    assert results["split_notes"][-1].startswith("validation: a stratified sample")
    assert results["accuracy"] > 0.7, results["accuracy"]


def test_unseen_test_labels_and_truncation(tiny, tmp_path):
    long = " ".join(["wonderful"] * 40)
    train = [(f"good film {i}" if i % 2 else f"bad film {i}", str(i % 2)) for i in range(60)] + [(long, "1")] * 3
    _write(tmp_path / "d" / "train.tsv", train)
    _write(tmp_path / "d" / "validation.tsv", [("fine film", "1"), ("awful film", "0"), ("meh", "2")])
    _write(tmp_path / "d" / "test.tsv",
           [("great film", "1"), ("poor film", "0"), ("odd film", "2"), ("odd", "2"), (long, "1")])
    cfg = FinetuneConfig(model=tiny, task=str(tmp_path / "d"), out=str(tmp_path / "out"), max_steps=4,
                         max_length=16, **FAST)
    results = finetune(cfg).results
    assert results["labels"] == ["0", "1"]
    assert results["unseen_labels"] == {"validation": {"2": 1}, "test": {"2": 2}}
    assert (results["n_test"], results["n_test_excluded"], results["n_validation"]) == (3, 2, 2)
    assert results["truncated"] == {"train": 3, "validation": 0, "test": 1}
    assert any("never seen in training" in w for w in results["warnings"])
    pred = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t", dtype={"label": str, "prediction": str})
    scored = pred[pred["scored"]]
    assert len(pred) == 5 and len(scored) == 3
    assert results["accuracy"] == pytest.approx((scored["prediction"] == scored["label"]).mean())


def test_bad_model_input(tiny, tmp_path, minilm_tokenizer):
    odd = _tiny(tmp_path / "odd", minilm_tokenizer, vocab_size=1000)
    with pytest.raises(WorkbenchError, match="vocab_size 1000 but its tokenizer has 30522"):
        load_classifier(str(odd), ["0", "1"])
    with pytest.raises(WorkbenchError, match="exceeds the 512 positions"):
        load_classifier(tiny, ["0", "1"], max_length=1024)
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_classifier("./missing-checkpoint", ["0", "1"])
    with pytest.raises(WorkbenchError, match="fewer than the 2 classes"):
        finetune(FinetuneConfig(model=tiny, train_size=1, out="", **FAST))


def test_random_init_same_shape_and_run_dir(tiny, tmp_path):
    trained, _, info = load_classifier(tiny, ["a", "b", "c"])
    assert info["init"] == "pretrained" and info["new_parameters"] == ["classifier"]
    for spec, init in ((f"random:{tiny}", "pretrained"), (tiny, "random")):
        torch.manual_seed(1)
        fresh, _, info = load_classifier(spec, ["a", "b", "c"], init=init)
        assert info["init"] == "random" and info["shape"] == "L2/H64/A2"
        a, b = trained.state_dict(), fresh.state_dict()
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
        assert not torch.equal(a["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"])
    run = tmp_path / "run"  # a workbench pretraining run dir: its newest checkpoint is used
    shutil.copytree(tiny, run / "checkpoint-5")
    (run / "checkpoint-5" / "training_state.pt").write_bytes(b"")
    _, _, info = load_classifier(str(run), ["a", "b"])
    assert info["checkpoint"].endswith("checkpoint-5")


def test_classification_metrics_by_hand():
    labels = ["x", "y", "z", "w"]  # w: neither in the labels nor predicted, so not in the macro average
    true = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(true, pred, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"][0] == [2, 1, 0, 0] and m["confusion_matrix"][1] == [0, 1, 1, 0]
    assert m["per_class"]["x"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert m["macro_f1"] == pytest.approx(_hand_macro_f1(["x", "x", "x", "y", "y", "z"], ["x", "x", "y", "y", "z", "z"]))


def _main(argv: list[str]) -> int:
    """workbench.cli.main (cli.py declares `finetune` with the other subcommands)."""
    return cli.main(argv)


def test_cli(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code = _main(["finetune", "--model", tiny, "--task", "builtin:rt-polarity", "--out", str(out),
                  "--max-steps", "3", "--train-size", "40", "--seed", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "accuracy" in printed and "macro_f1" in printed and "precision" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["n_train"] == 40 and results["config"]["seed"] == 1
    _write(tmp_path / "bad" / "train.tsv", [("text", "1")], ("sentence", "y"))
    code = _main(["finetune", "--model", tiny, "--task", str(tmp_path / "bad"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "--label-column" in err[0]
    code = _main(["finetune", "--task", "builtin:rt-polarity", "--lr", "-1", "--out", str(out)])
    assert code == 2 and capsys.readouterr().err.startswith("error: lr -1.0 must be positive")
