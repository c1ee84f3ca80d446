"""`workbench sweep --launcher slurm` on a real single-node SLURM (tests/slurm_cluster.py), through submitit.

The runs are one tiny notebook (a kernel each, ~2 s), as in tests/report/test_report.py: what is tested
is the launcher, the records and the page, not the training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from slurm_cluster import PARTITION, SlurmCluster, why_not

from workbench.config import SlurmConfig
from workbench.errors import WorkbenchError

REPO = Path(__file__).resolve().parents[2]
# A stand-in for 02: "checkpoints" are checkpoint-STEP folders; with resume it continues after the last one.
TRAIN_CELL = """import json, os, time
os.makedirs(out, exist_ok=True)
last = max((int(d.split("-")[1]) for d in os.listdir(out) if d.startswith("checkpoint-")), default=0) if resume else 0
with open(os.path.join(out, "metrics.jsonl"), "a") as f:
    for step in range(last + 1, steps + 1):
        f.write(json.dumps({"type": "train", "step": step, "loss": 5.0 / step + mask_rate + 0.01 * seed}) + "\\n")
        f.flush()
        os.makedirs(os.path.join(out, f"checkpoint-{step}"))
        open(os.path.join(out, f"checkpoint-{step}", "weights"), "w").write(str(step))
        if hold and f"{mask_rate}-{seed}" == os.path.basename(hold) and step == 2:
            open(hold + ".started", "w").write(str(os.getpid()))
            while os.path.exists(hold):
                time.sleep(0.2)
