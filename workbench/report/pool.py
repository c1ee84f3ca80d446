"""``--jobs N``: N sweep runs at once, each in its own worker process with ``cores // N`` threads.

Worker processes, not threads: each run's kernel inherits its worker's environment (so
``OMP_NUM_THREADS`` caps torch in that kernel alone), and a run's signals, working dir and
papermill state stay its own. On SIGINT/SIGTERM the workers get SIGTERM, record their runs as
interrupted and stop their kernels before the sweep returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import OutputDir, claim_dir
from .params import Plan
from .records import NotebookResult, RunResult, read_run
from .runner import Progress, save_run

__all__ = ["THREAD_VARS", "Task", "mark_stopped", "run_pool", "threads_per_job"]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch reads OMP_NUM_THREADS when imported
_GRACE_S = 60.0  # how long an interrupted worker gets to write its record and stop its kernel


@dataclass
class Task:
    """One run of a sweep still to do."""

    slot: int  # its place among the sweep's combinations
    base: str  # run dir name, suffixed -2, -3 ... when a previous attempt holds it
    combination: dict[str, Any]
    plan: Plan
    run_dir: Path | None = None
    resume_from: Path | None = None  # an interrupted attempt's checkpoint folder to continue from

    @property
    def label(self) -> str:
        """``name=value, ...`` of the combination."""
        return ", ".join(f"{k}={v}" for k, v in self.combination.items())

    def claim(self, out_root: Path) -> Path:
        """Create the run dir (exclusive mkdir, recorded in the reports root's manifest)."""
        self.run_dir = claim_dir(OutputDir.open(out_root, "sweep"), self.base)
        return self.run_dir


def threads_per_job(jobs: int) -> int:
    """The cores this process may use, split between ``jobs`` workers (at least 1 each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // jobs)


def mark_stopped(run: RunResult, out_root: Path, why: str) -> RunResult:
    """Record a run whose process died while ``running`` as interrupted (its record is ours to fix)."""
    if run.status in ("running", "pending"):
        run.status, run.error = "interrupted", why
        for n in run.notebooks:
            if n.status in ("running", "pending"):
                n.status = "interrupted" if n.status == "running" else "skipped"
        save_run(run, out_root)
    return run


def _result(task: Task, out_root: Path, rc: int) -> RunResult:
    assert task.run_dir is not None
    data = read_run(task.run_dir / "run.json")
    why = f"its worker process exited with status {rc}"
    if data is None:  # the worker died before its first record
        run = RunResult(task.run_dir.name, task.run_dir, "failed", task.plan.params,
                        [NotebookResult(p.stem, "skipped") for p in task.plan.paths], error=why,
                        combination=task.combination)
        save_run(run, out_root)
        return run
    return mark_stopped(RunResult.from_json(data, task.run_dir), out_root, why)


def _spawn(task: Task, out_root: Path, timeout: float | None, sweep: str, threads: int) -> subprocess.Popen:
    assert task.run_dir is not None
    spec = {"params": task.plan.params, "notebooks_dir": str(task.plan.notebooks_dir),
            "notebooks": [p.stem for p in task.plan.paths], "out_root": str(out_root), "run_dir": str(task.run_dir),
            "timeout": timeout, "sweep": sweep, "combination": task.combination,
            "resume_from": str(task.resume_from) if task.resume_from else None}
    env = os.environ | {name: str(threads) for name in THREAD_VARS}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.report.worker"], stdin=subprocess.PIPE, env=env, text=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec, default=str))
    proc.stdin.close()
    return proc


def _stop(running: dict[subprocess.Popen, Task]) -> None:
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_pool(todo: Sequence[Task], jobs: int, out_root: Path, timeout: float | None, progress: Progress,
             sweep: str, finished: Callable[[Task, RunResult], None]) -> None:
    """Run ``todo`` in ``jobs`` worker processes; ``finished`` gets each task's recorded result."""
    threads, queue, running = threads_per_job(jobs), list(todo), {}
    if progress:
        progress(f"{len(queue)} runs, {jobs} at a time, {threads} thread(s) each")
    try:
        while queue or running:
            while queue and len(running) < jobs:
                task = queue.pop(0)
                task.claim(out_root)
                if progress:
                    progress(f"start {task.run_dir} ({task.label})")
                running[_spawn(task, out_root, timeout, sweep, threads)] = task
            for proc in [p for p in running if p.poll() is not None]:
                task = running.pop(proc)
                run = _result(task, out_root, proc.returncode)
                if progress:
                    progress(f"{run.status}: {task.run_dir}" + (f": {run.error}" if run.error else ""))
                finished(task, run)
            time.sleep(0.2)
    except BaseException:
        _stop(running)  # the workers record their runs as interrupted
        for proc, task in running.items():
            finished(task, _result(task, out_root, proc.returncode))
        raise
