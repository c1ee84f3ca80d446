"""``workbench sweep --launcher slurm``: the sweep's runs as one SLURM job array, through submitit.

Each combination × seed is one task of the array (``executor.map_array``). A task runs exactly
what a local sweep run does (:func:`workbench.report.runner.execute`: papermill into
``reports/<run-id>/``, its ``run.json`` and figures); it claims its run dir itself, so a task
that SLURM requeues gets a fresh one. The submitting process waits on ``squeue`` (which needs no
accounting database), refreshes the comparison page as runs end, and records a run whose job
ended before it finished (scancel, a node lost) as interrupted. A time limit or a preemption
(submitit's SIGUSR2 before the kill) records the run as interrupted too; submitit then
requeues the task.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import SlurmConfig
from ..errors import WorkbenchError
from .files import OutputDir, claim_dir
from .params import first_line, plan
from .pool import THREAD_VARS, Task
from .runner import CHECKPOINT_DIR, Progress, RunInterrupted, execute

__all__ = ["INSTALL", "SweepJob", "active_jobs", "check_cluster", "require_submitit", "submit", "wait_for_jobs"]

INSTALL = "pip install -e '.[slurm]'"
LOGS = "slurm"  # submitit's scripts and logs, inside the sweep dir
_POLL_S = 2.0
_SQUEUE_RETRIES = 5


def require_submitit() -> None:
    """Stop at once, in one line, when submitit is not installed."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise WorkbenchError(f"--launcher slurm needs submitit, which is not installed: {INSTALL}") from None


def _slurm(*args: str) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise WorkbenchError(f"--launcher slurm: no `{args[0]}` command here; run the sweep on a SLURM login node "
                             "(or --launcher local)")
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def check_cluster(cfg: SlurmConfig) -> None:
    """Refuse (one line) a partition the cluster does not have, before anything is written."""
    done = _slurm("sinfo", "-h", "-o", "%R")
    if done.returncode != 0:
        raise WorkbenchError(f"--launcher slurm: sinfo failed ({first_line(done.stderr or done.stdout)}); "
                             "is slurmctld up? (`sinfo` shows it)")
    partitions = sorted(set(done.stdout.split()))
    missing = [p for p in cfg.slurm_partition.split(",") if p and p not in partitions]
    if missing:
        raise WorkbenchError(f"SLURM has no partition {missing[0]!r} (partitions: {', '.join(partitions) or 'none'}); "
                             "pass one of them as --slurm-partition")


def _executor(cfg: SlurmConfig, folder: Path, jobs: int, name: str) -> Any:
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder / "%j"))
    params: dict[str, Any] = {
        "job_name": name, "time": cfg.slurm_time, "cpus_per_task": cfg.slurm_cpus,
        "array_parallelism": cfg.slurm_array_parallelism or jobs, "additional_parameters": cfg.sbatch_flags(),
    }
    optional = {"partition": cfg.slurm_partition, "account": cfg.slurm_account, "qos": cfg.slurm_qos,
                "gpus_per_node": cfg.slurm_gpus, "mem": f"{cfg.slurm_mem_gb:g}GB" if cfg.slurm_mem_gb else ""}
    ex.update_parameters(**params, **{k: v for k, v in optional.items() if v})
    return ex


def _spec(task: Task, out_root: Path, timeout: float | None, sweep: str) -> dict[str, Any]:
    return {"base": task.base, "params": task.plan.params, "notebooks_dir": str(Path(task.plan.notebooks_dir).resolve()),
            "notebooks": [p.stem for p in task.plan.paths], "out_root": str(out_root.resolve()), "timeout": timeout,
            "sweep": sweep, "combination": task.combination,
            "resume_from": str(task.resume_from.resolve()) if task.resume_from else None}


