"""`workbench report` / `workbench sweep` on three tiny notebooks built here (a kernel each, ~1-2 s)."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import nbformat
import pytest

from workbench.errors import WorkbenchError
from workbench.report import (
    load_params_file,
    record_metrics,
    write_reports_index,
)
from workbench.report.params import injected
from workbench.report.params import plan as _plan

HOSTILE = "<img src=x onerror=alert(1)>"

NOTEBOOKS = {
    "01_data": (
        'mask_rate = 0.15\nnote = "hello"\nfail = False\n',
        'if fail:\n    raise ValueError("deliberate failure in 01")',
        "from workbench.config import MaskingConfig\nmasking = MaskingConfig(mask_rate=mask_rate)",
        "from workbench.report import record_metrics\n"
        'record_metrics({"headline": 1, "note": note, "mask_rate": mask_rate})',
        "import plotly.graph_objects as go\n"
        'go.Figure(go.Scatter(x=[1, 2, 3], y=[7.25, 8.5, 9.75], name="TRACE_01")).show()',
    ),
    "02_pretraining": (
        'steps = 3  # optimizer steps (papermill#864: 0 = skip)\nout = ""\nmask_rate = 0.15\n',
        "import json, os\n"
        "os.makedirs(out, exist_ok=True)\n"
        'with open(os.path.join(out, "metrics.jsonl"), "w") as f:\n'
        "    for step in range(1, steps + 1):\n"
        '        f.write(json.dumps({"type": "train", "step": step, "loss": 5.0 / step + mask_rate}) + "\\n")\n'
        '    f.write(json.dumps({"type": "eval", "step": steps, "mlm_accuracy": 0.5 - mask_rate / 2}) + "\\n")',
        "from workbench.report import record_metrics\n"
        "record_metrics(final_loss=5.0 / steps + mask_rate, headline=2, out_seen=out)",
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
    """What workbench.cli.main does, with the error line on stdout."""
    from workbench.cli import build_parser

    args = build_parser().parse_args(argv)
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
    assert run["metrics"]["out_seen"] == checkpoint
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
    with pytest.raises(WorkbenchError, match="out is set by the report runner"):
        _plan({"out": "x"}, nbdir, None)
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


def test_out_of_the_training_notebook_is_the_runners_and_a_readers_out_the_users(tmp_path):
    # As 02 and 04: 02 declares out (it trains), 04 declares model and its own out (its results dir).
    _write_notebook(tmp_path / "01_train.ipynb", 'out = ""\nsteps = 3\n', "pass")
    _write_notebook(tmp_path / "02_read.ipynb", 'model = "builtin:minilm"\nout = "results"\n', "pass")
    p = _plan({"out": "mine"}, tmp_path, None)
    assert p.producer == 0 and p.consumers == [1]
    assert injected(p, 0, "CKPT") == {"out": "CKPT"}
    assert injected(p, 1, "CKPT") == {"out": "mine", "model": "CKPT"}
    alone = _plan({"out": "mine"}, tmp_path, ["02"])  # a reader alone makes no checkpoint
    assert alone.producer is None and injected(alone, 0, "CKPT") == {"out": "mine"}
    with pytest.raises(WorkbenchError, match="out is set by the report runner for 01_train"):
        _plan({"out": "mine"}, tmp_path, ["01"])


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
    assert '<span class="wb-failed">failed</span>' in top  # the run's status
    assert 'class="wb-nb wb-failed" title="01_data: failed"' in top and 'title="02_pretraining: skipped"' in top


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


# --------------------------------------------------------------------------- figures, provenance

def test_figures_folder_and_provenance_block(main_run):
    import plotly.io as pio

    _, run_dir, run = main_run
    # .svg/.png come too where kaleido and chromium can draw them
    assert run["figures"] == "figures/index.html" and run["notebooks"][0]["figures"][:2] == ["01_data-1.json", "01_data-1.html"]
    fig = pio.read_json(run_dir / "figures" / "01_data-1.json")
    assert fig.data[0].name == "TRACE_01" and list(fig.data[0].y) == [7.25, 8.5, 9.75]
    standalone = (run_dir / "figures" / "01_data-1.html").read_text()
    assert re.search(r'<script[^>]* src="plotly.min.js"', standalone) and (run_dir / "figures" / "plotly.min.js").stat().st_size > 1e6
    listing = (run_dir / "figures" / "index.html").read_text()
    drawn = (run_dir / "figures" / "01_data-1.svg").is_file()
    # SVG/PNG are not drawn per report (seconds each): the listing says how to make them
    assert 'href="01_data-1.json"' in listing and ('href="01_data-1.svg"' in listing if drawn else "kaleido" in listing)
    page = (run_dir / "index.html").read_text()
    assert 'href="figures/index.html"' in page
    prov = run["provenance"]
    assert {"git_commit", "git_dirty", "packages", "python", "device", "command"} <= set(prov)
    assert prov["run_id"] == "main" and prov["packages"]["transformers"]
    assert "<details><summary>Provenance" in page and html_escape(prov["python"]) in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


# --------------------------------------------------------------------------- parameter values (15.7)

def test_config_dataclasses_refuse_bad_values_before_anything_runs(nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    assert _cli(["report", "--notebooks-dir", str(nbdir), "--out", str(out), "-p", "mask_rate=5"]) == 2
    msg = capsys.readouterr().out
    assert msg.startswith("error: mask_rate 5.0 must be between 0 and 1") and "MaskingConfig of 01_data" in msg
    assert msg.count("\n") == 1 and not out.exists()
    assert _cli(["sweep", "--param", "mask_rate=0.2,1.5", "--notebooks-dir", str(nbdir), "--out", str(out)]) == 2
    assert "mask_rate 1.5 must be between 0 and 1" in capsys.readouterr().out and not out.exists()
    # The real notebooks: each parameter reaches the dataclass its notebook builds from it.
    real = Path(__file__).resolve().parents[2] / "notebooks"
    for params, text in [({"mask_rate": 5}, "MaskingConfig of 01_data_inspection"),
                         ({"max_steps": 0}, "TrainConfig of 02_pretraining"),
                         ({"layer": -1}, "AttentionConfig of 03_attention"),
                         ({"max_length": 4}, "FinetuneConfig of 04_finetuning")]:
        with pytest.raises(WorkbenchError, match=text):
            _plan(params, real, None)
    assert _plan({"mask_rate": 0.4, "max_steps": 10, "init": "builtin:minilm"}, real, None).params["mask_rate"] == 0.4


# --------------------------------------------------------------------------- output folders (15.1)

def test_out_naming_a_file_is_refused_before_any_work(nbdir, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("my thesis numbers\n")
    for argv in (["report", "--notebooks-dir", str(nbdir)], ["sweep", "--param", "mask_rate=0.2,0.3", "--notebooks-dir", str(nbdir)]):
        assert _cli([*argv, "--out", str(target)]) == 2
        msg = capsys.readouterr().out
        assert msg == f"error: --out {target} is a file, not a folder; pass a folder (new or existing) as --out\n"
    from workbench.cli import main

    assert main(["demo", "--out", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "my thesis numbers\n" and sorted(os.listdir(tmp_path)) == ["results.txt"]


def test_foreign_files_in_the_reports_root_survive_and_are_not_indexed(nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    (out / "theirs").mkdir(parents=True)
    (out / "README.md").write_text("# my notes\n")
    (out / "theirs" / "run.json").write_text(json.dumps({"run_id": "theirs", "status": "ok", "started": "2099", "parameters": {},
                                                         "notebooks": [], "metrics": {}}))
    (out / "index.html").write_text("<p>my own index</p>")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    base = ["report", "--notebooks-dir", str(nbdir), "--out", str(out), "--notebooks", "01", "--run-id", "r"]
    assert _cli(base) == 2  # a foreign index.html: refused, before any kernel starts
    msg = capsys.readouterr().out
    assert "index.html, which workbench did not write" in msg and msg.count("\n") == 1 and not (out / "r").exists()
    (out / "index.html").rename(tmp_path / "index.html")
    del before[out / "index.html"]
    assert _cli(base) == 0
    assert {p: p.read_bytes() for p in before} == before  # byte-identical
    index = (out / "index.html").read_text()
    assert 'href="r/index.html"' in index and "theirs" not in index


# --------------------------------------------------------------------------- concurrency (15.6)

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """One notebook, one cell after its parameters: a run takes a kernel start and little else."""
    root = tmp_path_factory.mktemp("tiny")
    _write_notebook(root / "01_tiny.ipynb", "x = 1\n",
                    "import os\nfrom workbench.report import record_metrics\nrecord_metrics(x=x, cwd=os.getcwd())")
    return root


def test_claims_and_index_writes_never_collide(tmp_path):
    import threading

    from workbench.report.files import OutputDir, claim_dir
    from workbench.report.records import NotebookResult, RunResult
    from workbench.report.runner import save_run

    barrier, dirs = threading.Barrier(8), []

    def claim_and_save(k: int) -> None:
        barrier.wait()
        run_dir = claim_dir(OutputDir.open(tmp_path, "report"), "20990101-000000-abcdef")
        dirs.append(run_dir)
        save_run(RunResult(run_dir.name, run_dir, "ok", {"k": k}, [NotebookResult("01_x", "ok")], started="x"), tmp_path)

    threads = [threading.Thread(target=claim_and_save, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(d.name for d in dirs)
    assert names == sorted(["20990101-000000-abcdef", *(f"20990101-000000-abcdef-{k}" for k in range(2, 9))])
    index = (tmp_path / "index.html").read_text()
    assert all(f'href="{n}/index.html"' in index for n in names)  # the last writer saw every run
    root = OutputDir.open(tmp_path, "report")
    assert sorted(root.owned()) == sorted([*names, ".workbench-index.lock", "index.html"])
    assert root.foreign() == [] and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_two_reports_started_together_both_run_and_are_indexed(tiny_dir, tmp_path):
    import threading

    from workbench.report import run_report

    out, results, barrier, cwd = tmp_path / "reports", [], threading.Barrier(2), os.getcwd()

    def one() -> None:
        barrier.wait()
        results.append(run_report({"x": "7"}, notebooks_dir=tiny_dir, out_root=out))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Kernels start in the notebooks dir (their ../data paths), without papermill's process-wide chdir.
    assert len(results) == 2 and all(r.ok and r.metrics == {"x": 7, "cwd": str(tiny_dir)} for r in results)
    assert os.getcwd() == cwd
    ids = sorted(r.run_id for r in results)
    assert ids[0] != ids[1] and re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}(-2)?", ids[1])
    index = (out / "index.html").read_text()
    assert all(f'href="{i}/index.html"' in index for i in ids)


def test_malformed_run_json_is_skipped_with_a_note(tmp_path, capsys):
    from workbench.report.files import OutputDir, claim_dir

    root = OutputDir.open(tmp_path, "report")
    bad = {"broken": "{not json", "a-list": "[1, 2]", "no-keys": '{"run_id": "x"}',
           "nb-strings": json.dumps({"run_id": "y", "status": "ok", "started": "s", "parameters": {}, "metrics": {},
                                     "notebooks": ["01_a"]})}
    for name, text in bad.items():
        (claim_dir(root, name) / "run.json").write_text(text)
    good = claim_dir(root, "good")
    (good / "run.json").write_text(json.dumps({"run_id": "good", "status": "ok", "started": "s", "parameters": {"a": 1},
                                               "metrics": {"m": 0.5}, "notebooks": [{"name": "01_a", "status": "ok"}]}))
    dead = claim_dir(root, "dead")  # a run SIGKILLed mid-way: its record still says running
    (dead / "run.json").write_text(json.dumps({"run_id": "dead", "status": "running", "started": "s", "parameters": {},
                                               "metrics": {}, "notebooks": [], "pid": 2**22 + 1, "host": socket.gethostname()}))
    index = write_reports_index(tmp_path).read_text()
    err = capsys.readouterr().err
    assert 'href="good/index.html"' in index and "<tr><th>m</th><td>0.5</td></tr>" in index
    assert "<div>a=1</div>" in index  # no defaults recorded: every given parameter counts as changed
    assert re.search(r'data-run="dead">.*?</td><td data-sort="s"><span class="wb-interrupted">', index)
    for name in bad:
        assert f"note: skipping {tmp_path / name / 'run.json'}:" in err and f'href="{name}/' not in index
    assert "not valid JSON (line 1" in err and "a JSON list, not an object" in err and "missing status" in err
    assert "notebooks is not a list of {name: ...} objects" in err


@pytest.mark.slow
def test_sigterm_records_the_run_as_interrupted_and_stops_the_kernel(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_sleep.ipynb", 'pid_file = ""\n',
                    "import os, time\nopen(pid_file, 'w').write(str(os.getpid()))\ntime.sleep(120)")
    pid_file, out = tmp_path / "kernel.pid", tmp_path / "reports"
    proc = subprocess.Popen([sys.executable, "-c", CLI_SCRIPT, "report", "--notebooks-dir", str(nbs), "--out", str(out),
                             "--run-id", "sleepy", "-p", f"pid_file={pid_file}"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    kernel = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == f"error: interrupted by SIGTERM; recorded as interrupted in {out / 'sleepy' / 'run.json'}"
    assert "Traceback" not in err
    run = json.loads((out / "sleepy" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["error"] == "interrupted by SIGTERM"
    assert run["notebooks"][0]["status"] == "interrupted" and run["notebooks"][0]["notebook"] == "01_sleep.ipynb"
    assert 'class="wb-interrupted"' in (out / "index.html").read_text()
    _assert_gone(kernel)


# `workbench report|sweep` as the console script runs them (workbench.cli imports no torch for these).
CLI_SCRIPT = "import sys\nfrom workbench.cli import main\nsys.exit(main())\n"


def _assert_gone(pid: int) -> None:
    """The process ``pid`` (a kernel) ends within 10 s: shut down, not orphaned."""
    import time

    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            return
        time.sleep(0.2)
    os.kill(pid, 9)
    pytest.fail(f"kernel {pid} still runs after its run was interrupted")


# --------------------------------------------------------------------------- seeded sweeps (13.3)

TRAIN_CELL = """import json, os
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for step in range(1, steps + 1):
        f.write(json.dumps({"type": "train", "step": step, "loss": 5.0 / step + mask_rate + 0.01 * seed}) + "\\n")
    f.write(json.dumps({"type": "eval", "step": steps, "mlm_accuracy": 0.5 - mask_rate / 2}) + "\\n")
