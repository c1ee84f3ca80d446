"""End to end in a real browser: JupyterLab on loopback and HTML reports opened from disk, offline.

Chromium (Debian's `chromium`, driven by Playwright) may reach 127.0.0.1 only: every other
request is aborted and recorded, and a test fails on any such attempt, on a JavaScript dialog
(hostile corpus text that ran as script) and on any console error. Each step is
screenshotted to ``reports/browser/``. Notebooks run here are small copies or two-cell
notebooks written to a temporary directory, so the module takes a few minutes on a laptop CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Route,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from workbench.report import run_report

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "reports" / "browser"
LOOPBACK = ("127.0.0.1", "localhost")
# Corpus text that is also markup: each piece must show as text and never run.
HOSTILE = ('<img src=x onerror=alert(1)> </script><script>alert(2)</script> '
           '<a href="javascript:alert(3)">link3</a>')
PIECES = ("<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", 'href="javascript:alert(3)"')
# Elements that hostile text would have become had it been rendered as HTML.
INJECTED = 'img[src="x"], a[href^="javascript"]'
INJECTED_SCRIPTS = "ss => ss.filter(s => s.textContent.trim() === 'alert(2)').length"
PLOT_MARKS = "els => els.map(e => e.querySelectorAll('.main-svg g.trace, .main-svg g.hm image').length)"
# Every bertviz view drew lines and labels, and every plotly figure drew marks, in these numbers.
RENDERED = """([views, plots]) => {
  const v = [...document.querySelectorAll("div[id^='bertviz-']")];
  const p = [...document.querySelectorAll('.js-plotly-plot')];
  return v.length === views && v.every(d => d.querySelector('svg line') && d.querySelector('svg text'))
    && p.length === plots && p.every(e => e.querySelector('.main-svg g.trace, .main-svg g.hm image')); }"""
MINUTE_MS = 60_000


@dataclass
class Watch:
    """What a page did that a test may forbid: console errors, dialogs, off-loopback requests."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@dataclass
class Lab:
    """A running JupyterLab: its URL and the directory it serves."""

    url: str
    root: Path


def _free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, *cells: str, params: str | None = None) -> Path:
    """A python3 notebook of code cells, the first tagged `parameters` when ``params`` is given."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    if params is not None:
        nb.cells.insert(0, nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}))
    nbformat.write(nb, path)
    return path


def _shot(target: Page | Locator, name: str) -> None:
    """Screenshot a page or one element to reports/browser/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(SHOTS / f"{name}.png"))