def submit(todo: Sequence[Task], cfg: SlurmConfig, sweep_dir: Path, out_root: Path, timeout: float | None,
           sweep: str) -> str:
    """Submit ``todo`` as one job array; its SLURM job id. sbatch's refusal is one line."""
    folder = sweep_dir / LOGS
    folder.mkdir(exist_ok=True)
    own = OutputDir.open(sweep_dir, "sweep")
    if not own.owns(LOGS):
        own.adopt(LOGS, "dir")
    from submitit.core.utils import FailedJobError

    ex = _executor(cfg, folder, len(todo), f"wb-{sweep}")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal too: one line is ours
            jobs = ex.map_array(SweepJob(), [_spec(t, out_root, timeout, sweep) for t in todo])
    except FailedJobError as exc:  # sbatch's stderr
        lines = [x for x in str(exc).splitlines() if x.strip()]
        raise WorkbenchError(f"sbatch refused the sweep's jobs: {first_line(lines[-1] if lines else exc)}; "
                             "check the --slurm-* options (`sinfo` lists partitions)") from None
    return str(jobs[0].job_id).split("_")[0]


def active_jobs(job_ids: Sequence[str]) -> list[str]:
    """The tasks of ``job_ids`` (array job ids) still pending or running, as squeue lists them."""
    out: list[str] = []
    for job in job_ids:
        for attempt in range(_SQUEUE_RETRIES):
            done = _slurm("squeue", "-h", "-o", "%i", "-j", job)
            if done.returncode == 0:
                out += done.stdout.split()
                break
            if "Invalid job id" in done.stderr:  # ended long ago, and purged
                break
            if attempt == _SQUEUE_RETRIES - 1:
                raise WorkbenchError(f"squeue failed ({first_line(done.stderr or done.stdout)}); the jobs go on: "
                                     "collect them later with `workbench sweep --resume --sweep-id ID`")
            time.sleep(_POLL_S)
    return out


def wait_for_jobs(job_ids: Sequence[str], changed: Callable[[], None], progress: Progress) -> None:
    """Wait until no task of ``job_ids`` is pending or running; ``changed`` is called on every poll."""
    shown: list[str] | None = None
    while True:
        active = active_jobs(job_ids)
        changed()
        if not active:
            return
        if progress and active != shown:
            progress(f"SLURM: {len(active)} job(s) pending or running: {' '.join(active[:8])}"
                     + (" ..." if len(active) > 8 else ""))
            shown = active
        time.sleep(_POLL_S)


class SweepJob:
    """One task of the array: claim a run dir and run the notebooks there, as a local sweep run does.

    Its ``checkpoint`` makes submitit requeue the task on a preemption or time limit (SIGUSR2);
    the interrupted run stays recorded, and the requeued task runs in a new run dir, its
    pretraining continuing from the interrupted run's last checkpoint.
    """

    def __call__(self, spec: dict[str, Any]) -> str:
        """Run the spec; the run's status."""
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:  # the kernels inherit these: torch uses the job's CPUs, no more
            os.environ.update({name: cpus for name in THREAD_VARS})
        out_root = Path(spec["out_root"])
        p = plan(spec["params"], spec["notebooks_dir"], spec["notebooks"])
        run_dir = claim_dir(OutputDir.open(out_root, "sweep"), spec["base"])
        self.run_dir = run_dir  # for checkpoint(): a requeued task continues from this run's checkpoints
        print(f"run dir: {run_dir}", flush=True)
        submitit_handler = signal.getsignal(signal.SIGUSR2)

        def preempted(signum: int, frame: Any) -> None:
            raise RunInterrupted(signum)

        signal.signal(signal.SIGUSR2, preempted)
        try:
            result = execute(p, run_dir, out_root, spec["timeout"], lambda line: print(line, flush=True),
                             sweep=spec["sweep"], combination=spec["combination"],
                             resume_from=Path(spec["resume_from"]) if spec.get("resume_from") else None)
        except RunInterrupted as exc:  # recorded as interrupted by execute
            if exc.signum == signal.SIGUSR2 and callable(submitit_handler):
                submitit_handler(exc.signum, None)  # checkpoint() and requeue, then exit
            raise
        return result.status

    def checkpoint(self, spec: dict[str, Any]) -> Any:
        """What submitit requeues after a preemption or time limit: this task again."""
        import submitit

        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None:
            spec = spec | {"resume_from": str(run_dir / CHECKPOINT_DIR)}
        return submitit.helpers.DelayedSubmission(SweepJob(), spec)
