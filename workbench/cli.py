"""The `workbench` command line: one subcommand per step, flags generated from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import DataConfig, config_fields, config_from_dict
from .errors import WorkbenchError

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
        kwargs: dict[str, Any] = {"dest": dest_prefix + name, "default": None,
                                  "help": f"{f.metadata.get('help', '')} (default: {default})"}
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
    from .pretraining_data import prepare_dataset

    cfg = _config(DataConfig, args)
    data = prepare_dataset(cfg, out_dir=args.out)
    print(format_table(data.stats, f"prepared {data.path}"))
    for warning in data.stats.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .pretraining_data import prepare_dataset

    out = Path(args.out)
    data = prepare_dataset(DataConfig(), out_dir=out / "data")
    print(format_table(data.stats, "builtin:wikipedia, NSP, builtin:minilm tokenizer"))
    (out / "stats.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(data.stats, indent=2) + "\n")
    print(f"statistics: {out / 'stats.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="Build (or load) the tokenizer and the pretraining dataset; print its statistics.")
    p.add_argument("--out", type=Path, default=None, help="Output dir (default: a cache dir keyed by corpus, tokenizer and settings).")
    add_config_args(p, DataConfig)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("demo", help="Run the main job on the embedded defaults.")
    p.add_argument("--out", default="reports/demo", help="Where the demo writes its outputs.")
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
