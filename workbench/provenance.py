"""Where a result came from: the code, the packages and the machine, for every run.json.

``collect()`` is cheap (a few milliseconds: two git calls and some metadata reads) and never
raises: a field it cannot find out is None, because a run must not fail over its own record.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["FIELDS", "PACKAGES", "RUN_FIELDS", "SLURM_VARS", "collect", "cpu_name", "git_state", "gpu_name", "slurm_job"]

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "tokenizers", "workbench")
# What the caller knows about the run; always present in the record, None when not given.
RUN_FIELDS = ("precision", "attention", "num_processes", "seed", "data_cache_key")
# Every key collect() returns (plus any extra field the caller adds).
FIELDS = ("git_commit", "git_dirty", "packages", "python", "os", "cpu", "gpu", "device",
          "command", "created", "slurm") + RUN_FIELDS
# What a SLURM job's environment says about it (`workbench sweep --launcher slurm`): record key -> variable.
SLURM_VARS = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID",
              "array_task_id": "SLURM_ARRAY_TASK_ID", "node": "SLURMD_NODENAME", "partition": "SLURM_JOB_PARTITION"}
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the checkout, when run from one
_GIT_TIMEOUT = 2.0


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_PACKAGE_ROOT), *args], capture_output=True,
                              text=True, timeout=_GIT_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the workbench checkout, or (None, None) when it is installed, not checked out."""
    out = _git("rev-parse", "--show-toplevel", "HEAD")
    if out is None or len(out.split()) != 2:
        return None, None
    top, commit = out.split()
    # A non-editable install sits in site-packages, which may itself lie inside some other
    # repository (a venv in a checkout): only a repository rooted at the package's parent counts.
    try:
        if Path(top).resolve() != _PACKAGE_ROOT:
            return None, None
    except OSError:
        return None, None
    status = _git("status", "--porcelain")
    return commit, (None if status is None else bool(status.strip()))


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except Exception:  # a broken distribution must not break the record
        return None


def cpu_name() -> str | None:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    try:
        return platform.processor() or None
    except Exception:
        return None


def gpu_name() -> str | None:
    """The first CUDA device's name when torch is already imported and sees one, else None.

    torch is only consulted when the caller imported it (every run does): importing it here
    would cost a second, and a process without torch has no GPU work to record.
    """
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            index = torch.cuda.current_device()
            return f"{torch.cuda.get_device_name(index)} x{torch.cuda.device_count()}"
    except Exception:  # a broken driver is a None, not a failed run
        return None
    return None


def slurm_job() -> dict[str, str] | None:
    """The SLURM job this process runs in (job id, array job and task id, node, partition), or None outside SLURM."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return {key: os.environ[var] for key, var in SLURM_VARS.items() if var in os.environ}


def _workbench_version() -> str | None:
    installed = _version("workbench")
    if installed is not None:
        return installed
    try:
        from . import __version__
        return __version__
    except Exception:
        return None


def collect(**extra: Any) -> dict[str, Any]:
    """The provenance record: code, packages, machine, command line, plus the caller's ``extra`` fields."""
    commit, dirty = git_state()
    packages = {name: _version(name) for name in PACKAGES}
    packages["workbench"] = _workbench_version()
    cpu, gpu = cpu_name(), gpu_name()
    record: dict[str, Any] = {
        "git_commit": commit, "git_dirty": dirty, "packages": packages,
        "python": platform.python_version(), "os": _safe(platform.platform),
        "cpu": cpu, "gpu": gpu, "device": gpu or cpu,
        "command": list(sys.argv),  # as given: argv[0] shows which install or checkout ran
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "slurm": slurm_job(),
    }
    record.update({name: None for name in RUN_FIELDS})
    record.update(extra)
    return record


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        return None
