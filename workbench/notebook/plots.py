"""Plotly figures for the notebooks: each takes computed data and returns a `go.Figure`.

Nothing here computes statistics. Every string that reaches plotly (tick labels, hover text,
titles, legend names) goes through `_escape`, because plotly renders a subset of HTML in labels
and word pieces from corpus text can contain markup such as `<img src=x onerror=alert(1)>`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..errors import WorkbenchError
from ..shortnames import labels_for
from .paper_figures import save

__all__ = [
    "DEFAULT_STAT_COLUMNS",
    "save",
    "head_stats_heatmaps",
    "attention_map",
    "head_importance_grid",
    "training_curves",
    "confusion_matrix",
    "learning_curve",
    "head_clusters",
    "length_histograms",
    "probe_by_layer",
    "by_step",
]

DEFAULT_STAT_COLUMNS = (
    "attn_cls",
    "attn_sep",
    "attn_punct",
    "attn_prev",
    "attn_next",
    "attn_self",
    "entropy",
    "distance",
)
_PALETTE = qualitative.Plotly


def _escape(text: Any) -> str:
    """Escape `&`, `<` and `>` so plotly shows the text instead of rendering it as HTML."""
    return html.escape(str(text), quote=False)


def _full_name_hover(spec: Any, what: str) -> str:
    """A hover template with the encoder's full spec (a path) under the point; the legend has its short name."""
    return f"{what}<br>{_escape(spec).replace('%{', '% {')}<extra></extra>"


def _escape_all(items: Sequence[Any]) -> list[str]:
    return [_escape(x) for x in items]


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise WorkbenchError(f"{what} needs column(s) {missing}; got {list(df.columns)}")


def _layer_head_grid(df: pd.DataFrame, column: str) -> np.ndarray:
    # (layer, head) rows -> (L, H) matrix; missing cells stay NaN
    grid = df.pivot_table(index="layer", columns="head", values=column, aggfunc="first")
    return grid.sort_index().sort_index(axis=1).to_numpy(dtype=float)


def head_stats_heatmaps(
    df: pd.DataFrame, columns: Sequence[str] = DEFAULT_STAT_COLUMNS, n_cols: int = 4
) -> go.Figure:
    """One layer x head heatmap per statistic column of `head_statistics`' DataFrame."""
    _require(df, ["layer", "head", *columns], "head_stats_heatmaps")
    n_cols = max(1, min(n_cols, len(columns)))
    n_rows = math.ceil(len(columns) / n_cols)
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=_escape_all(columns),
        horizontal_spacing=0.05,
        vertical_spacing=0.12,
    )
    for k, column in enumerate(columns):
        z = _layer_head_grid(df, column)  # (L, H)
        fig.add_trace(
            go.Heatmap(
                z=z,
                colorscale="Viridis",
                showscale=False,  # stats have different units; values are printed in the cells
                texttemplate="%{z:.2f}",
                name=_escape(column),
                hovertemplate="layer %{y}, head %{x}<br>%{z:.3f}<extra>"
                + _escape(column)
                + "</extra>",
            ),
            row=k // n_cols + 1,
            col=k % n_cols + 1,
        )
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    fig.update_layout(height=260 * n_rows + 80, title="Per-head attention statistics")
    return fig


def attention_map(
    tokens: Sequence[str], attn_2d: np.ndarray, title: str = "attention"
) -> go.Figure:
    """One head's (query, key) attention with the word pieces on both axes."""
    a = np.asarray(attn_2d, dtype=float)
    n = len(tokens)
    if a.shape != (n, n):
        raise WorkbenchError(f"attention map shaped {a.shape} does not match {n} tokens")
    labels = _escape_all(tokens)
    pos = list(range(n))
    # numeric axes + ticktext, because a categorical axis would merge repeated tokens ("the")
    hover = [[f"{labels[q]} → {labels[k]}" for k in pos] for q in pos]
    fig = go.Figure(
        go.Heatmap(
            z=a,
            x=pos,
            y=pos,
            colorscale="Blues",
            zmin=0.0,
            zmax=1.0,
            text=hover,
            hovertemplate="%{text}<br>%{z:.3f}<extra></extra>",
        )
    )
    side = max(400, 14 * n + 150)
    fig.update_xaxes(tickvals=pos, ticktext=labels, tickangle=-90, title_text="key", side="top")
    fig.update_yaxes(tickvals=pos, ticktext=labels, autorange="reversed", title_text="query")
    fig.update_layout(title=_escape(title), width=side, height=side)
    return fig


