"""Seeded, resumable, parallel-safe sweeps: one report per combination of values and seed.

Each run records its ``combination`` in ``run.json``; ``--resume`` reads those records back, skips
the combinations that finished and runs the rest in new run dirs (a failed attempt stays, as
written). ``--jobs N`` runs N combinations at once, each in a worker process whose kernels get
``cores // N`` threads. ``--launcher slurm`` hands the runs to SLURM as one job array instead
(:mod:`workbench.report.slurm`) and waits for it; ``--resume`` first waits for the sweep's jobs
still queued or running, then resubmits what did not finish. A lock file keeps two processes from
running the same sweep.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WorkbenchError
from .files import OutputDir, check_out_path, claim_dir, locked, open_root
from .params import Plan, plan
from .pool import Task, mark_stopped, run_pool
from .records import RunResult, SweepResult, read_run
from .runner import Progress, RunInterrupted, check_id, default_id, execute, stop_on_signals
from .sweeppage import save_sweep

if TYPE_CHECKING:
    from ..config import SlurmConfig

__all__ = ["LAUNCHERS", "SEED_PARAM", "run_sweep"]

LAUNCHERS = ("local", "slurm")

SEED_PARAM = "seed"  # what --seeds sets in every notebook that declares it
_LOCK = ".sweep.lock"


def _key(combination: Mapping[str, Any]) -> str:
    return json.dumps(combination, sort_keys=True, default=str)


def _check_grid(grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any], seeds: Sequence[int] | None) -> None:
    if not grid or any(not values for values in grid.values()):
        raise WorkbenchError("a sweep needs at least one --param NAME=V1,V2 with values")
    for name, values in grid.items():
        if len(set(map(str, values))) != len(values):
            raise WorkbenchError(f"--param {name} lists a value twice ({', '.join(map(str, values))}); list each once")
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds):
            raise WorkbenchError(f"--seeds {','.join(map(str, seeds))} must list distinct integers, e.g. --seeds 0,1,2")
        if SEED_PARAM in grid or SEED_PARAM in params:
            raise WorkbenchError("seed is set by --seeds; drop it from --param and -p")


def _plans(grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any], seeds: Sequence[int] | None,
           notebooks_dir: str | Path, notebooks: Sequence[str] | None) -> list[tuple[str, dict[str, Any], Plan]]:
    """Every run of the sweep, checked before any starts: (run name, combination, plan)."""
    out = []
    parsed: dict[str, dict[str, Any]] = {name: {} for name in grid}  # each value as given -> as the notebook reads it
    for k, values in enumerate(itertools.product(*grid.values()), 1):
        for seed in seeds if seeds is not None else [None]:
            combo = dict(zip(grid, values, strict=True)) | ({} if seed is None else {SEED_PARAM: seed})
            p = plan({**params, **combo}, notebooks_dir, notebooks)
            if seed is not None and not any(SEED_PARAM in d for d in p.declared):
                raise WorkbenchError(f"--seeds: no notebook of {', '.join(x.stem for x in p.paths)} declares a `seed` parameter")
            shown = {n: p.params.get(n) for n in combo}  # coerced: 0.15, not "0.15"
            for name, value in zip(grid, values, strict=True):
                parsed[name].setdefault(str(value), shown[name])
            out.append((f"{k:02d}" + ("" if seed is None else f"-s{seed}"), shown, p))
    _check_parsed_twice(parsed)
    return out


def _check_parsed_twice(parsed: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse two values of one --param that the notebook reads as the same (0.2 and 0.20): one run twice."""
    for name, values in parsed.items():
        seen: dict[str, str] = {}
        for given, value in values.items():
            key = _key({"v": value})
            if key in seen:
                raise WorkbenchError(f"--param {name} lists {seen[key]} and {given}, which are the same value "
                                     f"({value!r}) to the notebook; list each once")
            seen[key] = given


