"""What a run leaves behind (the ``run.json`` record, written by the runner and read back by indexes and
sweeps), and what a sweep is made of: its runs."""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NotebookResult", "RunResult", "SweepResult", "read_run", "shown_status"]

_REQUIRED = {"run_id": str, "status": str, "started": str, "parameters": dict, "notebooks": list, "metrics": dict}


@dataclass
class NotebookResult:
    """One notebook of a run: ``status`` is ok, failed, skipped, interrupted or pending."""

    name: str
    status: str = "pending"
    notebook: str | None = None  # paths relative to the run dir
    html: str | None = None
    seconds: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    figures: list[str] = field(default_factory=list)  # under figures/


@dataclass
class RunResult:
    """A report run: where it is, how each notebook went and the headline metrics."""

    run_id: str
    run_dir: Path
    status: str
    parameters: dict[str, Any]
    notebooks: list[NotebookResult]
    metrics: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # the notebooks' own values (paths the runner sets aside)
    error: str | None = None  # one line naming the failed notebook and its HTML page
    checkpoint: str | None = None
    started: str = ""
    seconds: float = 0.0
    sweep: str | None = None
    combination: dict[str, Any] | None = None  # a sweep's values for this run, seed included
    figures: str | None = None  # the figures folder's index page, relative to the run dir
    provenance: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None  # the process running it, so an index can tell a killed run from a live one
    host: str | None = None
    resumed_from: str | None = None  # the interrupted attempt's checkpoint folder this run continued

    @property
    def ok(self) -> bool:
        """Whether every notebook ran through."""
        return self.status == "ok"

    @property
    def index(self) -> Path:
        """The run's ``index.html``."""
        return self.run_dir / "index.html"

    def to_json(self) -> dict[str, Any]:
        """What ``run.json`` holds."""
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], run_dir: Path) -> RunResult:
        """A record read back by :func:`read_run` (unknown keys of newer versions are dropped)."""
        notebooks = [NotebookResult(**{k: v for k, v in n.items() if k in NotebookResult.__dataclass_fields__})
                     for n in data["notebooks"]]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in ("run_dir", "notebooks")}
        return cls(**known, run_dir=run_dir, notebooks=notebooks)


@dataclass
class SweepResult:
    """A sweep: its comparison page and one run per combination of values (and seed)."""

    sweep_id: str
    sweep_dir: Path
    grid: dict[str, list[Any]]
    runs: list[RunResult]
    seeds: list[int] | None = None
    definition: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # runs --resume found finished
    status: str = "running"
    launcher: str = "local"
    slurm_jobs: list[str] = field(default_factory=list)  # the job arrays submitted for this sweep, oldest first

    @property
    def ok(self) -> bool:
        """Whether every combination has a finished run."""
        return all(r.ok for r in self.runs)

    @property
    def index(self) -> Path:
        """The comparison page."""
        return self.sweep_dir / "index.html"


def _problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [k for k, tp in _REQUIRED.items() if not isinstance(data[k], tp)]
    if wrong:
        return f"{', '.join(wrong)} of the wrong type"
    if not all(isinstance(n, dict) and isinstance(n.get("name"), str) for n in data["notebooks"]):
        return "notebooks is not a list of {name: ...} objects"
    return None


def shown_status(data: dict[str, Any]) -> str:
    """The recorded status, except that a "running" run whose process is gone (SIGKILL, power cut) shows as interrupted."""
    state, pid = data.get("status"), data.get("pid")
    if state != "running" or not isinstance(pid, int) or data.get("host") != socket.gethostname():
        return str(state)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:  # another user's live process
        pass
    return "running"


def read_run(path: Path, quiet: bool = False) -> dict[str, Any] | None:
    """A ``run.json`` as a dict, or None with a note on stderr when it is unreadable or not a run record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        problem = _problem(data)
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"unreadable: {exc}"
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON (line {exc.lineno}: {exc.msg})"
    if problem is None:
        return data
    if not quiet:
        print(f"note: skipping {path}: {problem}", file=sys.stderr)
    return None
