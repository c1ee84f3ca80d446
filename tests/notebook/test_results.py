"""Result objects show themselves as escaped HTML and keep their raw data as attributes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbench.evaluation.probes import probe_gain
from workbench.notebook.results import (
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
