"""Did pretraining help? Paired gains of workbench checkpoints over their random twins, fair protocol.

Three parts, each a learning curve (100, 300, 1,000 labels x 5 seeds) of a checkpoint against
its random twin (``random:CKPT``: the same shape and tokenizer, random weights), under the fair
protocol of ``workbench.evaluation.fair_curves.learning_curve``: the same label samples and seeds for both,
the same learning-rate grid chosen on validation, at least ``--min-steps`` steps and then early
stopping on validation. ``builtin:minilm`` is the ceiling (its own, smaller protocol: see the
JSON's ``ceiling`` entry and the table's footnote).

- (a) the default ``workbench pretrain`` checkpoint (builtin Wikipedia, MLM+NSP) on
  ``builtin:wikipedia-topics``: passage -> article on the 9 articles its pretraining held out;
- (b) AG News self-pretraining: tiny, MLM only, 2,500 steps on the text of ``agnews/train.tsv``
  (no labels); fine-tuned on its labels, scored on a stratified sample of its test split;
- (c) SST-2 self-pretraining: the same on the phrases of ``sst2/train.tsv``; scored on GLUE dev.

Checkpoints are passed by path (``--checkpoint-a/-b/-c``, a run dir or checkpoint dir) or
trained here into ``--work`` (on 2 idle cores about 10 minutes for (a) and 6 each for (b) and
(c) with bf16; in fp32, on a CPU without AVX512-BF16/AMX, about 25 and 17 each). Fine-tunes
run in ``--jobs`` processes of one thread each (tiny models do not scale past one thread). Writes ``--out`` (JSON; rewritten as parts finish) and prints a table of
mean ± 95% CI per initialisation and the paired gain with its CI and verdict.

    python benchmarks/pretraining_gain.py --checkpoint-a runs/default --checkpoint-b runs/agnews-mlm \\
        --checkpoint-c runs/sst2-mlm
    python benchmarks/pretraining_gain.py --parts b --sizes 100 --seeds 0,1,2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import DataConfig, FinetuneConfig, MaskingConfig, TrainConfig
from workbench.evaluation.fair_curves import curve_summary, learning_curve
from workbench.evaluation.heldout import BUILTIN_WIKIPEDIA_TOPICS
from workbench.evaluation.splits import TaskData, stratified_sample
from workbench.evaluation.stats import describe_difference
from workbench.evaluation.tasks import load_task
from workbench.training.checkpoint import write_json_atomic

__all__ = ["PARTS", "ensure_checkpoint", "flattening", "main", "part_task", "print_table"]

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"
DEFAULT_OUT = HERE / "results" / "pretraining_gain.json"
MINILM = "builtin:minilm"
# part -> (what, corpus file and text column for self-pretraining, or None for the default run)
PARTS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "a": ("default pretrain checkpoint on builtin:wikipedia-topics (held-out articles)", None),
    "b": ("AG News self-pretraining (MLM on train text)", ("agnews/train.tsv", "text")),
    "c": ("SST-2 self-pretraining (MLM on train text)", ("sst2/train.tsv", "sentence")),
}


def ensure_checkpoint(part: str, given: str, args: argparse.Namespace) -> str:
    """The part's checkpoint: ``given``, or pretrained here (the default run for a, MLM self-pretraining else)."""
    if given:
        if not Path(given).exists():
            raise SystemExit(f"error: --checkpoint-{part} {given} does not exist; pass a run dir or leave it out")
        return given
    from workbench.data.examples import prepare_dataset
    from workbench.training.pretraining import pretrain

    out = args.work / f"{part}-pretrain"
    if (out / "eval.json").is_file():
        return str(out)  # trained by an earlier run of this benchmark
    source = PARTS[part][1]
    if source is None:
        cfg = TrainConfig(out=str(out), progress=False, overwrite=True)  # exactly `workbench pretrain`
    else:
        corpus, column = source
        data_dir = args.work / f"{part}-data"
        prepare_dataset(DataConfig(corpus=str(args.data_root / corpus), text_column=column, objective="mlm",
                                   min_doc_words=1), out_dir=data_dir)
        cfg = TrainConfig(data=str(data_dir), objective="mlm", max_steps=args.pretrain_steps, out=str(out),
                          progress=False, overwrite=True)
    print(f"[{part}] pretraining into {out} ...", file=sys.stderr)
    pretrain(cfg, MaskingConfig())
    return str(out)


def part_task(part: str, args: argparse.Namespace, base: FinetuneConfig) -> TaskData:
    """The labelled task of a part, read once; AG News test is a stratified sample of --agnews-test."""
    spec = {"a": BUILTIN_WIKIPEDIA_TOPICS, "b": str(args.data_root / "agnews"), "c": str(args.data_root / "sst2")}[part]
    data = load_task(replace(base, task=spec))
    if part == "b" and args.agnews_test and len(data.splits["test"]) > args.agnews_test:
        test = data.splits["test"]
        data.splits["test"] = test.iloc[stratified_sample(test["label"], args.agnews_test, 0)].reset_index(drop=True)
        data.notes.append(f"test: a stratified sample of {args.agnews_test} of {len(test)} (seed 0)")
    return data


