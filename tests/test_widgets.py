"""workbench.widgets outside JupyterLab (tests/test_browser.py drives them in a real browser)."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

from workbench.widgets import curve_rows


def test_curve_rows_flattens_train_and_eval_records():
    rows = curve_rows([{"type": "train", "step": 1, "loss": 2.0},
                       {"type": "eval", "step": 1, "mlm_accuracy": 0.1, "nsp_accuracy": 0.5}])
    assert rows == [{"step": 1, "loss": 2.0},
                    {"step": 1, "val_mlm_accuracy": 0.1, "val_nsp_accuracy": 0.5, "val_mlm_loss": None}]


def test_live_curves_redraw_one_output_in_place(tmp_path):
    # Under the `notebook` renderer (reports), every redraw must replace the one figure, not add one.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from workbench.widgets import LiveCurves\n"
        "live = LiveCurves(every=2)\n"
        "for s in range(1, 11):\n"
        "    live({'type': 'train', 'step': s, 'loss': 10.0 / s})\n"
        "live({'type': 'eval', 'step': 10, 'mlm_accuracy': 0.2})")]
    env = {**os.environ, "PLOTLY_RENDERER": "notebook"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = nb.cells[0].outputs
    figures = [o for o in outputs if "Plotly.newPlot" in o.get("data", {}).get("text/html", "")]
    assert len(figures) == 1, [o.get("output_type") for o in outputs]
    # plotly.js (~4.6 MB) is displayed once, by the renderer's first activation, not per redraw.
    assert len(outputs) == 2 and sum(len(str(o)) for o in outputs) < 6_000_000
    assert "val_mlm_accuracy" in figures[0]["data"]["text/html"]  # the last redraw, with the eval point
