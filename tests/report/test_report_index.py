"""The reports index as a runs table: the answer in words first, parameters that differ, a figure across runs.

Three fake-but-realistic runs (the real notebooks' defaults, metrics as 02 and 04 record them)
are written here as the runner writes them; tests/report/test_browser_index.py opens the same index in
Chromium. A tiny report (one kernel) checks that no table cell or legend shows an absolute path.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from workbench.report import run_report, write_reports_index
from workbench.report.files import OutputDir, claim_dir
from workbench.report.params import defaults, plan
from workbench.report.records import NotebookResult, RunResult
from workbench.report.runner import save_run

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_data_inspection", "02_pretraining", "03_attention", "04_finetuning")
# (run id, parameters, downstream gain and CI, held-out MLM and NSP accuracy, bshift gain)
FAKE_RUNS = (
    ("20261203-081200-nsp1500", {"max_steps": 1500, "eval_every": 250}, (0.13614, 0.12402, 0.14737), 0.31234, 0.81467, 0.0523),
    ("20261203-084500-mlm1500", {"max_steps": 1500, "eval_every": 250, "objective": "mlm", "mask_rate": 0.3},
     (-0.00941, -0.02113, 0.00184), 0.27871, None, -0.0112),
    ("20261203-091000-sop500", {"max_steps": 500, "objective": "sop", "mask_rate": 0.15,
                                "corpus": "/home/ada/data/agnews-train.txt"}, (0.05217, 0.01009, 0.09425), 0.22946, 0.66112, 0.0187),
)


def _metrics(gain: tuple[float, float, float], mlm: float, nsp: float | None, bshift: float) -> dict:
    """What 02 and 04 record (probes.headline_metrics for the downstream part)."""
    mean, low, high = gain
    verdict = "gain" if low > 0 else "loss" if high < 0 else "no measurable difference"
    ev = {"mlm_loss": 4.1327, "perplexity": 62.3518, "mlm_accuracy": mlm, "unigram_accuracy": 0.0712,
          "tokens_per_second": 10412.77, "steps": 1500} | ({"nsp_accuracy": nsp} if nsp is not None else {})
    return ev | {
        "downstream_task": "builtin:wikipedia-topics", "downstream_method": "linear probe (frozen encoder, layer chosen on validation)",
        "downstream_n_test": 531, "downstream_n_train": 1593, "downstream_seeds": 3, "downstream_accuracy": 0.5812 + mean,
        "downstream_random_accuracy": 0.5812, "downstream_gain": mean, "downstream_gain_ci_low": low,
        "downstream_gain_ci_high": high, "downstream_verdict": verdict,
        "bshift_accuracy": 0.5 + bshift, "bshift_random_accuracy": 0.5, "bshift_gain": bshift,
        "finetune_task": "builtin:rt-polarity", "finetune_accuracy": 0.525, "finetune_macro_f1": 0.4871,
        "finetune_n_train": 140, "finetune_n_test": 40}


def make_runs(root: Path) -> list[RunResult]:
    """FAKE_RUNS written into ``root`` as finished runs of the real notebook sequence, indexed."""
    notebook_defaults = defaults(plan({}, REPO / "notebooks", None))
    out, results = OutputDir.open(root, "report"), []
    for k, (run_id, params, gain, mlm, nsp, bshift) in enumerate(FAKE_RUNS):
        run_dir = claim_dir(out, run_id)
        nbs = [NotebookResult(n, "ok", f"{n}.ipynb", f"{n}.html", 30.0 + 10 * i) for i, n in enumerate(NOTEBOOKS)]
        started = f"2026-12-03T{run_id[9:11]}:{run_id[11:13]}:00"
        result = RunResult(run_id, run_dir, "ok", params, nbs, _metrics(gain, mlm, nsp, bshift), defaults=notebook_defaults,
                           checkpoint="checkpoint", started=started, seconds=600.0 + 300 * k)
        save_run(result, root)
        results.append(result)
    return results


@pytest.fixture
def index(tmp_path: Path) -> str:
    make_runs(tmp_path)
    return (tmp_path / "index.html").read_text()


def _row(index: str, run_id: str) -> str:
    return next(r for r in index.split("<tr ") if f'data-run="{run_id}"' in r)


def test_each_row_leads_with_the_answer_in_words_and_rounded_numbers(index, tmp_path):
    nsp, mlm, sop = (_row(index, r[0]) for r in FAKE_RUNS)
    assert "<b>gain</b> +13.6 points (95% CI +12.4 to +14.7)" in nsp
    assert "<b>no measurable difference</b> -0.9 points (95% CI -2.1 to +0.2)" in mlm
    assert "<b>gain</b> +5.2 points (95% CI +1.0 to +9.4)" in sop
    assert "71.7% vs 58.1% random twin · builtin:wikipedia-topics · 531 test · 3 seeds" in nsp
    assert ">31.2%</td>" in nsp and ">81.5%</td>" in nsp and ">–</td>" in mlm  # held-out MLM, NSP (none for mlm)
    assert "+5.2 points <i>no CI recorded</i>" in nsp  # bshift: a gain without its CI is no verdict
    assert index.index("downstream gain over random twin") < index.index("bshift gain") < index.index("MLM accuracy")
    # run.json keeps full precision; the tooltip of a rounded number has it too
    assert json.loads((tmp_path / FAKE_RUNS[0][0] / "run.json").read_text())["metrics"]["downstream_gain"] == 0.13614
    assert 'title="62.3518">62.4<' in nsp and 'title="10412.77">10,413<' in nsp


def test_parameters_that_differ_come_first_and_all_are_one_click_away(index):
    nsp, mlm, sop = (_row(index, r[0]) for r in FAKE_RUNS)
    shown = nsp.split("<details>")[0]
    assert "max_steps=1500" in nsp and "eval_every=250" in nsp and "objective=" not in nsp.split("<details><summary>all")[0]
    assert "objective=mlm" in mlm and "mask_rate=0.3" in mlm
    own = sop.split("<details><summary>all")[0]
    assert "objective=sop" in own and "mask_rate" not in own  # 0.15 is the notebooks' default: not a difference
    assert '…/agnews-train.txt' in own and 'title="/home/ada/data/agnews-train.txt"' in own
    assert "<details><summary>all 37 parameters</summary>" in sop and "<div>preset=tiny</div>" in sop
    assert "<div>seed=12345</div>" in sop and "<div>epochs=3.0</div>" in sop  # parameters as given, not rounded
    assert "<div class=wb-changed>objective=sop</div>" in sop and shown


def test_the_rest_of_the_metrics_sit_in_a_collapsed_block_and_rows_sort_and_filter(index):
    row = _row(index, FAKE_RUNS[0][0])
    more = row.split("<details><summary>")[-1]
    assert more.startswith("12 more metrics</summary>") and "finetune_accuracy" in more and "downstream_method" in more
    assert "downstream_gain<" not in more and "mlm_accuracy<" not in more  # shown in their own columns
    assert '<input id="wb-filter" type="search"' in index and 'data-sort="0.13614"' in row
    assert index.count('aria-sort="none"') == 6  # run, status, two gains, MLM, NSP
    assert "https://" not in index.split("<script")[0] and "fetch(" not in index


def test_a_figure_of_the_gain_against_each_parameter_that_varies(index, tmp_path):
    assert "<h2>Gain across runs</h2>" in index
    js = next(tmp_path.glob("plotly-*.min.js"))
    assert re.search(rf'<script [^>]*src="{re.escape(js.name)}"></script>', index) and js.stat().st_size > 1e6
    assert len(index) < 200_000  # plotly.js is shared, not inlined into every index write
    assert OutputDir.open(tmp_path, "report").owns(js.name)
    spec = json.loads(re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", index, re.S).group(1))
    # max_steps, eval_every, objective, mask_rate and corpus vary: more than 3, so parallel coordinates
    assert [t["type"] for t in spec] == ["parcoords"]
    dims = {d["label"]: d for d in spec[0]["dimensions"]}
    assert list(dims) == ["corpus", "objective", "mask_rate", "max_steps", "eval_every", "gain (points)", "CI low", "CI high"]
    assert dims["objective"]["ticktext"] == ["sop", "mlm", "nsp"] and dims["objective"]["values"] == [0, 1, 2]
    assert dims["corpus"]["ticktext"] == ["…/agnews-train.txt", "builtin:wikipedia"]
    assert dims["gain (points)"]["values"] == pytest.approx([5.217, -0.941, 13.614])
    assert dims["CI low"]["values"] == pytest.approx([1.009, -2.113, 12.402])


def test_few_varying_parameters_get_a_panel_each_with_ci_bars():
    from workbench.report.gainplot import GainPoint, gain_figure

    points = [GainPoint("a", {"mask_rate": 0.15, "objective": "nsp", "preset": "tiny"}, 13.6, 12.4, 14.7),
              GainPoint("b", {"mask_rate": 0.3, "objective": "mlm", "preset": "tiny"}, -0.9, -2.1, 0.2),
              GainPoint("c", {"mask_rate": 0.15, "objective": "nsp", "preset": "tiny"}, float("nan"))]
    fig = gain_figure(points)
    assert [t.type for t in fig.data] == ["scatter", "scatter"]  # preset does not vary; c recorded no gain
    assert [a.text for a in fig.layout.annotations][:2] == ["mask_rate", "objective"]
    assert list(fig.data[0].x) == [0.15, 0.3] and list(fig.data[1].x) == ["nsp", "mlm"]
    assert list(fig.data[0].error_y.array) == pytest.approx([1.1, 1.1]) and list(fig.data[0].error_y.arrayminus) == pytest.approx([1.2, 1.2])
    assert gain_figure(points[:1]) is None and gain_figure([points[0], points[0]]) is None


def test_markup_in_names_and_values_reaches_the_figure_as_text():
    from workbench.report.gainplot import GainPoint, gain_figure

    hostile = "<img src=x onerror=alert(1)>"
    for n in (1, 5):  # panels and parallel coordinates
        points = [GainPoint(hostile, {f"{hostile}{k}": v for k in range(n)}, 1.0, 0.5, 1.5) for v in (hostile, "b")]
        text = gain_figure(points).to_json()
        assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_two_runs_that_share_every_parameter_get_no_figure(tmp_path):
    root = tmp_path / "reports"
    make_runs(root)
    for run_id, *_ in FAKE_RUNS[1:]:
        (root / run_id / "run.json").write_text(
            (root / FAKE_RUNS[0][0] / "run.json").read_text().replace(FAKE_RUNS[0][0], run_id))
    assert "Gain across runs" not in write_reports_index(root).read_text()


PROBE_CELL = '''import pandas as pd
import workbench as wb
from workbench.report import record_metrics
inits = [model, f"random:{model}", "builtin:minilm"]
runs = pd.DataFrame([{"init": init, "seed": seed, "layer": layer, "validation_accuracy": 0.5 + 0.1 * layer,
                      "test_accuracy": base + 0.01 * seed + 0.02 * layer, "n_train": 60, "n_test": 90}
                     for init, base in zip(inits, (0.7, 0.5, 0.8)) for seed in range(3) for layer in range(2)])
gain = wb.probe_gain(runs, model, f"random:{model}")
record_metrics(wb.probes.headline_metrics(gain, f"heldout:{model}"), model_seen=model)
display(wb.plots.probe_by_layer(wb.probes.probe_summary(runs)))
print(wb.probes.gain_sentence(gain))
wb.ProbeGain(gain, wb.probes.headline_table(runs))'''
CURVE_CELL = '''curve = pd.DataFrame([{"init": init, "n_train": n, "seed": s, "lr": 1e-3, "chosen": True, "accuracy": a + 0.01 * s,
                       "macro_f1": a} for init, a in zip(inits[:2], (0.7, 0.6)) for n in (10, 20) for s in range(3)])
lc = wb.LearningCurve.from_runs(curve)
display(lc.figure())
lc'''


class _Cells(HTMLParser):
    """The text of every table cell (``td``/``th``) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("td", "th"):
            self._depth += 1
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.cells[-1] += data


ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[\w.@+-]+/)+[\w.@+-]*")


