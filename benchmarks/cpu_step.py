"""The CPU pretraining step: seconds per step and model FLOP/s as a fraction of the measured matmul peak.

For each preset (tiny, mini), sequence length and precision, a workbench pretraining run of
``--steps`` optimizer steps (after ``--warmup`` untimed ones; data, masking and the optimizer
included) in each variant: ``auto`` (the default step: ``resolve_attention``'s kernel, eager
matmul-softmax on CPU), ``eager``, ``sdpa`` (the two kernels forced) and ``compile``
(``TrainConfig.compile``: inductor on the encoder's dense blocks). Short runs favour whichever
variant runs later in a cell (15 steps after 5 put sdpa 1.10-1.12x ahead where 40 after 10, in
both orders, read 0.81-1.06x), so keep ``--warmup`` at 10 or more and compare in both orders.
Model FLOPs count what the loss needs (``pretrain_throughput.model_flops_per_token``); the peak is
a square fp32 (or bf16) matmul on the same threads, measured in this run (it moved from 136 to 203
GFLOP/s fp32 between runs on one machine), so the fraction says how far the step is from what the
CPU multiplied in that run.

    python benchmarks/cpu_step.py                       # tiny and mini, seq 128 and 64, fp32
    python benchmarks/cpu_step.py --presets tiny --precisions fp32,bf16 --variants eager
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from workbench.config import DataConfig, MaskingConfig, TrainConfig
from workbench.data.examples import prepare_dataset
from workbench.training.checkpoint import write_json_atomic
from workbench.training.engine import cpu_supports_bf16
from workbench.training.pretraining import pretrain

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_throughput import model_flops_per_token  # noqa: E402

__all__ = ["cpu_matmul_peak", "main", "step_seconds"]

DEFAULT_OUT = Path(__file__).parent / "results" / "cpu_step.json"
VARIANTS = {"auto": {}, "eager": {"attention": "eager"}, "sdpa": {"attention": "sdpa"}, "compile": {"compile": True}}


def cpu_matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 8) -> float:
    """The best FLOP/s of an n x n matmul in ``dtype`` on this process's threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def step_seconds(preset: str, seq: int, precision: str, variant: str, steps: int, warmup: int,
                 batch: int, cache: Path) -> tuple[float, Any]:
    """Median seconds per optimizer step of one run, and its model config."""
    data = prepare_dataset(DataConfig(max_seq_length=seq, cache_dir=str(cache)))
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(out=out, preset=preset, max_steps=warmup + steps, batch_size=batch, precision=precision,
                          eval_every=0, save_every=0, report_to="none", progress=False, overwrite=True,
                          warmup_fraction=0.0, **VARIANTS[variant])
        result = pretrain(cfg, MaskingConfig(), data=data)
    times = [h["step_seconds"] for h in result.history if h.get("type") == "train"][warmup:]
    return statistics.median(times), result.model.config


def main(argv: list[str] | None = None) -> int:
    """Time every combination, write the JSON and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,mini")
    p.add_argument("--seqs", default="128,64")
    p.add_argument("--precisions", default="fp32")
    p.add_argument("--variants", default="eager,sdpa", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10, help="untimed steps (compilation and warm-up happen here)")
    p.add_argument("--cache", type=Path, default=Path("data/cache"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    precisions = args.precisions.split(",")
    if "bf16" in precisions and not cpu_supports_bf16():
        raise SystemExit("error: this CPU has no bf16 (AVX512-BF16/AMX); pass --precisions fp32")
    peaks = {prec: cpu_matmul_peak(torch.float32 if prec == "fp32" else torch.bfloat16) for prec in precisions}
    rows = []
    for preset in args.presets.split(","):
        for seq in map(int, args.seqs.split(",")):
            for prec in precisions:
                for variant in args.variants.split(","):
                    sec, config = step_seconds(preset, seq, prec, variant, args.steps, args.warmup, args.batch, args.cache)
                    flops = model_flops_per_token(config, seq, MaskingConfig().mask_rate) * args.batch * seq / sec
                    rows.append({"preset": preset, "seq": seq, "precision": prec, "variant": variant, "batch": args.batch,
                                 "step_seconds": sec, "model_flops_per_second": flops, "peak": peaks[prec],
                                 "fraction_of_peak": flops / peaks[prec]})
                    print(f"{preset:<5} seq {seq:<4} {prec:<5} {variant:<8} {sec:.4f} s/step  "
                          f"{flops / 1e9:7.1f} GFLOP/s  {flops / peaks[prec]:.1%} of the {peaks[prec] / 1e9:.0f} GFLOP/s matmul peak",
                          flush=True)
    result = {"machine": {"cpu": platform.processor(), "threads": torch.get_num_threads(), "cpu_bf16": cpu_supports_bf16()},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(f"\n{'preset':<7}{'seq':>5}{'prec':>6}{'variant':>9}{'s/step':>9}{'of peak':>9}  ratio to eager")
    for r in rows:
        base = next(b for b in rows if (b["preset"], b["seq"], b["precision"], b["variant"]) ==
                    (r["preset"], r["seq"], r["precision"], "eager")) if "eager" in args.variants else r
        print(f"{r['preset']:<7}{r['seq']:>5}{r['precision']:>6}{r['variant']:>9}{r['step_seconds']:>9.4f}"
              f"{r['fraction_of_peak']:>9.1%}  {base['step_seconds'] / r['step_seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
