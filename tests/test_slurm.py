"""`workbench sweep --launcher slurm` on a real single-node SLURM (tests/slurm_cluster.py), through submitit.

The runs are one tiny notebook (a kernel each, ~2 s), as in tests/test_report.py: what is tested
is the launcher, the records and the page, not the training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from slurm_cluster import PARTITION, SlurmCluster, why_not

from workbench.config import SlurmConfig
from workbench.errors import WorkbenchError

REPO = Path(__file__).resolve().parents[1]
TRAIN_CELL = """import json, os, time
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for step in range(1, steps + 1):
        f.write(json.dumps({"type": "train", "step": step, "loss": 5.0 / step + mask_rate + 0.01 * seed}) + "\\n")
if hold and f"{mask_rate}-{seed}" == os.path.basename(hold):
    open(hold + ".started", "w").write(str(os.getpid()))
    while os.path.exists(hold):
        time.sleep(0.2)
from workbench.report import record_metrics
record_metrics(gain=mask_rate + 0.01 * seed, threads=os.environ.get("OMP_NUM_THREADS", ""))"""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A single-node SLURM for the session; skipped, with the reason, where it cannot start."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("submitit", reason="submitit is not installed: pip install -e '.[slurm]' (make test does)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        print(f"\nSLURM started in {cluster.start_seconds:.1f} s")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def nbdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm-nbs")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('steps = 3\nout = ""\nmask_rate = 0.15\nseed = 0\nhold = ""\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(TRAIN_CELL)]
    nbformat.write(nb, root / "01_train.ipynb")
    return root


def _argv(nbdir: Path, out: Path, *more: str) -> list[str]:
    return ["sweep", "--param", "mask_rate=0.2,0.4", "--seeds", "0,1", "--notebooks-dir", str(nbdir), "--out", str(out),
            "--launcher", "slurm", "--slurm-partition", PARTITION, "--slurm-cpus", "1", "--slurm-time", "10", *more]


def _cli(argv: list[str]) -> int:
    from workbench.cli import main

    return main(argv)


def _runs(out: Path, sweep: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob(f"{sweep}-*/run.json"))}


@pytest.mark.slow
def test_sweep_through_slurm_runs_every_combination_as_one_job_array(slurm, nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    t0 = time.monotonic()
    assert _cli(_argv(nbdir, out, "--sweep-id", "s", "--slurm-sbatch", "comment=wb-test")) == 0
    wall = time.monotonic() - t0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "sweep-s" / "index.html")
    runs = _runs(out, "s")
    assert sorted(runs) == ["s-01-s0", "s-01-s1", "s-02-s0", "s-02-s1"]
    assert all(r["status"] == "ok" for r in runs.values()), runs
    assert [r["combination"] for r in runs.values()] == [{"mask_rate": 0.2, "seed": 0}, {"mask_rate": 0.2, "seed": 1},
                                                         {"mask_rate": 0.4, "seed": 0}, {"mask_rate": 0.4, "seed": 1}]
    sweep = json.loads((out / "sweep-s" / "sweep.json").read_text())
    assert sweep["status"] == "ok" and sweep["launcher"] == "slurm" and len(sweep["slurm_jobs"]) == 1
    array = sweep["slurm_jobs"][0]
    # One job array: every run's provenance names its task of it, on this node.
    tasks = sorted((r["provenance"]["slurm"]["array_job_id"], r["provenance"]["slurm"]["array_task_id"]) for r in runs.values())
    assert tasks == [(array, str(k)) for k in range(4)]
    assert {r["provenance"]["slurm"]["node"] for r in runs.values()} == {slurm.node}
    assert {r["provenance"]["slurm"]["partition"] for r in runs.values()} == {PARTITION}
    assert {r["metrics"]["threads"] for r in runs.values()} == {"1"}  # --slurm-cpus 1: one torch thread
    assert (out / "s-01-s1" / "01_train.html").is_file() and (out / "s-01-s1" / "index.html").is_file()
    page = (out / "sweep-s" / "index.html").read_text()
    assert f"SLURM job arrays: {array}" in page and "0.205 ± " in page  # gain over seeds 0 and 1 of mask_rate 0.2
    script = next((out / "sweep-s" / "slurm").glob("*/*_submission.sh")).read_text()
    for line in ("#SBATCH --array=0-3%4", "#SBATCH --cpus-per-task=1", f"#SBATCH --partition={PARTITION}",
                 "#SBATCH --time=10", "#SBATCH --comment=wb-test", "#SBATCH --signal=USR2@90"):
        assert line in script, script
    assert 'href="sweep-s/index.html"' in (out / "index.html").read_text()
    print(f"\n2x2 sweep through SLURM: {wall:.1f} s\n--- job script\n{script}")


@pytest.mark.slow
def test_scancel_of_one_job_then_resume_finishes_the_sweep(slurm, nbdir, tmp_path):
    out, hold = tmp_path / "reports", tmp_path / "0.4-1"
    hold.touch()  # the run of mask_rate 0.4, seed 1 waits while this file is there
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", *_argv(nbdir, out, "--sweep-id", "c", "-p", f"hold={hold}")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not Path(f"{hold}.started").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert Path(f"{hold}.started").exists(), proc.communicate(timeout=30)
    held = json.loads((out / "c-02-s1" / "run.json").read_text())
    assert held["status"] == "running"
    job = held["provenance"]["slurm"]
    # ARRAY_TASK: a task's own SLURM_JOB_ID may be the array's id (SLURM gives it to one task), which cancels them all.
    subprocess.run(["scancel", f"{job['array_job_id']}_{job['array_task_id']}"], check=True, timeout=30)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    runs = _runs(out, "c")
    assert [r["status"] for r in runs.values()] == ["ok", "ok", "ok", "interrupted"], err
    assert "c-02-s1: interrupted by SIGTERM" in err or "c-02-s1: its SLURM job ended" in err, err
    assert json.loads((out / "sweep-c" / "sweep.json").read_text())["status"] == "failed"
    hold.unlink()
    kept = (out / "c-01-s0" / "run.json").read_bytes()
    assert _cli(_argv(nbdir, out, "--sweep-id", "c", "--resume", "-p", f"hold={hold}")) == 0
    runs = _runs(out, "c")
    assert runs["c-02-s1"]["status"] == "interrupted" and runs["c-02-s1-2"]["status"] == "ok"  # the attempt stays
    assert (out / "c-01-s0" / "run.json").read_bytes() == kept  # finished runs are collected, not re-run
    sweep = json.loads((out / "sweep-c" / "sweep.json").read_text())
    assert sweep["status"] == "ok" and sweep["runs"] == ["c-01-s0", "c-01-s1", "c-02-s0", "c-02-s1-2"]
    assert len(sweep["slurm_jobs"]) == 2 and sweep["skipped"] == ["c-01-s0", "c-01-s1", "c-02-s0"]


def test_an_unknown_partition_is_one_line_and_writes_nothing(slurm, nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    argv = _argv(nbdir, out, "--sweep-id", "bad")
    argv[argv.index(PARTITION)] = "nope"
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: SLURM has no partition 'nope' (partitions: {PARTITION}); pass one of them as --slurm-partition\n"
    assert not (out / "sweep-bad").exists()


# ------------------------------------------------------------------ no cluster needed
def test_without_submitit_the_slurm_launcher_stops_at_once_with_the_install_command(nbdir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    assert _cli(_argv(nbdir, tmp_path / "reports")) == 2
    assert capsys.readouterr().err == ("error: --launcher slurm needs submitit, which is not installed: "
                                       "pip install -e '.[slurm]'\n")
    assert not (tmp_path / "reports").exists()


def test_slurm_options_are_checked_before_anything_runs(nbdir, tmp_path, capsys):
    bad = {("--slurm-time", "0"): "slurm_time 0 must be 1 minute or more",
           ("--slurm-sbatch", "array=0-9"): "--slurm-sbatch: --array is set by the workbench for the job array; drop it",
           ("--slurm-sbatch", "no good"): "--slurm-sbatch: 'no good' is not an sbatch option name",
           ("--slurm-partition", "a b"): "slurm_partition 'a b' is not a SLURM name"}
    for (flag, value), message in bad.items():
        assert _cli([*_argv(nbdir, tmp_path / "r"), flag, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    argv = [a for a in _argv(nbdir, tmp_path / "r") if a not in ("--launcher", "slurm")]
    assert _cli(argv) == 2
    assert capsys.readouterr().err == "error: --slurm-partition is a SLURM option; add --launcher slurm, or drop it\n"
    assert not (tmp_path / "r").exists()


def test_sbatch_flags_from_a_yaml_file_and_flags(tmp_path):
    f = tmp_path / "sbatch.yaml"
    f.write_text("constraint: a100\nexclusive: true\nmail_type: END\nnodelist: n1\nreservation: false\n")
    cfg = SlurmConfig(slurm_sbatch_file=str(f), slurm_sbatch="--nodelist=n2,requeue")
    assert cfg.sbatch_flags() == {"constraint": "a100", "exclusive": True, "mail-type": "END", "nodelist": "n2", "requeue": True}
    f.write_text("- constraint\n")
    with pytest.raises(WorkbenchError, match="must be a flat mapping of sbatch flags"):
        SlurmConfig(slurm_sbatch_file=str(f))
    with pytest.raises(WorkbenchError, match="No such file or directory; pass a YAML file"):
        SlurmConfig(slurm_sbatch_file=str(tmp_path / "missing.yaml"))
