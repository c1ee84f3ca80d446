"""`workbench report` / `workbench sweep` on three tiny notebooks built here (a kernel each, ~1-2 s)."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from workbench.errors import WorkbenchError
from workbench.report import (
    load_params_file,
    record_metrics,
    register_cli,
    write_reports_index,
)
from workbench.report.params import plan as _plan

HOSTILE = "<img src=x onerror=alert(1)>"

NOTEBOOKS = {
    "01_data": (
        'mask_rate = 0.15\nnote = "hello"\nfail = False\n',
        'if fail:\n    raise ValueError("deliberate failure in 01")',
        "from workbench.report import record_metrics\n"
        'record_metrics({"headline": 1, "note": note, "mask_rate": mask_rate})',
        "import plotly.graph_objects as go\n"
        'go.Figure(go.Scatter(x=[1, 2, 3], y=[7.25, 8.5, 9.75], name="TRACE_01")).show()',
    ),
    "02_pretraining": (
        'steps = 3  # optimizer steps (papermill#864: 0 = skip)\nout_dir = ""\nmask_rate = 0.15\n',
        "import json, os\n"
        "os.makedirs(out_dir, exist_ok=True)\n"
        'with open(os.path.join(out_dir, "metrics.jsonl"), "w") as f:\n'
        "    for step in range(1, steps + 1):\n"
        '        f.write(json.dumps({"type": "train", "step": step, "loss": 5.0 / step + mask_rate}) + "\\n")\n'
        '    f.write(json.dumps({"type": "eval", "step": steps, "mlm_accuracy": 0.5 - mask_rate / 2}) + "\\n")',
        "from workbench.report import record_metrics\n"
        "record_metrics(final_loss=5.0 / steps + mask_rate, headline=2, out_dir_seen=out_dir)",
    ),
    "03_finetune": (
        'model = "builtin:minilm"\n',
        "import os\nfrom workbench.report import record_metrics\n"
        "record_metrics(model_seen=model, model_exists=os.path.isdir(model), finetune_accuracy=0.75)",
    ),
}


def _write_notebook(path: Path, params: str, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), p, *map(nbformat.v4.new_code_cell, cells)]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def nbdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("notebooks")
    for name, (params, *cells) in NOTEBOOKS.items():
        _write_notebook(root / f"{name}.ipynb", params, *cells)
    return root


def _cli(argv: list[str]) -> int:
    """What workbench.cli.main does with the subcommands register_cli adds."""
    parser = argparse.ArgumentParser(prog="workbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WorkbenchError as exc:
        print(f"error: {exc}")
        return 2


@pytest.fixture(scope="module")
def main_run(nbdir, tmp_path_factory):
    """One full run: YAML parameters, a flag overriding one, a hostile string parameter."""
    tmp = tmp_path_factory.mktemp("main")
    yaml_file = tmp / "params.yaml"
    yaml_file.write_text(f"mask_rate: 0.2\nsteps: 4\nnote: '{HOSTILE}'\n")
    renderer = os.environ.get("PLOTLY_RENDERER")
    rc = _cli(["report", "--notebooks-dir", str(nbdir), "--out", str(tmp / "reports"), "--run-id", "main",
               "--params", str(yaml_file), "-p", "mask_rate=0.3"])
    assert os.environ.get("PLOTLY_RENDERER") == renderer
    run_dir = tmp / "reports" / "main"
    return rc, run_dir, json.loads((run_dir / "run.json").read_text())


def test_run_writes_notebooks_html_runjson_and_indexes(main_run, capsys):
    rc, run_dir, run = main_run
    assert rc == 0
    assert run["status"] == "ok" and run["error"] is None
    for stem in NOTEBOOKS:
        assert (run_dir / f"{stem}.ipynb").is_file() and (run_dir / f"{stem}.html").is_file()
    assert [n["status"] for n in run["notebooks"]] == ["ok", "ok", "ok"]
    assert all(n["seconds"] > 0 for n in run["notebooks"])
    # Later notebooks override earlier metrics of the same name.
    assert run["metrics"]["headline"] == 2 and run["metrics"]["finetune_accuracy"] == 0.75
    assert run["metrics"]["final_loss"] == pytest.approx(5.0 / 4 + 0.3)
    page = (run_dir / "01_data.html").read_text()
    assert "TRACE_01" in page and "7.25" in page  # the figure's data
    assert "plotly.js v" in page and "Plotly.newPlot" in page  # plotly.js itself, inline
    assert not re.search(r'<script[^>]+src="https?://[^"]*plot', page)
    assert 'id="wb-hide-code"' in page and 'for="wb-hide-code"' in page
    assert (run_dir / "index.html").is_file()
    top = (run_dir.parent / "index.html").read_text()
    assert 'href="main/index.html"' in top and 'href="main/03_finetune.html"' in top
    assert "finetune_accuracy" in top


def test_yaml_params_and_flag_override(main_run):
    _, _, run = main_run
    assert run["parameters"] == {"mask_rate": 0.3, "steps": 4, "note": HOSTILE}
    per = {n["name"]: n["parameters"] for n in run["notebooks"]}
    assert per["01_data"] == {"mask_rate": 0.3, "note": HOSTILE}  # only what each notebook declares
    assert per["02_pretraining"]["steps"] == 4 and per["02_pretraining"]["mask_rate"] == 0.3


def test_checkpoint_of_02_is_model_of_03(main_run):
    _, run_dir, run = main_run
    checkpoint = str((run_dir / "checkpoint").resolve())
    assert run["metrics"]["out_dir_seen"] == checkpoint
    assert run["metrics"]["model_seen"] == checkpoint and run["metrics"]["model_exists"] is True
    assert (run_dir / "checkpoint" / "metrics.jsonl").is_file()


def test_hostile_values_are_escaped(main_run):
    _, run_dir, _ = main_run
    for page in (run_dir.parent / "index.html", run_dir / "index.html", run_dir / "01_data.html"):
        text = page.read_text()
        assert HOSTILE not in text, page
    assert "&lt;img src=x onerror=alert(1)&gt;" in (run_dir.parent / "index.html").read_text()


def test_unknown_or_mistyped_parameter_runs_nothing(nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    assert _cli(["report", "--notebooks-dir", str(nbdir), "--out", str(out), "-p", "mask_rat=0.3"]) == 2
    msg = capsys.readouterr().out
    assert "unknown parameter(s) mask_rat" in msg and "valid names: fail, mask_rate, model, note, steps" in msg
    assert msg.count("\n") == 1
    assert not out.exists()
    with pytest.raises(WorkbenchError, match="mask_rate='high' is not a number"):
        _plan({"mask_rate": "high"}, nbdir, None)
    with pytest.raises(WorkbenchError, match="steps=1.5 is not an integer"):
        _plan({"steps": 1.5}, nbdir, None)
    with pytest.raises(WorkbenchError, match="not in the parameters cell of 01_data"):
        _plan({"steps": "3"}, nbdir, ["01"])  # only the selected notebooks count
    with pytest.raises(WorkbenchError, match="out_dir is set by the report runner"):
        _plan({"out_dir": "x"}, nbdir, None)
    with pytest.raises(WorkbenchError, match="no notebook '05'"):
        _plan({}, nbdir, ["05"])


def test_notebook_without_kernelspec_or_broken(tmp_path):
    _write_notebook(tmp_path / "01_a.ipynb", "x = 1\n")
    nb = nbformat.read(tmp_path / "01_a.ipynb", as_version=4)
    del nb.metadata["kernelspec"]
    nbformat.write(nb, tmp_path / "01_a.ipynb")
    assert _plan({"x": "2"}, tmp_path, None).params == {"x": 2}
    (tmp_path / "02_b.ipynb").write_text("not json")
    with pytest.raises(WorkbenchError, match="cannot read notebook .*02_b.ipynb"):
        _plan({}, tmp_path, None)


def test_coercion_and_wiring_plan(nbdir):
    plan = _plan({"mask_rate": "0.3", "steps": "100", "fail": "true"}, nbdir, None)
    assert plan.params == {"mask_rate": 0.3, "steps": 100, "fail": True}
    assert plan.producer == 1 and plan.consumers == [2]
    assert _plan({"model": "builtin:minilm"}, nbdir, None).consumers == []  # explicit model wins


def test_params_file_must_be_flat(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("mask_rate: [0.1, 0.2]\n")
    with pytest.raises(WorkbenchError, match="single values"):
        load_params_file(f)
    with pytest.raises(WorkbenchError, match="cannot read parameters file"):
        load_params_file(tmp_path / "missing.yaml")


def test_failing_notebook_keeps_partial_output_and_skips_the_rest(nbdir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as the CLI's defaults are
    out = Path("reports")
    rc = _cli(["report", "--notebooks-dir", os.path.relpath(nbdir), "--out", "reports", "--run-id", "bad",
               "--notebooks", "01,02", "-p", "fail=true"])
    assert rc == 1
    captured = capsys.readouterr()
    html_path = out / "bad" / "01_data.html"
    assert "error: notebook 01_data failed: ValueError: deliberate failure in 01 (cell In [" in captured.err
    assert captured.err.rstrip().endswith(f"see {html_path}")
    assert captured.out.strip() == str(out / "bad" / "index.html")
    run = json.loads((out / "bad" / "run.json").read_text())
    assert run["status"] == "failed"
    assert [n["status"] for n in run["notebooks"]] == ["failed", "skipped"]
    nb = nbformat.read(out / "bad" / "01_data.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in nb.cells for o in c.get("outputs", []))
    page = html_path.read_text()
    assert "deliberate failure in 01" in page and 'id="papermill-error-cell"' in page
    assert not (out / "bad" / "02_pretraining.ipynb").exists()
    top = (out / "index.html").read_text()
    assert 'class="wb-failed"' in top and 'class="wb-skipped"' in top


def test_sweep_runs_every_combination_and_compares(nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    base = ["--notebooks-dir", str(nbdir), "--out", str(out), "--notebooks", "02,03"]
    assert _cli(["sweep", "--param", "mask_rate=0.2,high", *base]) == 2  # checked before running
    assert "mask_rate='high' is not a number" in capsys.readouterr().out
    assert not out.exists()
    rc = _cli(["sweep", "--param", "mask_rate=0.2,0.4", "-p", "steps=3", "--sweep-id", "s1", *base])
    assert rc == 0
    runs = [json.loads((out / f"s1-0{k}" / "run.json").read_text()) for k in (1, 2)]
    assert [r["parameters"]["mask_rate"] for r in runs] == [0.2, 0.4]
    assert all(r["status"] == "ok" and r["sweep"] == "s1" for r in runs)
    page = (out / "sweep-s1" / "index.html").read_text()
    assert capsys.readouterr().out.strip() == str(out / "sweep-s1" / "index.html")
    assert 'href="../s1-01/index.html"' in page and "finetune_accuracy" in page and "0.75" in page
    assert "mask_rate=0.2" in page and "mask_rate=0.4" in page  # legend names of the curves
    assert "Plotly.newPlot" in page and not re.search(r'<script[^>]+src="https?://', page)
    assert "eval mlm_accuracy" in page
    assert 'href="sweep-s1/index.html"' in (out / "index.html").read_text()


def test_record_metrics_outside_a_kernel_and_empty_index(tmp_path, capsys):
    assert record_metrics({"acc": 0.5}, text=HOSTILE) == {"acc": 0.5, "text": HOSTILE}
    assert "acc" in capsys.readouterr().out
    with pytest.raises(WorkbenchError, match="metric names must be strings"):
        record_metrics({1: 2})
    assert write_reports_index(tmp_path).is_file()
