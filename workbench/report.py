"""Batch-run the notebook sequence with papermill into HTML reports, and sweep parameters over it.

`workbench report` runs ``notebooks/NN_*.ipynb`` in order into ``reports/<run-id>/`` (executed
notebooks, their HTML, ``run.json`` and an ``index.html``) and regenerates ``reports/index.html``.
Parameters are checked against each notebook's ``parameters`` cell first, because plain papermill
injects a misspelt name silently. The notebook that declares ``out_dir`` (02) writes its
checkpoint to ``<run dir>/checkpoint``, and later notebooks that declare ``model`` get that path.
Notebooks call :func:`record_metrics` to report headline metrics; the runner collects them from the
executed notebooks (later notebooks override earlier ones). `workbench sweep` runs one report per
combination of values and writes a comparison page with overlaid training curves.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import html
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import WorkbenchError

__all__ = [
    "METRICS_MIMETYPE",
    "NotebookParam",
    "NotebookResult",
    "RunResult",
    "SweepResult",
    "find_notebooks",
    "load_params_file",
    "notebook_parameters",
    "record_metrics",
    "register_cli",
    "run_report",
    "run_sweep",
    "write_reports_index",
]

METRICS_MIMETYPE = "application/vnd.workbench.metrics+json"
CHECKPOINT_DIR = "checkpoint"
_SCALARS = (str, int, float, bool)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
Progress = Callable[[str], None] | None


# --------------------------------------------------------------------------- headline metrics

def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, _SCALARS):
        value = value.item()  # numpy / torch scalars
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not valid JSON
    return str(value)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def record_metrics(metrics: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """Show headline metrics as a table and mark them for the report runner to collect."""
    from IPython.display import display

    values = {**(metrics or {}), **more}
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise WorkbenchError(f"metric names must be strings, got {bad!r}; e.g. record_metrics({{'loss': 2.1}})")
    clean = {k: _jsonable(v) for k, v in values.items()}
    width = max((len(k) for k in clean), default=0)
    text = "\n".join(f"{k.ljust(width)}  {_fmt(v)}" for k, v in clean.items())
    display({METRICS_MIMETYPE: clean, "text/plain": text, "text/html": _table(clean)}, raw=True)
    return clean


def _collect_metrics(nb: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get(METRICS_MIMETYPE)
            if isinstance(data, str):
                data = json.loads(data)
            if isinstance(data, dict):
                found.update(data)
    return found


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class NotebookParam:
    """A parameter of a notebook's ``parameters`` cell: its literal default and that default's type."""

    name: str
    default: Any
    type: type | None  # None: the default is not a str/int/float/bool literal, so any value goes


def find_notebooks(notebooks_dir: str | Path, select: Sequence[str] | None = None) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks of ``notebooks_dir`` in order, or the ones ``select`` names."""
    root = Path(notebooks_dir)
    found = sorted(p for p in root.glob("[0-9][0-9]_*.ipynb") if p.is_file())
    if not found:
        raise WorkbenchError(f"no NN_name.ipynb notebooks in {root}; pass --notebooks-dir DIR")
    if not select:
        return found
    chosen = []
    for want in select:
        key = want.strip().removesuffix(".ipynb")
        hits = [p for p in found if p.stem == key or p.stem[:2] == key.zfill(2)]
        if not hits:
            names = ", ".join(p.stem[:2] for p in found)
            raise WorkbenchError(f"no notebook {want!r} in {root}; choose from {names} (e.g. --notebooks 01,03)")
        chosen += [p for p in hits if p not in chosen]
    return sorted(chosen)


