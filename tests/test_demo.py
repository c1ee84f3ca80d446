"""The demo's recipe: its notebook parameters, its precision flag and the words beside a one-run CI."""

from __future__ import annotations

import json

import pytest

from workbench import demo
from workbench.cli import NOTEBOOKS_DIR, main
from workbench.errors import WorkbenchError
from workbench.report.params import plan


def _gain(n: int = 5) -> dict:
    return {"gain": {"mean": 0.12, "low": 0.1, "high": 0.14, "n": n, "confidence": 0.95, "verdict": "gain"}}


def test_demo_params_pass_every_notebooks_checks_and_carry_the_precision():
    p = plan(demo.demo_params("fp32"), NOTEBOOKS_DIR, None)
    assert p.params["precision"] == "fp32" and p.params["max_seq_length"] == demo.DEMO_SEQ_LENGTH
    assert p.params["max_steps"] == demo.DEMO_STEPS and p.params["keep_every"] == demo.DEMO_STEPS // 4
    assert demo.demo_params()["precision"] == "auto"


def test_an_unknown_precision_is_refused_in_one_line(capsys):
    with pytest.raises(WorkbenchError, match="precision 'fp16' is not one of auto, bf16, fp32"):
        demo.demo_params("fp16")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--precision", "fp16"])
    assert exc.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_a_one_run_note_says_what_its_ci_covers_and_shows_the_recipes_spread(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "RECIPE_RUNS", (("fp32", 0, 0.70, 0.74, 0.605, 0.135), ("bf16", 0, 0.72, 0.76, 0.605, 0.155),
                                              ("bf16", 1, 0.69, 0.70, 0.605, 0.095)))
    run = tmp_path / "run"
    (run / "checkpoint-3500").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"train": {"max_steps": demo.DEMO_STEPS, "preset": "tiny", "init": ""}}))
    note = demo.recipe_note(_gain(), str(run / "checkpoint-3500"))
    assert "covers the probe's 5 seeds" in note and "not the pretraining seed" in note
    assert "This checkpoint's recipe (the demo's) measured over 3 pretraining runs (bf16 and fp32)" in note
    assert "gains from +9.5 to +15.5 points, mean +12.8" in note
    (run / "run.json").write_text(json.dumps({"train": {"max_steps": 60, "preset": "tiny", "init": ""}}))
    assert "For comparison, the demo's recipe" in demo.recipe_note(_gain(), str(run))
    monkeypatch.setattr(demo, "RECIPE_RUNS", ())
    assert "measured over" not in demo.recipe_note(_gain(3), str(run))


def test_the_committed_recipe_runs_read_gain_in_every_run_and_at_least_8_points():
    spread = demo.recipe_spread()
    assert spread["runs"] >= 6 and set(spread["precisions"]) == {"bf16", "fp32"}
    assert spread["min"] >= 0.08 and spread["low"] > 0  # the bar: +8 points in every measured run
