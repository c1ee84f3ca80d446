"""Which pretraining recipe answers "did pretraining help?" reliably within the demo's budget?

Each recipe pretrains preset tiny on ``builtin:wikipedia`` (MLM+NSP) over several pretraining
seeds, and each checkpoint is probed on ``builtin:wikipedia-topics`` (the articles pretraining held
out) against its random twin exactly as notebook 04 does in the demo (the whole task, 5 probe
seeds). Per run: the pretraining wall time, held-out NSP and MLM accuracy, the probe accuracy and
the paired gain with its CI over probe seeds. Per recipe: the gain's mean and 95% CI over
pretraining seeds (what a recipe promises, as opposed to one run's probe-seed CI) and how many runs
read "gain".

Recipes spend about the same pretraining time (``--budget`` seconds of fp32 step time on this
machine, from a short timing of each recipe's step); ``--steps`` fixes the steps instead.

    python benchmarks/demo_recipe.py --recipes demo,seq64 --seeds 0,1,2 --precision fp32
    python benchmarks/demo_recipe.py --recipes seq64 --steps 3000 --seeds 0,1,2 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench.config import DataConfig, FinetuneConfig, MaskingConfig, ProbeConfig, TrainConfig
from workbench.data.examples import prepare_dataset
from workbench.evaluation.heldout import BUILTIN_WIKIPEDIA_TOPICS
from workbench.evaluation.probes import probe_gain, probe_models
from workbench.evaluation.stats import describe_difference, mean_ci
from workbench.evaluation.tasks import load_task
from workbench.training.checkpoint import write_json_atomic
from workbench.training.engine import cpu_supports_bf16
from workbench.training.pretraining import pretrain

__all__ = ["RECIPES", "main", "recipe_configs", "run_one", "step_seconds"]

HERE = Path(__file__).parent
DEFAULT_OUT = HERE / "results" / "demo_recipe.json"
# name -> (DataConfig overrides, TrainConfig overrides, MaskingConfig overrides, default steps)
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]] = {
    "demo": ({}, {"lr": 2e-3}, {}, 1500),  # the demo until now: batch 64 x 128 tokens
    "default": ({}, {}, {}, 3500),  # exactly `workbench pretrain`'s defaults: 3,500 x 64 x 128 tokens
    "seq64": ({"max_seq_length": 64}, {"lr": 2e-3}, {}, 3000),
    "seq64-lr3": ({"max_seq_length": 64}, {"lr": 3e-3}, {}, 3000),
    "seq64-b32": ({"max_seq_length": 64}, {"lr": 2e-3, "batch_size": 32}, {}, 5000),
    "seq128-b32": ({}, {"lr": 2e-3, "batch_size": 32}, {}, 2500),
    "seq64-mask30": ({"max_seq_length": 64}, {"lr": 2e-3}, {"mask_rate": 0.3}, 3000),
    # 40 pairings instead of 10: about 230k distinct pairs, so 3,500 x 64 sees each about once
    "seq64-5000": ({"max_seq_length": 64}, {"lr": 2e-3}, {}, 5000),
    "seq64-8000": ({"max_seq_length": 64}, {"lr": 2e-3}, {}, 8000),
    "seq64-dupe40": ({"max_seq_length": 64, "dupe_factor": 40}, {"lr": 2e-3}, {}, 3500),
    "seq64-b32-dupe40": ({"max_seq_length": 64, "dupe_factor": 40}, {"lr": 2e-3, "batch_size": 32}, {}, 5800),
}


def recipe_configs(name: str, seed: int, steps: int, precision: str, work: Path
                   ) -> tuple[DataConfig, TrainConfig, MaskingConfig]:
    """The data, training and masking configs of recipe ``name`` at ``seed``."""
    data_over, train_over, mask_over, _ = RECIPES[name]
    data = DataConfig(cache_dir=str(work / "cache"), **data_over)
    train = TrainConfig(out=str(work / f"{name}-{precision}-s{seed}"), max_steps=steps, seed=seed,
                        precision=precision, eval_every=0, save_every=0, report_to="none", progress=False,
                        overwrite=True, **train_over)
    return data, train, MaskingConfig(**mask_over)


def step_seconds(name: str, precision: str, work: Path, steps: int = 30, warmup: int = 10) -> float:
    """Recipe ``name``'s optimizer step: mean seconds over ``steps`` steps after ``warmup`` (data and masking included)."""
    data_cfg, train, mask = recipe_configs(name, 0, warmup + steps, precision, work)
    result = pretrain(replace(train, out=str(work / "timing")), mask, data=prepare_dataset(data_cfg))
    times = [h["step_seconds"] for h in result.history if h.get("type") == "train"][warmup:]
    return sum(times) / len(times)


