"""bertviz head and model views that render offline and never run corpus text as script.

bertviz loads require.js, d3 and jQuery from a CDN and shows a blank area without a network
(bertviz issues #53, #63). Here the three libraries come from the npm registry at set-up
(`make venv` installs requirejs@2.3.6, d3@5.7.0 and jquery@2.1.0 under ``.venv/js``; d3 4-5
keeps bertviz's hover working, d3 6+ breaks it) and are inlined in the view's HTML, so a view
is self-contained (about 0.4 MB) in JupyterLab and in exported HTML reports.

bertviz also writes its token list into a ``<script>`` block unescaped: a token containing
``</script>`` would end the block and run what follows. Its JSON is written here with ``<``,
``>`` and ``&`` as ``\\u003c``-style escapes, which JavaScript reads back as the same text.

:func:`head_view` and :func:`model_view` return a :class:`HeadView` that shows itself when a
notebook cell ends with it; the ``*_html`` functions give the fragment as a string.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WorkbenchError
from ..outputs import write_text_atomic

__all__ = ["JS_PACKAGES", "HeadView", "head_view", "head_view_html", "js_dir", "model_view", "model_view_html",
           "safe_json_dumps", "save_html", "show"]

# npm package -> file inside it that defines the library.
JS_PACKAGES = {
    "requirejs@2.3.6": "requirejs/require.js",
    "d3@5.7.0": "d3/dist/d3.min.js",
    "jquery@2.1.0": "jquery/dist/jquery.min.js",
}
_CDN_REQUIRE = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[^"]+"></script>')


def js_dir() -> Path:
    """Where set-up installed the JavaScript libraries (``$WORKBENCH_JS_DIR`` or ``<venv>/js``)."""
    root = Path(os.environ.get("WORKBENCH_JS_DIR", Path(sys.prefix) / "js")) / "node_modules"
    missing = [f for f in JS_PACKAGES.values() if not (root / f).is_file()]
    if missing:
        raise WorkbenchError(
            f"bertviz's JavaScript libraries are missing under {root} ({', '.join(missing)}); "
            f"run `make venv`, or `npm install --prefix {root.parent} {' '.join(JS_PACKAGES)}`"
        )
    return root


def safe_json_dumps(obj: Any, **kwargs: Any) -> str:
    """JSON that is safe inside an HTML ``<script>`` block: ``<``, ``>`` and ``&`` escaped."""
    text = json.dumps(obj, **kwargs)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _SafeJson:
    """Stands in for the ``json`` module inside bertviz so its params are escaped."""

    dumps = staticmethod(safe_json_dumps)


def _inline_libraries() -> str:
    """Script tags defining requirejs, then d3 and jquery as named AMD modules, from local files."""
    root = js_dir()
    require_js = (root / JS_PACKAGES["requirejs@2.3.6"]).read_text()
    d3_js = (root / JS_PACKAGES["d3@5.7.0"]).read_text()
    jquery_js = (root / JS_PACKAGES["jquery@2.1.0"]).read_text()
    # UMD bundles call an anonymous define() when they see require.js, which require.js rejects
    # outside a load; so hide define while they run, then register the globals by name.
    return "\n".join([
        "<script>if (typeof window.requirejs === 'undefined') {\n" + require_js + "\n}</script>",
        "<script>window.__wbDefine = window.define; window.define = undefined;</script>",
        "<script>" + d3_js + "</script>",
        "<script>" + jquery_js + "</script>",
        "<script>window.define = window.__wbDefine;"
        " if (!require.defined('d3')) { define('d3', [], function () { return window.d3; }); }"
        " if (!require.defined('jquery')) { define('jquery', [], function () { return window.jQuery; }); }"
        "</script>",
    ])


def _as_bertviz(attentions: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(layer, head, query, key) -> bertviz's per-layer tuple of (1, head, query, key) tensors."""
    attn = torch.as_tensor(np.asarray(attentions, dtype=np.float32))
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise WorkbenchError(f"attentions must be shaped (layer, head, query, key), got {tuple(attn.shape)}")
    return tuple(attn[i].unsqueeze(0) for i in range(attn.shape[0]))


