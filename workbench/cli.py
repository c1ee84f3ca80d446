"""The `workbench` command line: one subcommand per step; the flags of prepare, pretrain, heads and finetune come from config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import inspect
import math
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import (
    PRECISIONS,
    AttentionConfig,
    DataConfig,
    FinetuneConfig,
    MaskingConfig,
    SlurmConfig,
    TrainConfig,
    config_fields,
    config_from_dict,
)
from .errors import WorkbenchError
from .outputs import check_out_path

__all__ = ["main", "build_parser", "add_config_args", "format_table"]

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# The finetune results shown as a table, in this order.
FINETUNE_SHOWN = ("task", "model", "init", "n_train", "n_validation", "n_test", "n_test_excluded", "accuracy",
                  "macro_f1", "best_validation_accuracy", "best_step", "steps", "precision", "wall_seconds")


# ------------------------------------------------------------------------- flags <-> configs
def add_config_args(parser: argparse.ArgumentParser, cls: type, dest_prefix: str = "") -> None:
    """Add one ``--field-name`` flag per dataclass field, with its help text; defaults stay in the dataclass."""
    group = parser.add_argument_group(cls.__name__)
    hints = typing.get_type_hints(cls)
    fields = config_fields(cls)
    # The class's own fields first, in the order it declares them; then those it inherits (LoopConfig's).
    own = [name for name in inspect.get_annotations(cls) if name in fields]
    for name in [*own, *(n for n in fields if n not in own)]:
        f = fields[name]
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        # argparse %-formats help text (for %(default)s): a literal "46% IsNext" must be "%%".
        text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": dest_prefix + name, "default": None, "help": text}
        if hints[name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = hints[name].__name__.upper() if isinstance(hints[name], type) else "VALUE"
        group.add_argument(flag, **kwargs)


def _config_from_args(cls: type, args: argparse.Namespace, dest_prefix: str = "") -> Any:
    """An instance of the config dataclass ``cls`` from the flags given; the dataclass fills in the rest."""
    values = {name: getattr(args, dest_prefix + name) for name in config_fields(cls)}
    return config_from_dict(cls, {k: v for k, v in values.items() if v is not None})


def format_table(rows: dict[str, Any], title: str = "") -> str:
    """A two-column text table of ``rows``."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return f"{len(v)} item(s)"
        return str(v)
    width = max((len(k) for k in rows), default=0)
    lines = [title, "-" * max(len(title), 20)] if title else []
    lines += [f"{k.ljust(width)}  {fmt(v)}" for k, v in rows.items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------- data and models
def _cmd_prepare(args: argparse.Namespace) -> int:
    cfg = _config_from_args(DataConfig, args)
    if args.out is not None:
        check_out_path(args.out)  # before the heavy imports: a refusal is instant

    from .data.examples import prepare_dataset

    data = prepare_dataset(cfg, out_dir=args.out)
    print(format_table(data.stats, f"prepared {data.path}"))
    for warning in data.stats.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .training.pretraining import pretrain

    result = pretrain(_config_from_args(TrainConfig, args), _config_from_args(MaskingConfig, args))
    if result.is_main_process:
        shown = {k: v for k, v in result.eval.items() if v is not None and k != "checkpoint"}
        print(format_table(shown, f"pretrained {result.out}"))
        print(f"checkpoint: {result.checkpoint}")
    return 0


def _cmd_heads(args: argparse.Namespace) -> int:
    from .analysis.heads import run_heads

    cfg = _config_from_args(AttentionConfig, args)
    result = run_heads(cfg, args.out)
    print(f"{cfg.model}: {len(result.stats)} heads over {result.n_segments} segments of {cfg.corpus}")
    print(result.notable.to_string(index=False) if len(result.notable)
          else "no head passes 0.5 on [CLS]/[SEP]/prev/next")
    print(f"head statistics: {result.path}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    cfg = _config_from_args(FinetuneConfig, args)
    if not cfg.out:
        raise WorkbenchError("--out is empty; pass --out DIR for results.json and predictions.tsv")

    from .evaluation.finetuning import RESULTS_FILE, finetune

    r = finetune(cfg).results
    shown = {k: r[k] for k in FINETUNE_SHOWN}
    shown["truncated"] = sum(r["truncated"].values())
    print(format_table(shown, f"fine-tuned {cfg.model} on {cfg.task}"))
    width = max(len(name) for name in r["labels"])
    print(f"\n{'class'.ljust(width)}  precision  recall     f1  support")
    for name, m in r["per_class"].items():
        print(f"{name.ljust(width)}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:.4f}  {m['support']:7d}")
    print(f"\nresults: {Path(cfg.out) / RESULTS_FILE}")
    return 0


# ------------------------------------------------------------------------- notebook reports
def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _report_params(args: argparse.Namespace) -> dict[str, Any]:
    from .report import load_params_file
    from .report.params import parse_assignments

    params = load_params_file(args.params) if args.params else {}
    return params | parse_assignments(args.set, "-p")  # flags override the file


def _timeout(value: float | None) -> float | None:
    """``--timeout`` checked up front: a positive, finite number of seconds (None: no limit)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise WorkbenchError(f"--timeout {value:g} must be a positive number of seconds; pass e.g. --timeout 600, "
                             "or leave it out for no limit")
    return value


def _split(text: str | None) -> list[str] | None:
    return [s for s in text.split(",") if s.strip()] if text else None


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise WorkbenchError(f"--seeds {text!r} must be comma-separated integers, e.g. --seeds 0,1,2") from None


def _interrupted(exc: Any) -> int:
    """Exit status 128 + signal for a report.RunInterrupted, after one line saying where it was recorded."""
    where = getattr(exc, "record", None)
    print(f"error: interrupted by {exc}" + (f"; recorded as interrupted in {where}" if where else ""), file=sys.stderr)
    return 128 + exc.signum


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import RunInterrupted, run_report

    try:
        result = run_report(_report_params(args), notebooks_dir=args.notebooks_dir, out_root=args.out,
                            run_id=args.run_id, notebooks=_split(args.notebooks), timeout=_timeout(args.timeout),
                            progress=_progress)
    except RunInterrupted as exc:
        return _interrupted(exc)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    print(result.index)
    return 0 if result.ok else 1


def _sweep_grid(args: argparse.Namespace) -> dict[str, list[str]]:
    """The swept values of each --param, refused when a name is given twice or is also fixed with -p."""
    from .report.params import parse_assignments

    grid = {name: [v.strip() for v in value.split(",")] for name, value in parse_assignments(args.grid, "--param").items()}
    if len(grid) != len(args.grid):
        raise WorkbenchError("a name is given to --param twice; list all its values in one --param NAME=V1,V2")
    both = sorted(set(grid) & set(parse_assignments(args.set, "-p")))
    if both:
        raise WorkbenchError(f"{', '.join(both)} is both swept (--param) and fixed (-p); drop one")
    return grid


def _slurm_config(args: argparse.Namespace) -> SlurmConfig | None:
    """The --slurm-* options as a SlurmConfig for --launcher slurm; refused with --launcher local."""
    given = [name for name in config_fields(SlurmConfig) if getattr(args, name) is not None]
    if args.launcher != "slurm":
        if given:
            raise WorkbenchError(f"--{given[0].replace('_', '-')} is a SLURM option; add --launcher slurm, or drop it")
        return None
    return _config_from_args(SlurmConfig, args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .report import RunInterrupted, run_sweep

    grid = _sweep_grid(args)
    slurm = _slurm_config(args)
    try:
        result = run_sweep(grid, _report_params(args), notebooks_dir=args.notebooks_dir, out_root=args.out,
                           notebooks=_split(args.notebooks), sweep_id=args.sweep_id, timeout=_timeout(args.timeout),
                           progress=_progress, seeds=_seeds(args.seeds), resume=args.resume, jobs=args.jobs,
                           launcher=args.launcher, slurm=slurm)
    except RunInterrupted as exc:
        return _interrupted(exc)
    for run in result.runs:
        if run.error:
            print(f"error: {run.run_id}: {run.error}", file=sys.stderr)
    print(result.index)
    return 0 if result.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_params
    from .report import run_report

    result = run_report(demo_params(args.precision), notebooks_dir=NOTEBOOKS_DIR, out_root=args.out, progress=_progress)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    print(f"report: {result.index}")
    return 0 if result.ok else 1


# ------------------------------------------------------------------------- the parser
def _add_model_commands(sub: Any) -> None:
    """`prepare`, `pretrain`, `heads` and `finetune`: flags from the config dataclasses."""
    p = sub.add_parser("prepare", help="Build (or load) the tokenizer and the pretraining dataset; print its statistics.")
    p.add_argument("--out", type=Path, default=None, help="Output dir (default: a cache dir keyed by corpus, tokenizer and settings).")
    add_config_args(p, DataConfig)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "pretrain",
        help="Pretrain a BERT (MLM + NSP/SOP) on a prepared dataset; works under `accelerate launch`.",
    )
    add_config_args(p, TrainConfig)
    add_config_args(p, MaskingConfig)
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("heads", help="Per-head attention statistics (Clark et al. 2019) of a checkpoint over corpus segments.")
    p.add_argument("--out", type=Path, required=True, help="Dir for head_stats.csv (one row per layer, head).")
    add_config_args(p, AttentionConfig)
    p.set_defaults(func=_cmd_heads)

    p = sub.add_parser("finetune", help="Fine-tune a checkpoint for sentence (pair) classification; "
                                        "writes OUT/results.json and OUT/predictions.tsv.")
    add_config_args(p, FinetuneConfig)
    p.set_defaults(func=_cmd_finetune)


def _add_report_flags(p: argparse.ArgumentParser) -> None:
    """The flags `report` and `sweep` share."""
    p.add_argument("-p", "--set", action="append", metavar="NAME=VALUE",
                   help="A notebook parameter (repeatable); overrides --params.")
    p.add_argument("--params", metavar="FILE", help="YAML file of `name: value` notebook parameters.")
    p.add_argument("--notebooks", metavar="LIST", help="Run only these notebooks, e.g. 01,03 (default: all).")
    p.add_argument("--notebooks-dir", default="notebooks", help="Where the NN_name.ipynb notebooks are (default: notebooks).")
    p.add_argument("--out", default="reports", help="Reports root (default: reports); files there that workbench did not write are kept.")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="Fail a notebook when one cell runs longer than this (default: no limit).")


def _add_report_commands(sub: Any) -> None:
    """`report`, `sweep` and `demo`: the notebooks run with papermill into HTML reports."""
    p = sub.add_parser("report", help="Run the notebooks with papermill into HTML reports under reports/<run-id>/.")
    _add_report_flags(p)
    p.add_argument("--run-id", help="Name of the run dir (default: YYYYmmdd-HHMMSS-<hash of parameters>).")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("sweep", help="One report per combination of parameter values and seed, plus a comparison page.")
    p.add_argument("--param", dest="grid", action="append", required=True, metavar="NAME=V1,V2",
                   help="A swept parameter and its comma-separated values (repeatable: the cartesian product runs).")
    _add_report_flags(p)
    p.add_argument("--seeds", metavar="S1,S2", help="Run every combination once per seed (sets each notebook's `seed`); "
                   "the comparison shows mean ± 95%% CI over seeds.")
    p.add_argument("--resume", action="store_true", help="Finish the sweep with these settings (or --sweep-id): "
                   "skip combinations that finished, re-run failed, interrupted or missing ones (an interrupted "
                   "pretraining continues from its last checkpoint); with --launcher slurm, first wait for the "
                   "sweep's jobs still queued or running.")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="Run N combinations at once, each with "
                   "cores // N torch threads (default: 1).")
    p.add_argument("--sweep-id", help="Name of the sweep (default: YYYYmmdd-HHMMSS-<hash>); runs are <id>-01, ...")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: run here (--jobs at a time); slurm: one SLURM job array through submitit "
                        "(pip install -e '.[slurm]'), the --slurm-* options below (default: local).")
    add_config_args(p, SlurmConfig)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("demo", help="Run the whole notebook sequence on the builtin defaults into an HTML report.")
    p.add_argument("--out", default="reports", help="Reports root; the run goes to OUT/<run-id>/.")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="Pretraining arithmetic: auto (bf16 where the CPU or GPU has it, else fp32), bf16 or fp32 "
                        "(fp32 on any machine checks the answer a CPU without bf16 gets).")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_model_commands(sub)
    _add_report_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input becomes one `error:` line and exit status 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a write that failed for want of space or permission, wherever it came
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = exc.filename or "an output folder"
        fix = "free some space" if exc.errno != errno.EROFS else "pass a folder you can write to"
        print(f"error: could not write {where} ({(exc.strerror or os.strerror(exc.errno)).lower()}); {fix} and run again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