def _new_page(browser: Browser, hosts: tuple[str, ...]) -> tuple[Page, Watch]:
    """A fresh page that may reach only ``hosts`` (plus file:, data: and blob:), watched."""
    watch = Watch()
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")

    def allowed(url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("file", "data", "blob") or parts.hostname in hosts

    def route(r: Route) -> None:
        if allowed(r.request.url):
            r.continue_()
        else:
            watch.blocked.append(r.request.url)
            r.abort()

    def block_socket(ws: WebSocketRoute) -> None:
        watch.blocked.append(ws.url)
        ws.close()

    ctx.route("**/*", route)
    ctx.route_web_socket(lambda url: not allowed(url), block_socket)
    page = ctx.new_page()
    page.set_default_timeout(MINUTE_MS)
    page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.errors.append(f"uncaught {e}"))
    page.on("dialog", lambda d: (watch.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
    return page, watch


def _assert_safe(watch: Watch, scope: Locator) -> None:
    """No dialog, console error or off-loopback request, and no hostile text became an element."""
    assert not watch.dialogs, f"script from corpus text ran: {watch.dialogs}"
    assert not watch.errors, f"console errors: {watch.errors}"
    assert not watch.blocked, f"requests off loopback: {watch.blocked}"
    assert scope.locator(INJECTED).count() == 0, "hostile text was rendered as HTML"
    assert scope.locator("script").evaluate_all(INJECTED_SCRIPTS) == 0, "hostile text became a script"


def _wait_rendered(page: Page, views: int, plots: int) -> None:
    """Wait until exactly ``views`` bertviz views and ``plots`` plotly figures are drawn, none blank."""
    page.wait_for_function(RENDERED, arg=[views, plots], polling=500)


def _plot_marks(scope: Locator) -> list[int]:
    """Drawn traces (lines, markers, heatmap images) per plotly figure in ``scope``."""
    return scope.locator(".js-plotly-plot").evaluate_all(PLOT_MARKS)


def _outputs_showing(outputs: Locator) -> int:
    """How many of the cells' output areas show every hostile piece as text."""
    return sum(all(p in text for p in PIECES) for text in outputs.all_inner_texts())


def _run_all(page: Page, lab: Lab, name: str, timeout_ms: int) -> Locator:
    """Open a notebook in JupyterLab, Run > Run All Cells, wait for the end; the notebook element."""
    page.goto(f"{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}")  # a fresh workspace each
    page.locator(".jp-StatusBar-Item", has_text=re.compile(r"\(ipykernel\) \| Idle$")).wait_for(timeout=2 * MINUTE_MS)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(
        """() => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                           .map(e => e.textContent.trim());
                   return p.length > 0 && !p.some(t => t.includes('*')) && (p.every(t => /\\[\\d+\\]/.test(t))
                          || document.querySelector('.jp-Notebook [data-mime-type="application/vnd.jupyter.error"]')); }""",
        timeout=timeout_ms, polling=500)
    notebook = page.locator(".jp-NotebookPanel:visible .jp-Notebook")
    errors = notebook.locator('[data-mime-type="application/vnd.jupyter.error"]')
    assert errors.count() == 0, f"{name} failed in JupyterLab: {errors.first.inner_text()[-800:]}"
    return notebook


def _lab_settings(root: Path) -> Path:
    """User settings: no news or update checks, kernels start unasked, every cell stays in the DOM."""
    settings = root / "user-settings" / "@jupyterlab"
    for plugin, values in {"apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                           "notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True}}.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return settings.parent


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, through Playwright; missing: fail and say how to install it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium not found: install it with `apt-get install chromium`", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True,
                               args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1, no token, serving a temporary directory; stopped at the end."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "IPYTHONDIR": str(tmp / "ipython"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PLOTLY_RENDERER", None)
    log = tmp / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", "--IdentityProvider.token=", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={_lab_settings(tmp)}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-2000:]}", pytrace=False)
                time.sleep(0.5)
        yield Lab(url, root)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def lab_page(browser: Browser, lab: Lab) -> Iterator[tuple[Page, Watch]]:
    """A watched page that may reach only loopback; closed, and its kernels shut down, after the test."""
    page, watch = _new_page(browser, LOOPBACK)
    yield page, watch
    xsrf = {c["name"]: c["value"] for c in page.context.cookies()}.get("_xsrf", "")
    for session in page.request.get(f"{lab.url}/api/sessions").json():
        assert page.request.delete(f"{lab.url}/api/sessions/{session['id']}", headers={"X-XSRFToken": xsrf}).ok
    page.context.close()


def test_attention_notebook_views_render_in_lab(lab_page: tuple[Page, Watch], lab: Lab) -> None:
    """03_attention (small parameters, hostile sentence B): head view and heatmaps render, no script runs."""
    nb = nbformat.read(REPO / "notebooks" / "03_attention.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    small = {"num_segments": 4, "ablation_segments": 1, "max_seq_length": 32, "n_clusters": 2, "sentence_b": HOSTILE}
    for name, value in small.items():
        cell.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.M)
        assert n == 1, f"03_attention has no parameter {name}"
    nbformat.write(nb, lab.root / "03_attention_small.ipynb")
    page, watch = lab_page
    notebook = _run_all(page, lab, "03_attention_small.ipynb", timeout_ms=4 * MINUTE_MS)

    _wait_rendered(page, views=2, plots=5)  # head + model view; stats, clusters, map, explorer, ablation
    head = notebook.locator("div[id^='bertviz-']").first
    drawn = head.locator("#attention line").evaluate_all(
        "ls => ls.filter(l => parseFloat(l.getAttribute('stroke-opacity')) > 0).length")
    assert drawn > 0, "head view drew no attention line"
    for token in ("[CLS]", "cat", "mat", "[SEP]"):
        assert head.locator("#left text", has_text=re.compile(rf"^{re.escape(token)}$")).first.is_visible()
    head.scroll_into_view_if_needed()
    _shot(head, "01_lab_03_head_view")

    heatmap = notebook.locator(".js-plotly-plot", has_text="layer 2, head 0").first
    heatmap.scroll_into_view_if_needed()
    _shot(heatmap, "02_lab_03_attention_heatmap")
    _assert_safe(watch, notebook.locator(".jp-OutputArea"))