def notebook_parameters(path: str | Path) -> dict[str, NotebookParam]:
    """The parameters a notebook declares: each top-level ``name = value`` of its parameters cell."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise WorkbenchError(f"cannot read notebook {path} ({type(exc).__name__}: {_first_line(exc)}); fix or remove it") from None
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return {}
    # Not papermill.inspect_notebook: it skips any line with two `=`, comments included
    # (papermill#772, #864), e.g. 01's `max_documents = 0  # (0 = all)`; ast reads it right.
    source = TransformerManager().transform_cell(cell.source)  # IPython magics -> Python
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise WorkbenchError(f"the parameters cell of {path} is not valid Python (line {exc.lineno}: {exc.msg}); fix it") from None
    params = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        try:
            default = ast.literal_eval(node.value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default = ast.get_source_segment(source, node.value)  # an expression: no type to check
        tp = type(default) if isinstance(default, _SCALARS) else None
        params.update({t.id: NotebookParam(t.id, default, tp) for t in targets if isinstance(t, ast.Name)})
    return params


def load_params_file(path: str | Path) -> dict[str, Any]:
    """A flat ``name: value`` YAML mapping of notebook parameters."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"cannot read parameters file {path} ({exc.strerror}); pass an existing YAML file to --params") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise WorkbenchError(f"parameters file {path} is not valid YAML ({first}); write one `name: value` per line") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or any(not isinstance(k, str) for k in data):
        raise WorkbenchError(f"parameters file {path} must be a flat mapping of `name: value` lines")
    nested = [k for k, v in data.items() if v is not None and not isinstance(v, _SCALARS)]
    if nested:
        raise WorkbenchError(f"parameters file {path}: {', '.join(nested)} must be single values (str, number or bool), not lists or mappings")
    return data


def _parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise WorkbenchError(f"{flag} {item!r} is not NAME=VALUE; e.g. {flag} mask_rate=0.3")
        out[name.strip()] = value
    return out


def _coerce(name: str, value: Any, param: NotebookParam) -> Any:
    """``value`` (a flag's string or a YAML scalar) as the type of the notebook's default."""
    tp, default = param.type, param.default
    if value is not None and not isinstance(value, _SCALARS):
        raise WorkbenchError(f"{name}={value!r} is not a single value; notebook parameters are str, int, float or bool")
    if tp is None:
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise WorkbenchError(f"{name}={value!r} is not a boolean (default {default!r}); pass {name}=true or {name}=false")
    if tp is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            with contextlib.suppress(ValueError):
                return int(text)
        raise WorkbenchError(f"{name}={value!r} is not an integer (default {default!r}); pass a whole number, e.g. {name}={default}")
    if tp is float and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        if text is not None:
            with contextlib.suppress(ValueError):
                return float(text)
        raise WorkbenchError(f"{name}={value!r} is not a number (default {default!r}); pass e.g. {name}={default}")
    if tp is str and value is not None and not isinstance(value, bool):
        return str(value)  # a YAML number for a text parameter, e.g. a hub revision
    raise WorkbenchError(f"{name}={value!r} is not a {tp.__name__} (default {default!r}); pass e.g. {name}={default!r}")


def _absolute(value: Any) -> Any:
    # Kernels run in the notebooks dir: a relative path the user typed means one from their cwd.
    if isinstance(value, str) and value and not os.path.isabs(value) and Path(value).exists():
        return str(Path(value).resolve())
    return value


@dataclass
class _Plan:
    notebooks_dir: Path
    paths: list[Path]
    params: dict[str, Any]  # the user's values, coerced
    per_notebook: list[dict[str, Any]]  # of those, the ones each notebook declares
    producer: int | None  # the notebook that writes the checkpoint (declares out_dir)
    consumers: list[int]  # later notebooks that get the checkpoint as `model`