from workbench.report import record_metrics
record_metrics(gain=mask_rate + 0.01 * seed, threads=os.environ.get("OMP_NUM_THREADS", ""), continued_after=last)"""


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
    params = nbformat.v4.new_code_cell('steps = 3\nout = ""\nresume = False\nmask_rate = 0.15\nseed = 0\nhold = ""\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(TRAIN_CELL)]
    nbformat.write(nb, root / "01_train.ipynb")
    return root


def _argv(nbdir: Path, out: Path, *more: str) -> list[str]:
    return ["sweep", "--param", "mask_rate=0.2,0.4", "--seeds", "0,1", "--notebooks-dir", str(nbdir), "--out", str(out),
            "--launcher", "slurm", "--slurm-partition", PARTITION, "--slurm-cpus", "1", "--slurm-time", "30", *more]


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
                 "#SBATCH --time=30", "#SBATCH --comment=wb-test", "#SBATCH --signal=USR2@90"):
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
    try:
        deadline = time.monotonic() + 600  # a hang guard: a loaded 2-core machine took minutes to start a job
        while not Path(f"{hold}.started").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert Path(f"{hold}.started").exists(), proc.stderr.read() if proc.poll() is not None else "not started in 600 s"
        held = json.loads((out / "c-02-s1" / "run.json").read_text())
        assert held["status"] == "running"
        job = held["provenance"]["slurm"]
        # ARRAY_TASK: a task's own SLURM_JOB_ID may be the array's id (SLURM gives it to one task), which cancels them all.
        t0 = time.monotonic()
        subprocess.run(["scancel", f"{job['array_job_id']}_{job['array_task_id']}"], check=True, timeout=30)
        stdout, err = proc.communicate(timeout=600)
        print(f"\nscancel to the sweep's end: {time.monotonic() - t0:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "Traceback" not in err, err
    runs = _runs(out, "c")
    assert [r["status"] for r in runs.values()] == ["ok", "ok", "ok", "interrupted"], err
    assert "c-02-s1: interrupted by SIGTERM" in err or "c-02-s1: its SLURM job ended" in err, err
    assert json.loads((out / "sweep-c" / "sweep.json").read_text())["status"] == "failed"
    hold.unlink()
    kept = (out / "c-01-s0" / "run.json").read_bytes()
    t0 = time.monotonic()
    assert _cli(_argv(nbdir, out, "--sweep-id", "c", "--resume", "-p", f"hold={hold}")) == 0
    print(f"--resume: {time.monotonic() - t0:.1f} s")
    runs = _runs(out, "c")
    assert runs["c-02-s1"]["status"] == "interrupted" and runs["c-02-s1-2"]["status"] == "ok"  # the attempt stays
    assert (out / "c-01-s0" / "run.json").read_bytes() == kept  # finished runs are collected, not re-run
    sweep = json.loads((out / "sweep-c" / "sweep.json").read_text())
    assert sweep["status"] == "ok" and sweep["runs"] == ["c-01-s0", "c-01-s1", "c-02-s0", "c-02-s1-2"]
    assert len(sweep["slurm_jobs"]) == 2 and sweep["skipped"] == ["c-01-s0", "c-01-s1", "c-02-s0"]
    # Its pretraining continued from the interrupted attempt's last checkpoint, which stays as it was.
    old_ckpt, new_ckpt = out / "c-02-s1" / "checkpoint", out / "c-02-s1-2" / "checkpoint"
    assert runs["c-02-s1-2"]["metrics"]["continued_after"] == 2 and runs["c-02-s1-2"]["resumed_from"] == str(old_ckpt)
    assert runs["c-02-s1-2"]["notebooks"][0]["parameters"]["resume"] is True
    assert sorted(p.name for p in old_ckpt.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in new_ckpt.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert (old_ckpt / "checkpoint-2" / "weights").stat().st_ino == (new_ckpt / "checkpoint-2" / "weights").stat().st_ino
    assert [json.loads(x)["step"] for x in (new_ckpt / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert len((old_ckpt / "metrics.jsonl").read_text().splitlines()) == 2  # copied, not linked: appends stay apart


def test_an_unknown_partition_is_one_line_and_writes_nothing(slurm, nbdir, tmp_path, capsys):
    out = tmp_path / "reports"
    argv = _argv(nbdir, out, "--sweep-id", "bad")
    argv[argv.index(PARTITION)] = "nope"
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: SLURM has no partition 'nope' (partitions: {PARTITION}); pass one of them as --slurm-partition\n"
    assert not (out / "sweep-bad").exists()
    # What only sbatch can refuse (a node that does not exist) is one line too.
    assert _cli(_argv(nbdir, out, "--sweep-id", "bad2", "--slurm-sbatch", "nodelist=nosuchnode")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sbatch refused the sweep's jobs: sbatch: error: ") and err.count("\n") == 1, err
    assert json.loads((out / "sweep-bad2" / "sweep.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_resume_collects_jobs_that_outlived_the_submitting_process(slurm, nbdir, tmp_path):
    out, hold = tmp_path / "reports", tmp_path / "0.2-0"
    hold.touch()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", *_argv(nbdir, out, "--sweep-id", "g", "-p", f"hold={hold}")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while not Path(f"{hold}.started").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert Path(f"{hold}.started").exists()
        proc.send_signal(signal.SIGTERM)  # the submitting process goes; its jobs go on
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert "collect them with: workbench sweep --resume --sweep-id g" in err
    assert json.loads((out / "sweep-g" / "sweep.json").read_text())["status"] == "interrupted"
    assert json.loads((out / "g-01-s0" / "run.json").read_text())["status"] == "running"  # its job still runs
    from workbench.report import run_sweep

    def progress(line: str) -> None:  # the run goes on once --resume waits for its job
        if line.startswith("resume: waiting for the sweep's SLURM jobs still queued or running"):
            hold.unlink()

    result = run_sweep({"mask_rate": ["0.2", "0.4"]}, {"hold": str(hold)}, notebooks_dir=nbdir, out_root=out,
                       sweep_id="g", seeds=[0, 1], resume=True, launcher="slurm", progress=progress,
                       slurm=SlurmConfig(slurm_partition=PARTITION, slurm_cpus=1, slurm_time=30))
    assert not hold.exists() and result.ok
    sweep = json.loads((out / "sweep-g" / "sweep.json").read_text())
    assert sweep["status"] == "ok" and sweep["runs"] == ["g-01-s0", "g-01-s1", "g-02-s0", "g-02-s1"]
    assert len(sweep["slurm_jobs"]) == 1  # collected, nothing resubmitted


# ------------------------------------------------------------------ no cluster needed
def test_a_local_resume_continues_an_interrupted_runs_pretraining_from_its_last_checkpoint(nbdir, tmp_path):
    from workbench.report import run_sweep
    from workbench.report.records import RunResult
    from workbench.report.runner import save_run

    out = tmp_path / "reports"
    first = run_sweep({"mask_rate": ["0.2", "0.4"]}, notebooks_dir=nbdir, out_root=out, sweep_id="l")
    assert first.ok and first.runs[1].metrics["continued_after"] == 0
    killed = first.runs[1]  # as if SIGKILLed after its second checkpoint: still "running"
    killed.status = "running"
    save_run(killed, out)
    (out / "l-02" / "checkpoint" / "checkpoint-3" / "weights").unlink()
    (out / "l-02" / "checkpoint" / "checkpoint-3").rmdir()
    again = run_sweep({"mask_rate": ["0.2", "0.4"]}, notebooks_dir=nbdir, out_root=out, sweep_id="l", resume=True)
    assert again.ok and again.skipped == ["l-01"] and [r.run_id for r in again.runs] == ["l-01", "l-02-2"]
    resumed = again.runs[1]
    assert resumed.metrics["continued_after"] == 2 and resumed.resumed_from == str(out / "l-02" / "checkpoint")
    assert RunResult.from_json(json.loads((out / "l-02" / "run.json").read_text()), out / "l-02").status == "interrupted"
    assert "continued from the checkpoints of" in (out / "l-02-2" / "index.html").read_text()


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


@pytest.mark.slow
def test_a_preempted_job_is_recorded_interrupted_and_requeued_and_continues_from_its_checkpoint(slurm, nbdir, tmp_path):
    out, hold = tmp_path / "reports", tmp_path / "0.2-0"
    hold.touch()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [a if a != "mask_rate=0.2,0.4" else "mask_rate=0.2" for a in _argv(nbdir, out, "--sweep-id", "p", "-p", f"hold={hold}")]
    argv = argv[:argv.index("--seeds")] + argv[argv.index("--seeds") + 2:]  # one run: mask_rate 0.2
    proc = subprocess.Popen([sys.executable, "-m", "workbench", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while not Path(f"{hold}.started").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert Path(f"{hold}.started").exists()
        job = json.loads((out / "p-01" / "run.json").read_text())["provenance"]["slurm"]
        # What SLURM sends before a preemption or the time limit (submitit's --signal=USR2@90).
        # One combination may go as a plain job, not an array: then its own id names it.
        target = f"{job['array_job_id']}_{job['array_task_id']}" if "array_job_id" in job else job["job_id"]
        subprocess.run(["scancel", "--signal=USR2", target], check=True, timeout=30)
        _, err = proc.communicate(timeout=600)  # the requeued task continues past the hold (step 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    first, again = (json.loads((out / d / "run.json").read_text()) for d in ("p-01", "p-01-2"))
    assert first["status"] == "interrupted" and first["error"] == "interrupted by SIGUSR2"
    assert again["status"] == "ok" and again["metrics"]["continued_after"] == 2
    assert again["resumed_from"] == str(out / "p-01" / "checkpoint")
    again_job = again["provenance"]["slurm"]
    assert again_job.get("array_job_id", again_job["job_id"]) == job.get("array_job_id", job["job_id"])  # requeued, same job
    assert json.loads((out / "sweep-p" / "sweep.json").read_text())["runs"] == ["p-01-2"]
