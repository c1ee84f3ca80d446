"""Run the notebook sequence with papermill into ``reports/<run-id>/`` and record how it went.

The run dir is claimed with an exclusive mkdir, so concurrent runs never share one. SIGINT and
SIGTERM end a run cleanly: the handler raises in the main thread, papermill stops the kernel on
the way out, and ``run.json`` and the index say ``interrupted``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from .export import export_html
from .figures import RENDERER, save_figures, write_figures_index
from .files import OutputDir, check_out_path, claim_dir, copy_checkpoints, open_root, write_owned
from .metrics import collect_metrics
from .pages import run_page, write_reports_index
from .params import RESUME, Plan, defaults, first_line, injected, plan
from .records import NotebookResult, RunResult

__all__ = ["CHECKPOINT_DIR", "Progress", "RunInterrupted", "check_id", "default_id", "execute", "run_report",
           "save_run", "stop_on_signals"]

CHECKPOINT_DIR = "checkpoint"
FIGURES_DIR = "figures"
Progress = Callable[[str], None] | None
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended a run; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`RunInterrupted` (main thread only); restore the old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; its own handlers decide
        return
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:  # a second signal while the run cleans up would cut its record short
            fired.append(signum)
            raise RunInterrupted(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def default_id(params: Mapping[str, Any]) -> str:
    """``YYYYmmdd-HHMMSS-<hash of params>``: readable and sortable."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{datetime.now():%Y%m%d-%H%M%S}-{digest}"


def check_id(run_id: str, what: str) -> str:
    """``run_id`` if it is a safe folder name, else a one-line error."""
    if not (0 < len(run_id) <= 100 and set(run_id) <= _ID_CHARS and run_id[0].isalnum()):
        raise WorkbenchError(f"{what} {run_id!r} must be letters, digits, '.', '_' or '-' (up to 100); e.g. {what.split()[0]}-lr3e-4")
    return run_id


def _papermill_noise(record: logging.LogRecord) -> bool:
    # Parameters are checked before papermill runs; its own parser's misses (papermill#864) would
    # warn "Passed unknown parameter" about names the notebook does declare.
    return not record.getMessage().startswith(("Passed unknown parameter", "Unable to parse line"))


_env_lock = threading.Lock()
_env_users = [0, None]  # runs inside _execution_env, and the PLOTLY_RENDERER they replaced


@contextlib.contextmanager
def _execution_env() -> Iterator[None]:
    # plotly 6+ renders to a mimetype nbconvert drops (plotly.py#5365); the `notebook` renderer
    # embeds plotly.js once per notebook, offline, and plotly_mimetype keeps each figure's JSON
    # for the figures folder. Kernels inherit os.environ at start-up; counted, so that runs in
    # several threads restore it once, after the last one.
    with _env_lock:
        if _env_users[0] == 0:
            _env_users[1] = os.environ.get("PLOTLY_RENDERER")
            os.environ["PLOTLY_RENDERER"] = RENDERER
            for name in ("papermill", "papermill.translators"):
                logging.getLogger(name).addFilter(_papermill_noise)
        _env_users[0] += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users[0] -= 1
            if _env_users[0] == 0:
                old = _env_users[1]
                if old is None:
                    os.environ.pop("PLOTLY_RENDERER", None)
                else:
                    os.environ["PLOTLY_RENDERER"] = old