def _plan(params: Mapping[str, Any], notebooks_dir: str | Path, select: Sequence[str] | None) -> _Plan:
    """Check ``params`` against the notebooks' parameters cells; nothing runs."""
    paths = find_notebooks(notebooks_dir, select)
    declared = [notebook_parameters(p) for p in paths]
    valid = sorted({n for d in declared for n in d} - {"out_dir"})
    unknown = sorted(set(params) - set(valid) - {"out_dir"})
    if unknown:
        raise WorkbenchError(
            f"unknown parameter(s) {', '.join(unknown)}: not in the parameters cell of "
            f"{', '.join(p.stem for p in paths)}; valid names: {', '.join(valid) or '(none)'}"
        )
    if "out_dir" in params:
        raise WorkbenchError("out_dir is set by the report runner (<run dir>/checkpoint); drop -p out_dir")
    per_notebook = [{k: _absolute(_coerce(k, v, d[k])) for k, v in params.items() if k in d} for d in declared]
    merged: dict[str, Any] = {}
    for values in per_notebook:
        merged.update({k: v for k, v in values.items() if k not in merged})
    producer = next((i for i, d in enumerate(declared) if "out_dir" in d), None)
    consumers = [] if producer is None or "model" in params else [
        i for i, d in enumerate(declared) if i > producer and "model" in d
    ]
    return _Plan(Path(notebooks_dir).resolve(), paths, merged, per_notebook, producer, consumers)


# --------------------------------------------------------------------------- running

@dataclass
class NotebookResult:
    """One notebook of a run: ``status`` is ok, failed, skipped, interrupted or pending."""

    name: str
    status: str = "pending"
    notebook: str | None = None  # paths relative to the run dir
    html: str | None = None
    seconds: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunResult:
    """A report run: where it is, how each notebook went and the headline metrics."""

    run_id: str
    run_dir: Path
    status: str
    parameters: dict[str, Any]
    notebooks: list[NotebookResult]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # one line naming the failed notebook and its HTML page
    checkpoint: str | None = None
    started: str = ""
    seconds: float = 0.0
    sweep: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every notebook ran through."""
        return self.status == "ok"

    @property
    def index(self) -> Path:
        """The run's ``index.html``."""
        return self.run_dir / "index.html"

    def to_json(self) -> dict[str, Any]:
        """What ``run.json`` holds."""
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


