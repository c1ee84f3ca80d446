"""Each figure returns a go.Figure with the expected traces, and corpus text is HTML-escaped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from workbench.errors import WorkbenchError
from workbench.notebook import plots
from workbench.notebook.plots import _escape

EVIL = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def _stats_df(n_layers: int = 2, n_heads: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"layer": layer, "head": h, **{c: rng.random() for c in plots.DEFAULT_STAT_COLUMNS}}
        for layer in range(n_layers)
        for h in range(n_heads)
    ]
    return pd.DataFrame(rows)


def _no_raw_html(fig: go.Figure) -> None:
    text = json.dumps(fig.to_plotly_json(), default=str)
    assert "<script" not in text and "<img" not in text


def test_escape() -> None:
    assert _escape(EVIL) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert _escape("a & b") == "a &amp; b"
    assert _escape("&lt;") == "&amp;lt;"  # already-escaped text is shown literally, not decoded
    assert _escape(3) == "3"
    assert _escape("plain ##ing") == "plain ##ing"


def test_head_stats_heatmaps() -> None:
    df = _stats_df()
    fig = plots.head_stats_heatmaps(df, columns=("attn_cls", "attn_sep", "entropy"), n_cols=2)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 3
    assert all(isinstance(t, go.Heatmap) and np.asarray(t.z).shape == (2, 3) for t in fig.data)
    assert [a.text for a in fig.layout.annotations] == ["attn_cls", "attn_sep", "entropy"]
    # the cell for layer 1, head 2 holds that row's value
    want = df.query("layer == 1 and head == 2")["entropy"].item()
    assert np.asarray(fig.data[2].z)[1, 2] == pytest.approx(want)
    with pytest.raises(WorkbenchError, match="missing_stat"):
        plots.head_stats_heatmaps(df, columns=("missing_stat",))


def test_attention_map_escapes_tokens() -> None:
    tokens = ["[CLS]", EVIL, "the", IMG, "the", "&", "[SEP]"]
    attn = np.full((7, 7), 1 / 7)
    fig = plots.attention_map(tokens, attn, title=f"layer 0 head 0 {EVIL}")
    assert len(fig.data) == 1
    ticks = list(fig.layout.xaxis.ticktext)
    assert len(ticks) == 7  # repeated "the" keeps its own column (numeric axis)
    assert ticks[1] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert ticks[5] == "&amp;"
    assert list(fig.layout.yaxis.ticktext) == ticks
    _no_raw_html(fig)
    with pytest.raises(WorkbenchError, match="does not match"):
        plots.attention_map(tokens, np.ones((3, 3)))


def test_head_importance_grid() -> None:
    fig = plots.head_importance_grid(np.array([[0.1, -0.2], [0.0, 0.3]]), title=EVIL)
    assert len(fig.data) == 1 and np.asarray(fig.data[0].z).shape == (2, 2)
    _no_raw_html(fig)


def test_training_curves_overlays_runs() -> None:
    a = [
        {"step": s, "loss": 5 - s / 10, "eval_loss": (5 - s / 20) if s % 5 == 0 else None}
        for s in range(20)
    ]
    b = pd.DataFrame({"step": range(10), "loss": np.linspace(6, 4, 10)})  # no eval_loss logged
    fig = plots.training_curves(x="step", ys=("loss", "eval_loss"), runs={"bert": a, EVIL: b})
    assert len(fig.data) == 3  # bert: loss + eval_loss, the other run: loss only
    assert len(fig.data[1].x) == 4  # NaN eval steps dropped
    assert sum(bool(t.showlegend) for t in fig.data) == 2  # one legend entry per run
    _no_raw_html(fig)
    single = plots.training_curves(a, ys=("loss",))
    assert len(single.data) == 1
    with pytest.raises(WorkbenchError, match="accuracy"):
        plots.training_curves(a, ys=("accuracy",))


def test_confusion_matrix() -> None:
    fig = plots.confusion_matrix(np.array([[5, 1], [2, 7]]), ["neg", EVIL])
    assert len(fig.data) == 1
    assert list(fig.layout.xaxis.ticktext) == ["neg", _escape(EVIL)]
    _no_raw_html(fig)
    with pytest.raises(WorkbenchError):
        plots.confusion_matrix(np.eye(3), ["a", "b"])


def test_learning_curve() -> None:
    df = pd.DataFrame(
        [
            {"n_train": n, "init": init, "accuracy_mean": 0.5 + n / 1e4, "accuracy_std": 0.01}
            for init in ("pretrained", "random", IMG)
            for n in (100, 1000, 300)
        ]
    )
    fig = plots.learning_curve(df)
    assert len(fig.data) == 3
    assert list(fig.data[0].x) == [100, 300, 1000]  # sorted by n_train
    assert fig.data[0].error_y.array is not None
    _no_raw_html(fig)
    df["accuracy_ci_low"], df["accuracy_ci_high"] = df["accuracy_mean"] - 0.03, df["accuracy_mean"] + 0.05
    fig = plots.learning_curve(df)  # curve_summary's 95% CI, asymmetric in general
    assert list(fig.data[0].error_y.array) == pytest.approx([0.05] * 3)
    assert list(fig.data[0].error_y.arrayminus) == pytest.approx([0.03] * 3)


def test_head_clusters() -> None:
    df = _stats_df(2, 3).sample(frac=1.0, random_state=0)  # row order must not matter
    xy = np.arange(12, dtype=float).reshape(6, 2)
    fig = plots.head_clusters(xy, np.array([0, 1, 1, 2, 0, 2]), df)
    assert len(fig.data) == 3
    assert fig.data[0].text[0].startswith("L0 H0") and fig.data[0].text[1].startswith("L1 H1")
    assert plots.head_clusters(xy, np.zeros(6, dtype=int)).data[0].text[5] == "head 5"
