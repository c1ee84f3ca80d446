"""Pretraining throughput: workbench's loop against the Hugging Face Trainer baseline.

The baseline is ``BertForPreTraining`` (full-vocabulary MLM head on every position) with
``DataCollatorForLanguageModeling`` plus a small wrapper adding ``next_sentence_label``, run by
``Trainer``. Workbench runs the same preset, data, batch, optimiser and schedule with its sparse
MLM head. Both use bf16 autocast where the hardware has it (``--precision``). The runs are
interleaved in one process: the Trainer's step callback hands over every ``--segment`` steps
to a workbench segment and to a "compute limit" segment (workbench's pure model step repeated on
one fixed batch: forward, backward, clip, AdamW), so drift in machine load hits all three alike.
The first segment of each is warm-up and not timed; tokens/s are medians over segments, and
the ratio and overhead are medians of within-round ratios, robust to other jobs' load bursts.
The overhead compares step times: every batch is padded to the same (batch, seq) shape, so a
step costs the same whatever its count of real tokens, and the fixed batch (4,091 real tokens
of 4,096 with the defaults, against 3,954 on average) would otherwise read as extra speed.
Held-out losses after equal steps use the same validation pairs and masks for both models.

    python benchmarks/pretrain_throughput.py            # mini, seq 128, batch 32, 60 steps
    python benchmarks/pretrain_throughput.py --steps 90 --segment 6 --out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psutil
import torch
from transformers import (
    BertForPreTraining,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from workbench.config import DataConfig, MaskingConfig, TrainConfig
from workbench.data.examples import load_prepared, prepare_dataset
from workbench.data.masking import PretrainingCollator
from workbench.training.allocator import heap_in_use, retain_freed_memory
from workbench.training.engine import lr_multiplier, resolve_attention, resolve_precision
from workbench.training.model import preset_config, pretraining_loss
from workbench.training.pretraining import Pretrainer

__all__ = ["NSPCollator", "heldout_loss", "main", "matmul_peak_flops", "model_flops_per_token", "run_benchmark"]

DEFAULT_OUT = Path(__file__).parent / "results" / "pretrain_throughput.json"
# Dense bf16 tensor-core peaks from the vendors' datasheets (no sparsity), FLOP/s.
DATASHEET_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def model_flops_per_token(config: Any, seq_len: int, mask_rate: float) -> float:
    """Training FLOPs per token of workbench's step (forward + backward = 3x forward).

    Per layer and token: 24 H^2 for the QKV, output and 4H-wide FFN matmuls (2 FLOPs per
    multiply-add) and 4 S H for QK^T and attention x V. The last layer computes keys and values
    (4 H^2) for every token but the rest only at the masked tokens and [CLS] (a fraction
    mask_rate + 1/S of them). The sparse MLM head adds 2 (H^2 + H V) per masked token;
    embeddings are lookups and the NSP head is per pair (negligible). Counting only what a
    loss needs (not the padding rows the last layer also computes) keeps MFU honest.
    """
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    ffn = config.intermediate_size
    per_layer = 2 * (4 * h * h + 2 * h * ffn) + 4 * seq_len * h
    kept = min(mask_rate + 1 / seq_len, 1.0)
    last = 4 * h * h + kept * (per_layer - 4 * h * h)
    head = mask_rate * 2 * (h * h + h * vocab)
    return 3.0 * ((layers - 1) * per_layer + last + head)


def matmul_peak_flops(n: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 matmul FLOP/s on the current CUDA device (the practical ceiling)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


class NSPCollator:
    """DataCollatorForLanguageModeling plus next_sentence_label; records each batch's tokens."""

    def __init__(self, tokenizer: Any, mask_rate: float) -> None:
        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_rate, pad_to_multiple_of=8)
        self.tokens: deque[int] = deque()  # per collated batch, consumed in order by the timer

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        labels = torch.tensor([e["next_sentence_label"] for e in examples], dtype=torch.long)
        batch = self.mlm([{k: v for k, v in e.items() if k != "next_sentence_label"} for e in examples])
        batch["next_sentence_label"] = labels
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


