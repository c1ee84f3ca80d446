"""bertviz views: offline (libraries inlined, no CDN) and safe (corpus text never runs as script)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.notebook.views import (
    JS_PACKAGES,
    HeadView,
    head_view,
    head_view_html,
    model_view,
    model_view_html,
    safe_json_dumps,
)

HOSTILE = ["[CLS]", "</script><script>alert(2)</script>", "<img src=x onerror=alert(1)>",
           "javascript:alert(3)", "&amp;", "[SEP]"]


def _attn(layers=2, heads=3, n=None) -> np.ndarray:
    n = len(HOSTILE) if n is None else n
    a = np.random.default_rng(0).random((layers, heads, n, n))
    return a / a.sum(-1, keepdims=True)


@pytest.mark.parametrize("render", [head_view_html, model_view_html])
def test_views_inline_libraries_and_need_no_network(render):
    html = render(_attn(), HOSTILE, sentence_b_start=3)
    assert not re.search(r"<script[^>]+src=", html), "no external script may be loaded"
    assert "requirejs" in html and "d3" in html and "jQuery" in html
    assert 200_000 < len(html) < 2_000_000


@pytest.mark.parametrize("render", [head_view_html, model_view_html])
def test_corpus_text_cannot_close_the_script_block(render):
    html = render(_attn(), HOSTILE)
    # No hostile token appears raw: each "<" in corpus text is escaped inside the JSON.
    for token in HOSTILE[1:3]:
        assert token not in html
    params = re.search(r"const params = (\{.*?\}); // HACK", html, re.S).group(1)
    assert json.loads(params)["attention"][0]["left_text"] == HOSTILE


def test_safe_json_round_trips():
    text = safe_json_dumps({"t": "</script>&<b>"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": "</script>&<b>"}


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(WorkbenchError, match="covers 6 tokens"):
        head_view_html(_attn(), HOSTILE[:4])
    with pytest.raises(WorkbenchError, match="layer, head, query, key"):
        head_view_html(np.ones((3, 3)), HOSTILE[:3])


def test_missing_libraries_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_JS_DIR", str(tmp_path))
    with pytest.raises(WorkbenchError, match="make venv"):
        head_view_html(_attn(), HOSTILE)


def test_makefile_installs_the_same_js_packages():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    line = re.search(r"^JS_PACKAGES := (.*)$", makefile, re.M).group(1)
    assert set(line.split()) == set(JS_PACKAGES)


@pytest.mark.parametrize("make", [head_view, model_view])
def test_head_view_objects_show_the_same_safe_fragment(make, tmp_path):
    view = make(_attn(), HOSTILE, sentence_b_start=3)
    assert isinstance(view, HeadView) and view.tokens == HOSTILE and view.attentions.shape == (2, 3, 6, 6)
    page = view._repr_html_()
    assert page is view.html and not re.search(r"<script[^>]+src=", page)
    for token in HOSTILE[1:3]:
        assert token not in page
    assert "HeadView" in repr(view) and "0." not in repr(view)  # the attention array stays out of the repr
    saved = view.save(tmp_path / "view.html")
    assert saved.read_text(encoding="utf-8").count("requirejs") >= 1


def test_head_view_fails_when_made_not_when_displayed():
    with pytest.raises(WorkbenchError, match="covers 6 tokens"):
        head_view(_attn(), HOSTILE[:4])
