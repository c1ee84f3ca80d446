"""The reports index of three runs in real Chromium, offline: sorting, filtering, the answer on screen at 1280x800.

Reuses tests/test_browser.py's browser (Debian's chromium through Playwright) and its watched
pages, which abort and record every request that is not file:, data: or blob:.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from test_browser import Watch, _new_page, _shot, browser  # noqa: F401  (browser: the module's fixture)
from test_report_index import FAKE_RUNS, make_runs

pytestmark = pytest.mark.slow

NSP, MLM, SOP = (r[0] for r in FAKE_RUNS)  # gains +13.6, -0.9, +5.2 points; SOP is the newest
ORDER = "() => [...document.querySelectorAll('#wb-runs > tbody > tr')].map(r => r.dataset.run)"
SHOWN = "() => [...document.querySelectorAll('#wb-runs > tbody > tr')].filter(r => !r.hidden).map(r => r.dataset.run)"


@pytest.fixture
def index_page(browser: Browser, tmp_path: Path):  # noqa: F811
    """The index of FAKE_RUNS opened from disk at 1280x800, its gain figure drawn."""
    make_runs(tmp_path)
    page, watch = _new_page(browser, ())
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto((tmp_path / "index.html").as_uri())
    page.wait_for_function("() => document.querySelector('.js-plotly-plot .main-svg')", polling=200)
    yield page, watch
    assert not watch.blocked, f"requests left the page: {watch.blocked}"
    assert not watch.errors and not watch.dialogs, (watch.errors, watch.dialogs)
    page.context.close()


def test_clicking_the_gain_header_sorts_the_runs_by_gain(index_page: tuple[Page, Watch]) -> None:
    page, _ = index_page
    assert page.evaluate(ORDER) == [SOP, MLM, NSP]  # newest first
    header = page.locator("#wb-runs th", has_text="downstream gain over random twin")
    header.click()
    assert page.evaluate(ORDER) == [NSP, SOP, MLM] and header.get_attribute("aria-sort") == "descending"
    header.click()
    assert page.evaluate(ORDER) == [MLM, SOP, NSP] and header.get_attribute("aria-sort") == "ascending"
    page.locator("#wb-runs th", has_text="run").first.click()  # text: ascending first
    assert page.evaluate(ORDER) == [NSP, MLM, SOP] and header.get_attribute("aria-sort") == "none"
    page.locator("#wb-runs th", has_text="NSP accuracy").press("Enter")  # the keyboard sorts too; no value last
    assert page.evaluate(ORDER) == [NSP, SOP, MLM]


def test_typing_in_the_filter_hides_the_other_rows(index_page: tuple[Page, Watch]) -> None:
    page, _ = index_page
    box, count = page.locator("#wb-filter"), page.locator("#wb-shown")
    box.fill("objective=mlm")
    assert page.evaluate(SHOWN) == [MLM] and page.locator(f'tr[data-run="{SOP}"]').is_hidden()
    expect(count).to_have_text("1 of 3 runs shown")
    box.fill("MAX_STEPS=1500")  # any text of the row, case aside (here the parameters changed)
    assert page.evaluate(SHOWN) == [MLM, NSP]
    box.fill("agnews")  # a shortened path still matches by its name
    assert page.evaluate(SHOWN) == [SOP]
    box.fill("no such run")
    assert page.evaluate(SHOWN) == []
    box.fill("")
    assert page.evaluate(SHOWN) == [SOP, MLM, NSP]
    expect(count).to_have_text("3 of 3 runs shown")


def test_every_answer_is_on_screen_at_1280x800_without_scrolling(index_page: tuple[Page, Watch]) -> None:
    page, _ = index_page
    answers = page.locator("#wb-runs > tbody > tr > td:nth-child(4) .wb-answer")
    expect(answers).to_have_count(3)
    texts = answers.all_inner_texts()
    assert texts == ["gain +5.2 points (95% CI +1.0 to +9.4)", "no measurable difference -0.9 points (95% CI -2.1 to +0.2)",
                     "gain +13.6 points (95% CI +12.4 to +14.7)"]
    assert page.evaluate("() => [window.scrollX, window.scrollY]") == [0, 0]
    for k in range(3):
        box = answers.nth(k).bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0, box
        assert box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800, (texts[k], box)
        # nothing covers it: the element at its centre is the answer (or inside it)
        hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('.wb-answer') !== null",
                            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert hit, texts[k]
    _shot(page, "11_report_index_runs_table")
