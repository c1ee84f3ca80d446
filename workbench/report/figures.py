"""The plotly figures an executed notebook displayed, saved to the run's ``figures/`` folder.

Reports run with plotly's ``notebook+plotly_mimetype`` renderer, so each figure's JSON sits in
the executed notebook beside its HTML. Each becomes ``figures/NN_name-K.json`` (lossless: read it
back with ``plotly.io.read_json``) and ``.html`` (sharing one offline ``plotly.min.js``). SVG and
PNG are made on request with ``plots.save``: kaleido starts a browser for each call, which would
add seconds per figure to every report.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import write_atomic
from .markup import link, page
from .params import first_line

__all__ = ["FIGURE_MIMETYPE", "RENDERER", "notebook_figures", "save_figures", "write_figures_index"]

FIGURE_MIMETYPE = "application/vnd.plotly.v1+json"
RENDERER = "notebook+plotly_mimetype"  # HTML for the report page, JSON for the figures folder
PLOTLY_JS = "plotly.min.js"
IMAGES_NOTE = ("SVG and PNG for a paper: workbench.notebook.plots.save(plotly.io.read_json(JSON_PATH), STEM) writes STEM.svg, "
               "STEM.png and STEM.html (kaleido draws them with chromium)")


def notebook_figures(nb: Any) -> list[dict[str, Any]]:
    """The figure dicts (``data``, ``layout``) in the notebook's outputs, in order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            fig = out.get("data", {}).get(FIGURE_MIMETYPE)
            if isinstance(fig, str):
                fig = json.loads(fig)
            if isinstance(fig, dict) and isinstance(fig.get("data"), list):
                found.append(fig)
    return found


def save_figures(nb: Any, name: str, folder: Path) -> tuple[list[str], list[str]]:
    """Write notebook ``name``'s figures to ``folder``; the files written and notes on what was not."""
    import plotly.io as pio

    figures, written, notes = notebook_figures(nb), [], []
    if not figures:
        return written, notes
    folder.mkdir(exist_ok=True)
    if not (folder / PLOTLY_JS).exists():
        from plotly.offline import get_plotlyjs

        write_atomic(folder / PLOTLY_JS, get_plotlyjs())
    for k, spec in enumerate(figures, 1):
        stem = folder / f"{name}-{k}"
        text = json.dumps(spec)
        write_atomic(stem.with_suffix(".json"), text)
        written.append(stem.with_suffix(".json").name)
        try:
            fig = pio.from_json(text, skip_invalid=True)
            write_atomic(stem.with_suffix(".html"), pio.to_html(fig, include_plotlyjs=PLOTLY_JS, full_html=True))
            written.append(stem.with_suffix(".html").name)
        except Exception as exc:  # one odd figure must not lose the others or the run's record
            notes.append(f"{stem.name}: {type(exc).__name__}: {first_line(exc)}")
    notes.append(IMAGES_NOTE)
    return written, notes


def _title(path: Path) -> str:
    try:
        title = json.loads(path.read_text(encoding="utf-8")).get("layout", {}).get("title", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(title.get("text", "") if isinstance(title, dict) else title)


def write_figures_index(folder: Path, run_id: str, files: Sequence[str], notes: Sequence[str]) -> str:
    """``folder/index.html`` listing each figure in every format; its path relative to the run dir."""
    by_stem: dict[str, list[str]] = {}
    for f in files:
        by_stem.setdefault(Path(f).stem, []).append(f)
    rows = "".join(
        f"<tr><td>{html.escape(stem)}</td><td>{html.escape(_title(folder / f'{stem}.json'))}</td>"
        f"<td>{' · '.join(link(f, Path(f).suffix[1:]) for f in names)}</td></tr>"
        for stem, names in by_stem.items()
    )
    body = ('<p><a href="../index.html">run</a></p>'
            + (f"<table><tr><th>figure</th><th>title</th><th>files</th></tr>{rows}</table>" if rows else "<p>no figures</p>")
            + "".join(f"<p>{html.escape(n)}</p>" for n in dict.fromkeys(notes)))
    folder.mkdir(exist_ok=True)
    write_atomic(folder / "index.html", page(f"Figures of run {run_id}", body))
    return f"{folder.name}/index.html"
