"""An executed notebook as an offline HTML page with a bar that links its run and hides the code."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from .files import write_owned

__all__ = ["export_html"]

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


def export_html(nb: Any, path: Path, run_id: str, name: str, state: str, error: str | None, cwd: Path) -> None:
    """Write ``nb`` as ``path``: nbconvert's lab template without its CDN scripts, plus the run bar."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    # The lab template with its CDN scripts (require.js, MathJax, mermaid, the widget manager)
    # left out: a report must open offline with no failed requests; views and figures inline
    # what they need, and widgets are for JupyterLab (a report keeps their last static output).
    exporter = HTMLExporter(template_name="lab", embed_images=True, extra_loaders=[DictLoader({_TEMPLATE: _OFFLINE_LAB})],
                            template_file=_TEMPLATE)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"{name} · {run_id}", "path": str(cwd)}})
    body = _CDN_SCRIPT.sub("", body)  # plotly's notebook renderer adds MathJax from a CDN to each figure
    bar = (
        '<input type="checkbox" id="wb-hide-code" class="wb-toggle">'
        f'<div class="wb-bar"><a href="index.html">run {html.escape(run_id)}</a> · '
        f'{html.escape(name)} · <span class="wb-{html.escape(state)}">{html.escape(state)}</span>'
        + (f' · <a href="#papermill-error-cell">{html.escape(error or "error")}</a>' if state == "failed" else "")
        + '<label for="wb-hide-code"><span class="wb-off">Hide code</span><span class="wb-on">Show code</span></label></div>'
        + _TOGGLE_CSS
    )
    body = re.sub(r"<body[^>]*>", lambda m: m.group(0) + bar, body, count=1)
    write_owned(path.parent, path.name, body)