def _render(view: str, attentions: Any, tokens: list[str], sentence_b_start: int | None, **kwargs: Any) -> str:
    # bertviz/__init__ re-exports the functions under the submodules' names: fetch the modules.
    module = importlib.import_module(f"bertviz.{view}_view")
    fn = getattr(module, f"{view}_view")
    layers = _as_bertviz(attentions)
    if layers[0].shape[-1] != len(tokens):
        raise WorkbenchError(f"attention covers {layers[0].shape[-1]} tokens but {len(tokens)} were given")
    original = module.json
    module.json = _SafeJson  # bertviz writes params with json.dumps into a <script> block
    try:
        html = fn(layers, list(tokens), sentence_b_start=sentence_b_start, html_action="return", **kwargs).data
    finally:
        module.json = original
    return _CDN_REQUIRE.sub(lambda _: _inline_libraries(), html, count=1)


def head_view_html(attentions: Any, tokens: list[str], sentence_b_start: int | None = None,
                   layer: int | None = None, heads: list[int] | None = None) -> str:
    """bertviz's head view as a self-contained HTML fragment (no network needed)."""
    return _render("head", attentions, tokens, sentence_b_start, layer=layer, heads=heads)


def model_view_html(attentions: Any, tokens: list[str], sentence_b_start: int | None = None,
                    display_mode: str = "light") -> str:
    """bertviz's model view (every layer and head) as a self-contained HTML fragment."""
    return _render("model", attentions, tokens, sentence_b_start, display_mode=display_mode)


@dataclass
class HeadView:
    """A bertviz view of one example's attention that shows itself; ``.html`` is the fragment."""

    attentions: Any = field(repr=False)  # (layer, head, query, key)
    tokens: list[str]
    sentence_b_start: int | None = None
    kind: str = "head"  # "head": one layer at a time; "model": every layer and head
    options: dict[str, Any] = field(default_factory=dict)  # head: layer, heads; model: display_mode

    @cached_property
    def html(self) -> str:
        """The self-contained HTML fragment (rendered once, about 0.4 MB)."""
        if self.kind not in ("head", "model"):
            raise WorkbenchError(f"bertviz view kind {self.kind!r} is not head or model")
        return _render(self.kind, self.attentions, self.tokens, self.sentence_b_start, **self.options)

    def render(self) -> HeadView:
        """Render now: an error then fails the cell instead of being swallowed by the display formatter."""
        _ = self.html
        return self

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path, title: str = "bertviz view") -> Path:
        """Write the view as a standalone HTML page that opens offline (see :func:`save_html`)."""
        return save_html(self.html, path, title)


def head_view(attentions: Any, tokens: list[str], sentence_b_start: int | None = None,
              layer: int | None = None, heads: list[int] | None = None) -> HeadView:
    """bertviz's head view (one layer at a time) as a :class:`HeadView`."""
    view = HeadView(attentions, list(tokens), sentence_b_start, "head", {"layer": layer, "heads": heads})
    return view.render()


def model_view(attentions: Any, tokens: list[str], sentence_b_start: int | None = None,
               display_mode: str = "light") -> HeadView:
    """bertviz's model view (every layer and head) as a :class:`HeadView`."""
    view = HeadView(attentions, list(tokens), sentence_b_start, "model", {"display_mode": display_mode})
    return view.render()


def save_html(view: str, path: str | Path, title: str = "bertviz view") -> Path:
    """Write a view from :func:`head_view_html`/:func:`model_view_html` as a standalone HTML page.

    The libraries are already inlined in the view, so the page opens offline, from disk.
    """
    import html as html_lib

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise WorkbenchError(f"cannot save a bertviz view as {path.name}: use an .html name")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html_lib.escape(title)}</title>\n</head>\n<body>\n{view}\n</body>\n</html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, page)
    return path


def show(html: str) -> Any:
    """Wrap a view for display in JupyterLab (an ``IPython.display.HTML`` object)."""
    from IPython.display import HTML

    return HTML(html)
