"""Figures for papers: plotly figures as SVG/PNG/HTML files, bertviz views as standalone pages."""

from __future__ import annotations

import re
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.notebook import paper_figures as figures
from workbench.notebook import plots, views

LABELS = ["neg", "pos <b>"]  # markup in a label must come out as text


def _figure():
    return plots.confusion_matrix(np.array([[17, 3], [5, 15]]), LABELS, title="SST-2 test")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="kaleido draws with chromium (make test installs it)")
def test_save_writes_svg_png_and_html_from_one_call(tmp_path):
    written = plots.save(_figure(), tmp_path / "figs" / "confusion", scale=2)
    assert [p.name for p in written] == ["confusion.html", "confusion.svg", "confusion.png"]
    svg = ET.parse(tmp_path / "figs" / "confusion.svg").getroot()
    assert svg.tag.endswith("svg") and svg.get("width") == "700" and svg.get("height") == "500"
    texts = {t.text for t in svg.iter() if t.tag.endswith("text")}
    assert {"SST-2 test", "neg", "pos <b>", "17", "15", "predicted", "true"} <= texts  # vector text, escaped
    png = (tmp_path / "figs" / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1400, 1000)  # 700 x 500 at scale 2
    html = (tmp_path / "figs" / "confusion.html").read_text()
    assert "<!DOCTYPE html>" in html or "<html>" in html
    assert not re.search(r"<script[^>]+src=", html) and "plotly" in html  # plotly.js inlined: opens offline
    assert not list((tmp_path / "figs").glob(".*tmp*"))  # atomic writes leave no temp files


def test_suffix_picks_the_format_and_bad_names_are_refused(tmp_path):
    assert plots.save(_figure(), tmp_path / "c.html") == [tmp_path / "c.html"]  # html needs no browser
    assert not (tmp_path / "c.svg").exists()
    with pytest.raises(WorkbenchError, match=r"cannot save a figure as c\.jpeg: use a \.svg, \.png, \.pdf or \.html"):
        plots.save(_figure(), tmp_path / "c.jpeg")
    with pytest.raises(WorkbenchError, match=r"\['gif'\] not supported"):
        plots.save(_figure(), tmp_path / "c", formats=["svg", "gif"])
    assert figures._targets(Path("out/fig.svg"), ["png", "html"]) == {"png": Path("out/fig.png"),
                                                                     "html": Path("out/fig.html")}


def test_no_browser_is_one_line_and_the_html_is_still_written(tmp_path, monkeypatch):
    kaleido = pytest.importorskip("kaleido")
    from kaleido.errors import ChromeNotFoundError

    class NoBrowser:  # what kaleido does on a machine without Chromium or Chrome
        def __init__(self, **_):
            raise ChromeNotFoundError("no chrome")

    monkeypatch.setattr(kaleido, "Kaleido", NoBrowser)
    with pytest.raises(WorkbenchError, match="no Chromium or Chrome .* apt-get install chromium") as err:
        plots.save(_figure(), tmp_path / "c")
    assert "\n" not in str(err.value)
    assert (tmp_path / "c.html").is_file() and not (tmp_path / "c.svg").exists()


def _attn(n: int) -> np.ndarray:
    a = np.random.default_rng(0).random((2, 3, n, n))
    return a / a.sum(-1, keepdims=True)


def test_bertviz_view_saves_as_a_standalone_page(tmp_path):
    tokens = ["[CLS]", "the", "cat", "</script><b>x</b>", "[SEP]"]
    path = views.save_html(views.head_view_html(_attn(len(tokens)), tokens), tmp_path / "head.html",
                           title="head view <layer 0>")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>head view &lt;layer 0&gt;</title>" in page and "</script><b>x</b>" not in page
    assert not re.search(r"<script[^>]+src=", page) and "requirejs" in page  # libraries inlined
    with pytest.raises(WorkbenchError, match="use an .html name"):
        views.save_html("<div></div>", tmp_path / "head.svg")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (make test installs it)")
def test_saved_view_draws_from_disk_with_no_network(tmp_path):
    from playwright.sync_api import sync_playwright

    tokens = ["[CLS]", "the", "cat", "sat", "[SEP]"]
    path = views.save_html(views.head_view_html(_attn(len(tokens)), tokens), tmp_path / "head.html")
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.route("**/*", lambda r: (requested.append(r.request.url), r.continue_() if r.request.url.startswith("file:")
                                      else r.abort()))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_function("document.querySelectorAll('svg text').length > 0", timeout=60_000)
        labels = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent)")
        browser.close()
    assert not errors and all(u.startswith("file:") for u in requested)
    assert {"the", "cat", "sat"} <= set(labels)