def _default_id(params: Mapping[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{datetime.now():%Y%m%d-%H%M%S}-{digest}"


def _check_id(run_id: str, what: str) -> str:
    if not _ID.match(run_id):
        raise WorkbenchError(f"{what} {run_id!r} must be letters, digits, '.', '_' or '-' (up to 100); e.g. {what.split()[0]}-lr3e-4")
    return run_id


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _papermill_noise(record: logging.LogRecord) -> bool:
    # Parameters are checked before papermill runs; its own parser's misses (papermill#864) would
    # warn "Passed unknown parameter" about names the notebook does declare.
    return not record.getMessage().startswith(("Passed unknown parameter", "Unable to parse line"))


@contextlib.contextmanager
def _execution_env() -> Iterator[None]:
    # plotly 6+ renders to a mimetype nbconvert drops (plotly.py#5365); the `notebook` renderer
    # embeds plotly.js once per notebook, offline. Kernels inherit os.environ at start-up.
    old = os.environ.get("PLOTLY_RENDERER")
    os.environ["PLOTLY_RENDERER"] = "notebook"
    loggers = [logging.getLogger(n) for n in ("papermill", "papermill.translators")]
    for logger in loggers:
        logger.addFilter(_papermill_noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_papermill_noise)
        if old is None:
            os.environ.pop("PLOTLY_RENDERER", None)
        else:
            os.environ["PLOTLY_RENDERER"] = old


def _first_line(text: Any, limit: int = 200) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _execute_one(src: Path, out: Path, params: dict[str, Any], cwd: Path, timeout: float | None) -> str | None:
    """Run one notebook into ``out``; the error (one line) if it failed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        with _execution_env():
            papermill.execute_notebook(
                # Absolute: papermill saves the output after each cell from inside `cwd`.
                str(src.resolve()), str(out.resolve()), parameters=params, kernel_name="python3", cwd=str(cwd),
                progress_bar=False, log_output=False, request_save_on_cell_execute=True,
                execution_timeout=timeout,
                # ipykernel 7 warns about TCP transport on every start; that's noise in a batch log.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
    except PapermillExecutionError as exc:
        return f"{exc.ename}: {_first_line(exc.evalue)} (cell In [{exc.exec_count}])"
    except Exception as exc:  # a dead kernel or a cell timeout fails the notebook, not the runner
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _export_html(nb: Any, path: Path, result: RunResult, entry: NotebookResult, cwd: Path) -> None:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    # The lab template with its CDN scripts (require.js, MathJax, mermaid, the widget manager)
    # left out: a report must open offline with no failed requests; views and figures inline
    # what they need, and widgets are for JupyterLab (a report keeps their last static output).
    exporter = HTMLExporter(template_name="lab", embed_images=True, extra_loaders=[DictLoader({_TEMPLATE: _OFFLINE_LAB})],
                            template_file=_TEMPLATE)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"{entry.name} · {result.run_id}", "path": str(cwd)}})
    body = _CDN_SCRIPT.sub("", body)  # plotly's notebook renderer adds MathJax from a CDN to each figure
    bar = (
        '<input type="checkbox" id="wb-hide-code" class="wb-toggle">'
        f'<div class="wb-bar"><a href="index.html">run {html.escape(result.run_id)}</a> · '
        f'{html.escape(entry.name)} · <span class="wb-{entry.status}">{html.escape(entry.status)}</span>'
        + (f' · <a href="#papermill-error-cell">{html.escape(entry.error or "error")}</a>' if entry.status == "failed" else "")
        + '<label for="wb-hide-code"><span class="wb-off">Hide code</span><span class="wb-on">Show code</span></label></div>'
        + _TOGGLE_CSS
    )
    body = re.sub(r"<body[^>]*>", lambda m: m.group(0) + bar, body, count=1)
    _write_atomic(path, body)


_TEMPLATE = "workbench_offline.html.j2"
_OFFLINE_LAB = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
_CDN_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>')

# A CSS-only toggle: a checkbox ahead of <main> hides code inputs when ticked; no script runs.
_TOGGLE_CSS = """<style>
.wb-toggle{position:absolute;opacity:0;pointer-events:none}
.wb-bar{font:14px system-ui,sans-serif;padding:6px 12px;background:#f3f4f6;border-bottom:1px solid #ddd}
.wb-bar label{float:right;cursor:pointer;text-decoration:underline}
.wb-on,.wb-toggle:checked~.wb-bar .wb-off{display:none}
.wb-toggle:checked~.wb-bar .wb-on{display:inline}
.wb-toggle:checked~main .jp-CodeCell .jp-Cell-inputWrapper,
.wb-toggle:checked~main .jp-CodeCell.jp-mod-noOutputs{display:none}
.wb-toggle:focus-visible~.wb-bar label{outline:2px solid #2563eb}
.wb-ok{color:#15803d}.wb-failed,.wb-interrupted{color:#b91c1c;font-weight:bold}
</style>"""


def _save(result: RunResult, out_root: Path) -> None:
    _write_atomic(result.run_dir / "run.json", json.dumps(result.to_json(), indent=2) + "\n")
    _write_atomic(result.index, _run_page(result))
    write_reports_index(out_root)


def _execute(plan: _Plan, run_dir: Path, out_root: Path, timeout: float | None, progress: Progress,
             sweep: str | None = None) -> RunResult:
    import nbformat

    result = RunResult(run_dir.name, run_dir, "running", plan.params,
                       [NotebookResult(p.stem) for p in plan.paths], started=datetime.now().isoformat(timespec="seconds"), sweep=sweep)
    checkpoint = (run_dir / CHECKPOINT_DIR).resolve()
    if plan.producer is not None:
        result.checkpoint = CHECKPOINT_DIR
    run_dir.mkdir(parents=True)
    _save(result, out_root)
    start = time.monotonic()
    current: NotebookResult | None = None
    try:
        for i, (src, entry) in enumerate(zip(plan.paths, result.notebooks, strict=True)):
            current = entry
            entry.parameters = dict(plan.per_notebook[i])
            if i == plan.producer:
                entry.parameters["out_dir"] = str(checkpoint)
            if i in plan.consumers:
                entry.parameters["model"] = str(checkpoint)
            if progress:
                progress(f"[{i + 1}/{len(plan.paths)}] {src.name} ...")
            out, t0 = run_dir / src.name, time.monotonic()
            entry.status = "running"
            error = _execute_one(src, out, entry.parameters, plan.notebooks_dir, timeout)
            entry.seconds = round(time.monotonic() - t0, 2)
            entry.status, entry.error = ("failed", error) if error else ("ok", None)
            if out.exists():
                entry.notebook = out.name
                nb = nbformat.read(out, as_version=4)
                result.metrics.update(_collect_metrics(nb))
                try:
                    _export_html(nb, run_dir / f"{src.stem}.html", result, entry, plan.notebooks_dir)
                    entry.html = f"{src.stem}.html"
                except Exception as exc:  # a broken export must not lose the run's record
                    entry.error = (entry.error + "; " if entry.error else "") + f"HTML export failed: {_first_line(exc)}"
            if progress:
                progress(f"      {entry.status} in {entry.seconds:.1f} s" + (f": {error}" if error else ""))
            if error:
                where = run_dir / (entry.html or entry.notebook or "")
                result.status = "failed"
                result.error = f"notebook {src.stem} failed: {error}; see {where}"
                for later in result.notebooks[i + 1:]:
                    later.status = "skipped"
                break
            _save(result, out_root)
        else:
            result.status = "ok"
    except BaseException:
        # Ctrl-C (or a bug) mid-run: leave a record that says so, then let it propagate.
        result.status = "interrupted"
        if current is not None and current.status == "running":
            current.status = "interrupted"
        raise
    finally:
        result.seconds = round(time.monotonic() - start, 2)
        _save(result, out_root)
    return result


def run_report(params: Mapping[str, Any] | None = None, notebooks_dir: str | Path = "notebooks",
               out_root: str | Path = "reports", run_id: str | None = None,
               notebooks: Sequence[str] | None = None, timeout: float | None = None,
               progress: Progress = None) -> RunResult:
    """Run the notebook sequence with ``params`` into ``out_root/<run-id>/`` and index it."""
    params = dict(params or {})
    plan = _plan(params, notebooks_dir, notebooks)
    out_root = Path(out_root)
    if run_id is not None:
        _check_id(run_id, "run id")
        if (out_root / run_id).exists():
            raise WorkbenchError(f"{out_root / run_id} already exists; pass another --run-id or remove it")
        run_dir = out_root / run_id
    else:
        base = _default_id(plan.params)
        run_dir = next(out_root / f"{base}{s}" for s in ("", *(f"-{k}" for k in range(2, 10**6)))
                       if not (out_root / f"{base}{s}").exists())
    return _execute(plan, run_dir, out_root, timeout, progress)


# --------------------------------------------------------------------------- sweeps

@dataclass
class SweepResult:
    """A sweep: its comparison page and one run per combination of values."""

    sweep_id: str
    sweep_dir: Path
    grid: dict[str, list[Any]]
    runs: list[RunResult]

    @property
    def ok(self) -> bool:
        """Whether every run went through."""
        return all(r.ok for r in self.runs)

    @property
    def index(self) -> Path:
        """The comparison page."""
        return self.sweep_dir / "index.html"


def run_sweep(grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any] | None = None,
              notebooks_dir: str | Path = "notebooks", out_root: str | Path = "reports",
              notebooks: Sequence[str] | None = None, sweep_id: str | None = None,
              timeout: float | None = None, progress: Progress = None) -> SweepResult:
    """One report per combination of ``grid`` values (over ``params``), then a comparison page."""
    if not grid or any(not values for values in grid.values()):
        raise WorkbenchError("a sweep needs at least one --param NAME=V1,V2 with values")
    for name, values in grid.items():
        if len(set(map(str, values))) != len(values):
            raise WorkbenchError(f"--param {name} lists a value twice ({', '.join(map(str, values))}); list each once")
    out_root = Path(out_root)
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    plans = [_plan({**(params or {}), **combo}, notebooks_dir, notebooks) for combo in combos]  # all checked first
    sweep_id = _check_id(sweep_id, "sweep id") if sweep_id else _default_id({"grid": grid, "params": params})
    sweep_dir = out_root / f"sweep-{sweep_id}"
    run_dirs = [out_root / f"{sweep_id}-{k:02d}" for k in range(1, len(plans) + 1)]
    taken = [str(p) for p in (sweep_dir, *run_dirs) if p.exists()]
    if taken:
        raise WorkbenchError(f"{taken[0]} already exists; pass another --sweep-id or remove it")
    sweep_dir.mkdir(parents=True)
    shown = {n: list(dict.fromkeys(plan.params.get(n) for plan in plans)) for n in grid}  # coerced
    result = SweepResult(sweep_id, sweep_dir, shown, [])
    for k, (plan, run_dir) in enumerate(zip(plans, run_dirs, strict=True), 1):
        if progress:
            label = ", ".join(f"{n}={plan.params.get(n)}" for n in grid)
            progress(f"run {k}/{len(plans)} ({label}): {run_dir}")
        result.runs.append(_execute(plan, run_dir, out_root, timeout, progress, sweep=sweep_id))
        _save_sweep(result, out_root)
    _save_sweep(result, out_root)
    return result


def _read_curves(run: RunResult) -> list[dict[str, Any]]:
    """Train loss and eval MLM accuracy by step from the run's ``checkpoint/metrics.jsonl``."""
    if not run.checkpoint:
        return []
    path = run.run_dir / run.checkpoint / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
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


def _save_sweep(sweep: SweepResult, out_root: Path) -> None:
    names = list(sweep.grid)
    curves = {", ".join(f"{n}={_fmt(r.parameters.get(n))}" for n in names): _read_curves(r) for r in sweep.runs}
    curves = {label: rows for label, rows in curves.items() if rows}
    if curves:
        from .plots import training_curves

        ys = [y for y in ("loss", "eval mlm_accuracy") if any(y in row for rows in curves.values() for row in rows)]
        fig = training_curves(runs=curves, ys=ys)
        figure = fig.to_html(include_plotlyjs=True, full_html=False)  # inline plotly.js: offline
    else:
        figure = "<p>No training curves: no run wrote checkpoint/metrics.jsonl.</p>"
    metric_keys = list(dict.fromkeys(k for r in sweep.runs for k in r.metrics))
    head = ["run", *names, "status", "final loss", "final eval mlm_accuracy", *metric_keys]
    rows = []
    for r in sweep.runs:
        curve = _read_curves(r)
        last = {y: next((row[y] for row in reversed(curve) if y in row), "") for y in ("loss", "eval mlm_accuracy")}
        rows.append([_link(f"../{r.run_id}/index.html", r.run_id), *(_esc(r.parameters.get(n)) for n in names),
                     _status(r.status), _esc(last["loss"]), _esc(last["eval mlm_accuracy"]),
                     *(_esc(r.metrics.get(k, "")) for k in metric_keys)])
    grid = ", ".join(f"{n} ∈ {{{', '.join(map(str, v))}}}" for n, v in sweep.grid.items())
    body = (f'<p><a href="../index.html">all runs</a></p><p>{html.escape(grid)}</p>'
            f"{_grid_table(head, rows)}{figure}")
    data = {"sweep_id": sweep.sweep_id, "grid": sweep.grid, "status": "ok" if sweep.ok else "failed",
            "runs": [r.run_id for r in sweep.runs]}
    _write_atomic(sweep.sweep_dir / "sweep.json", json.dumps(data, indent=2, default=str) + "\n")
    _write_atomic(sweep.index, _page(f"Sweep {sweep.sweep_id}", body))
    write_reports_index(out_root)


# --------------------------------------------------------------------------- HTML pages

_PAGE_CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#111}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}.wb-ok{color:#15803d}.wb-failed,.wb-interrupted{color:#b91c1c;font-weight:bold}
td:first-child{white-space:nowrap}.wb-skipped,.wb-pending{color:#6b7280}.wb-running{color:#b45309}code{font-size:12px}"""


def _esc(value: Any) -> str:
    return html.escape(_fmt(value))


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(quote(href))}">{html.escape(text)}</a>'


def _status(status: str) -> str:
    return f'<span class="wb-{html.escape(status)}">{html.escape(status)}</span>'


def _table(values: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_esc(v)}</td></tr>" for k, v in values.items())
    return f"<table>{rows}</table>"


def _grid_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table whose header is text and whose cells are already HTML."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_PAGE_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _inline(values: Mapping[str, Any]) -> str:
    return "<br>".join(f"{html.escape(str(k))}={_esc(v)}" for k, v in values.items())


def _run_page(r: RunResult) -> str:
    rows = [[html.escape(n.name), _status(n.status), _esc(n.seconds if n.seconds is not None else ""),
             (_link(n.html, "HTML") if n.html else "") + (" · " + _link(n.notebook, "ipynb") if n.notebook else ""),
             html.escape(n.error or "")] for n in r.notebooks]
    body = (f'<p><a href="../index.html">all runs</a> · status {_status(r.status)} · started {html.escape(r.started)}'
            f" · {r.seconds:.1f} s" + (f" · sweep {html.escape(r.sweep)}" if r.sweep else "") + "</p>"
            + (f'<p class="wb-failed">{html.escape(r.error)}</p>' if r.error else "")
            + _grid_table(["notebook", "status", "seconds", "output", "error"], rows)
            + "<h2>Parameters</h2>" + (_table(r.parameters) if r.parameters else "<p>defaults</p>")
            + "<h2>Headline metrics</h2>" + (_table(r.metrics) if r.metrics else "<p>none recorded</p>")
            + (f"<p>checkpoint: <code>{html.escape(str(r.run_dir / r.checkpoint))}</code></p>" if r.checkpoint else ""))
    return _page(f"Run {r.run_id}", body)


def write_reports_index(out_root: str | Path = "reports") -> Path:
    """Regenerate ``out_root/index.html`` from every ``*/run.json`` and ``sweep-*/sweep.json``."""
    out_root = Path(out_root)
    runs, sweeps = [], []
    for path in out_root.glob("*/run.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):  # a half-written or foreign file
            runs.append(json.loads(path.read_text(encoding="utf-8")) | {"_dir": path.parent.name})
    for path in out_root.glob("sweep-*/sweep.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            sweeps.append(json.loads(path.read_text(encoding="utf-8")) | {"_dir": path.parent.name})
    runs.sort(key=lambda r: (str(r.get("started", "")), r["_dir"]), reverse=True)
    rows = []
    for r in runs:
        d = r["_dir"]
        nbs = " ".join((_link(f"{d}/{n['html']}", n["name"]) if n.get("html") else html.escape(str(n.get("name"))))
                       + f" {_status(str(n.get('status')))}" for n in r.get("notebooks", []))
        rows.append([_link(f"{d}/index.html", d), _esc(r.get("started", "")), _status(str(r.get("status", "?"))),
                     _inline(r.get("parameters") or {}), _inline(r.get("metrics") or {}), nbs])
    body = _grid_table(["run", "started", "status", "parameters", "headline metrics", "notebooks"], rows)
    if sweeps:
        srows = [[_link(f"{s['_dir']}/index.html", s["_dir"]), _status(str(s.get("status", "?"))),
                  _inline({k: ", ".join(map(str, v)) for k, v in (s.get("grid") or {}).items()}),
                  _esc(len(s.get("runs", [])))] for s in sorted(sweeps, key=lambda s: s["_dir"], reverse=True)]
        body = "<h2>Sweeps</h2>" + _grid_table(["sweep", "status", "grid", "runs"], srows) + "<h2>Runs</h2>" + body
    index = out_root / "index.html"
    _write_atomic(index, _page("Reports", body))
    return index


# --------------------------------------------------------------------------- command line

def _cli_params(args: argparse.Namespace) -> dict[str, Any]:
    params = load_params_file(args.params) if args.params else {}
    return params | _parse_assignments(args.set, "-p")  # flags override the file


def _split(text: str | None) -> list[str] | None:
    return [s for s in text.split(",") if s.strip()] if text else None


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_report(args: argparse.Namespace) -> int:
    result = run_report(_cli_params(args), notebooks_dir=args.notebooks_dir, out_root=args.out,
                        run_id=args.run_id, notebooks=_split(args.notebooks), timeout=args.timeout,
                        progress=_progress)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    print(result.index)
    return 0 if result.ok else 1


def _cmd_sweep(args: argparse.Namespace) -> int:
    grid = {name: [v.strip() for v in value.split(",")] for name, value in _parse_assignments(args.grid, "--param").items()}
    if len(grid) != len(args.grid):
        raise WorkbenchError("a name is given to --param twice; list all its values in one --param NAME=V1,V2")
    fixed = _parse_assignments(args.set, "-p")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise WorkbenchError(f"{', '.join(both)} is both swept (--param) and fixed (-p); drop one")
    result = run_sweep(grid, _cli_params(args), notebooks_dir=args.notebooks_dir, out_root=args.out,
                       notebooks=_split(args.notebooks), sweep_id=args.sweep_id, timeout=args.timeout,
                       progress=_progress)
    for run in result.runs:
        if run.error:
            print(f"error: {run.run_id}: {run.error}", file=sys.stderr)
    print(result.index)
    return 0 if result.ok else 1


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--set", action="append", metavar="NAME=VALUE",
                   help="A notebook parameter (repeatable); overrides --params.")
    p.add_argument("--params", metavar="FILE", help="YAML file of `name: value` notebook parameters.")
    p.add_argument("--notebooks", metavar="LIST", help="Run only these notebooks, e.g. 01,03 (default: all).")
    p.add_argument("--notebooks-dir", default="notebooks", help="Where the NN_name.ipynb notebooks are (default: notebooks).")
    p.add_argument("--out", default="reports", help="Reports root (default: reports).")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="Fail a notebook when one cell runs longer than this (default: no limit).")


def register_cli(subparsers: Any) -> None:
    """Add the `report` and `sweep` subcommands to ``workbench``'s subparsers."""
    p = subparsers.add_parser("report", help="Run the notebooks with papermill into HTML reports under reports/<run-id>/.")
    _add_common(p)
    p.add_argument("--run-id", help="Name of the run dir (default: YYYYmmdd-HHMMSS-<hash of parameters>).")
    p.set_defaults(func=_cmd_report)
    p = subparsers.add_parser("sweep", help="One report per combination of parameter values, plus a comparison page.")
    p.add_argument("--param", dest="grid", action="append", required=True, metavar="NAME=V1,V2",
                   help="A swept parameter and its comma-separated values (repeatable: the cartesian product runs).")
    _add_common(p)
    p.add_argument("--sweep-id", help="Name of the sweep (default: YYYYmmdd-HHMMSS-<hash>); runs are <id>-01, ...")
    p.set_defaults(func=_cmd_sweep)
