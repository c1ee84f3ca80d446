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

A recipe is judged over several pretraining runs: each part trains one checkpoint per
``--pretrain-seeds`` (default 42, 0, 1; 42 is `workbench pretrain`'s own) or takes them by path
(``--checkpoint-a/-b/-c``, comma-separated run or checkpoint dirs), into ``--work`` (on 2 idle
cores about 10 minutes a run for (a) and 6 for (b) and (c) with bf16; in fp32, on a CPU without
AVX512-BF16/AMX, about 25 and 17). The random twin depends only on the shape, the tokenizer and the
fine-tuning seed, so checkpoints of one recipe share one (trained once). Fine-tunes run in
``--jobs`` processes of one thread each (tiny models do not scale past one thread). Writes
``--out`` (JSON; rewritten as parts finish) and prints, per label count, each run's accuracy
(mean ± 95% CI over fine-tuning seeds) and paired gain over the twin, then the recipe's gain:
the mean of the runs' gains with its 95% CI over pretraining runs.

    python benchmarks/pretraining_gain.py --parts a --checkpoint-a runs/s42,runs/s0,runs/s1
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
from workbench.evaluation.finetuning import classifier_path
from workbench.evaluation.heldout import BUILTIN_WIKIPEDIA_TOPICS
from workbench.evaluation.splits import TaskData, stratified_sample
from workbench.evaluation.stats import describe_difference, mean_ci, verdict
from workbench.evaluation.tasks import load_task
from workbench.training.checkpoint import write_json_atomic
from workbench.training.runfolder import EVAL_FILE

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


def ensure_checkpoint(part: str, seed: int, args: argparse.Namespace) -> str:
    """The part's checkpoint pretrained here at ``seed`` (the default run for a, MLM self-pretraining else)."""
    from workbench.data.examples import prepare_dataset
    from workbench.training.pretraining import pretrain

    out = args.work / f"{part}-pretrain-s{seed}"
    if (out / EVAL_FILE).is_file():
        return str(out)  # trained by an earlier run of this benchmark
    source = PARTS[part][1]
    if source is None:
        cfg = TrainConfig(out=str(out), seed=seed, progress=False, overwrite=True)  # exactly `workbench pretrain`
    else:
        corpus, column = source
        data_dir = args.work / f"{part}-data"
        prepare_dataset(DataConfig(corpus=str(args.data_root / corpus), text_column=column, objective="mlm",
                                   min_doc_words=1), out_dir=data_dir)
        cfg = TrainConfig(data=str(data_dir), objective="mlm", max_steps=args.pretrain_steps, out=str(out),
                          seed=seed, progress=False, overwrite=True)
    print(f"[{part}] pretraining into {out} ...", file=sys.stderr)
    pretrain(cfg, MaskingConfig())
    return str(out)


def ensure_checkpoints(part: str, args: argparse.Namespace) -> list[str]:
    """The part's checkpoints, one per pretraining run: ``--checkpoint-X`` (comma list) or one per ``--pretrain-seeds``."""
    given = [c for c in getattr(args, f"checkpoint_{part}").split(",") if c.strip()]
    if missing := [c for c in given if not Path(c).exists()]:
        raise SystemExit(f"error: --checkpoint-{part} {', '.join(missing)} does not exist; pass run dirs or leave it out")
    return given or [ensure_checkpoint(part, seed, args) for seed in args.pretrain_seeds]


def _shape_files(ckpt: str) -> dict[str, bytes]:
    """What a random twin is made of: the checkpoint's config and tokenizer files (run dir or checkpoint dir)."""
    root = Path(classifier_path(ckpt))
    names = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]
    return {n: (root / n).read_bytes() for n in names if (root / n).is_file()}


def twin_of(ckpts: list[str]) -> dict[str, str]:
    """checkpoint -> the checkpoint whose random twin stands for its own.

    A twin is random weights of the checkpoint's shape and tokenizer, seeded by the fine-tuning
    seed, so checkpoints of one recipe (pretraining seeds apart) share it: it is trained once.
    """
    first = _shape_files(ckpts[0])
    return {c: ckpts[0] if _shape_files(c) == first else c for c in ckpts}


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


def _eval_of(ckpt: str) -> dict[str, Any] | None:
    eval_file = Path(ckpt) / EVAL_FILE
    return json.loads(eval_file.read_text()) if eval_file.is_file() else None


def with_shared_twins(runs: pd.DataFrame, twins: dict[str, str]) -> pd.DataFrame:
    """The runs with each checkpoint's twin rows present under its own name (``random:<ckpt>``)."""
    extra = [runs[runs["init"] == f"random:{shared}"].assign(init=f"random:{ckpt}")
             for ckpt, shared in twins.items() if shared != ckpt]
    return pd.concat([runs, *extra], ignore_index=True)


