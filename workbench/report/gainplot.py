"""The headline gain across runs: one point per run (or sweep combination) with its CI, against each parameter that varies.

Up to three varying parameters get a panel each (the gain with CI bars against the parameter's
values); more get one parallel-coordinates figure (each parameter an axis, then the gain and its
CI bounds). The reports index draws it over its runs, a sweep's page over its combinations.
Every string that reaches plotly is escaped, as in ``workbench.notebook.plots``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_PANELS", "GainPoint", "gain_figure", "points_from_metrics", "varying"]

MAX_PANELS = 3  # more varying parameters than this: parallel coordinates


@dataclass
class GainPoint:
    """One run or combination: its name, its parameters and its gain with CI, in points (NaN: unknown)."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    gain: float = math.nan
    low: float = math.nan
    high: float = math.nan


def _escape(text: Any) -> str:
    return html.escape(str(text), quote=False)


def _key(value: Any) -> str:
    return repr(value)


def varying(points: Sequence[GainPoint]) -> list[str]:
    """The parameters whose values differ between the points (a missing one counts as a value), in first-seen order."""
    names = dict.fromkeys(n for p in points for n in p.params)
    return [n for n in names if len({_key(p.params.get(n)) for p in points}) > 1]


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _shown(value: Any, name: str) -> str:
    from ..shortnames import short_value

    return _escape("–" if value is None else short_value(value, name))


def _bars(points: Sequence[GainPoint]) -> dict[str, Any]:
    up = [0.0 if math.isnan(p.high) else p.high - p.gain for p in points]
    down = [0.0 if math.isnan(p.low) else p.gain - p.low for p in points]
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down, "visible": True}


def _panels(points: Sequence[GainPoint], names: Sequence[str], title: str) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, subplot_titles=[_escape(n) for n in names],
                        horizontal_spacing=0.06)
    for col, name in enumerate(names, 1):
        values = [p.params.get(name) for p in points]
        numeric = _numeric(values)
        xs = values if numeric else [_shown(v, name) for v in values]
        hover = [_escape(p.label) + "".join(f"<br>{_escape(n)}={_shown(p.params.get(n), n)}" for n in names)
                 for p in points]
        fig.add_trace(go.Scatter(x=xs, y=[p.gain for p in points], mode="markers", error_y=_bars(points),
                                 text=hover, hovertemplate="%{text}<br>gain %{y:+.1f} points<extra></extra>",
                                 marker={"size": 10, "color": "#1d4ed8"}, showlegend=False), 1, col)
        fig.update_xaxes(type="linear" if numeric else "category", row=1, col=col)
    fig.add_hline(y=0, line_dash="dash", line_color="gray")
    fig.update_yaxes(title_text="gain (points, CI)", row=1, col=1)
    fig.update_layout(title=_escape(title), height=360, margin={"t": 70, "b": 50})
    return fig


def _dimension(name: str, values: Sequence[Any]) -> dict[str, Any]:
    if _numeric(values):
        return {"label": _escape(name), "values": list(values)}
    shown = [_shown(v, name) for v in values]
    order = list(dict.fromkeys(shown))
    return {"label": _escape(name), "values": [order.index(s) for s in shown], "tickvals": list(range(len(order))),
            "ticktext": order}


def _parallel(points: Sequence[GainPoint], names: Sequence[str], title: str) -> Any:
    import plotly.graph_objects as go

    gains = [p.gain for p in points]
    dims = [_dimension(n, [p.params.get(n) for p in points]) for n in names]
    dims += [{"label": "gain (points)", "values": gains},
             {"label": "CI low", "values": [p.low for p in points]}, {"label": "CI high", "values": [p.high for p in points]}]
    # red loss, grey nothing, blue gain: no white middle, which would vanish on the page
    scale = [[0.0, "#b91c1c"], [0.5, "#9ca3af"], [1.0, "#1d4ed8"]]
    line = {"color": gains, "colorscale": scale, "cmid": 0.0, "showscale": True, "colorbar": {"title": "gain"}}
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(title=_escape(title), height=420, margin={"t": 90, "l": 110, "r": 60})
    return fig


def gain_figure(points: Sequence[GainPoint], title: str = "Gain over the random twin, by parameter") -> Any | None:
    """A plotly figure of the gain against each varying parameter, or None with fewer than 2 points or nothing varying."""
    points = [p for p in points if not math.isnan(p.gain)]
    names = varying(points)
    if len(points) < 2 or not names:
        return None
    return _panels(points, names, title) if len(names) <= MAX_PANELS else _parallel(points, names, title)


def points_from_metrics(label: str, params: Mapping[str, Any], metrics: Mapping[str, Any],
                        prefix: str = "downstream") -> GainPoint | None:
    """A run's point: ``PREFIX_gain`` and its CI (fractions) in points; None when the run recorded no gain."""
    def pts(name: str) -> float:
        v = metrics.get(f"{prefix}_{name}")
        return float(v) * 100 if isinstance(v, int | float) and not isinstance(v, bool) else math.nan

    point = GainPoint(label, dict(params), pts("gain"), pts("gain_ci_low"), pts("gain_ci_high"))
    return None if math.isnan(point.gain) else point