def _cells(page: str) -> list[str]:
    """Table cells outside the provenance block (the one place full paths belong)."""
    parser = _Cells()
    parser.feed(re.sub(r"<details><summary>Provenance.*?</details>", "", page, flags=re.S))
    return parser.cells


def test_no_legend_or_table_cell_of_a_report_shows_an_absolute_path(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for name, params, cells in (("01_train", 'out = ""\n', ["import os\nos.makedirs(out, exist_ok=True)"]),
                                ("02_probe", 'model = "builtin:minilm"\n', [PROBE_CELL, CURVE_CELL])):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                    *map(nbformat.v4.new_code_cell, cells)]
        nbformat.write(nb, nbs / f"{name}.ipynb")
    result = run_report({}, notebooks_dir=nbs, out_root=tmp_path / "reports", run_id="paths")
    assert result.ok, result.error
    checkpoint = str(result.run_dir / "checkpoint")
    assert result.metrics["model_seen"] == checkpoint  # run.json keeps the full path
    pages = [tmp_path / "reports" / "index.html", result.index, result.run_dir / "02_probe.html"]
    cells = [c for p in pages for c in _cells(p.read_text())]
    assert "checkpoint (02)" in cells and "random twin" in cells and "MiniLM" in cells  # ProbeGain's table
    assert "heldout:checkpoint" in cells  # downstream_task, in the run page's and the notebook's metrics tables
    bad = [c for c in cells if ABSOLUTE.search(c)]
    assert not bad, bad
    legends = [t.get("name", "") for f in sorted(result.run_dir.glob("figures/*.json"))
               for t in json.loads(f.read_text())["data"]]
    assert legends == ["checkpoint (02)", "random twin", "MiniLM", "checkpoint (02)", "random twin"]
    assert "checkpoint (02) against random twin: a measurable gain" in (result.run_dir / "02_probe.html").read_text()
    assert not ABSOLUTE.search("checkpoint (02) · …/agnews-train.txt · 95% CI") and ABSOLUTE.search(f"x {checkpoint}")
