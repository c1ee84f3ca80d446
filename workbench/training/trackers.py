"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) through accelerate's tracking API.

Each run logs under its own run dir: ``OUT/tensorboard/`` (event files), ``OUT/wandb/`` (W&B,
offline with ``WANDB_MODE=offline``) and, unless ``MLFLOW_TRACKING_URI`` says otherwise, a
local MLflow store ``OUT/mlflow.db`` with artifacts in ``OUT/mlartifacts/`` (MLflow 3 refuses
its old ``mlruns/`` file store unless opted in: sqlite is its local default now). ``metrics.jsonl`` stays the workbench's own record; the
trackers get the same numbers as separate scalars (``train/mlm_loss``, ``eval/nsp_accuracy``).
The tracker objects are made here, not by name, so that each lands in the run dir under the
name we choose (accelerate would use one ``project_name`` as TensorBoard's sub-dir, W&B's
project and MLflow's experiment at once).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import TRACKERS
from ..errors import WorkbenchError
from ..outputs import OutputDir, check_out_path

__all__ = ["MLFLOW_DB", "TENSORBOARD_DIR", "PROJECT", "mlflow_uri", "check_installed", "entries", "finish", "log",
           "make_trackers", "parse_report_to", "scalars", "start"]

TENSORBOARD_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS, PROJECT = "tensorboard", "mlflow.db", "mlartifacts", "workbench"
_MODULE = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install 'workbench[wandb]'",
            "mlflow": "pip install 'workbench[mlflow]'"}


def parse_report_to(value: str) -> tuple[str, ...]:
    """The tracker names of a ``--report-to`` value (comma list; ``none`` or empty: none)."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    if names in ((), ("none",)):
        return ()
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise WorkbenchError(f"report_to {value!r}: {', '.join(bad)} is not one of {', '.join(TRACKERS)} or none; "
                             "pass e.g. --report-to tensorboard,wandb")
    return names


def check_installed(names: Iterable[str]) -> None:
    """One-line error naming the install command for a tracker whose package is missing."""
    for name in names:
        module = _MODULE[name]
        if name == "mlflow" and "MLFLOW_TRACKING_URI" not in os.environ and importlib.util.find_spec(module):
            module = "sqlalchemy"  # the local sqlite store: in mlflow, not in mlflow-skinny
        if importlib.util.find_spec(module) is None:
            raise WorkbenchError(f"--report-to {name} needs the {module} package, which is not installed; "
                                 f"run `{_INSTALL[name]}` or pass --report-to none")


def make_trackers(names: Iterable[str], out: str | Path) -> list[Any]:
    """accelerate tracker objects writing under the run dir ``out`` (made on every process; only rank 0 starts them)."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    out = Path(out)
    run = out.resolve().name or PROJECT
    made: list[Any] = []
    for name in names:
        if name == "tensorboard":
            made.append(TensorBoardTracker(TENSORBOARD_DIR, str(out)))  # OUT/tensorboard/
        elif name == "wandb":
            made.append(WandBTracker(PROJECT, name=run, dir=str(out)))  # OUT/wandb/
        elif name == "mlflow":  # artifacts beside the run, not in the working directory
            made.append(MLflowTracker(PROJECT, (out / MLFLOW_ARTIFACTS).resolve().as_uri(), run_name=run))
    return made


def entries(names: Iterable[str]) -> list[str]:
    """The top-level entries of the run dir that the trackers ``names`` write (owned like any output)."""
    made = {"tensorboard": [TENSORBOARD_DIR], "wandb": ["wandb"],
            "mlflow": [] if "MLFLOW_TRACKING_URI" in os.environ else [MLFLOW_DB, MLFLOW_ARTIFACTS]}
    return [entry for name in names for entry in made.get(name, [])]


def mlflow_uri(out: str | Path) -> str:
    """The MLflow tracking URI of the run dir's own store (``mlflow ui --backend-store-uri URI``)."""
    return f"sqlite:///{(Path(out) / MLFLOW_DB).resolve()}"


def start(acc: Any, out: str | Path, config: dict[str, Any], fresh: OutputDir | None) -> None:
    """Start ``acc``'s trackers (main process) and store the flat ``config`` with W&B and MLflow.

    ``fresh``: for a new run (not --resume), the run dir, whose TensorBoard folder is removed so
    the curve does not continue an older one, if the workbench wrote it (its manifest says so):
    a user's ``tensorboard/`` (or a link to one) is never touched, and files a user added to
    ours are moved aside (see :meth:`OutputDir.remove`).
    """
    if not acc.is_main_process:
        return
    out = check_out_path(out)  # the one --out check (callers ran it before any work; cheap)
    if fresh is not None and TENSORBOARD_DIR in fresh.entries:  # also with --report-to none
        fresh.remove(TENSORBOARD_DIR)
    if not acc.log_with:
        return
    out.mkdir(parents=True, exist_ok=True)
    if any(getattr(t, "name", "") == "mlflow" for t in acc.log_with) and "MLFLOW_TRACKING_URI" not in os.environ:
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri(out))
    acc.init_trackers(PROJECT)
    flat = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool)) or v is None}
    for tracker in acc.trackers:
        # TensorBoard's hparams would add a second "run" per run dir; run.json holds the config.
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(flat)


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"type": "eval", "step": 3, "mlm_loss": 2.1, ...}`` -> ``{"eval/mlm_loss": 2.1, ...}``: numbers only."""
    prefix = metrics.get("type", "train")
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()
            if k not in ("type", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def log(acc: Any, metrics: dict[str, Any]) -> None:
    """Send one metrics dict (with ``type`` and ``step``) to every tracker; a no-op without trackers."""
    if acc.trackers:
        acc.log(scalars(metrics), step=int(metrics["step"]))


def finish(acc: Any) -> None:
    """Close the trackers (flush TensorBoard, end the W&B/MLflow run); the Accelerator stays usable."""
    for tracker in acc.trackers:
        tracker.finish()
    acc.trackers.clear()
