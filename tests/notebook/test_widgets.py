"""workbench.notebook.widgets outside JupyterLab (tests/test_browser.py drives them in a real browser)."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

from workbench.notebook.widgets import curve_rows


def test_curve_rows_flattens_train_and_eval_records():
    rows = curve_rows([{"type": "train", "step": 1, "loss": 2.0},
                       {"type": "eval", "step": 1, "mlm_accuracy": 0.1, "nsp_accuracy": 0.5}])
    assert rows == [{"step": 1, "loss": 2.0},
                    {"step": 1, "val_mlm_accuracy": 0.1, "val_nsp_accuracy": 0.5, "val_mlm_loss": None}]


def test_live_curves_redraw_one_output_in_place(tmp_path):
    # Under the `notebook` renderer (reports), every redraw must replace the one figure, not add one.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from workbench.notebook.widgets import LiveCurves\n"
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


def _attention_example(text: str, seed: int):
    import numpy as np

    from workbench.analysis.attention import AttentionResult

    tokens = ["[CLS]", *text.lower().split(), "[SEP]"]
    logits = np.random.default_rng(seed).normal(size=(2, 2, len(tokens), len(tokens)))
    return AttentionResult(tokens, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))


def _array(value):
    """A plotly JSON array: a list, or plotly 6's base64 typed array."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else flat
    return np.asarray(value)


def _shown_figure(out) -> dict:
    assert len(out.outputs) == 1, out.outputs
    return out.outputs[0]["data"]["application/vnd.plotly.v1+json"]


def test_attention_explorer_sets_its_output_without_capturing(monkeypatch):
    # Headless (papermill) a `with out:` capture can hang nbclient; the figure goes into the
    # Output's `outputs` trait instead, and follows the controls.
    import numpy as np
    import plotly.io as pio

    from workbench.notebook.widgets import attention_explorer

    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    examples = [_attention_example("The cat sat on the mat", 0), _attention_example("Rain fell all day", 1)]
    box = attention_explorer(examples)
    (layer, head), segment, out = box.children[0].children, box.children[1], box.children[2]
    fig = _shown_figure(out)
    assert fig["layout"]["title"]["text"] == "layer 0, head 0"
    assert np.allclose(_array(fig["data"][0]["z"]), examples[0].attentions[0, 0])
    layer.value, head.value, segment.value = 1, 1, 1
    fig = _shown_figure(out)
    assert fig["layout"]["title"]["text"] == "layer 1, head 1"
    assert np.allclose(_array(fig["data"][0]["z"]), examples[1].attentions[1, 1])


def test_rerun_panel_shows_the_first_run_without_capturing(monkeypatch):
    import plotly.io as pio

    from workbench.config import MaskingConfig
    from workbench.notebook.widgets import rerun_panel

    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    history = [{"type": "train", "step": s, "loss": 9.0 - s} for s in range(1, 6)]
    box = rerun_panel(lambda masking, live: [], MaskingConfig(), ("first run", history))
    fig = _shown_figure(box.children[1])
    assert [t["name"] for t in fig["data"]] == ["first run"]
    assert _array(fig["data"][0]["y"]).tolist() == [8.0, 7.0, 6.0, 5.0, 4.0]