def _execute_one(src: Path, out: Path, params: dict[str, Any], cwd: Path, timeout: float | None) -> str | None:
    """Run one notebook into ``out``; the error (one line) if it failed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        with _execution_env():
            papermill.execute_notebook(
                # Absolute: papermill saves the output after each cell. The kernel's working dir
                # goes through nbclient's resources, not papermill's cwd=, which chdirs the whole
                # process and so breaks runs in other threads.
                str(src.resolve()), str(out.resolve()), parameters=params, kernel_name="python3",
                resources={"metadata": {"path": str(cwd)}},
                progress_bar=False, log_output=False, request_save_on_cell_execute=True,
                execution_timeout=timeout,
                # ipykernel 7 warns about TCP transport on every start, and a kernel stopped
                # mid-cell (SIGTERM) logs a ZMQ traceback: noise in a batch log. Cell errors
                # still reach the notebook and the run's record.
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except PapermillExecutionError as exc:
        return f"{exc.ename}: {first_line(exc.evalue)} (cell In [{exc.exec_count}])"
    except Exception as exc:  # a dead kernel or a cell timeout fails the notebook, not the runner
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def save_run(result: RunResult, out_root: Path) -> None:
    """Write ``run.json`` and the run page, then refresh the reports index."""
    write_owned(result.run_dir, "run.json", json.dumps(result.to_json(), indent=2, default=str) + "\n")
    write_owned(result.run_dir, "index.html", run_page(result))
    try:
        write_reports_index(out_root)
    except WorkbenchError as exc:  # a foreign index.html appeared mid-run: keep it, keep running
        print(f"note: reports index not updated: {exc}", file=sys.stderr)


def _adopt(folder: Path, name: str, kind: str) -> None:
    """Record an entry a notebook or papermill wrote into the run dir as the workbench's."""
    out = OutputDir.open(folder, "report")
    if (folder / name).exists() and name not in out.entries:
        out.adopt(name, kind)


def _provenance(result: RunResult) -> dict[str, Any]:
    try:
        from ..provenance import collect

        threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
        seed = (result.combination or {}).get("seed", result.parameters.get("seed"))
        return collect(run_id=result.run_id, notebooks=[n.name for n in result.notebooks], seed=seed, threads=threads or None)
    except Exception as exc:  # provenance describes the run; it must never stop it
        return {"error": f"{type(exc).__name__}: {first_line(exc)}"}


def _after(nb_path: Path, result: RunResult, entry: NotebookResult, cwd: Path, notes: list[str]) -> None:
    """Collect an executed notebook's metrics and figures and export its HTML."""
    import nbformat

    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception as exc:  # cut short by a kill mid-write
        entry.error = (entry.error + "; " if entry.error else "") + f"unreadable output: {first_line(exc)}"
        return
    entry.notebook = nb_path.name
    _adopt(result.run_dir, nb_path.name, "file")
    result.metrics.update(collect_metrics(nb))
    try:
        entry.figures, more = save_figures(nb, entry.name, result.run_dir / FIGURES_DIR)
        notes += more
        _adopt(result.run_dir, FIGURES_DIR, "dir")
    except Exception as exc:  # figures are a by-product; the run's record matters more
        notes.append(f"{entry.name}: figures not saved ({type(exc).__name__}: {first_line(exc)})")
    try:
        export_html(nb, result.run_dir / f"{entry.name}.html", result.run_id, entry.name, entry.status, entry.error, cwd)
        entry.html = f"{entry.name}.html"
    except Exception as exc:  # a broken export must not lose the run's record
        entry.error = (entry.error + "; " if entry.error else "") + f"HTML export failed: {first_line(exc)}"


def _run_all(p: Plan, result: RunResult, out_root: Path, timeout: float | None, progress: Progress,
             notes: list[str]) -> None:
    checkpoint = str((result.run_dir / CHECKPOINT_DIR).resolve())
    for i, (src, entry) in enumerate(zip(p.paths, result.notebooks, strict=True)):
        entry.parameters = injected(p, i, checkpoint, resume=result.resumed_from is not None)
        if progress:
            progress(f"[{i + 1}/{len(p.paths)}] {src.name} ...")
        out, t0 = result.run_dir / src.name, time.monotonic()
        entry.status = "running"
        error = _execute_one(src, out, entry.parameters, p.notebooks_dir, timeout)
        entry.seconds = round(time.monotonic() - t0, 2)
        if i == p.producer:
            _adopt(result.run_dir, CHECKPOINT_DIR, "dir")
        entry.status, entry.error = ("failed", error) if error else ("ok", None)
        if out.exists():
            _after(out, result, entry, p.notebooks_dir, notes)
        if progress:
            progress(f"      {entry.status} in {entry.seconds:.1f} s" + (f": {error}" if error else ""))
        if error:
            where = result.run_dir / (entry.html or entry.notebook or "")
            result.status, result.error = "failed", f"notebook {src.stem} failed: {error}; see {where}"
            for later in result.notebooks[i + 1:]:
                later.status = "skipped"
            return
        save_run(result, out_root)
    result.status = "ok"


