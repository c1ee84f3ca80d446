"""SST-2 fine-tuning: builtin:minilm against a random model of the same shape, plus a learning curve.

Part 1 fine-tunes builtin:minilm (6 layers, H384) on SST-2 phrases from ``DATA/train.tsv``
within a CPU time budget and scores the 872 sentences of ``DATA/test.tsv`` (GLUE's dev split);
BERT-Mini reaches 85.9% and BERT-Small 89.7% there (Turc et al. 2019). A short probe measures
seconds per step; the budget then fixes the steps, and the training sample is what those steps
cover in ``--epochs`` passes (``--train-size`` overrides it). A randomly initialised model of
the same shape runs the same steps on the same sample and hyper-parameters. Early stopping
validates on 1000 phrases of ``DATA/validation.tsv``.

Part 2 is a learning curve: accuracy on the same test sentences against the number of
training examples, for random, builtin:minilm and (``--ours DIR``) a workbench checkpoint,
several seeds each (mean and sample std over seeds).

    python benchmarks/finetune_sst2.py                               # ~15 min each + the curve
    python benchmarks/finetune_sst2.py --budget-minutes 2 --sizes 100,300 --seeds 0,1
    python benchmarks/finetune_sst2.py --skip-main --ours runs/pretrain --sizes 100,300,1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from workbench.config import FinetuneConfig
from workbench.evaluation.fair_curves import curve_summary, learning_curve
from workbench.evaluation.finetuning import finetune
from workbench.evaluation.tasks import load_task
from workbench.training.checkpoint import write_json_atomic

__all__ = ["calibrate", "main", "run_main", "run_curve"]

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "sst2"
DEFAULT_OUT = HERE / "results" / "finetune_sst2.json"
MINILM, RANDOM = "builtin:minilm", "random:builtin:minilm"
_KEEP = ("accuracy", "macro_f1", "n_train", "n_test", "steps", "best_step", "best_validation_accuracy",
         "stopped_early", "epochs", "train_seconds", "eval_seconds", "wall_seconds", "examples_per_second",
         "precision", "confusion_matrix", "per_class", "truncated", "parameters", "shape")


def calibrate(base: FinetuneConfig, data: Any, steps: int = 30) -> float:
    """Median seconds per training step of ``base`` (its first 5 steps are warm-up, not timed)."""
    seconds: list[float] = []
    probe = replace(base, max_steps=steps, train_size=min(len(data.splits["train"]), steps * base.batch_size),
                    eval_every=10 * steps, patience=0, out="")
    finetune(probe, data, callbacks=[lambda m: seconds.append(m["step_seconds"]) if m["type"] == "train" else None])
    return statistics.median(seconds[5:])


def run_main(args: argparse.Namespace, data: Any, base: FinetuneConfig) -> dict[str, Any]:
    """minilm and random on the same sample and steps; the budget sets the steps."""
    step_seconds = calibrate(replace(base, model=MINILM), data)
    steps = max(1, int(args.budget_minutes * 60 / step_seconds))
    n_all = len(data.splits["train"])
    n_train = args.train_size or min(n_all, math.ceil(steps * base.batch_size / args.epochs))
    print(f"probe: {step_seconds:.3f} s/step -> {steps} steps in {args.budget_minutes:g} min; "
          f"training sample {n_train} of {n_all}", file=sys.stderr)
    out: dict[str, Any] = {"step_seconds_probe": step_seconds, "budget_minutes": args.budget_minutes, "runs": {}}
    for init, minutes in ((MINILM, args.budget_minutes), (RANDOM, args.random_budget_minutes or args.budget_minutes)):
        run_steps = max(1, round(steps * minutes / args.budget_minutes))
        cfg = replace(base, model=init, max_steps=run_steps, train_size=0 if n_train >= n_all else n_train,
                      out=str(Path(args.runs) / init.replace(":", "-")), progress=sys.stderr.isatty())
        r = finetune(cfg, data).results
        out["runs"][init] = {k: r[k] for k in _KEEP}
        print(f"{init}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, {r['steps']} steps, "
              f"{r['train_seconds'] / 60:.1f} min training, {r['wall_seconds'] / 60:.1f} min wall", file=sys.stderr)
    return out


def run_curve(args: argparse.Namespace, data: Any, base: FinetuneConfig, result: dict[str, Any]) -> dict[str, Any]:
    """The learning curve: one run per (init, size, seed); the JSON is rewritten after each run."""
    # A checkpoint of ours comes with a random model of its own shape: pretraining's gain is the gap.
    ours = [f"random:{args.ours}", args.ours] if args.ours else []
    inits = args.inits.split(",") if args.inits else [RANDOM, MINILM] + ours
    curve: dict[str, Any] = {"inits": inits, "sizes": args.sizes, "seeds": args.seeds, "runs": [], "summary": []}
    result["curve"] = curve

    def save(row: dict[str, Any]) -> None:
        curve["runs"].append(row)
        write_json_atomic(args.out, result)

    curve_base = replace(base, max_validation=args.curve_validation)
    runs = learning_curve(inits, data, sizes=args.sizes, seeds=args.seeds, base=curve_base, on_run=save)
    curve["summary"] = curve_summary(runs).to_dict("records")
    return curve


def _print_tables(result: dict[str, Any]) -> None:
    main = result.get("main")
    if main:
        print(f"\nSST-2 (GLUE dev, {next(iter(main['runs'].values()))['n_test']} sentences), "
              f"budget {main['budget_minutes']:g} min")
        print(f"{'init':<24} {'n_train':>7} {'steps':>6} {'epochs':>6} {'train min':>9} {'wall min':>8} "
              f"{'val acc':>7} {'accuracy':>8} {'macro-F1':>8}")
        for init, r in main["runs"].items():
            print(f"{init:<24} {r['n_train']:>7} {r['steps']:>6} {r['epochs']:>6.2f} {r['train_seconds'] / 60:>9.1f} "
                  f"{r['wall_seconds'] / 60:>8.1f} {r['best_validation_accuracy']:>7.4f} {r['accuracy']:>8.4f} "
                  f"{r['macro_f1']:>8.4f}")
    curve = result.get("curve")
    if curve:
        print(f"\nlearning curve (seeds {','.join(map(str, curve['seeds']))}; mean ± sample std)")
        print(f"{'init':<24} {'n_train':>7} {'runs':>4} {'accuracy':>17} {'macro-F1':>17}")
        for row in curve["summary"]:
            print(f"{row['init']:<24} {row['n_train']:>7} {row['runs']:>4} "
                  f"{row['accuracy_mean']:>8.4f} ± {row['accuracy_std']:.4f} {row['macro_f1_mean']:>8.4f} ± "
                  f"{row['macro_f1_std']:.4f}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the parts asked for, write the JSON and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 dir (train/validation/test.tsv).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON with every figure.")
    parser.add_argument("--runs", default="runs/finetune_sst2", help="Dir for each main run's results and predictions.")
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="Training minutes of the minilm run.")
    parser.add_argument("--random-budget-minutes", type=float, default=0.0, help="Same for random (0: as minilm).")
    parser.add_argument("--train-size", type=int, default=0, help="Training sample (0: what the budget covers in --epochs).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Passes over the sample within the budget.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--sizes", type=_ints, default=[100, 300, 1000], help="Learning-curve sizes (0 = all).")
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="Learning-curve seeds.")
    parser.add_argument("--curve-validation", type=int, default=500, help="Validation phrases per curve run.")
    parser.add_argument("--ours", default="", help="A workbench pretraining run or checkpoint dir to add to the curve.")
    parser.add_argument("--inits", default="", help="Curve inits, comma-separated (default: random, minilm and --ours with random:OURS).")
    parser.add_argument("--skip-main", action="store_true", help="Only the learning curve.")
    parser.add_argument("--skip-curve", action="store_true", help="Only minilm vs random.")
    args = parser.parse_args(argv)
    if not (args.data / "test.tsv").is_file():
        print(f"error: {args.data}/test.tsv not found; pass --data DIR with SST-2's tsv files", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    base = FinetuneConfig(task=str(args.data), batch_size=args.batch_size, lr=args.lr, progress=False)
    data = load_task(base)  # read and split once for every run: the same test set for all
    # Parts not re-run (--skip-main / --skip-curve) are kept from an earlier run's JSON.
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result: dict[str, Any] = {
        **{k: previous[k] for k in ("main", "curve") if k in previous},
        "data": str(args.data), "splits": data.sizes, "config": vars(args) | {"data": str(args.data), "out": str(args.out)},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available(), "load_average": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.skip_main:
        result["main"] = run_main(args, data, base)
        write_json_atomic(args.out, result)  # keep part 1 if part 2 is interrupted
    if not args.skip_curve:
        run_curve(args, data, base, result)
    result["wall_minutes"] = (time.perf_counter() - start) / 60
    result["machine"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    _print_tables(result)
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