def recipe_gains(summary: pd.DataFrame, ckpts: list[str]) -> list[dict[str, Any]]:
    """Per label count: each pretraining run's paired gain, and their mean with its 95% CI over pretraining runs."""
    out = []
    for n in sorted(set(summary["n_train"])):
        rows = summary[summary["init"].isin(ckpts) & (summary["n_train"] == n) & (summary["baseline"] != "")]
        gains = [float(g) for g in rows["gain"]]
        mean, low, high = mean_ci(gains)  # one run: (gain, nan, nan)
        out.append({"n_train": int(n), "pretraining_runs": len(gains), "gains": gains,
                    "run_verdicts": list(rows["verdict"]), "mean": mean, "low": low, "high": high, "n": len(gains),
                    "confidence": 0.95, "verdict": verdict(low, high) if len(gains) >= 2 else "one run"})
    return out


def summarise_part(res: dict[str, Any]) -> None:
    """A finished part's summary: per init and label count, and the recipe's gain over pretraining runs."""
    runs = with_shared_twins(pd.DataFrame(res["runs"]), res["twin_of"])
    res["summary"] = curve_summary(runs).to_dict("records")
    res["recipe_gain"] = recipe_gains(pd.DataFrame(res["summary"]), res["checkpoints"])
    res["random_twin_flattening"] = flattening(runs, f"random:{res['checkpoints'][0]}")


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


def _cell(s: pd.DataFrame, init: str, n: int) -> str:
    row = s[(s["init"] == init) & (s["n_train"] == n)]
    if row.empty:
        return "-"
    return f"{_fmt(*row.iloc[0][['accuracy_mean', 'accuracy_ci_low', 'accuracy_ci_high']])} [{row.iloc[0]['lr']:g}]"


def _gain(s: pd.DataFrame, init: str, n: int) -> str:
    g = s[(s["init"] == init) & (s["n_train"] == n)]
    if g.empty or not g.iloc[0]["baseline"]:
        return "-"
    return describe_difference({"mean": g.iloc[0]["gain"], "low": g.iloc[0]["gain_ci_low"],
                                "high": g.iloc[0]["gain_ci_high"], "n": int(g.iloc[0]["runs"]),
                                "confidence": 0.95, "verdict": g.iloc[0]["verdict"]})


def print_table(result: dict[str, Any]) -> None:
    """Per part and label count: each pretraining run against the twin, then the recipe's gain over runs."""
    for part, res in result["parts"].items():
        if "summary" not in res:
            continue
        s = pd.DataFrame(res["summary"])
        ckpts = res["checkpoints"]
        twin = f"random:{ckpts[0]}"
        print(f"\n({part}) {res['what']}: {res['task']} ({res['splits']['test']} test examples); accuracy %, "
              f"mean ± 95% CI half-width over fine-tuning seeds [chosen lr]")
        print(f"{'labels':>7} {'run':>4} {'pretrained':>20} {'random twin':>20} {'minilm (ceiling)':>20}  paired gain (fine-tuning-seed CI)")
        for n in sorted(set(s["n_train"])):
            for i, ckpt in enumerate(ckpts):
                twin_cell, minilm = (_cell(s, twin, n), _cell(s, MINILM, n)) if i == 0 else ("", "")
                print(f"{n:>7} {i + 1:>4} {_cell(s, ckpt, n):>20} {twin_cell:>20} {minilm:>20}  {_gain(s, ckpt, n)}")
        print(f"the recipe over {len(ckpts)} pretraining run(s): mean paired gain (95% CI over pretraining runs)")
        for g in res["recipe_gain"]:
            spread = describe_difference(g) if g["n"] >= 2 else f"{100 * g['mean']:+.1f} points (one run, no CI)"
            print(f"{g['n_train']:>7} labels: {spread}; runs {', '.join(f'{100 * x:+.1f}' for x in g['gains'])}")
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
        p.add_argument(f"--checkpoint-{part}", default="",
                       help=f"({part}) run or checkpoint dirs, comma-separated, one per pretraining run (empty: train them).")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="Dir holding agnews/ and sst2/.")
    p.add_argument("--work", type=Path, default=Path("runs/pretraining_gain"), help="Where checkpoints are trained.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON with every run and summary.")
    p.add_argument("--pretrain-seeds", type=_ints, default=[42, 0, 1],
                   help="Pretraining seeds of the checkpoints trained here: a recipe's gain needs several runs.")
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
        ckpts = ensure_checkpoints(part, args)
        twins = twin_of(ckpts)
        base = _base(args)
        data = part_task(part, args, base)
        ceiling = replace(base, lr_grid=args.minilm_lr_grid, curve_min_steps=args.minilm_min_steps,
                          curve_epochs=args.minilm_epochs)
        result["parts"][part] = {
            "what": PARTS[part][0], "config": result["config"], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "task": data.name, "checkpoints": ckpts, "twin_of": twins, "splits": data.sizes, "notes": data.notes,
            "pretraining_eval": {c: _eval_of(c) for c in ckpts}, "runs": [],
            "ceiling": "none" if args.no_minilm else
            f"builtin:minilm, labels {args.minilm_sizes}, seeds {args.minilm_seeds}, lr grid {args.minilm_lr_grid}, "
            f"min {args.minilm_min_steps} steps, {args.minilm_epochs:g} planned epochs (fewer than the tiny models: a step costs ~25x as much)"}
        inits = ckpts + [f"random:{c}" for c in dict.fromkeys(twins.values())]
        jobs += [(part, init, data, args.sizes, args.seeds, base) for init in inits]
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
                summarise_part(res)
            write_json_atomic(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