def head_importance_grid(
    importance: np.ndarray, title: str = "Head importance (metric change when silenced)"
) -> go.Figure:
    """Layer x head heatmap of an importance matrix, diverging around 0."""
    z = np.asarray(importance, dtype=float)
    if z.ndim != 2:
        raise WorkbenchError(f"importance must be a (layer, head) matrix, got shape {z.shape}")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            colorscale="RdBu_r",
            zmid=0.0,
            texttemplate="%{z:.3f}",
            hovertemplate="layer %{y}, head %{x}<br>%{z:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    fig.update_layout(title=_escape(title))
    return fig


def _as_frame(history: Any) -> pd.DataFrame:
    return history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))


def training_curves(
    history: Sequence[Mapping[str, Any]] | pd.DataFrame | None = None,
    x: str = "step",
    ys: Sequence[str] = ("loss",),
    runs: Mapping[str, Sequence[Mapping[str, Any]] | pd.DataFrame] | None = None,
) -> go.Figure:
    """One subplot per metric in `ys`, one line per run (a single `history` or several `runs`)."""
    named: dict[str, pd.DataFrame] = {}
    if history is not None:
        named["run"] = _as_frame(history)
    named.update({name: _as_frame(h) for name, h in (runs or {}).items()})
    if not named:
        raise WorkbenchError("training_curves needs a history or runs={name: history}")
    for name, df in named.items():
        _require(df, [x], f"training_curves run {name!r}")
    for y in ys:
        if not any(y in df.columns for df in named.values()):
            raise WorkbenchError(f"no run logged {y!r}; choose ys from the logged columns")
    fig = make_subplots(
        rows=len(ys),
        cols=1,
        shared_xaxes=True,
        subplot_titles=_escape_all(ys),
        vertical_spacing=0.08,
    )
    for r, (name, df) in enumerate(named.items()):
        color = _PALETTE[r % len(_PALETTE)]
        for i, y in enumerate(ys):
            if y not in df.columns:
                continue
            part = df[[x, y]].dropna()  # eval metrics are logged on fewer steps than train loss
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part[y],
                    mode="lines+markers" if len(part) < 50 else "lines",
                    name=_escape(name),
                    legendgroup=_escape(name),
                    showlegend=i == 0 or all(yy not in df.columns for yy in ys[:i]),
                    line={"color": color},
                ),
                row=i + 1,
                col=1,
            )
    fig.update_xaxes(title_text=_escape(x), row=len(ys), col=1)
    fig.update_layout(height=250 * len(ys) + 100, title="Training curves")
    return fig


def confusion_matrix(
    matrix: np.ndarray, labels: Sequence[str], title: str = "Confusion matrix"
) -> go.Figure:
    """Heatmap of a (true, predicted) count matrix with the class names on the axes."""
    m = np.asarray(matrix)
    n = len(labels)
    if m.shape != (n, n):
        raise WorkbenchError(f"confusion matrix shaped {m.shape} does not match {n} labels")
    names = _escape_all(labels)
    pos = list(range(n))
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=pos,
            y=pos,
            colorscale="Blues",
            texttemplate="%{z}",
            text=[[f"true {names[t]}, predicted {names[p]}" for p in pos] for t in pos],
            hovertemplate="%{text}<br>%{z}<extra></extra>",
        )
    )
    fig.update_xaxes(tickvals=pos, ticktext=names, title_text="predicted")
    fig.update_yaxes(tickvals=pos, ticktext=names, title_text="true", autorange="reversed")
    fig.update_layout(title=_escape(title))
    return fig


