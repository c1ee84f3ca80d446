"""ipywidgets for the notebooks: re-mask a sentence as the mask rate changes, re-run pretraining."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import ipywidgets as w

from ..config import MaskingConfig
from ..errors import WorkbenchError
from .explore import mask_example, mask_html

__all__ = ["masking_explorer", "attention_explorer", "LiveCurves", "curve_rows", "rerun_panel", "figure_bundle",
           "figure_output"]


def figure_bundle(fig: Any) -> dict[str, Any]:
    """A plotly figure's mime bundle under the default renderer, built as ``pio.show`` builds it."""
    import plotly.io as pio

    # The renderer is activated once (the `notebook` renderer's activation displays plotly.js;
    # Figure._repr_mimebundle_ would redo it on every call).
    return pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=None)


def figure_output(fig: Any) -> dict[str, Any]:
    """A display_data output of ``fig``, to set as an ``Output`` widget's ``outputs``.

    Setting the trait instead of capturing with ``with out: display(fig)`` matters headless:
    under papermill, nbclient answers a capture by sending on the kernel's shell socket while
    it waits on that socket for the cell's reply, a race that can hang the run for good
    (jupyter/nbclient#312). A trait update is a plain comm message, in JupyterLab as well.
    """
    return {"output_type": "display_data", "data": figure_bundle(fig), "metadata": {}}


def masking_explorer(tokenizer: Any, text: str, config: MaskingConfig | None = None, seed: int = 0) -> w.VBox:
    """A mask-rate slider with whole-word and span toggles that re-masks ``text`` on every change."""
    config = config or MaskingConfig()
    rate = w.FloatSlider(value=config.mask_rate, min=0.05, max=0.8, step=0.05, description="mask rate",
                         continuous_update=True, readout_format=".2f")
    whole = w.Checkbox(value=config.whole_word, description="whole words")
    span = w.Checkbox(value=config.span, description="spans (SpanBERT)")
    seed_box = w.IntText(value=seed, description="seed", layout=w.Layout(width="160px"))
    sentence = w.Textarea(value=text, description="sentence", layout=w.Layout(width="95%"))
    out = w.HTML()
    out.add_class("wb-mask-view")

    def render(_: Any = None) -> None:
        try:
            cfg = replace(config, mask_rate=rate.value, whole_word=whole.value, span=span.value)
            out.value = mask_html(mask_example(tokenizer, sentence.value, cfg, seed_box.value))
        except WorkbenchError as exc:  # e.g. an empty sentence: say so in place of the view
            out.value = f"<b>{html.escape(str(exc))}</b>"

    for control in (rate, whole, span, seed_box, sentence):
        control.observe(render, names="value")
    render()
    return w.VBox([w.HBox([rate, whole, span, seed_box]), sentence, out])


def attention_explorer(examples: Sequence[Any]) -> w.VBox:
    """Pick a segment, a layer and a head; shows that head's attention map with tokens on the axes."""
    from .plots import attention_map

    n_layers, n_heads = examples[0].attentions.shape[:2]
    labels = [(" ".join(ex.tokens[1:9]) + " …", i) for i, ex in enumerate(examples)]
    segment = w.Dropdown(options=labels, value=0, description="segment", layout=w.Layout(width="60%"))
    layer = w.IntSlider(value=0, min=0, max=n_layers - 1, description="layer")
    head = w.IntSlider(value=0, min=0, max=n_heads - 1, description="head")
    out = w.Output()

    def render(_: Any = None) -> None:
        ex = examples[segment.value]
        out.outputs = (figure_output(attention_map(ex.tokens, ex.attentions[layer.value, head.value],
                                                   title=f"layer {layer.value}, head {head.value}")),)

    for control in (segment, layer, head):
        control.observe(render, names="value")
    render()
    return w.VBox([w.HBox([layer, head]), segment, out])


def curve_rows(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train rows keep `loss`; eval rows become `val_*` columns, so one figure shows both."""
    rows = []
    for m in history:
        if m.get("type") == "eval":
            rows.append({"step": m["step"], **{f"val_{k}": m.get(k) for k in ("mlm_accuracy", "nsp_accuracy", "mlm_loss")}})
        else:
            rows.append({"step": m["step"], "loss": m.get("loss")})
    return rows


class LiveCurves:
    """A pretraining callback that redraws the loss and accuracy curves in place as it trains.

    It updates one output through an IPython display handle (no widget needed), so the last
    drawing also stays in the saved notebook and its HTML report.
    """

    def __init__(self, every: int = 10, ys: Sequence[str] = ("loss", "val_mlm_accuracy", "val_nsp_accuracy"),
                 runs: dict[str, Sequence[dict[str, Any]]] | None = None) -> None:
        self.every, self.ys, self.runs = every, tuple(ys), dict(runs or {})
        self.history: list[dict[str, Any]] = []
        self.handle: Any = None

    def __call__(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        if metrics.get("type") == "eval" or len(self.history) % self.every == 0:
            self.redraw()

    def figure(self) -> Any:
        """The current curves (this run, plus any earlier ``runs`` overlaid)."""
        from .plots import training_curves

        runs = {name: curve_rows(h) for name, h in self.runs.items()}
        current = curve_rows(self.history)
        logged = {k for row in current + [r for h in runs.values() for r in h] for k, v in row.items() if v is not None}
        ys = [y for y in self.ys if y in logged] or ["loss"]
        return training_curves(current or None, ys=ys, runs=runs)

    def redraw(self) -> None:
        """Draw now (creates the output on the first call)."""
        from IPython.display import display

        # The mime bundle, not the figure: a figure displays itself through pio.show, which
        # drops the display id, so each update would add one more figure.
        bundle = figure_bundle(self.figure())
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


def rerun_panel(run: Any, config: MaskingConfig, first: tuple[str, Sequence[dict[str, Any]]]) -> w.VBox:
    """A mask-rate slider and a button that re-runs a short pretraining, overlaying each curve.

    ``run(masking_config) -> history`` does the training (the notebook passes a closure over
    its data and a short TrainConfig); ``first`` is (name, history) of the run already done.
    """
    rate = w.FloatSlider(value=config.mask_rate, min=0.05, max=0.8, step=0.05, description="mask rate")
    button = w.Button(description="re-run pretraining", button_style="primary", icon="refresh")
    status = w.HTML()
    curves = LiveCurves(every=5, ys=("loss", "val_mlm_accuracy"), runs={first[0]: first[1]})
    out = w.Output()

    def click(_: Any) -> None:
        button.disabled = True
        name = f"mask_rate={rate.value:.2f} (#{len(curves.runs)})"
        status.value = f"training {html.escape(name)} …"
        try:
            live = LiveCurves(every=5, ys=curves.ys, runs=curves.runs)
            with out:
                out.clear_output(wait=True)
                history = run(replace(config, mask_rate=rate.value), live)
                curves.runs[name] = history
                out.clear_output(wait=True)
                curves.handle = None
                curves.redraw()
            status.value = f"{len(curves.runs)} runs"
        except WorkbenchError as exc:
            status.value = f"<b>{html.escape(str(exc))}</b>"
        finally:
            button.disabled = False

    button.on_click(click)
    out.outputs = (figure_output(curves.figure()),)
    return w.VBox([w.HBox([rate, button, status]), out])
