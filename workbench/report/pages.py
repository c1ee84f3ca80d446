"""A run's own page and the reports index that links every run and sweep.

The index is rebuilt from the ``run.json`` of every run, under an ``flock`` on a lock file in the
reports root, and written atomically: runs that finish at the same moment both appear, and a
reader never sees half a page. A malformed ``run.json`` is skipped with a note on stderr.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..shortnames import label_for
from .files import OutputDir, check_out_path, locked
from .gainplot import gain_figure, points_from_metrics
from .markup import details, esc, grid_table, inline, link, page, status, table
from .metrics import order_metrics
from .records import RunResult, read_run
from .runstable import (
    RUNS_CSS,
    RUNS_SCRIPT,
    answer_html,
    effective_parameters,
    headline_prefixes,
    runs_table,
)

__all__ = ["INDEX_LOCK", "run_page", "write_reports_index"]

INDEX_LOCK = ".workbench-index.lock"


def _provenance_section(data: dict[str, Any]) -> str:
    if not data:
        return ""
    shown = {k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, dict | list) else v) for k, v in data.items()}
    return details("Provenance (code, packages, machine, command)", table(shown))


def run_page(r: RunResult) -> str:
    """The run's ``index.html``: status, notebooks, parameters, headline metrics, figures, provenance."""
    rows = [[html.escape(n.name), status(n.status), esc(n.seconds if n.seconds is not None else ""),
             (link(n.html, "HTML") if n.html else "") + (" · " + link(n.notebook, "ipynb") if n.notebook else ""),
             html.escape(n.error or "")] for n in r.notebooks]
    head = (f'<a href="../index.html">all runs</a> · status {status(r.status)} · started {html.escape(r.started)}'
            f" · {r.seconds:.1f} s" + (f" · sweep {html.escape(r.sweep)}" if r.sweep else "")
            + (" · " + link(r.figures, "figures") if r.figures else ""))
    answers = "".join(f"<p>{html.escape(p)}: {said}</p>"
                      for p in headline_prefixes([{"metrics": r.metrics}]) if (said := answer_html(r.metrics, p)))
    ckpt = r.run_dir / r.checkpoint if r.checkpoint else None
    body = (f"<p>{head}</p>" + answers
            + (f'<p class="wb-failed">{html.escape(r.error)}</p>' if r.error else "")
            + grid_table(["notebook", "status", "seconds", "output", "error"], rows)
            + "<h2>Parameters</h2>" + (table(r.parameters, short=True) if r.parameters else "<p>defaults</p>")
            + "<h2>Headline metrics</h2>" + (table(order_metrics(r.metrics), short=True) if r.metrics else "<p>none recorded</p>")
            + (f'<p>checkpoint: <code title="{html.escape(str(ckpt))}">{html.escape(label_for(str(ckpt)))}</code></p>'
               if ckpt else "")
            + (f"<p>continued from the checkpoints of <code>{html.escape(r.resumed_from)}</code> (an interrupted "
               "attempt)</p>" if r.resumed_from else "")
            + _provenance_section(r.provenance))
    return page(f"Run {r.run_id}", body, css=RUNS_CSS)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a sweep being written for the first time, or damaged: not listed


def _plotly_src(out: OutputDir) -> str | bool:
    """plotly.js for the index: one shared file in the reports root, written once; inline if a foreign file has its name."""
    import plotly
    from plotly.offline import get_plotlyjs

    name = f"plotly-{plotly.__version__}.min.js"
    if not (out.path / name).exists():
        out.write_text(name, get_plotlyjs())
    return name if out.owns(name) else True


def _gain_section(out: OutputDir, runs: list[dict[str, Any]]) -> str:
    """The headline gain against each parameter that varies between runs, when 2 or more runs recorded one."""
    prefixes = headline_prefixes(runs)
    if not prefixes:
        return ""
    points = [pt for r in runs if (pt := points_from_metrics(r["_dir"], effective_parameters(r), r["metrics"], prefixes[0]))]
    fig = gain_figure(points, f"{prefixes[0]} gain (points, CI) against each parameter that varies between runs")
    if fig is None:
        return ""
    return ("<h2>Gain across runs</h2>"
            + fig.to_html(include_plotlyjs=_plotly_src(out), full_html=False, config={"displaylogo": False}))


def _index_body(out: OutputDir) -> str:
    """Every run and sweep dir the workbench wrote in ``out`` (foreign folders are not listed)."""
    dirs = [out.path / name for name in out.owned() if (out.path / name).is_dir()]
    runs = [r | {"_dir": d.name} for d in dirs if (d / "run.json").exists() and (r := read_run(d / "run.json")) is not None]
    runs.sort(key=lambda r: (r["started"], r["_dir"]), reverse=True)
    body = runs_table(runs) + _gain_section(out, runs)
    sweeps = [s | {"_dir": d.name} for d in dirs if (d / "sweep.json").exists() and isinstance(s := _json(d / "sweep.json"), dict)]
    if sweeps:
        rows = [[link(f"{s['_dir']}/index.html", s["_dir"]), status(str(s.get("status", "?"))),
                 inline({k: ", ".join(map(str, v)) for k, v in (s.get("grid") or {}).items() if isinstance(v, list)}),
                 esc(", ".join(map(str, s.get("seeds") or [])) or "-"), esc(len(s.get("runs") or []))]
                for s in sorted(sweeps, key=lambda s: s["_dir"], reverse=True)]
        body += "<h2>Sweeps</h2>" + grid_table(["sweep", "status", "grid", "seeds", "runs"], rows)
    return body


def write_reports_index(out_root: str | Path = "reports") -> Path:
    """Regenerate ``out_root/index.html`` from every run's ``run.json`` and every sweep's ``sweep.json``."""
    root = check_out_path(out_root, "--out")
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / INDEX_LOCK):  # read and write as one step: the last writer saw every run
        out = OutputDir.open(root, "report")  # inside the lock: the manifest as the last writer left it
        if not out.owns(INDEX_LOCK):
            out.adopt(INDEX_LOCK, "log")
        out.write_text("index.html", page("Reports", _index_body(out), css=RUNS_CSS, script=RUNS_SCRIPT))
    return root / "index.html"
