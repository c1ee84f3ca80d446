"""The reports index's runs table: one row per run, the answer first, sortable and filterable offline.

Each row: the run (and its notebooks), status and time, the parameters that differ from the
notebooks' defaults (all of them one click away), one column per headline metric led by the
answer in words ("gain +13.6 points (95% CI +12.4 to +14.7)"), the held-out MLM and NSP
accuracy, and the other metrics in a collapsed block. A headline metric is a recorded
``PREFIX_gain``, read with ``PREFIX_gain_ci_low``/``_high`` and ``PREFIX_verdict`` when present
(``probes.headline_metrics``). Numbers are rounded here; ``run.json`` keeps them in full. A few
lines of inline JavaScript sort on a header click and filter on typed text, with no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .markup import details, readable, shown, status
from .metrics import order_metrics
from .records import shown_status

__all__ = ["NO_CI", "PRETRAINING", "RUNS_CSS", "RUNS_SCRIPT", "answer", "answer_html", "changed_parameters",
           "effective_parameters", "headline_prefixes", "runs_table"]

_HEADLINE_PARTS = ("_gain", "_gain_ci_low", "_gain_ci_high", "_verdict", "_accuracy", "_random_accuracy", "_task",
                   "_n_test", "_seeds", "_confidence")
# Held-out pretraining evaluation (02's record_metrics): shown as columns of their own.
PRETRAINING = {"mlm_accuracy": "MLM accuracy (held out)", "nsp_accuracy": "NSP accuracy (held out)"}
_WORDS = {"gain": "gain", "loss": "loss", "at chance": "at chance"}  # at chance: both encoders guess
_NO_DIFFERENCE = "no measurable difference"
NO_CI = "no CI recorded"  # a gain recorded without its interval: a number, not yet an answer

RUNS_CSS = """.wb-answer{font-size:15px}.wb-gain{color:#15803d}.wb-loss{color:#b91c1c}.wb-nodiff{color:#374151}
.wb-small{color:#4b5563;font-size:12px}.wb-runs td{max-width:330px}.wb-runs details{margin:2px 0}
.wb-runs th[data-type]{cursor:pointer;user-select:none}.wb-runs th[aria-sort=ascending]::after{content:" ▲"}
.wb-runs th[aria-sort=descending]::after{content:" ▼"}.wb-runs summary{font-weight:normal;color:#1d4ed8}
.wb-changed{font-weight:bold}#wb-filter{font:inherit;padding:3px 6px;width:26em}.wb-nb{margin-right:4px}"""

RUNS_SCRIPT = """(() => {
  const table = document.getElementById("wb-runs");
  if (!table) return;
  const body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
  const key = (row, i, num) => {
    const cell = row.cells[i], text = (cell.dataset.sort ?? cell.textContent).trim();
    if (!num) return text === "" ? null : text.toLowerCase();
    const x = parseFloat(text);
    return Number.isNaN(x) ? null : x;
  };
  heads.forEach((th, i) => {
    if (th.dataset.type === undefined) return;
    const sort = () => {
      const num = th.dataset.type === "num", first = num ? "descending" : "ascending";
      const dir = th.getAttribute("aria-sort") === first ? (num ? "ascending" : "descending") : first;
      heads.forEach(h => { if (h.dataset.type !== undefined) h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", dir);
      const sign = dir === "ascending" ? 1 : -1;
      const rows = [...body.rows].sort((a, b) => {
        const x = key(a, i, num), y = key(b, i, num);
        if (x === null || y === null) return (x === null) - (y === null);  // no value: last either way
        return (x < y ? -1 : x > y ? 1 : 0) * sign;
      });
      rows.forEach(r => body.appendChild(r));
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
  });
  const box = document.getElementById("wb-filter"), count = document.getElementById("wb-shown");
  box.addEventListener("input", () => {
    const q = box.value.trim().toLowerCase();
    let n = 0;
    for (const row of body.rows) {
      row.hidden = q !== "" && !row.textContent.toLowerCase().includes(q);
      n += row.hidden ? 0 : 1;
    }
    count.textContent = `${n} of ${body.rows.length} runs shown`;
  });
})();"""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def headline_prefixes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The headline metrics the runs recorded (``PREFIX_gain``), ``downstream`` first."""
    found = dict.fromkeys(k[: -len("_gain")] for r in runs for k, v in order_metrics(r["metrics"]).items()
                          if k.endswith("_gain") and _number(v))
    return sorted(found, key=lambda p: p != "downstream")


def answer(metrics: Mapping[str, Any], prefix: str) -> tuple[str, str] | None:
    """The verdict in words and its numbers in points, e.g. ("gain", "+13.6 points (95% CI +12.4 to +14.7)")."""
    gain = metrics.get(f"{prefix}_gain")
    if not _number(gain):
        return None
    low, high = metrics.get(f"{prefix}_gain_ci_low"), metrics.get(f"{prefix}_gain_ci_high")
    if not (_number(low) and _number(high)):
        return NO_CI, f"{gain * 100:+.1f} points"
    recorded = metrics.get(f"{prefix}_verdict")
    verdict = recorded if isinstance(recorded, str) else "gain" if low > 0 else "loss" if high < 0 else _NO_DIFFERENCE
    level = metrics.get(f"{prefix}_confidence", 0.95)
    level = f"{level:.0%}" if _number(level) else "95%"
    return (_WORDS.get(verdict, _NO_DIFFERENCE),
            f"{gain * 100:+.1f} points ({level} CI {low * 100:+.1f} to {high * 100:+.1f})")


def _percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if _number(value) else "–"


def answer_html(metrics: Mapping[str, Any], prefix: str) -> str | None:
    """:func:`answer` as a coloured span: the verdict in bold, then its numbers (a gain without CI: the number only)."""
    said = answer(metrics, prefix)
    if said is None:
        return None
    words, numbers = said
    kind = {"gain": "wb-gain", "loss": "wb-loss"}.get(words, "wb-nodiff")
    lead = (f"{html.escape(numbers)} <i>{NO_CI}</i>" if words == NO_CI
            else f"<b>{html.escape(words)}</b> {html.escape(numbers)}")
    return f'<span class="wb-answer {kind}">{lead}</span>'


def _answer_cell(metrics: Mapping[str, Any], prefix: str) -> str:
    said = answer_html(metrics, prefix)
    if said is None:
        return '<td data-sort="">–</td>'
    m = lambda part: metrics.get(f"{prefix}{part}")  # noqa: E731
    context = []
    if _number(m("_accuracy")):
        context.append(f"{_percent(m('_accuracy'))} vs {_percent(m('_random_accuracy'))} random twin"
                       if _number(m("_random_accuracy")) else f"accuracy {_percent(m('_accuracy'))}")
    if m("_task") is not None:
        context.append(shown(m("_task")))
    context += [f"{readable(m(part))} {what}" for part, what in (("_n_test", "test"), ("_seeds", "seeds"))
                if _number(m(part))]
    return (f'<td data-sort="{m("_gain")!r}">{said}'
            + (f'<br><span class="wb-small">{" · ".join(c if c.startswith("<") else html.escape(c) for c in context)}'
               "</span>" if context else "") + "</td>")


def changed_parameters(run: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``run`` that differ from the notebooks' defaults (all given ones for a record without defaults)."""
    defaults = run.get("defaults") or {}
    return {k: v for k, v in run["parameters"].items() if k not in defaults or defaults[k] != v}


def effective_parameters(run: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter the run's notebooks saw: the defaults, then the run's own values."""
    return {**(run.get("defaults") or {}), **run["parameters"]}


def _lines(values: Mapping[str, Any], bold: Sequence[str] = ()) -> str:
    return "".join(f'<div{" class=wb-changed" if k in bold else ""}>{html.escape(k)}={shown(v, k, rounded=False)}</div>'
                   for k, v in values.items())


def _parameters_cell(run: Mapping[str, Any]) -> str:
    changed, full = changed_parameters(run), effective_parameters(run)
    own = _lines(changed) if changed else '<span class="wb-small">notebook defaults</span>'
    every = details(f"all {len(full)} parameters", _lines(dict(sorted(full.items())), list(changed))) if full else ""
    return f"<td>{own}{every}</td>"


def _when(run: Mapping[str, Any]) -> str:
    try:
        started = datetime.fromisoformat(str(run["started"])).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        started = str(run["started"])
    secs = run.get("seconds")
    if not _number(secs) or secs <= 0:
        return started
    took = f"{secs:.0f} s" if secs < 60 else f"{secs / 60:.0f} min" if secs < 3600 else f"{secs / 3600:.1f} h"
    return f"{started} · {took}"


def _run_cell(run: Mapping[str, Any]) -> str:
    d = run["_dir"]
    nbs = []
    for n in run["notebooks"]:
        name, state = n["name"], str(n.get("status"))
        short = name[:2] if name[:2].isdigit() else name
        tip = html.escape(f"{name}: {state}", quote=True)
        page = n.get("html")
        nbs.append(f'<a class="wb-nb wb-{html.escape(state)}" title="{tip}" href="{html.escape(quote(f"{d}/{page}"))}">'
                   f"{html.escape(short)}</a>" if isinstance(page, str)
                   else f'<span class="wb-nb wb-{html.escape(state)}" title="{tip}">{html.escape(short)}</span>')
    sweep = f' <span class="wb-small">sweep {html.escape(str(run["sweep"]))}</span>' if run.get("sweep") else ""
    return (f'<td data-sort="{html.escape(d)}"><a href="{html.escape(quote(f"{d}/index.html"))}">{html.escape(d)}</a>'
            f'{sweep}<br><span class="wb-small">notebooks {"".join(nbs) or "none"}</span></td>')


def _more_cell(metrics: Mapping[str, Any], prefixes: Sequence[str]) -> str:
    taken = {f"{p}{part}" for p in prefixes for part in _HEADLINE_PARTS} | set(PRETRAINING)
    rest = {k: v for k, v in order_metrics(metrics).items() if k not in taken}
    if not rest:
        return "<td></td>"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{shown(v, k)}</td></tr>" for k, v in rest.items())
    return f"<td>{details(f'{len(rest)} more metrics', f'<table>{rows}</table>')}</td>"


def runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The filter box and the runs table (``runs``: run.json dicts with ``_dir``, newest first)."""
    prefixes = headline_prefixes(runs)
    pretraining = [k for k in PRETRAINING if any(_number(r["metrics"].get(k)) for r in runs)]
    head = [("run", "text"), ("status · started · took", "text"), ("parameters changed", None),
            *((f"{p} gain over random twin" if p == "downstream" else f"{p} gain", "num") for p in prefixes),
            *((PRETRAINING[k], "num") for k in pretraining), ("other metrics", None)]
    th = "".join(f'<th tabindex="0" data-type="{kind}" aria-sort="none" title="click to sort">{html.escape(h)}</th>'
                 if kind else f"<th>{html.escape(h)}</th>" for h, kind in head)
    rows = []
    for r in runs:
        state = shown_status(r)
        cells = [_run_cell(r), f'<td data-sort="{html.escape(str(r["started"]))}">{status(state)}<br>'
                               f'<span class="wb-small">{html.escape(_when(r))}</span></td>', _parameters_cell(r),
                 *(_answer_cell(r["metrics"], p) for p in prefixes),
                 *(f'<td data-sort="{r["metrics"].get(k)!r}">{_percent(r["metrics"].get(k))}</td>'
                   if _number(r["metrics"].get(k)) else '<td data-sort="">–</td>' for k in pretraining),
                 _more_cell(r["metrics"], prefixes)]
        rows.append(f'<tr data-run="{html.escape(r["_dir"])}">{"".join(cells)}</tr>')
    box = ('<p><input id="wb-filter" type="search" aria-label="filter runs" '
           'placeholder="filter rows: objective=mlm, failed, ..."> '
           f'<span id="wb-shown" class="wb-small">{len(runs)} runs · click a header to sort</span></p>')
    return (box + f'<table id="wb-runs" class="wb-runs"><thead><tr>{th}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")
