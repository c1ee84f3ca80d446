"""Result objects show themselves as escaped HTML and keep their raw data as attributes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbench.evaluation.probes import probe_gain
from workbench.evaluation.results import (
    LearningCurve,
    ProbeGain,
    StatsTable,
    Table,
    html_table,
    verdict_words,
)

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _curve_runs(twin_accuracies=(0.60, 0.65, 0.61), init="ckpt") -> pd.DataFrame:
    rows = []
    for seed, (a, b) in enumerate(zip((0.70, 0.72, 0.69), twin_accuracies, strict=True)):
        rows += [{"init": init, "n_train": 100, "seed": seed, "lr": 1e-3, "chosen": True, "accuracy": a, "macro_f1": a},
                 {"init": f"random:{init}", "n_train": 100, "seed": seed, "lr": 3e-3, "chosen": True, "accuracy": b,
                  "macro_f1": b}]
    return pd.DataFrame(rows)


def test_html_table_escapes_headers_index_and_cells():
    frame = pd.DataFrame({HOSTILE: [HOSTILE, 0.123456, math.nan]}, index=[HOSTILE, "b", "c"])
    page = html_table(frame, title=HOSTILE)
    assert HOSTILE not in page and page.count(ESCAPED) == 4
    assert "0.1235" in page and "–" in page  # floats rounded, NaN as a dash


def test_table_and_stats_table_show_escaped_text_and_keep_their_data():
    frame = pd.DataFrame({"layer": [1], "head": [2], "pattern": [HOSTILE], "value": [0.75]})
    table = Table(frame, "Notable heads")
    page = table._repr_html_()
    assert HOSTILE not in page and ESCAPED in page and "0.750" in page and "Notable heads" in page
    assert table.frame is frame
    assert "none" in Table(frame.iloc[:0], "Notable heads")._repr_html_()
    stats = StatsTable({HOSTILE: 0.123456789, "documents": 12}, "Corpus")
    page = stats._repr_html_()
    assert HOSTILE not in page and ESCAPED in page and "0.1235" in page and ">12<" in page
    assert stats.frame.loc["documents", "value"] == "12"


def test_learning_curve_shows_mean_ci_and_the_paired_gain_in_words():
    curve = LearningCurve.from_runs(_curve_runs())
    assert list(curve.summary["init"]) == ["ckpt", "random:ckpt"] and len(curve.runs) == 6
    page = curve._repr_html_()
    # By hand (tests/evaluation/test_fair_curves.py): differences 0.10, 0.07, 0.08 -> +8.3 [+4.5, +12.1] points.
    assert "+8.3 [+4.5, +12.1]" in page and "measurable gain" in page and "70.3" in page
    assert "random:ckpt" in page
    assert curve.figure().data  # the plotly figure of the same summary


def test_learning_curve_says_no_measurable_gain_when_the_ci_contains_zero():
    curve = LearningCurve.from_runs(_curve_runs((0.75, 0.65, 0.70)))
    row = curve.table().iloc[0]
    assert row["verdict"] == "no measurable gain"
    assert verdict_words("no measurable difference") == "no measurable gain"
    assert verdict_words("loss") == "measurable loss"


def test_learning_curve_escapes_init_names():
    page = LearningCurve.from_runs(_curve_runs(init=HOSTILE))._repr_html_()
    assert HOSTILE not in page and ESCAPED in page


def test_probe_gain_shows_the_sentence_and_the_table_escaped():
    runs = pd.DataFrame([{"init": init, "seed": seed, "layer": 1, "validation_accuracy": 0.5, "test_accuracy": acc,
                          "n_train": 50, "n_test": 500}
                         for init, accs in ((HOSTILE, (0.80, 0.82, 0.84)), ("twin", (0.60, 0.62, 0.64)))
                         for seed, acc in enumerate(accs)])
    headline = pd.DataFrame({"accuracy_mean": [0.82, 0.62]}, index=pd.Index([HOSTILE, "twin"], name="init"))
    result = ProbeGain(probe_gain(runs, HOSTILE, "twin"), headline)
    page = result._repr_html_()
    assert HOSTILE not in page and ESCAPED in page
    assert "measurable gain" in page and "+20.0 points" in page and "0.8200" in page
    assert result.gain["gain"]["mean"] == pytest.approx(0.2) and result.headline is headline


def test_by_step_shows_its_baseline_field_and_escapes_the_task():
    from workbench.evaluation.results import ByStep
    from workbench.evaluation.stats import paired_difference

    frame = pd.DataFrame({"step": [500, 1000], "checkpoint": ["/runs/x/checkpoint-500", "/runs/x/checkpoint-1000"],
                          "probe_accuracy": [0.64, 0.70], "probe_low": [0.62, 0.68], "probe_high": [0.66, 0.72],
                          "heads_attn_cls": [0.2, 0.1], "heads_attn_sep": [0.1, 0.3], "heads_prev_max": [0.5, 0.6]})
    bare = ByStep(frame, HOSTILE, [0, 1, 2], 531)
    page = bare._repr_html_()
    assert HOSTILE not in page and ESCAPED in page and "random twin" not in page and "checkpoint-500" not in page
    assert bare.frame is frame and not frame.attrs  # the baseline lives on the object, never in DataFrame.attrs
    gain = paired_difference([0.70, 0.71, 0.69], [0.60, 0.62, 0.61])
    steps = ByStep(frame, "topics", [0, 1, 2], 531, random_accuracy=(0.61, 0.59, 0.63), gain=gain)
    text = steps.summary()
    assert "random twin 61.0 [59.0, 63.0] points" in text and "measurable gain" in text
    assert [s["y0"] for s in steps.figure().layout.shapes] == [0.61]
