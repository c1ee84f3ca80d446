"""Training curves of sweep runs, read from each checkpoint's ``metrics.jsonl``, drawn as mean with a band over seeds."""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .records import RunResult

__all__ = ["CURVES", "band_figure", "final_values", "read_curves"]

CURVES = ("loss", "eval mlm_accuracy")
_MAX_POINTS = 400  # per band: enough for the eye, and one interval per point stays cheap


def read_curves(run: RunResult) -> list[dict[str, Any]]:
    """Train loss and eval MLM accuracy by step from the run's ``checkpoint/metrics.jsonl``."""
    if not run.checkpoint:
        return []
    rows: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (run.run_dir / run.checkpoint / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                m = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if not isinstance(m, dict) or not isinstance(m.get("step"), int | float):
                continue
            if m.get("type") == "eval":
                if isinstance(m.get("mlm_accuracy"), int | float):
                    rows.append({"step": m["step"], "eval mlm_accuracy": m["mlm_accuracy"]})
            elif isinstance(m.get("loss"), int | float):
                rows.append({"step": m["step"], "loss": m["loss"]})
    return rows


def final_values(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The last logged value of each curve, as ``final loss`` and ``final eval mlm_accuracy``."""
    out = {}
    for y in CURVES:
        last = next((row[y] for row in reversed(rows) if y in row), None)
        if last is not None:
            out[f"final {y}"] = float(last)
    return out


def _series(curves: Sequence[Sequence[Mapping[str, Any]]], y: str) -> tuple[list[float], list[list[float]]]:
    """Steps every seed logged ``y`` at (thinned), and each step's values over seeds."""
    by_seed = [{row["step"]: row[y] for row in rows if y in row} for rows in curves]
    by_seed = [d for d in by_seed if d]
    if not by_seed:
        return [], []
    steps = sorted(set.intersection(*(set(d) for d in by_seed)))
    if len(steps) > _MAX_POINTS:
        stride = -(-len(steps) // _MAX_POINTS)
        steps = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
    return steps, [[d[s] for d in by_seed] for s in steps]


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def band_figure(groups: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> Any:
    """One subplot per curve; per combination its mean over seeds and, with two or more, a 95% CI band."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    from ..evaluation.stats import mean_ci

    ys = [y for y in CURVES if any(y in row for curves in groups.values() for rows in curves for row in rows)]
    fig = make_subplots(rows=len(ys), cols=1, shared_xaxes=True, subplot_titles=ys, vertical_spacing=0.08)
    for k, (label, curves) in enumerate(groups.items()):
        color, name = qualitative.Plotly[k % len(qualitative.Plotly)], html.escape(label, quote=False)
        for i, y in enumerate(ys):
            steps, values = _series(curves, y)
            if not steps:
                continue
            stats = [mean_ci(v) if len(v) >= 2 else (v[0], v[0], v[0]) for v in values]
            if len(values[0]) >= 2:
                fig.add_trace(go.Scatter(x=steps + steps[::-1], y=[s[2] for s in stats] + [s[1] for s in stats][::-1],
                                         fill="toself", fillcolor=_rgba(color, 0.2), line={"width": 0},
                                         hoverinfo="skip", showlegend=False, legendgroup=name, name=f"{name} 95% CI"),
                              row=i + 1, col=1)
            fig.add_trace(go.Scatter(x=steps, y=[s[0] for s in stats], mode="lines", line={"color": color},
                                     name=f"{name} (n={len(values[0])})", legendgroup=name, showlegend=i == 0),
                          row=i + 1, col=1)
    fig.update_xaxes(title_text="step", row=len(ys), col=1)
    fig.update_layout(height=250 * len(ys) + 100, title="Training curves: mean over seeds, 95% CI band")
    return fig