def _curve_job(init: str, data: TaskData, sizes: list[int], seeds: list[int], base: FinetuneConfig) -> list[dict]:
    """One init's learning curve in a worker process with one thread."""
    import torch

    torch.set_num_threads(1)
    return learning_curve([init], data, sizes=sizes, seeds=seeds, base=base, verbose=True).to_dict("records")


def flattening(runs: pd.DataFrame, init: str) -> dict[str, Any]:
    """Did ``init``'s kept runs flatten? Share stopped early by patience, and steps trained past the best."""
    kept = runs[(runs["init"] == init) & runs["chosen"]]
    return {"runs": len(kept), "stopped_early": int(kept["stopped_early"].sum()),
            "median_best_step": float(kept["best_step"].median()), "median_steps": float(kept["steps"].median()),
            "median_plateau_steps": float(kept["plateau_steps"].median())}


def _base(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(max_length=args.max_length, max_validation=args.max_validation, batch_size=args.batch_size,
                          curve_min_steps=args.min_steps, curve_epochs=args.epochs, lr_grid_seeds=args.grid_seeds,
                          patience=args.patience, eval_every=args.eval_every,
                          eval_batch_size=256, lr_grid=args.lr_grid, progress=False, out="")


def _fmt(mean: float, low: float, high: float, scale: float = 100.0) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(low):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {(high - low) * scale / 2:.1f}"


def print_table(result: dict[str, Any]) -> None:
    """Per part and label count: accuracy (%) mean ± CI half-width per init, and the paired gain."""
    for part, res in result["parts"].items():
        if "summary" not in res:
            continue
        s = pd.DataFrame(res["summary"])
        ckpt, twin = res["checkpoint"], f"random:{res['checkpoint']}"
        print(f"\n({part}) {res['what']}: {res['task']} ({res['splits']['test']} test examples); accuracy %, "
              f"mean ± 95% CI half-width over seeds [chosen lr]")
        print(f"{'labels':>7} {'pretrained':>20} {'random twin':>20} {'minilm (ceiling)':>20}  paired gain")
        for n in sorted(set(s["n_train"])):
            cells = []
            for init in (ckpt, twin, MINILM):
                row = s[(s["init"] == init) & (s["n_train"] == n)]
                cells.append("-" if row.empty else f"{_fmt(*row.iloc[0][['accuracy_mean', 'accuracy_ci_low', 'accuracy_ci_high']])} "
                             f"[{row.iloc[0]['lr']:g}]")
            g = s[(s["init"] == ckpt) & (s["n_train"] == n)]
            gain = "-" if g.empty or not g.iloc[0]["baseline"] else describe_difference(
                {"mean": g.iloc[0]["gain"], "low": g.iloc[0]["gain_ci_low"], "high": g.iloc[0]["gain_ci_high"],
                 "n": int(g.iloc[0]["runs"]), "confidence": 0.95, "verdict": g.iloc[0]["verdict"]})
            print(f"{n:>7} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}  {gain}")
        f = res["random_twin_flattening"]
        print(f"random twin: {f['stopped_early']}/{f['runs']} kept runs stopped by patience after the "
              f"{res['config']['min_steps']}-step minimum; median best step {f['median_best_step']:.0f} of "
              f"{f['median_steps']:.0f}")
        print(f"ceiling: {res['ceiling']}; fine-tuning wall time {res.get('wall_minutes', math.nan):.1f} min")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="abc", help="Which parts to run, e.g. `ab`.")
    for part in PARTS:
        p.add_argument(f"--checkpoint-{part}", default="", help=f"({part}) run or checkpoint dir (empty: train it).")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="Dir holding agnews/ and sst2/.")
    p.add_argument("--work", type=Path, default=Path("runs/pretraining_gain"), help="Where checkpoints are trained.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON with every run and summary.")
    p.add_argument("--pretrain-steps", type=int, default=2500, help="Steps of (b) and (c)'s MLM self-pretraining.")
    p.add_argument("--sizes", type=_ints, default=[100, 300, 1000], help="Label counts.")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4], help="Seeds (label sample and init).")
    p.add_argument("--lr-grid", default="auto", help="FinetuneConfig.lr_grid of checkpoint and twin.")
    p.add_argument("--min-steps", type=int, default=300, help="Steps before early stopping may end a run.")
    p.add_argument("--epochs", type=float, default=20.0, help="Planned passes over the labels (curve_epochs).")
    p.add_argument("--grid-seeds", type=int, default=2, help="Seeds the lr grid is searched on (lr_grid_seeds).")
    p.add_argument("--patience", type=int, default=3, help="Validations without a better accuracy before stopping.")
    p.add_argument("--eval-every", type=int, default=50, help="Validate every this many steps.")
    p.add_argument("--batch-size", type=int, default=16, help="Examples per step (16: half a step's cost of 32).")
    p.add_argument("--max-length", type=int, default=64, help="Tokens per example (truncated beyond).")
    p.add_argument("--max-validation", type=int, default=500, help="Validation examples (stratified sample).")
    p.add_argument("--agnews-test", type=int, default=2000, help="AG News test examples (stratified sample; 0 all).")
    p.add_argument("--minilm-seeds", type=_ints, default=[0], help="Seeds of the minilm ceiling (a step costs ~25x tiny's).")
    p.add_argument("--minilm-sizes", type=_ints, default=[100, 1000], help="Label counts of the minilm ceiling.")
    p.add_argument("--minilm-lr-grid", default="1e-4", help="lr grid of the minilm ceiling.")
    p.add_argument("--minilm-min-steps", type=int, default=100, help="Minimum steps of the minilm ceiling.")
    p.add_argument("--minilm-epochs", type=float, default=5.0, help="Planned passes of the minilm ceiling.")
    p.add_argument("--no-minilm", action="store_true", help="Leave the ceiling out.")
    p.add_argument("--jobs", type=int, default=2, help="Fine-tuning processes (one thread each).")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train or take the checkpoints, run every curve, write the JSON and print the table."""
    args = _parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    parts = [p for p in PARTS if p in args.parts]
    if any(p in parts for p in "bc") and not (args.data_root / "agnews").is_dir():
        print(f"error: {args.data_root}/agnews not found; pass --data-root DIR holding agnews/ and sst2/", file=sys.stderr)
        return 2
    # Parts not re-run are kept from an earlier run's JSON (each part keeps its own config and timing).
    previous = json.loads(args.out.read_text()).get("parts", {}) if args.out.is_file() else {}
    result: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_start": os.getloadavg()},
        "parts": {k: v for k, v in previous.items() if k not in parts}}
    jobs = []
    for part in parts:
        ckpt = ensure_checkpoint(part, getattr(args, f"checkpoint_{part}"), args)
        base = _base(args)
        data = part_task(part, args, base)
        ceiling = replace(base, lr_grid=args.minilm_lr_grid, curve_min_steps=args.minilm_min_steps,
                          curve_epochs=args.minilm_epochs)
        eval_file = Path(ckpt) / "eval.json"
        result["parts"][part] = {
            "what": PARTS[part][0], "config": result["config"], "started": time.strftime("%Y-%m-%d %H:%M:%S"), "task": data.name, "checkpoint": ckpt, "splits": data.sizes, "notes": data.notes,
            "pretraining_eval": json.loads(eval_file.read_text()) if eval_file.is_file() else None, "runs": [],
            "ceiling": "none" if args.no_minilm else
            f"builtin:minilm, labels {args.minilm_sizes}, seeds {args.minilm_seeds}, lr grid {args.minilm_lr_grid}, "
            f"min {args.minilm_min_steps} steps, {args.minilm_epochs:g} planned epochs (fewer than the tiny models: a step costs ~25x as much)"}
        jobs += [(part, init, data, args.sizes, args.seeds, base) for init in (ckpt, f"random:{ckpt}")]
        if not args.no_minilm:  # longest first: better packing
            jobs.insert(0, (part, MINILM, data, args.minilm_sizes, args.minilm_seeds, ceiling))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _run_jobs(jobs, args, result)
    result["wall_minutes"] = (time.perf_counter() - start) / 60
    result["machine"]["load_average_end"] = os.getloadavg()
    write_json_atomic(args.out, result)
    print_table(result)
    print(f"\nwall {result['wall_minutes']:.1f} min; results: {args.out}")
    return 0


def _run_jobs(jobs: list[tuple], args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Each (part, init) curve in a worker; a part's summary once its inits are all done."""
    import multiprocessing

    start = time.perf_counter()
    pending = {part: sum(j[0] == part for j in jobs) for part in result["parts"]}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_curve_job, init, data, sizes, seeds, base): part
                   for part, init, data, sizes, seeds, base in jobs}
        for future in as_completed(futures):
            part = futures[future]
            res = result["parts"][part]
            res["runs"] += future.result()
            pending[part] -= 1
            if not pending[part]:
                res["wall_minutes"] = (time.perf_counter() - start) / 60
                runs = pd.DataFrame(res["runs"])
                res["summary"] = curve_summary(runs).to_dict("records")
                res["random_twin_flattening"] = flattening(runs, f"random:{res['checkpoint']}")
            write_json_atomic(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