def test_mask_rate_slider_remasks(lab_page: tuple[Page, Watch], lab: Lab) -> None:
    """masking_explorer: arrow keys on the slider re-mask the sentence at the slider's rate."""
    sentence = ("Paris is the capital and most populous city of France, on the river Seine, and its museums "
                f"hold paintings, sculptures and manuscripts from every century. {HOSTILE}")
    _write_notebook(lab.root / "mask_slider.ipynb",
                    "from workbench.config import MaskingConfig\nfrom workbench.data.tokenizer import load_tokenizer\n"
                    "from workbench.notebook.widgets import masking_explorer\ntok = load_tokenizer('builtin:minilm')",
                    f"masking_explorer(tok, {sentence!r}, MaskingConfig(mask_rate=0.15), seed=0)")
    page, watch = lab_page
    notebook = _run_all(page, lab, "mask_slider.ipynb", timeout_ms=2 * MINUTE_MS)
    view, fraction = notebook.locator(".wb-mask-view"), notebook.locator(".wb-mask-fraction")
    readout, handle = notebook.locator(".widget-readout").first, notebook.locator(".noUi-handle").first
    expect(readout).to_have_text("0.15")
    counts = re.match(r"(\d+) of (\d+) tokens predicted", fraction.inner_text())
    assert counts, f"no masked fraction shown: {view.inner_text()[:200]}"
    predicted, maskable = int(counts[1]), int(counts[2])
    assert predicted == round(0.15 * maskable)  # mask_tokens picks round(rate * n) tokens
    before = view.inner_html()
    _shot(notebook.locator(".widget-vbox").first, "03_lab_mask_slider_0.15")
    handle.focus()
    for _ in range(5):  # 5 steps of 0.05
        handle.press("ArrowRight")
    expect(readout).to_have_text("0.40")
    expect(fraction).to_contain_text(f"{round(0.40 * maskable)} of {maskable} tokens predicted", timeout=MINUTE_MS)
    assert view.inner_html() != before
    _shot(notebook.locator(".widget-vbox").first, "04_lab_mask_slider_0.40")
    _assert_safe(watch, view)


def test_rerun_button_overlays_a_new_curve(lab_page: tuple[Page, Watch], lab: Lab) -> None:
    """rerun_panel: a click trains a tiny model at the slider's rate and adds its curves to the figure."""
    cache, out = lab.root.parent / "cache", lab.root.parent / "runs" / "rerun"
    _write_notebook(
        lab.root / "rerun.ipynb",
        "from workbench import DataConfig, MaskingConfig\nfrom workbench.config import TrainConfig\n"
        "from workbench.data.examples import prepare_dataset\nfrom workbench.training.pretraining import pretrain\n"
        "from workbench.notebook.widgets import rerun_panel\n"
        f"data = prepare_dataset(DataConfig(max_documents=20, max_seq_length=32, cache_dir={str(cache)!r}))\n"
        "data.dataset['validation'] = data.dataset['validation'].select(range(64))  # a quick evaluation",
        "def short_run(masking, live):\n"
        f"    cfg = TrainConfig(out={str(out)!r}, preset='tiny', max_steps=4, batch_size=8, eval_every=2,\n"
        "                      save_every=0, overwrite=True, progress=False)\n"
        "    return pretrain(cfg, masking, data=data, callbacks=[live]).history\n\n"
        "first = [{'type': 'train', 'step': s, 'loss': 10.0 - s} for s in range(1, 5)]\n"
        "first.append({'type': 'eval', 'step': 4, 'mlm_accuracy': 0.05})\n"
        "rerun_panel(short_run, MaskingConfig(), ('first run', first))")
    page, watch = lab_page
    notebook = _run_all(page, lab, "rerun.ipynb", timeout_ms=3 * MINUTE_MS)
    _wait_rendered(page, views=0, plots=1)
    figure = notebook.locator(".js-plotly-plot").first
    before = _plot_marks(notebook)[0]
    assert figure.locator(".legendtext").all_text_contents() == ["first run"]
    _shot(notebook.locator(".widget-vbox").first, "05_lab_rerun_before")

    handle = notebook.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    notebook.get_by_role("button", name="re-run pretraining").click()
    notebook.get_by_text("2 runs", exact=True).wait_for(timeout=3 * MINUTE_MS)
    figure = notebook.locator(".js-plotly-plot").first
    figure.locator(".legendtext", has_text="#1").wait_for()
    assert figure.locator(".legendtext").all_text_contents() == ["first run", "mask_rate=0.25 (#1)"]
    after = _plot_marks(notebook)[0]
    assert after > before, f"{before} traces before the re-run, {after} after"
    _shot(notebook.locator(".widget-vbox").first, "06_lab_rerun_after")
    _assert_safe(watch, notebook.locator(".jp-OutputArea"))


