"""The ``workbench report`` and ``workbench sweep`` subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import WorkbenchError
from .params import load_params_file, parse_assignments
from .runner import RunInterrupted, run_report
from .sweep import run_sweep

__all__ = ["register_cli"]


def _cli_params(args: argparse.Namespace) -> dict[str, Any]:
    params = load_params_file(args.params) if args.params else {}
    return params | parse_assignments(args.set, "-p")  # flags override the file


def _split(text: str | None) -> list[str] | None:
    return [s for s in text.split(",") if s.strip()] if text else None


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise WorkbenchError(f"--seeds {text!r} must be comma-separated integers, e.g. --seeds 0,1,2") from None


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _interrupted(exc: RunInterrupted) -> int:
    where = getattr(exc, "record", None)
    print(f"error: interrupted by {exc}" + (f"; recorded as interrupted in {where}" if where else ""), file=sys.stderr)
    return 128 + exc.signum


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        result = run_report(_cli_params(args), notebooks_dir=args.notebooks_dir, out_root=args.out,
                            run_id=args.run_id, notebooks=_split(args.notebooks), timeout=args.timeout,
                            progress=_progress)
    except RunInterrupted as exc:
        return _interrupted(exc)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    print(result.index)
    return 0 if result.ok else 1


def _cmd_sweep(args: argparse.Namespace) -> int:
    grid = {name: [v.strip() for v in value.split(",")] for name, value in parse_assignments(args.grid, "--param").items()}
    if len(grid) != len(args.grid):
        raise WorkbenchError("a name is given to --param twice; list all its values in one --param NAME=V1,V2")
    fixed = parse_assignments(args.set, "-p")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise WorkbenchError(f"{', '.join(both)} is both swept (--param) and fixed (-p); drop one")
    try:
        result = run_sweep(grid, _cli_params(args), notebooks_dir=args.notebooks_dir, out_root=args.out,
                           notebooks=_split(args.notebooks), sweep_id=args.sweep_id, timeout=args.timeout,
                           progress=_progress, seeds=_seeds(args.seeds), resume=args.resume, jobs=args.jobs)
    except RunInterrupted as exc:
        return _interrupted(exc)
    for run in result.runs:
        if run.error:
            print(f"error: {run.run_id}: {run.error}", file=sys.stderr)
    print(result.index)
    return 0 if result.ok else 1


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--set", action="append", metavar="NAME=VALUE",
                   help="A notebook parameter (repeatable); overrides --params.")
    p.add_argument("--params", metavar="FILE", help="YAML file of `name: value` notebook parameters.")
    p.add_argument("--notebooks", metavar="LIST", help="Run only these notebooks, e.g. 01,03 (default: all).")
    p.add_argument("--notebooks-dir", default="notebooks", help="Where the NN_name.ipynb notebooks are (default: notebooks).")
    p.add_argument("--out", default="reports", help="Reports root (default: reports); files there that workbench did not write are kept.")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="Fail a notebook when one cell runs longer than this (default: no limit).")


def register_cli(subparsers: Any) -> None:
    """Add the `report` and `sweep` subcommands to ``workbench``'s subparsers."""
    p = subparsers.add_parser("report", help="Run the notebooks with papermill into HTML reports under reports/<run-id>/.")
    _add_common(p)
    p.add_argument("--run-id", help="Name of the run dir (default: YYYYmmdd-HHMMSS-<hash of parameters>).")
    p.set_defaults(func=_cmd_report)
    p = subparsers.add_parser("sweep", help="One report per combination of parameter values and seed, plus a comparison page.")
    p.add_argument("--param", dest="grid", action="append", required=True, metavar="NAME=V1,V2",
                   help="A swept parameter and its comma-separated values (repeatable: the cartesian product runs).")
    _add_common(p)
    p.add_argument("--seeds", metavar="S1,S2", help="Run every combination once per seed (sets each notebook's `seed`); "
                   "the comparison shows mean ± 95%% CI over seeds.")
    p.add_argument("--resume", action="store_true", help="Finish the sweep with these settings (or --sweep-id): "
                   "skip combinations that finished, re-run failed or missing ones.")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="Run N combinations at once, each with "
                   "cores // N torch threads (default: 1).")
    p.add_argument("--sweep-id", help="Name of the sweep (default: YYYYmmdd-HHMMSS-<hash>); runs are <id>-01, ...")
    p.set_defaults(func=_cmd_sweep)