def _continue(src: Path, p: Plan, run_dir: Path, progress: Progress) -> str | None:
    """Copy an interrupted attempt's checkpoint folder into ``run_dir`` to continue from; its path, or None."""
    if p.producer is None or RESUME not in p.declared[p.producer] or not copy_checkpoints(src, run_dir / CHECKPOINT_DIR):
        return None
    _adopt(run_dir, CHECKPOINT_DIR, "dir")
    if progress:
        progress(f"continuing from the checkpoints of {src}")
    return str(src)


def execute(p: Plan, run_dir: Path, out_root: Path, timeout: float | None = None, progress: Progress = None,
            sweep: str | None = None, combination: dict[str, Any] | None = None,
            resume_from: Path | None = None) -> RunResult:
    """Run ``p`` in the (claimed, empty) ``run_dir``, keeping ``run.json`` and the index up to date.

    ``resume_from``: an interrupted attempt's checkpoint folder; the training notebook continues from its
    last checkpoint (when there is one and the notebook declares ``resume``).
    """
    result = RunResult(run_dir.name, run_dir, "running", p.params, [NotebookResult(s.stem) for s in p.paths],
                       defaults=defaults(p),
                       started=datetime.now().isoformat(timespec="seconds"), sweep=sweep, combination=combination,
                       checkpoint=CHECKPOINT_DIR if p.producer is not None else None,
                       pid=os.getpid(), host=socket.gethostname())
    start, notes = time.monotonic(), []
    with stop_on_signals():
        try:
            result.provenance = _provenance(result)
            if resume_from is not None:
                result.resumed_from = _continue(resume_from, p, run_dir, progress)
            save_run(result, out_root)
            _run_all(p, result, out_root, timeout, progress, notes)
        except BaseException as exc:
            # SIGTERM, Ctrl-C (or a bug) mid-run: leave a record that says so, then let it propagate.
            stopped = isinstance(exc, KeyboardInterrupt)
            if isinstance(exc, RunInterrupted):
                exc.record = run_dir / "run.json"  # for the command's one-line message
            result.status = "interrupted" if stopped else "failed"
            result.error = (f"interrupted by {exc}" if isinstance(exc, RunInterrupted) else "interrupted" if stopped
                            else f"the runner failed: {type(exc).__name__}: {first_line(exc)}")
            for entry in result.notebooks:
                if entry.status == "running":
                    entry.status = result.status
                    if (run_dir / f"{entry.name}.ipynb").exists():
                        entry.notebook = f"{entry.name}.ipynb"  # partial output, as papermill left it
                        _adopt(run_dir, entry.notebook, "file")
            raise
        finally:
            result.seconds = round(time.monotonic() - start, 2)
            files = [f for n in result.notebooks for f in n.figures]
            if files or notes:
                result.figures = write_figures_index(run_dir / FIGURES_DIR, result.run_id, files, notes)
            save_run(result, out_root)
    return result


def run_report(params: Mapping[str, Any] | None = None, notebooks_dir: str | Path = "notebooks",
               out_root: str | Path = "reports", run_id: str | None = None,
               notebooks: Sequence[str] | None = None, timeout: float | None = None,
               progress: Progress = None) -> RunResult:
    """Run the notebook sequence with ``params`` into ``out_root/<run-id>/`` and index it."""
    root = check_out_path(out_root, "--out", writable=True)  # a file or read-only --out: one line, before any work
    if run_id is not None:
        check_id(run_id, "run id")
    p = plan(dict(params or {}), notebooks_dir, notebooks)
    out = open_root(root, "report")
    run_dir = claim_dir(out, run_id, exact="--run-id") if run_id else claim_dir(out, default_id(p.params))
    return execute(p, run_dir, root, timeout, progress)