def run_one(name: str, seed: int, steps: int, precision: str, work: Path, probes: ProbeConfig,
            twins: dict[str, Any]) -> dict[str, Any]:
    """Pretrain recipe ``name`` at ``seed`` and probe its checkpoint against the random twin."""
    data_cfg, train, mask = recipe_configs(name, seed, steps, precision, work)
    data = prepare_dataset(data_cfg)
    start = time.perf_counter()
    result = pretrain(train, mask, data=data)
    seconds = time.perf_counter() - start
    ckpt = str(result.checkpoint)
    task = load_task(FinetuneConfig(model=ckpt, task=BUILTIN_WIKIPEDIA_TOPICS))
    runs = probe_models([ckpt], task, probes)
    key = f"{data_cfg.max_seq_length}"  # the twin's shape and tokenizer do not depend on the recipe's seed
    if key not in twins:
        twins[key] = probe_models([f"random:{ckpt}"], task, probes)
    twin = twins[key].assign(init=f"random:{ckpt}")
    gain = probe_gain(pd.concat([runs, twin]), ckpt, f"random:{ckpt}")
    ev = result.eval
    return {"recipe": name, "seed": seed, "precision": ev.get("precision", precision), "steps": steps,
            "pretrain_seconds": seconds, "nsp_accuracy": ev.get("nsp_accuracy"),
            "mlm_accuracy": ev.get("mlm_accuracy"), "probe_accuracy": gain["accuracy"][0],
            "twin_accuracy": gain["baseline_accuracy"][0], "gain": gain["gain"]}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (recipe, precision): mean and 95% CI of the gain over pretraining seeds, and verdict counts."""
    out = []
    for key in dict.fromkeys((r["recipe"], r["precision"], r["steps"]) for r in rows):
        part = [r for r in rows if (r["recipe"], r["precision"], r["steps"]) == key]
        gains = [r["gain"]["mean"] for r in part]
        mean, low, high = mean_ci(gains)  # one run: (gain, nan, nan)
        out.append({"recipe": key[0], "precision": key[1], "steps": key[2], "runs": len(part),
                    "gain_mean": mean, "gain_low": low, "gain_high": high,
                    "runs_with_gain": sum(r["gain"]["verdict"] == "gain" for r in part),
                    "nsp_mean": sum(r["nsp_accuracy"] for r in part) / len(part),
                    "pretrain_seconds_mean": sum(r["pretrain_seconds"] for r in part) / len(part)})
    return out


def print_table(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    """The runs, then the recipes."""
    print(f"{'recipe':<14}{'prec':<6}{'steps':>6}{'seed':>5}{'sec':>7}{'NSP':>7}{'MLM':>7}{'probe':>7}{'twin':>7}  gain (probe-seed CI)")
    for r in rows:
        print(f"{r['recipe']:<14}{r['precision']:<6}{r['steps']:>6}{r['seed']:>5}{r['pretrain_seconds']:>7.0f}"
              f"{r['nsp_accuracy']:>7.3f}{r['mlm_accuracy']:>7.3f}{r['probe_accuracy']:>7.3f}{r['twin_accuracy']:>7.3f}"
              f"  {describe_difference(r['gain'])}")
    print(f"\n{'recipe':<14}{'prec':<6}{'steps':>6}{'runs':>5}{'sec':>7}{'NSP':>7}  gain over pretraining seeds (95% CI), runs reading gain")
    for s in summary:
        print(f"{s['recipe']:<14}{s['precision']:<6}{s['steps']:>6}{s['runs']:>5}{s['pretrain_seconds_mean']:>7.0f}"
              f"{s['nsp_mean']:>7.3f}  {100 * s['gain_mean']:+.1f} ({100 * s['gain_low']:+.1f} to {100 * s['gain_high']:+.1f}),"
              f" {s['runs_with_gain']}/{s['runs']}")


def main(argv: list[str] | None = None) -> int:
    """Run the recipes x seeds, write the JSON and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="demo,seq64", help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--seeds", default="0,1,2", help="pretraining seeds")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=0, help="steps for every recipe (0 = each recipe's default)")
    p.add_argument("--probe-seeds", type=int, default=5)
    p.add_argument("--time-steps", action="store_true", help="also time each recipe's step")
    p.add_argument("--work", type=Path, default=HERE / "results" / "demo_recipe_work")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    names = args.recipes.split(",")
    if bad := [n for n in names if n not in RECIPES]:
        raise SystemExit(f"error: unknown recipe(s) {', '.join(bad)}; pass some of {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    result: dict[str, Any] = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                          "cpu_bf16": cpu_supports_bf16()}, "rows": [], "step_seconds": {}}
    if args.out.is_file():
        result = json.loads(args.out.read_text())  # add to an earlier run's rows
    twins: dict[str, Any] = {}
    for name in names:
        if args.time_steps:
            result["step_seconds"][f"{name}/{args.precision}"] = step_seconds(name, args.precision, args.work)
            print(f"{name} {args.precision}: {result['step_seconds'][f'{name}/{args.precision}']:.3f} s/step", flush=True)
        steps = args.steps or RECIPES[name][3]
        for seed in seeds:
            row = run_one(name, seed, steps, args.precision, args.work, ProbeConfig(probe_seeds=args.probe_seeds), twins)
            result["rows"].append(row)
            print(f"{name} seed {seed}: NSP {row['nsp_accuracy']:.3f}, probe {row['probe_accuracy']:.3f} vs "
                  f"{row['twin_accuracy']:.3f}, {describe_difference(row['gain'])}, {row['pretrain_seconds']:.0f} s", flush=True)
            result["summary"] = summarise(result["rows"])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.out, result)
    print_table(result["rows"], result["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