class MemorySampler:
    """Peak RSS, heap in use (and CUDA memory) per phase, sampled by a background thread.

    With the heap retained (workbench.training.allocator) RSS only grows, so a later phase's RSS
    includes an earlier one's freed memory; the heap in use (live allocations) does not.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.phase, self.peak_rss, self.peak_heap, self.peak_cuda = "setup", {}, {}, {}
        self.proc, self.interval = psutil.Process(), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss, heap = self.proc.memory_info().rss, heap_in_use()
            self.peak_rss[self.phase] = max(self.peak_rss.get(self.phase, 0), rss)
            if heap is not None:
                self.peak_heap[self.phase] = max(self.peak_heap.get(self.phase, 0), heap)

    def enter(self, phase: str) -> None:
        """Attribute samples from now on to ``phase``."""
        if torch.cuda.is_available():
            old = self.phase
            self.peak_cuda[old] = max(self.peak_cuda.get(old, 0), torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        self.phase = phase

    def stop(self) -> None:
        """Stop sampling."""
        self.enter("done")
        self._stop.set()
        self._thread.join()


@torch.no_grad()
def heldout_loss(model: BertForPreTraining, dataset: Any, tokenizer: Any, masking: MaskingConfig,
                 precision: str, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """MLM loss, NSP loss and MLM accuracy on ``dataset`` with fixed masks (the same for any model)."""
    collator = PretrainingCollator(tokenizer, masking, seed=2024)
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    for start in range(0, len(dataset), batch_size):
        batch = collator(dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset))))))
        batch = {k: v.to(device) for k, v in batch.items()}
        with cast:
            out = pretraining_loss(model, **batch)
        sums += torch.stack([out.mlm_loss_sum, out.mlm_count, out.mlm_correct, out.nsp_loss_sum,
                             out.nsp_count]).double().cpu()
    model.train()
    mlm_sum, mlm_n, mlm_ok, nsp_sum, nsp_n = sums.tolist()
    return {"mlm_loss": mlm_sum / mlm_n, "nsp_loss": nsp_sum / max(nsp_n, 1),
            "loss": mlm_sum / mlm_n + nsp_sum / max(nsp_n, 1), "mlm_accuracy": mlm_ok / mlm_n}


class _Interleave(TrainerCallback):
    """Runs a workbench segment and a compute-limit segment after every ``segment`` Trainer steps."""

    def __init__(self, bench: dict[str, Any]) -> None:
        self.b = bench
        self.resumed = time.perf_counter()
        self.train_losses: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102 - Trainer hook
        if logs and "loss" in logs:
            self.train_losses.append((state.global_step, float(logs["loss"])))

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 - Trainer hook
        b, seg = self.b, self.b["segment"]
        if state.global_step % seg:
            return
        now = time.perf_counter()
        tokens = sum(b["collator"].tokens.popleft() for _ in range(seg))
        b["times"]["baseline"].append((now - self.resumed, tokens))
        wb, ref, mem = b["workbench"], b["reference"], b["memory"]
        mem.enter("workbench")
        start, tokens_before = time.perf_counter(), wb.tokens
        wb.train(until=wb.step + seg)
        b["times"]["workbench"].append((time.perf_counter() - start, wb.tokens - tokens_before))
        mem.enter("compute_limit")
        start = time.perf_counter()
        for _ in range(seg):
            ref.train_step(b["fixed_batch"])
        b["times"]["compute_limit"].append((time.perf_counter() - start, seg * b["fixed_tokens"]))
        mem.enter("baseline")
        self.resumed = time.perf_counter()


def _rates(samples: list[tuple[float, int]]) -> list[float]:
    return [tokens / seconds for seconds, tokens in samples[1:]]  # the first segment is warm-up


def run_benchmark(preset: str = "mini", batch_size: int = 32, steps: int = 60, segment: int = 4,
                  precision: str = "auto", lr: float = 1e-3, data_dir: str | None = None,
                  seed: int = 42, compile: bool = False) -> dict[str, Any]:
    """Interleave the three runs and return the measurements."""
    if steps % segment or steps // segment < 2:
        raise SystemExit(f"--steps {steps} must be a multiple of --segment {segment}, at least twice it")
    memory = MemorySampler()
    heap = retain_freed_memory()  # before either side allocates: both get the same heap
    # BERT's 30,522-piece uncased vocabulary (Turc et al.'s presets use it), not the default
    # corpus-trained 8k one: the full-vocabulary head is what the baseline pays for.
    data = load_prepared(data_dir) if data_dir else prepare_dataset(DataConfig(tokenizer="builtin:minilm", dupe_factor=1))
    tokenizer, masking = data.tokenizer, MaskingConfig(mask_rate=0.15)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = resolve_precision(precision, device)
    columns = ["input_ids", "token_type_ids", "next_sentence_label"]
    train_set = data.dataset["train"].select_columns(columns)
    warmup = int(round(0.1 * steps))
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))

    # Baseline first: its Accelerator fixes accelerate's process-wide mixed precision (bf16).
    torch.manual_seed(seed)
    config = preset_config(preset, len(tokenizer), int(tokenizer.pad_token_id), dropout=0.0)
    baseline_model = BertForPreTraining(config)
    attention = resolve_attention("auto", device)  # workbench's default, faster for both sides
    baseline_model.set_attn_implementation(attention)
    collator = NSPCollator(tokenizer, masking.mask_rate)
    args = TrainingArguments(
        output_dir=str(tmp / "trainer"), per_device_train_batch_size=batch_size, max_steps=steps,
        learning_rate=lr, warmup_steps=warmup, lr_scheduler_type="linear", weight_decay=0.01,
        adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=1.0,
        bf16=resolved == "bf16", use_cpu=device.type == "cpu", logging_steps=segment,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        seed=seed, remove_unused_columns=False, torch_compile=compile,
    )
    # The same AdamW groups and LR schedule as workbench's, so "loss after equal steps" compares
    # the training loops, not two warm-up conventions.
    decay = [p for n, p in baseline_model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in baseline_model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, steps, warmup, "linear"))
    trainer = Trainer(model=baseline_model, args=args, train_dataset=train_set, data_collator=collator,
                      optimizers=(optimizer, scheduler))

    def workbench(out: str) -> Pretrainer:
        cfg = TrainConfig(out=out, preset=preset, max_steps=steps, batch_size=batch_size, lr=lr,
                          precision=resolved, eval_every=0, save_every=0, progress=False, seed=seed,
                          warmup_fraction=warmup / steps, dropout=0.0, compile=compile)
        return Pretrainer(cfg, masking, data)

    wb, ref = workbench(str(tmp / "workbench")), workbench(str(tmp / "reference"))
    fixed = next(iter(ref.loader))
    bench = {"segment": segment, "collator": collator, "workbench": wb, "reference": ref,
             "memory": memory, "fixed_batch": fixed, "fixed_tokens": int(fixed["attention_mask"].sum()),
             "times": {"baseline": [], "workbench": [], "compute_limit": []}}
    hook = _Interleave(bench)
    trainer.add_callback(hook)
    memory.enter("baseline")
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    memory.stop()

    val = data.dataset["validation"].select_columns(columns)
    held_wb = heldout_loss(wb.model, val, tokenizer, masking, resolved, device)
    held_base = heldout_loss(baseline_model, val, tokenizer, masking, resolved, device)
    wb_train = [m["loss"] for m in wb.history if m["type"] == "train"][-segment:]
    # Medians over segments, and ratios within a round (segments minutes apart see different
    # machine load; segments of one round see about the same): robust to other jobs' bursts.
    seg = {k: _rates(v) for k, v in bench["times"].items()}
    rates = {k: statistics.median(v) for k, v in seg.items()}
    ratio = statistics.median(w / b for w, b in zip(seg["workbench"], seg["baseline"], strict=True))
    step_seconds = {k: [s for s, _ in v[1:]] for k, v in bench["times"].items()}  # per segment, same steps
    overhead = statistics.median(1 - c / w for w, c in zip(step_seconds["workbench"], step_seconds["compute_limit"], strict=True))
    totals = {k: sum(t for _, t in v[1:]) / sum(s for s, _ in v[1:]) for k, v in bench["times"].items()}
    gib = 2**30
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "preset": preset, "seq_len": data.stats["max_seq_length"], "batch_size": batch_size,
        "steps": steps, "segment_steps": segment, "precision": resolved, "compile": compile,
        "attention": attention, "malloc_retains_freed_memory": heap,
        "workbench_tokens_per_s": rates["workbench"],
        "baseline_tokens_per_s": rates["baseline"],
        "ratio": ratio,
        "compute_limit_tokens_per_s": rates["compute_limit"],
        "overhead_fraction": overhead,
        "aggregate_tokens_per_s": totals,
        "segment_tokens_per_s": {k: [t / s for s, t in v] for k, v in bench["times"].items()},
        "peak_rss_gib": {k: v / gib for k, v in memory.peak_rss.items() if k in ("baseline", "workbench", "compute_limit")},
        "peak_heap_in_use_gib": {k: v / gib for k, v in memory.peak_heap.items() if k in ("baseline", "workbench", "compute_limit")},
        "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "workbench_train_loss_last_segment": statistics.fmean(wb_train),
        "baseline_train_loss_last_segment": hook.train_losses[-1][1] if hook.train_losses else math.nan,
        "workbench_heldout": held_wb,
        "baseline_heldout": held_base,
        "wall_seconds": total,
    }
    flops_per_token = model_flops_per_token(config, data.stats["max_seq_length"], masking.mask_rate)
    result["model_tflops_per_token"] = flops_per_token / 1e12
    result["workbench_model_tflops"] = flops_per_token * rates["workbench"] / 1e12
    if device.type == "cuda":
        result["peak_cuda_gib"] = {k: v / gib for k, v in memory.peak_cuda.items()}
        name = torch.cuda.get_device_name()
        datasheet = next((v for k, v in DATASHEET_BF16_PEAK.items() if k in name), None)
        measured = matmul_peak_flops()
        result["matmul_peak_tflops"] = measured / 1e12
        result["mfu_vs_measured_matmul"] = flops_per_token * rates["workbench"] / measured
        if datasheet is not None:
            result["datasheet_bf16_peak_tflops"] = datasheet / 1e12
            result["mfu"] = flops_per_token * rates["workbench"] / datasheet
            result["compute_limit_mfu"] = flops_per_token * rates["compute_limit"] / datasheet
    return result


def _table(r: dict[str, Any]) -> str:
    rss, heap = r["peak_rss_gib"], r.get("peak_heap_in_use_gib", {})
    rows = [
        ("", "workbench", "baseline (Trainer)", "compute limit"),
        ("tokens/s", f"{r['workbench_tokens_per_s']:,.0f}", f"{r['baseline_tokens_per_s']:,.0f}",
         f"{r['compute_limit_tokens_per_s']:,.0f}"),
        ("peak RSS GiB", f"{rss.get('workbench', 0):.2f}", f"{rss.get('baseline', 0):.2f}",
         f"{rss.get('compute_limit', 0):.2f}"),
        ("peak heap in use GiB", *(f"{heap[k]:.2f}" if k in heap else "n/a" for k in ("workbench", "baseline", "compute_limit"))),
        (f"train loss (steps {r['steps'] - r['segment_steps'] + 1}-{r['steps']})",
         f"{r['workbench_train_loss_last_segment']:.3f}", f"{r['baseline_train_loss_last_segment']:.3f}", ""),
        (f"held-out loss @{r['steps']}", f"{r['workbench_heldout']['loss']:.3f}",
         f"{r['baseline_heldout']['loss']:.3f}", ""),
        (f"held-out MLM acc @{r['steps']}", f"{r['workbench_heldout']['mlm_accuracy']:.3f}",
         f"{r['baseline_heldout']['mlm_accuracy']:.3f}", ""),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)) for row in rows]
    lines.append(f"ratio {r['ratio']:.2f}x   overhead vs compute limit {100 * r['overhead_fraction']:.1f}%   "
                 f"({r['preset']}, seq {r['seq_len']}, batch {r['batch_size']}, {r['precision']}, {r.get('attention', 'sdpa')} attention"
                 f"{', compiled' if r['compile'] else ''}, {r['device']})")
    lines.append(f"workbench model FLOPs {r['workbench_model_tflops']:.2f} TFLOP/s")
    if "mfu" in r:
        lines[-1] += (f"   MFU {100 * r['mfu']:.1f}% of the {r['datasheet_bf16_peak_tflops']:.0f} TFLOP/s datasheet bf16 peak "
                      f"({100 * r['mfu_vs_measured_matmul']:.1f}% of a measured {r['matmul_peak_tflops']:.0f} TFLOP/s matmul); "
                      f"compute limit {100 * r['compute_limit_mfu']:.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mini")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="steps of each run (a multiple of --segment)")
    p.add_argument("--segment", type=int, default=4, help="steps per interleaved timed segment")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--compile", action="store_true", help="torch.compile both (the warm-up segment absorbs compile time)")
    p.add_argument("--data", default=None, help="a prepared dataset dir (default: builtin Wikipedia, NSP, builtin:minilm's 30k vocab)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    result = run_benchmark(a.preset, a.batch_size, a.steps, a.segment, a.precision, a.lr, a.data,
                           compile=a.compile)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    print(f"results: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