if os.environ.get("WB_TEST_FAIL") == f"{mask_rate}-{seed}":
    raise ValueError("deliberate failure")
from workbench.report import record_metrics
record_metrics(noisy=0.5 * seed + 0.1 * mask_rate, downstream_task="toy", downstream_gain=mask_rate + 0.01 * seed,
               downstream_gain_ci_low=mask_rate - 0.1, downstream_gain_ci_high=mask_rate + 0.1)"""


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    _write_notebook(root / "01_train.ipynb", 'steps = 3\nout = ""\nmask_rate = 0.15\nseed = 0\n', TRAIN_CELL)
    return root


def _t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student t interval, computed here independently of workbench.evaluation.stats."""
    import statistics

    from scipy.stats import t

    return statistics.mean(values), t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


@pytest.mark.slow
def test_seeded_sweep_shows_intervals_marks_noise_and_resumes_only_unfinished_runs(train_dir, tmp_path, capsys, monkeypatch):
    from workbench.report.records import RunResult
    from workbench.report.runner import save_run

    out = tmp_path / "reports"
    base = ["sweep", "--param", "mask_rate=0.2,0.4", "--seeds", "0,1", "--notebooks-dir", str(train_dir), "--out", str(out)]
    monkeypatch.setenv("WB_TEST_FAIL", "0.4-1")
    assert _cli([*base, "--sweep-id", "s"]) == 1
    monkeypatch.delenv("WB_TEST_FAIL")
    runs = {d: json.loads((out / d / "run.json").read_text()) for d in ("s-01-s0", "s-01-s1", "s-02-s0", "s-02-s1")}
    assert [r["status"] for r in runs.values()] == ["ok", "ok", "ok", "failed"]
    assert [r["combination"] for r in runs.values()] == [{"mask_rate": 0.2, "seed": 0}, {"mask_rate": 0.2, "seed": 1},
                                                         {"mask_rate": 0.4, "seed": 0}, {"mask_rate": 0.4, "seed": 1}]
    assert runs["s-01-s1"]["notebooks"][0]["parameters"]["seed"] == 1  # --seeds sets the notebook's seed
    # A run killed mid-way (SIGKILL) leaves its record at "running", as written when it started.
    killed = RunResult.from_json(runs["s-01-s1"], out / "s-01-s1")
    killed.status = "running"
    save_run(killed, out)
    kept = (out / "s-01-s0" / "run.json").read_bytes()
    capsys.readouterr()
    assert _cli([*base, "--resume"]) == 0  # finds the sweep by its settings
    err = capsys.readouterr().err
    assert "resume: 2 of 4 runs already finished; running 2" in err
    assert "(mask_rate=0.2, seed=1): " in err and "(mask_rate=0.4, seed=1): " in err and "seed=0)" not in err
    assert (out / "s-01-s0" / "run.json").read_bytes() == kept
    assert json.loads((out / "s-01-s1" / "run.json").read_text())["status"] == "interrupted"  # the dead run, recorded
    assert json.loads((out / "s-02-s1" / "run.json").read_text())["status"] == "failed"  # the failed attempt stays
    sweep = json.loads((out / "sweep-s" / "sweep.json").read_text())
    assert sweep["status"] == "ok" and sweep["runs"] == ["s-01-s0", "s-01-s1-2", "s-02-s0", "s-02-s1-2"]
    page = (out / "sweep-s" / "index.html").read_text()
    for rate in (0.2, 0.4):
        mean, half = _t_interval([rate, rate + 0.01])
        assert f"{mean:.4g} ± {half:.4g}" in page  # downstream_gain over the two seeds
    assert page.count("intervals apart") >= 1 and page.count("within noise") >= 1  # downstream_gain vs noisy
    assert "paired Δ +0.2 <small>[+0.2, +0.2], 2 seeds: higher" in page
    assert "downstream_gain_ci_low</td>" not in page.split("<h2>Runs</h2>")[0]  # a run's own CI is not averaged
    assert page.index("downstream_task") < page.index("noisy")  # the headline first, here and in the index
    row = next(r for r in (out / "index.html").read_text().split("<tr>") if 'href="s-01-s0/index.html"' in r)
    assert "<b>gain</b> +20.0 points (95% CI +10.0 to +30.0)" in row and "<th>noisy</th>" in row  # answer first
    # the gain against the swept value: the mean over seeds per combination, with its t interval
    assert "Gain over the random twin (points, CI) by swept value" in page
    spec = json.loads(re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', page, re.S).group(1))
    assert spec[0]["x"] == [0.2, 0.4] and spec[0]["y"] == pytest.approx([20.5, 40.5])
    assert '"fill":"toself"' in page and "95% CI band" in page
    # Settings must match what ran; a running sweep's id is not reused.
    assert _cli([*base[:4], "0,1,2", *base[5:], "--resume", "--sweep-id", "s"]) == 2
    assert "sweep s ran with other seeds" in capsys.readouterr().out
    assert _cli([*base, "--sweep-id", "s"]) == 2
    assert "sweep-s already exists; pass another --sweep-id (or --resume" in capsys.readouterr().out


SLEEP_CELL = """import os, time
from workbench.report import record_metrics
open(f'{pid_dir}/{mask_rate}', 'w').write(str(os.getpid()))
t0 = time.time()
time.sleep(float(os.environ.get("WB_TEST_PAUSE", "0")))
record_metrics(threads=os.environ.get("OMP_NUM_THREADS", ""), kernel_parent=os.getppid(), t0=t0, t1=time.time())"""


@pytest.mark.slow
def test_parallel_sweep_sigterm_reaches_every_worker_and_resume_finishes_it(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    from workbench.report import run_sweep
    from workbench.report.pool import threads_per_job

    nbs, pids, out = tmp_path / "nbs", tmp_path / "pids", tmp_path / "reports"
    nbs.mkdir()
    pids.mkdir()
    _write_notebook(nbs / "01_sleep.ipynb", 'pid_dir = ""\nmask_rate = 0.1\n', SLEEP_CELL)
    proc = subprocess.Popen([sys.executable, "-c", CLI_SCRIPT, "sweep", "--param", "mask_rate=0.1,0.2", "--jobs", "2",
                             "--sweep-id", "par", "--notebooks-dir", str(nbs), "--out", str(out), "-p", f"pid_dir={pids}"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "WB_TEST_PAUSE": "120"})
    deadline = time.monotonic() + 180
    while len([p for p in pids.iterdir() if p.read_text()]) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    kernels = [int(p.read_text()) for p in pids.iterdir()]
    assert len(kernels) == 2  # both runs are going at once
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: interrupted by SIGTERM"
    for run_id in ("par-01", "par-02"):
        run = json.loads((out / run_id / "run.json").read_text())
        assert run["status"] == "interrupted" and run["error"] == "interrupted by SIGTERM", run_id
    assert json.loads((out / "sweep-par" / "sweep.json").read_text())["status"] == "interrupted"
    for kernel in kernels:
        _assert_gone(kernel)
    # --resume runs both again, two at once, each worker's kernels with half the cores.
    monkeypatch.setenv("WB_TEST_PAUSE", "1.5")
    result = run_sweep({"mask_rate": ["0.1", "0.2"]}, {"pid_dir": str(pids)}, notebooks_dir=nbs, out_root=out,
                       sweep_id="par", resume=True, jobs=2)
    assert result.ok and [r.run_id for r in result.runs] == ["par-01-2", "par-02-2"] and not result.skipped
    a, b = (r.metrics for r in result.runs)
    assert a["threads"] == b["threads"] == str(threads_per_job(2))
    assert os.getpid() not in (a["kernel_parent"], b["kernel_parent"]) and a["kernel_parent"] != b["kernel_parent"]
    assert a["t0"] < b["t1"] and b["t0"] < a["t1"]  # the two runs overlapped in time
    assert json.loads((out / "sweep-par" / "sweep.json").read_text())["status"] == "ok"