def _definition(grid: Mapping[str, Sequence[Any]], seeds: Sequence[int] | None, runs: list[tuple[str, dict[str, Any], Plan]],
                params: Mapping[str, Any]) -> dict[str, Any]:
    first = runs[0][2]
    shown = {n: list(dict.fromkeys(c[n] for _, c, _ in runs)) for n in grid}
    fixed = {k: v for k, v in first.params.items() if k in params}
    return {"grid": shown, "seeds": list(seeds) if seeds is not None else None, "params": fixed,
            "notebooks": [p.stem for p in first.paths], "notebooks_dir": str(first.notebooks_dir)}


def _differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = ("grid", "seeds", "params", "notebooks")
    return [k for k in keys if json.dumps(a.get(k), sort_keys=True, default=str) != json.dumps(b.get(k), sort_keys=True, default=str)]


def _find_sweep(root: OutputDir, sweep_id: str | None, definition: dict[str, Any]) -> Path:
    """The sweep dir ``--resume`` continues: the named one, or the newest with the same settings."""
    if sweep_id:
        name = f"sweep-{sweep_id}"
        old = _read_json(root.path / name / "sweep.json") if root.owns(name) else None
        if not isinstance(old, dict):
            raise WorkbenchError(f"no sweep {sweep_id} to resume in {root.path} (no {name}/sweep.json the workbench wrote); drop --resume")
        differ = _differ(old, definition)
        if differ:
            raise WorkbenchError(f"sweep {sweep_id} ran with other {', '.join(differ)}; pass the same --param/-p/--seeds/--notebooks, or drop --resume")
        return root.path / name
    found = [root.path / n for n in root.owned() if n.startswith("sweep-") and (root.path / n / "sweep.json").is_file()]
    for path in sorted(found, key=lambda p: (p / "sweep.json").stat().st_mtime, reverse=True):
        old = _read_json(path / "sweep.json")
        if isinstance(old, dict) and not _differ(old, definition):
            return path
    raise WorkbenchError(f"no sweep with these settings in {root.path} to resume; pass --sweep-id ID, or drop --resume")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _finished(out_root: Path, sweep_id: str) -> dict[str, RunResult]:
    """The latest run of each combination of this sweep, an ``ok`` one first."""
    best: dict[str, RunResult] = {}
    for path in sorted(out_root.glob("*/run.json")):
        data = read_run(path, quiet=True)
        if data is None or data.get("sweep") != sweep_id or not isinstance(data.get("combination"), dict):
            continue
        run = RunResult.from_json(data, path.parent)
        key = _key(run.combination or {})
        held = best.get(key)
        if held is None or (run.ok, run.started) >= (held.ok, held.started):
            best[key] = run
    return best


def _open_sweep(root: OutputDir, sweep_id: str | None, resume: bool, definition: dict[str, Any]) -> Path:
    if resume:
        return _find_sweep(root, sweep_id, definition)
    if sweep_id:
        return claim_dir(root, f"sweep-{sweep_id}", exact="--sweep-id (or --resume to finish that sweep)")
    return claim_dir(root, f"sweep-{default_id(definition)}")