def learning_curve(
    df: pd.DataFrame, log_x: bool = True, title: str = "Accuracy vs. training examples"
) -> go.Figure:
    """Mean accuracy against n_train, one line per initialisation, with 95% CI error bars (std if no CI)."""
    _require(df, ["n_train", "init", "accuracy_mean", "accuracy_std"], "learning_curve")
    ci = {"accuracy_ci_low", "accuracy_ci_high"} <= set(df.columns)
    fig = go.Figure()
    names = labels_for(df["init"])
    for r, (init, part) in enumerate(df.groupby("init", sort=False)):
        part = part.sort_values("n_train")
        if ci:  # curve_summary's t interval; NaN (one seed) draws no bar
            bars = {"array": (part["accuracy_ci_high"] - part["accuracy_mean"]).to_numpy(),
                    "arrayminus": (part["accuracy_mean"] - part["accuracy_ci_low"]).to_numpy()}
        else:
            bars = {"array": part["accuracy_std"].to_numpy()}
        fig.add_trace(
            go.Scatter(
                x=part["n_train"],
                y=part["accuracy_mean"],
                error_y={"type": "data", **bars, "visible": True},
                mode="lines+markers",
                name=_escape(names[init]),
                hovertemplate=_full_name_hover(init, "%{x} examples: %{y:.3f}"),
                line={"color": _PALETTE[r % len(_PALETTE)]},
            )
        )
    fig.update_xaxes(title_text="training examples", type="log" if log_x else "linear")
    fig.update_yaxes(title_text="accuracy")
    fig.update_layout(title=_escape(title))
    return fig


def head_clusters(
    embedding_2d: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    stats_df: pd.DataFrame | None = None,
    hover_columns: Sequence[str] = ("attn_cls", "attn_sep", "attn_prev", "attn_next", "entropy"),
    title: str = "Attention heads (MDS of Jensen-Shannon distances)",
) -> go.Figure:
    """Scatter of heads in 2-D, one trace per cluster; head i is row i (= layer * H + head)."""
    xy = np.asarray(embedding_2d, dtype=float)
    labels = np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(labels) != len(xy):
        raise WorkbenchError(
            f"need an (n, 2) embedding and n labels; got {xy.shape} and {len(labels)} labels"
        )
    if stats_df is not None:
        if len(stats_df) != len(xy):
            raise WorkbenchError(f"stats_df has {len(stats_df)} rows for {len(xy)} heads")
        stats = stats_df.sort_values(["layer", "head"]).reset_index(drop=True)
        shown = [c for c in hover_columns if c in stats.columns]
        names = [
            f"L{int(row.layer)} H{int(row.head)}"
            + "".join(f"<br>{_escape(c)} {getattr(row, c):.2f}" for c in shown)
            for row in stats.itertuples()
        ]
    else:
        names = [f"head {i}" for i in range(len(xy))]
    fig = go.Figure()
    for r, label in enumerate(np.unique(labels)):
        idx = np.flatnonzero(labels == label)
        fig.add_trace(
            go.Scatter(
                x=xy[idx, 0],
                y=xy[idx, 1],
                mode="markers",
                name=_escape(f"cluster {label}"),
                text=[names[i] for i in idx],
                hovertemplate="%{text}<extra></extra>",
                marker={"size": 10, "color": _PALETTE[r % len(_PALETTE)]},
            )
        )
    fig.update_layout(title=_escape(title), xaxis_title="MDS 1", yaxis_title="MDS 2")
    return fig


def length_histograms(summary: Any) -> go.Figure:
    """Histograms of sentences per document, tokens per sentence and tokens per example."""
    panels = [
        ("sentences per document", summary.sentences_per_document),
        ("tokens per sentence", summary.tokens_per_sentence),
        ("tokens per example", summary.tokens_per_example),
    ]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[name for name, _ in panels])
    for col, (name, values) in enumerate(panels, start=1):
        fig.add_trace(go.Histogram(x=np.asarray(values), name=name, showlegend=False,
                                   marker_color=_PALETTE[col - 1]), row=1, col=col)
        fig.update_xaxes(title_text=name, row=1, col=col)
    fig.update_yaxes(title_text="count", row=1, col=1)
    fig.update_layout(height=330, margin=dict(t=40, b=40), bargap=0.05)
    return fig