HOSTILE_CELLS = (
    "import numpy as np\nfrom IPython.display import HTML, display\n"
    "from workbench import explore, plots, views\nfrom workbench.report import record_metrics\n"
    "tokens = ['[CLS]', note, 'cat', '[SEP]']\n"
    "a = np.random.default_rng(0).random((2, 2, 4, 4))\na /= a.sum(-1, keepdims=True)",
    "display(HTML(views.head_view_html(a, tokens, layer=0)))",
    "plots.attention_map(tokens, a[0, 0], title=note)",
    "plots.training_curves(runs={note: [{'step': 1, 'loss': 3.0}, {'step': 2, 'loss': 2.0}]})",
    "display(HTML(views.model_view_html(a, tokens)))",
    "class Tok:\n    def convert_ids_to_tokens(self, ids):\n        return [tokens[i] for i in ids]\n\n"
    "display(HTML(explore.pair_html(Tok(), {'input_ids': [0, 1, 3, 2, 3], 'token_type_ids': [0, 0, 0, 1, 1],"
    " 'next_sentence_label': 0})))\n"
    "display(HTML(explore.mask_html(explore.MaskView(tokens, ['[CLS]', '[MASK]', note, '[SEP]'], [0, 1, 2, 0], 2))))",
    "print(note)\nrecord_metrics(note=note)\nexplore.stats_frame({note: note})",
)


def test_hostile_text_shows_as_text_in_lab(lab_page: tuple[Page, Watch], lab: Lab) -> None:
    """Markup in tokens, titles, tables and prints shows literally in JupyterLab and never runs."""
    _write_notebook(lab.root / "hostile.ipynb", *HOSTILE_CELLS, params=f"note = {HOSTILE!r}")
    page, watch = lab_page
    notebook = _run_all(page, lab, "hostile.ipynb", timeout_ms=2 * MINUTE_MS)
    outputs = notebook.locator(".jp-OutputArea")
    _wait_rendered(page, views=2, plots=2)
    # head view, heatmap (ticks, title), curves (legend), pair + mask, print + metrics + table
    assert _outputs_showing(outputs) == 5
    _shot(page, "07_lab_hostile_outputs")
    _assert_safe(watch, outputs)


def test_report_opens_offline_and_safely(browser: Browser, tmp_path: Path) -> None:
    """run_report's HTML, opened from disk with no network: figures and views render, nothing runs."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _write_notebook(nbs / "01_hostile.ipynb", *HOSTILE_CELLS, params='note = "default"')
    result = run_report({"note": HOSTILE}, notebooks_dir=nbs, out_root=tmp_path / "reports", run_id="hostile")
    assert result.ok, result.error
    pages = {"08_report_notebook": result.run_dir / "01_hostile.html", "09_report_run_index": result.index,
             "10_report_index": tmp_path / "reports" / "index.html"}
    for shot, path in pages.items():
        page, watch = _new_page(browser, ())
        page.goto(path.as_uri())
        body = page.locator("body")
        if shot == "08_report_notebook":
            _wait_rendered(page, views=2, plots=2)
            assert _outputs_showing(page.locator(".jp-OutputArea")) == 5
        else:  # the run's parameters and headline metrics
            assert all(p in body.inner_text() for p in PIECES), f"{path} does not show the text as text"
        _shot(page, shot)
        _assert_safe(watch, body)
        page.context.close()