def run_sweep(grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any] | None = None,
              notebooks_dir: str | Path = "notebooks", out_root: str | Path = "reports",
              notebooks: Sequence[str] | None = None, sweep_id: str | None = None,
              timeout: float | None = None, progress: Progress = None, seeds: Sequence[int] | None = None,
              resume: bool = False, jobs: int = 1, launcher: str = "local",
              slurm: SlurmConfig | None = None) -> SweepResult:
    """One report per combination of ``grid`` values and seed (over ``params``), then a comparison page.

    ``launcher="slurm"`` runs them as one SLURM job array (``slurm`` says where and how) and waits for it.
    """
    params = dict(params or {})
    if launcher not in LAUNCHERS:
        raise WorkbenchError(f"--launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if launcher == "slurm":
        from ..config import SlurmConfig
        from .slurm import check_cluster, require_submitit

        require_submitit()  # at once: before any notebook is read
        slurm = slurm or SlurmConfig()
    _check_grid(grid, params, seeds)
    if jobs < 1:
        raise WorkbenchError(f"--jobs {jobs} must be 1 or more")
    if sweep_id:
        check_id(sweep_id, "sweep id")
    out_root = check_out_path(out_root, "--out", writable=True)  # a file or read-only --out: one line, before any work
    runs = _plans(grid, params, seeds, notebooks_dir, notebooks)  # all checked before anything runs
    definition = _definition(grid, seeds, runs, params)
    if launcher == "slurm":
        check_cluster(slurm)  # an unknown partition: one line, before the sweep dir is made
    sweep_dir = _open_sweep(open_root(out_root, "sweep"), sweep_id, resume, definition)
    with locked(sweep_dir / _LOCK, blocking=False) as mine:
        if not mine:
            raise WorkbenchError(f"sweep {sweep_dir.name} is running in another process; wait for it, or pass another --sweep-id")
        own = OutputDir.open(sweep_dir, "sweep")
        if not own.owns(_LOCK):
            own.adopt(_LOCK, "log")
        sweep = SweepResult(sweep_dir.name.removeprefix("sweep-"), sweep_dir, definition["grid"], [],
                            definition["seeds"], definition, launcher=launcher)
        old = _read_json(sweep_dir / "sweep.json") if resume else None
        if isinstance(old, dict) and isinstance(old.get("slurm_jobs"), list):
            sweep.slurm_jobs = [str(j) for j in old["slurm_jobs"]]
        if launcher == "local" and sweep.slurm_jobs and shutil.which("squeue"):
            from .slurm import active_jobs

            if active_jobs(sweep.slurm_jobs):
                raise WorkbenchError(f"sweep {sweep.sweep_id} has SLURM jobs still queued or running; resume it with "
                                     "--launcher slurm (which waits for them), or scancel them first")
        if launcher == "slurm":
            _run_slurm(sweep, runs, out_root, timeout, progress, slurm)
        else:
            _run(sweep, runs, out_root, timeout, progress, jobs)
    return sweep


def _current(out_root: Path, sweep: SweepResult, keys: list[str]) -> list[RunResult]:
    done = _finished(out_root, sweep.sweep_id)
    return [done[k] for k in keys if k in done]


def _todo(sweep: SweepResult, runs: list[tuple[str, dict[str, Any], Plan]], out_root: Path,
          progress: Progress, why: str) -> list[Task]:
    """The runs without a finished record; a record still "running" is marked stopped (``why``)."""
    done, todo = _finished(out_root, sweep.sweep_id), []
    for slot, (name, combo, p) in enumerate(runs):
        held = done.get(_key(combo))
        if held is not None and held.ok:
            sweep.skipped.append(held.run_id)
            continue
        resume_from = None
        if held is not None:  # the sweep lock is ours: a run still "running" lost its process
            mark_stopped(held, out_root, why)
            if held.status == "interrupted" and held.checkpoint:  # its pretraining continues from there
                resume_from = held.run_dir / held.checkpoint
        todo.append(Task(slot, f"{sweep.sweep_id}-{name}", combo, p, resume_from=resume_from))
    if progress and sweep.skipped:
        progress(f"resume: {len(sweep.skipped)} of {len(runs)} runs already finished; running {len(todo)}")
    return todo


def _run_slurm(sweep: SweepResult, runs: list[tuple[str, dict[str, Any], Plan]], out_root: Path,
               timeout: float | None, progress: Progress, cfg: SlurmConfig) -> None:
    """Submit the unfinished runs as one job array, wait for it, and record runs whose job ended early."""
    from .slurm import active_jobs, submit, wait_for_jobs

    keys = [_key(c) for _, c, _ in runs]
    seen: dict[str, str] = {}

    def refresh(report: bool = True) -> None:  # the page follows the records the jobs write
        sweep.runs = _current(out_root, sweep, keys)
        now = {r.run_id: r.status for r in sweep.runs}
        if now != seen:
            if progress and report:
                for r in sweep.runs:
                    if r.status != "running" and seen.get(r.run_id) != r.status:
                        progress(f"{r.status}: {r.run_dir}" + (f": {r.error}" if r.error else ""))
            seen.clear()
            seen.update(now)
            save_sweep(sweep, out_root)

    with stop_on_signals():
        try:
            if sweep.slurm_jobs and active_jobs(sweep.slurm_jobs):  # --resume: collect the jobs still going first
                if progress:
                    progress(f"resume: waiting for the sweep's SLURM jobs still queued or running ({', '.join(sweep.slurm_jobs)})")
                wait_for_jobs(sweep.slurm_jobs, refresh, progress)
            todo = _todo(sweep, runs, out_root, progress, "its SLURM job ended before the run finished")
            refresh(report=False)
            if todo:
                try:
                    array = submit(todo, cfg, sweep.sweep_dir, out_root, timeout, sweep.sweep_id)
                except WorkbenchError:
                    sweep.status = "failed"
                    raise
                sweep.slurm_jobs.append(array)
                save_sweep(sweep, out_root)
                if progress:
                    progress(f"SLURM: submitted {len(todo)} run(s) as job array {array}; logs in {sweep.sweep_dir / 'slurm'}")
                wait_for_jobs([array], refresh, progress)
                for run in _finished(out_root, sweep.sweep_id).values():  # every job has ended: none runs
                    mark_stopped(run, out_root, "its SLURM job ended before the run finished (scancel, time limit or a lost node)")
            sweep.runs = _current(out_root, sweep, keys)
            sweep.status = "ok" if len(sweep.runs) == len(runs) and sweep.ok else "failed"
        except RunInterrupted:
            sweep.status = "interrupted"
            if progress:
                progress(f"the sweep's SLURM jobs go on; collect them with: workbench sweep --resume --sweep-id {sweep.sweep_id} "
                         "(the same --param/-p/--seeds)")
            raise
        except BaseException:
            if sweep.status == "running":
                sweep.status = "interrupted"
            raise
        finally:
            sweep.runs = _current(out_root, sweep, keys)
            save_sweep(sweep, out_root)


def _run(sweep: SweepResult, runs: list[tuple[str, dict[str, Any], Plan]], out_root: Path,
         timeout: float | None, progress: Progress, jobs: int) -> None:
    keys = [_key(c) for _, c, _ in runs]
    todo = _todo(sweep, runs, out_root, progress, "its process stopped before the run finished")

    def finished(task: Task, run: RunResult) -> None:
        sweep.runs = _current(out_root, sweep, keys)
        save_sweep(sweep, out_root)

    sweep.runs = _current(out_root, sweep, keys)
    save_sweep(sweep, out_root)
    with stop_on_signals():
        try:
            if jobs == 1:
                for k, task in enumerate(todo, 1):
                    task.claim(out_root)
                    if progress:
                        progress(f"run {k}/{len(todo)} ({task.label}): {task.run_dir}")
                    finished(task, execute(task.plan, task.run_dir, out_root, timeout, progress,
                                           sweep=sweep.sweep_id, combination=task.combination,
                                           resume_from=task.resume_from))
            else:
                run_pool(todo, jobs, out_root, timeout, progress, sweep.sweep_id, finished)
            sweep.runs = _current(out_root, sweep, keys)
            sweep.status = "ok" if len(sweep.runs) == len(runs) and sweep.ok else "failed"
        except BaseException:
            sweep.status = "interrupted"
            raise
        finally:
            sweep.runs = _current(out_root, sweep, keys)
            save_sweep(sweep, out_root)
