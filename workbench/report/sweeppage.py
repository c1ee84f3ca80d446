"""A sweep's comparison page: mean ± 95% CI over seeds per combination, curves with bands, noise marked.

Intervals are Student-t intervals over seeds (``workbench.evaluation.stats.mean_ci``). A combination is
compared with the first one (the baseline): when their intervals overlap the difference is marked
"within noise"; beside it, the paired difference over the seeds both ran, with its interval.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .curves import band_figure, final_values, read_curves
from .files import write_owned
from .gainplot import GainPoint, gain_figure, points_from_metrics
from .markup import esc, grid_table, link, page, shown, status
from .metrics import order_metrics
from .pages import write_reports_index
from .records import RunResult, SweepResult

__all__ = ["Group", "compare_cell", "gain_points", "group_runs", "save_sweep", "summary_rows"]

_SKIP_SUFFIXES = ("_ci_low", "_ci_high")  # a run's own interval: not a quantity to average over seeds


class Group:
    """The runs of one combination of swept values, over seeds."""

    def __init__(self, label: str, runs: list[RunResult]) -> None:
        self.label, self.runs = label, runs
        self.values: dict[str, dict[Any, float]] = {}  # metric -> seed -> value, ok runs only
        self.texts: dict[str, set[str]] = {}  # metric -> its text values (a task name, a flag)
        for r in runs:
            if not r.ok:
                continue
            seed = (r.combination or {}).get("seed")
            for k, v in {**final_values(read_curves(r)), **order_metrics(r.metrics)}.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    if not k.endswith(_SKIP_SUFFIXES):
                        self.values.setdefault(k, {})[seed] = float(v)
                elif v is not None:
                    self.texts.setdefault(k, set()).add(str(v))

    def interval(self, metric: str) -> tuple[float, float, float] | None:
        """(mean, low, high) over seeds; None with fewer than two."""
        from ..evaluation.stats import mean_ci

        vals = list(self.values.get(metric, {}).values())
        return mean_ci(vals) if len(vals) >= 2 else None


def group_runs(runs: Sequence[RunResult], names: Sequence[str]) -> list[Group]:
    """Runs grouped by their swept values (seed aside), in sweep order."""
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        combo = r.combination or r.parameters
        groups.setdefault(", ".join(f"{n}={combo.get(n)}" for n in names), []).append(r)
    return [Group(label, rs) for label, rs in groups.items()]


def _overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return a[1] <= b[2] and b[1] <= a[2]


def compare_cell(group: Group, base: Group, metric: str) -> str:
    """One cell: the value or mean ± half-width, and against the baseline: the paired Δ and the noise mark."""
    vals = group.values.get(metric, {})
    if not vals:
        return html.escape(", ".join(sorted(group.texts.get(metric, ()))))
    own = group.interval(metric)
    if own is None:
        return esc(next(iter(vals.values())))
    mean, low, high = own
    text = f"{esc(mean)} ± {esc((high - low) / 2)} <small>[{esc(low)}, {esc(high)}] n={len(vals)}</small>"
    other = base.interval(metric)
    if group is base or other is None:
        return text
    mark = ('<span class="wb-noise">within noise</span>' if _overlap(own, other)
            else '<span class="wb-differs">intervals apart</span>')
    shared = [s for s in vals if s in base.values.get(metric, {})]
    if len(shared) >= 2:
        from ..evaluation.stats import NO_DIFFERENCE, paired_difference

        d = paired_difference([vals[s] for s in shared], [base.values[metric][s] for s in shared])
        words = NO_DIFFERENCE if d["verdict"] == NO_DIFFERENCE else "higher" if d["low"] > 0 else "lower"
        text += f"<br>paired Δ {d['mean']:+.4g} <small>[{d['low']:+.4g}, {d['high']:+.4g}], {d['n']} seeds: {words}</small>"
    return f"{text}<br>{mark}"


def summary_rows(groups: Sequence[Group]) -> list[list[str]]:
    """One row per metric, one column per combination."""
    metrics = list(dict.fromkeys(m for g in groups for m in order_metrics(dict.fromkeys([*g.values, *g.texts]))))
    return [[html.escape(m), *(compare_cell(g, groups[0], m) for g in groups)] for m in metrics]


def _runs_table(sweep: SweepResult, names: Sequence[str]) -> str:
    keys = list(dict.fromkeys(k for r in sweep.runs for k in order_metrics(r.metrics)))
    seeds = ["seed"] if sweep.seeds is not None else []
    rows = []
    for r in sweep.runs:
        combo, last = r.combination or r.parameters, final_values(read_curves(r))
        rows.append([link(f"../{r.run_id}/index.html", r.run_id), *(esc(combo.get(n)) for n in [*names, *seeds]),
                     status(r.status), *(esc(last.get(f"final {y}", "")) for y in ("loss", "eval mlm_accuracy")),
                     *(shown(r.metrics.get(k, ""), k) for k in keys)])
    return grid_table(["run", *names, *seeds, "status", "final loss", "final eval mlm_accuracy", *keys], rows)


def _figure(groups: Sequence[Group]) -> Any | None:
    curves = {g.label: [c for r in g.runs if r.ok and (c := read_curves(r))] for g in groups}
    curves = {label: cs for label, cs in curves.items() if cs}
    return band_figure(curves) if curves else None


def gain_points(groups: Sequence[Group], names: Sequence[str], prefix: str = "downstream") -> list[GainPoint]:
    """One point per combination: the mean gain over seeds with its t interval, or one run's gain with its own CI."""
    points = []
    for g in groups:
        ok = [r for r in g.runs if r.ok]
        if not ok:
            continue
        combo = ok[0].combination or ok[0].parameters
        params = {n: combo.get(n) for n in names}
        over_seeds = g.interval(f"{prefix}_gain")
        if over_seeds is not None:
            points.append(GainPoint(g.label, params, *(v * 100 for v in over_seeds)))
        elif (point := points_from_metrics(g.label, params, ok[0].metrics, prefix)) is not None:
            points.append(point)
    return points


