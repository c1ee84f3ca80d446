"""The `workbench` command line: one subcommand per step, flags generated from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import (
    AttentionConfig,
    DataConfig,
    FinetuneConfig,
    MaskingConfig,
    TrainConfig,
    config_fields,
    config_from_dict,
)
from .errors import WorkbenchError
from .outputs import OutputDir, check_out_path

__all__ = ["main", "build_parser", "add_config_args", "format_table"]

# Short flag names the issues and README use, mapped to config fields.
_ALIASES = {"corpus": ["--corpus"], "objective": ["--objective"], "tokenizer": ["--tokenizer"]}


def add_config_args(parser: argparse.ArgumentParser, cls: type, dest_prefix: str = "") -> None:
    """Add one ``--field-name`` flag per dataclass field, with its help text; defaults stay in the dataclass."""
    group = parser.add_argument_group(cls.__name__)
    hints = typing.get_type_hints(cls)
    for name, f in config_fields(cls).items():
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


def _config(cls: type, args: argparse.Namespace, dest_prefix: str = "") -> Any:
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


def _cmd_prepare(args: argparse.Namespace) -> int:
    cfg = _config(DataConfig, args)
    if args.out is not None:
        check_out_path(args.out)  # before the heavy imports: a refusal is instant

    from .pretraining_data import prepare_dataset

    data = prepare_dataset(cfg, out_dir=args.out)
    print(format_table(data.stats, f"prepared {data.path}"))
    for warning in data.stats.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .train import pretrain

    result = pretrain(_config(TrainConfig, args), _config(MaskingConfig, args))
    if result.is_main_process:
        shown = {k: v for k, v in result.eval.items() if v is not None and k != "checkpoint"}
        print(format_table(shown, f"pretrained {result.out}"))
        print(f"checkpoint: {result.checkpoint}")
    return 0


HEAD_STATS = "head_stats.csv"
HEADS_RUN = "run.json"


def _cmd_heads(args: argparse.Namespace) -> int:
    cfg = _config(AttentionConfig, args)
    out = OutputDir.open(args.out, "heads", create=False)  # before any work: a file or a foreign csv is refused
    out.check_writable([HEAD_STATS, HEADS_RUN])

    from . import attention
    from .data import iter_documents
    model, tokenizer = attention.load_attention_model(cfg.model)
    documents = list(iter_documents(cfg.corpus))
    segments = attention.sample_segments(documents, cfg.num_segments, tokenizer, cfg.max_seq_length, cfg.seed)
    stats = attention.head_statistics(
        attention.collect_attentions(model, tokenizer, segments, max_length=cfg.max_seq_length)
    )
    tmp = out.tmp_path(HEAD_STATS)
    try:
        stats.to_csv(tmp, index=False, float_format="%.5f")
        out.commit(tmp, HEAD_STATS)
    finally:
        tmp.unlink(missing_ok=True)
    out.write_json(HEADS_RUN, _heads_run(cfg, model))
    notable = attention.notable_heads(stats)
    print(f"{cfg.model}: {len(stats)} heads over {len(segments)} segments of {cfg.corpus}")
    print(notable.to_string(index=False) if len(notable) else "no head passes 0.5 on [CLS]/[SEP]/prev/next")
    print(f"head statistics: {out.path / HEAD_STATS}")
    return 0


def _heads_run(cfg: AttentionConfig, model: Any) -> dict[str, Any]:
    """The run.json beside head_stats.csv: the config and where the numbers came from."""
    from .provenance import collect

    dtype = next(model.parameters()).dtype
    record = collect(precision="bf16" if str(dtype) == "torch.bfloat16" else "fp32",
                     attention=getattr(model.config, "_attn_implementation", None), num_processes=1,
                     seed=cfg.seed, data_cache_key=None)
    return {"command": "heads", "config": dataclasses.asdict(cfg), "provenance": record}


# The demo is the notebook sequence on its defaults, with the default pretraining run of
# `workbench pretrain` (tiny, 3,500 steps: ~10 of the ~12 minutes on 2 cores) instead of nbval's
# quick one, so the checkpoint that 03 and 04 analyse has learned MLM and NSP. 02 keeps every
# 500th checkpoint for 04's curve over pretraining, and 04 probes the whole held-out task
# (>= 500 test passages) where nbval probes a sample.
DEMO_PARAMS = {"max_steps": TrainConfig.max_steps, "eval_every": TrainConfig.eval_every,
               "save_every": TrainConfig.save_every, "keep_every": TrainConfig.save_every,
               "probe_max_examples": 0, "bshift_examples": 1000, "min_steps": FinetuneConfig.min_steps}
NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _cmd_demo(args: argparse.Namespace) -> int:
    from .report import run_report

    result = run_report(DEMO_PARAMS, notebooks_dir=NOTEBOOKS_DIR, out_root=args.out,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    print(f"report: {result.index}")
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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

    from .finetune import register_cli as register_finetune
    from .report import register_cli as register_report

    register_finetune(sub)  # `finetune`
    register_report(sub)  # `report` and `sweep`

    p = sub.add_parser("demo", help="Run the whole notebook sequence on the builtin defaults into an HTML report.")
    p.add_argument("--out", default="reports", help="Reports root; the run goes to OUT/<run-id>/.")
    p.set_defaults(func=_cmd_demo)
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


if __name__ == "__main__":
    sys.exit(main())
