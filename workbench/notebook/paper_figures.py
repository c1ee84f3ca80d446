"""Figures for papers: a plotly figure saved as SVG, PNG or PDF (kaleido) and as standalone HTML.

kaleido 1.x draws with the system's Chromium or Chrome (through choreographer): Debian's
``chromium``, which ``make test`` installs, is found by itself. MathJax is switched off
because kaleido would otherwise load it from a CDN (the figures here use no LaTeX), and
plotly.js comes from the installed plotly package, so drawing needs no network. All formats of
one call share one browser start (a few seconds). The HTML needs no browser at all: it is
written first, so a machine without Chromium still gets it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from ..outputs import write_bytes_atomic

__all__ = ["FIGURE_FORMATS", "IMAGE_FORMATS", "save"]

IMAGE_FORMATS = ("svg", "png", "pdf")
FIGURE_FORMATS = (*IMAGE_FORMATS, "html")
_DEFAULT_FORMATS = ("svg", "png", "html")
_TIMEOUT_S = 300  # kaleido's default (90 s) is too short for a cold browser on a busy 2-core machine


def _targets(path: Path, formats: Sequence[str] | None) -> dict[str, Path]:
    """format -> file: the suffix of ``path`` picks one, else ``formats`` (default svg, png, html)."""
    suffix = path.suffix.lower().lstrip(".")
    if formats is None and suffix in FIGURE_FORMATS:
        return {suffix: path}
    if formats is None and suffix:
        raise WorkbenchError(f"cannot save a figure as {path.name}: use a .svg, .png, .pdf or .html name, "
                             "or a name without suffix for all of svg, png and html")
    wanted = list(dict.fromkeys(f.lower().lstrip(".") for f in (formats or _DEFAULT_FORMATS)))
    bad = [f for f in wanted if f not in FIGURE_FORMATS]
    if bad or not wanted:
        raise WorkbenchError(f"figure format(s) {bad or wanted} not supported; pass some of {', '.join(FIGURE_FORMATS)}")
    stem = path.with_suffix("") if suffix in FIGURE_FORMATS else path
    return {f: stem.with_name(f"{stem.name}.{f}") for f in wanted}


def _in_own_loop(make: Any) -> Any:
    """Run the coroutine ``make()`` on a fresh event loop in a thread: Jupyter's loop is already running."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="workbench-kaleido")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _draw(fig: Any, formats: Sequence[str], scale: float, width: int | None, height: int | None) -> dict[str, bytes]:
    """format -> image bytes, drawn by kaleido in one browser session."""
    try:
        import kaleido
        from kaleido.errors import ChromeNotFoundError
    except ImportError:
        raise WorkbenchError("saving SVG/PNG/PDF needs the kaleido package: pip install 'kaleido>=1.0' "
                             "(or save as .html)") from None
    spec = fig.to_dict()
    size = {k: v for k, v in (("width", width), ("height", height)) if v}

    async def draw_all() -> dict[str, bytes]:
        async with kaleido.Kaleido(n=1, timeout=_TIMEOUT_S, mathjax=False) as k:
            # scale is for pixels: vector formats keep the figure's own size (it would scale their units too)
            return {f: await k.calc_fig(spec, opts={"format": f, "scale": scale if f == "png" else 1, **size})
                    for f in formats}

    try:
        return _in_own_loop(draw_all)
    except ChromeNotFoundError:
        raise WorkbenchError("kaleido found no Chromium or Chrome to draw SVG/PNG/PDF with: apt-get install chromium "
                             "(or set BROWSER_PATH to a Chrome binary), or save as .html") from None


def save(fig: Any, path: str | Path, formats: Sequence[str] | None = None, scale: float = 2.0,
         width: int | None = None, height: int | None = None) -> list[Path]:
    """Save a plotly figure for a paper; returns the files written.

    ``path``'s suffix (.svg, .png, .pdf, .html) picks the format; without one (or with
    ``formats``) it writes PATH.svg, PATH.png and PATH.html. ``scale`` multiplies the pixels of
    PNG (2: print quality); ``width``/``height`` default to the figure's layout, else 700 x 500.
    The HTML is self-contained (plotly.js inlined) and opens offline.
    """
    path = Path(path)
    targets = _targets(path, formats)
    path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "html" in targets:  # first: it needs no browser
        html = fig.to_html(include_plotlyjs=True, full_html=True, default_width=width or "100%",
                           default_height=height or "100%")
        write_bytes_atomic(targets["html"], html.encode("utf-8"))
        written.append(targets["html"])
    images = [f for f in targets if f != "html"]
    if images:
        for f, data in _draw(fig, images, scale, width, height).items():
            write_bytes_atomic(targets[f], data)
            written.append(targets[f])
    return written