def _figures(groups: Sequence[Group], names: Sequence[str]) -> str:
    """The gain against the swept values, then the training curves with bands; plotly.js inline once (offline)."""
    figs = [gain_figure(gain_points(groups, names), "Gain over the random twin (points, CI) by swept value"),
            _figure(groups)]
    shown = [f for f in figs if f is not None]
    parts = [f.to_html(include_plotlyjs=k == 0, full_html=False) for k, f in enumerate(shown)]
    if figs[1] is None:
        parts.append("<p>No training curves: no finished run wrote checkpoint/metrics.jsonl.</p>")
    return "".join(parts)


def save_sweep(sweep: SweepResult, out_root: Path) -> None:
    """Write the sweep's ``sweep.json`` and comparison page, then refresh the reports index."""
    names = list(sweep.grid)
    groups = group_runs(sweep.runs, names)
    grid = ", ".join(f"{n} ∈ {{{', '.join(map(str, v))}}}" for n, v in sweep.grid.items())
    seeds = f"seeds {', '.join(map(str, sweep.seeds))}" if sweep.seeds is not None else "one run per combination (no --seeds)"
    summary = ""
    if groups:
        head = ["metric", *(g.label + (" (baseline)" if k == 0 else "") for k, g in enumerate(groups))]
        summary = ("<h2>Over seeds</h2><p>mean ± half-width of the 95% Student-t interval over seeds; against the "
                   "baseline: paired difference and whether the intervals overlap (within noise).</p>"
                   + grid_table(head, summary_rows(groups)))
    body = (f'<p><a href="../index.html">all runs</a> · status {status(sweep.status)}</p>'
            f"<p>{html.escape(grid)}; {html.escape(seeds)}</p>"
            + (f"<p>resumed: {len(sweep.skipped)} finished run(s) kept</p>" if sweep.skipped else "")
            + (f"<p>SLURM job arrays: {html.escape(', '.join(sweep.slurm_jobs))} (logs and job scripts in "
               f'<a href="slurm/">slurm/</a>)</p>' if sweep.slurm_jobs else "")
            + summary + "<h2>Runs</h2>" + _runs_table(sweep, names) + _figures(groups, names))
    data = {"sweep_id": sweep.sweep_id, **sweep.definition, "status": sweep.status,
            "runs": [r.run_id for r in sweep.runs], "skipped": sweep.skipped, "launcher": sweep.launcher}
    if sweep.slurm_jobs:
        data["slurm_jobs"] = sweep.slurm_jobs
    write_owned(sweep.sweep_dir, "sweep.json", json.dumps(data, indent=2, default=str) + "\n", "sweep")
    write_owned(sweep.sweep_dir, "index.html", page(f"Sweep {sweep.sweep_id}", body), "sweep")
    write_reports_index(out_root)