def probe_by_layer(summary: pd.DataFrame, title: str = "Linear probe accuracy by layer") -> go.Figure:
    """Mean test accuracy per layer with its CI over seeds, one line per model (``probes.probe_summary``)."""
    _require(summary, ["init", "layer", "accuracy_mean", "accuracy_low", "accuracy_high"], "probe_by_layer")
    fig = go.Figure()
    names = labels_for(summary["init"])
    for r, (init, part) in enumerate(summary.groupby("init", sort=False)):
        part = part.sort_values("layer")
        mean = part["accuracy_mean"].to_numpy()
        fig.add_trace(go.Scatter(
            x=part["layer"], y=mean, mode="lines+markers", name=_escape(names[init]),
            hovertemplate=_full_name_hover(init, "layer %{x}: %{y:.3f}"),
            error_y={"type": "data", "symmetric": False, "visible": True,  # NaN (one seed): no bar
                     "array": np.nan_to_num(part["accuracy_high"].to_numpy() - mean),
                     "arrayminus": np.nan_to_num(mean - part["accuracy_low"].to_numpy())},
            line={"color": _PALETTE[r % len(_PALETTE)]}))
    fig.update_xaxes(title_text="layer (0 = embeddings)", dtick=1)
    fig.update_yaxes(title_text="test accuracy (mean, 95% CI)")
    fig.update_layout(title=_escape(title))
    return fig


def by_step(steps: Any, heads: Sequence[str] = ("heads_attn_cls", "heads_attn_sep", "heads_prev_max"),
            title: str = "Over pretraining: downstream probe, MLM/NSP and attention heads",
            random_accuracy: float | None = None) -> go.Figure:
    """Three panels against the pretraining step: probe accuracy (and the random twin), MLM/NSP accuracy, heads.

    ``steps``: ``progression.by_step``'s :class:`~workbench.evaluation.results.ByStep` (its twin's mean is the
    dashed line), or its ``frame`` with ``random_accuracy`` the twin's mean (None: no line).
    """
    frame = getattr(steps, "frame", steps)
    if random_accuracy is None and getattr(steps, "random_accuracy", None) is not None:
        random_accuracy = steps.random_accuracy[0]
    _require(frame, ["step", "probe_accuracy", "probe_low", "probe_high", *heads], "by_step")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=["downstream probe (test accuracy)", "pretraining evaluation (held out)",
                                        "attention heads"])
    steps, acc = frame["step"], frame["probe_accuracy"].to_numpy()
    fig.add_trace(go.Scatter(x=steps, y=acc, mode="lines+markers", name="probe", line={"color": _PALETTE[0]},
                             error_y={"type": "data", "symmetric": False, "visible": True,
                                      "array": np.nan_to_num(frame["probe_high"].to_numpy() - acc),
                                      "arrayminus": np.nan_to_num(acc - frame["probe_low"].to_numpy())}), 1, 1)
    if random_accuracy is not None:
        fig.add_hline(y=random_accuracy, line_dash="dash", line_color="gray", row=1, col=1,
                      annotation_text="random twin", annotation_position="bottom right")
    for k, name in enumerate(c for c in ("mlm_accuracy", "nsp_accuracy") if c in frame.columns):
        part = frame[["step", name]].dropna()
        fig.add_trace(go.Scatter(x=part["step"], y=part[name], mode="lines+markers", name=_escape(name),
                                 line={"color": _PALETTE[1 + k]}), 2, 1)
    for k, name in enumerate(heads):
        fig.add_trace(go.Scatter(x=steps, y=frame[name], mode="lines+markers", name=_escape(name),
                                 line={"color": _PALETTE[3 + k % (len(_PALETTE) - 3)]}), 3, 1)
    fig.update_xaxes(title_text="pretraining step", row=3, col=1)
    fig.update_layout(height=800, title=_escape(title))
    return fig
