"""Batch-run the notebook sequence with papermill into HTML reports, and sweep parameters over it.

`workbench report` runs ``notebooks/NN_*.ipynb`` in order into ``reports/<run-id>/`` (executed
notebooks, their HTML, ``run.json``, ``figures/`` and an ``index.html``) and regenerates
``reports/index.html``. Parameters are checked against each notebook's ``parameters`` cell and
the config dataclasses it builds first, because plain papermill injects a misspelt name silently.
The notebook that trains (declares ``out`` but not ``model``: 02) writes its checkpoint to ``<run dir>/checkpoint``, and
later notebooks that declare ``model`` get that path. Notebooks call :func:`record_metrics` to
report headline metrics; the runner collects them from the executed notebooks (later notebooks
override earlier ones). `workbench sweep` runs one report per combination of values and seed and
writes a comparison page with mean ± 95% CI over seeds and training curves with bands.

Modules by job: ``metrics`` (record_metrics), ``params`` and ``configcheck`` (parameters),
``runner`` (one run), ``sweep``/``pool``/``worker`` (sweeps), ``pages``/``runstable`` (the index's runs
table)/``gainplot`` (the gain across runs)/``sweeppage``/``curves``/``figures``/``export``/``markup``
(HTML), ``records`` (run.json, RunResult and SweepResult), ``files`` (folders and locks).
"""

from __future__ import annotations

from .metrics import METRICS_MIMETYPE, record_metrics
from .pages import write_reports_index
from .params import NotebookParam, find_notebooks, load_params_file, notebook_parameters
from .records import NotebookResult, RunResult, SweepResult
from .runner import RunInterrupted, run_report
from .sweep import run_sweep

__all__ = [
    "METRICS_MIMETYPE",
    "NotebookParam",
    "NotebookResult",
    "RunInterrupted",
    "RunResult",
    "SweepResult",
    "find_notebooks",
    "load_params_file",
    "notebook_parameters",
    "record_metrics",
    "run_report",
    "run_sweep",
    "write_reports_index",
]
