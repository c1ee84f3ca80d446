"""The training engine shared by pretraining and fine-tuning: device, precision, optimizer, one step.

One place owns what both loops need and must agree on: accelerate's Accelerator (one process, one
GPU, or ``accelerate launch``: DDP), bf16/fp32 precision and its autocast, the allocator and TF32
settings, the AdamW weight-decay rule, the LR schedule, and the optimizer step (backward, clipping,
the non-finite check, optimizer and scheduler step, zero_grad), as cramming's ``engine.step``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ..errors import WorkbenchError
from .allocator import retain_freed_memory

__all__ = [
    "Engine",
    "TrainingDiverged",
    "autocast",
    "configure_optimizer",
    "cpu_supports_bf16",
    "lr_multiplier",
    "resolve_attention",
    "resolve_precision",
]

Metrics = dict[str, float | None]


class TrainingDiverged(WorkbenchError):
    """The loss or gradient became non-finite: the learning rate is too high."""


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 autocast pays."""
    if "AMX" in torch.backends.cpu.get_cpu_capability():
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`bf16` or `fp32` for ``precision`` (auto|bf16|fp32) on ``device``."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not bf16:
            raise WorkbenchError("this GPU has no bf16 support; pass --precision fp32")
        return "bf16" if precision == "bf16" or (precision == "auto" and bf16) else "fp32"
    if precision == "auto":
        return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"
    return precision


def resolve_attention(attention: str, device: torch.device) -> str:
    """The transformers attention implementation for ``attention`` (auto|sdpa|eager) on ``device``.

    auto: sdpa on CUDA (flash kernels). On CPU eager: at seq 128 in bf16, torch's CPU flash
    backward took 43 ms a layer of BERT-Mini (batch 32) against 14 ms for matmul + softmax.
    """
    if attention != "auto":
        return attention
    return "eager" if device.type == "cpu" else "sdpa"


def lr_multiplier(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR factor of optimizer step ``step`` (0-based): linear warm-up/decay, or a cosine one-cycle."""
    if schedule == "linear":
        if step < warmup:
            return (step + 1) / warmup
        return max(total - step, 0) / max(total - warmup, 1)
    # one_cycle (as torch's OneCycleLR): cosine from peak/25 up to peak, then down to peak/25e4
    low, final = 1 / 25, 1 / 25e4
    if step < warmup:
        return low + (1 - low) * (1 - math.cos(math.pi * (step + 1) / warmup)) / 2
    t = min((step - warmup + 1) / max(total - warmup, 1), 1.0)
    return final + (1 - final) * (1 + math.cos(math.pi * t)) / 2


def autocast(precision: str, device: torch.device) -> Any:
    """bf16 autocast on ``device`` for precision bf16; a no-op context for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def configure_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings, none on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied weights appear once
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW on CUDA and on CPU too: one kernel over all tensors, 6x faster than the
    # default per-tensor loop on a 2-core CPU (15 vs 88 ms a step for minilm's 23M parameters).
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError):  # a device without a fused AdamW: torch's default (foreach)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def _launched_precision(acc: Accelerator, precision: str) -> str:
    """The precision to run at, given ``--precision`` and the one `accelerate launch` may have fixed."""
    launched = str(acc.mixed_precision)
    if launched not in ("no", "bf16"):
        raise WorkbenchError(f"accelerate is set to mixed precision {launched}, which workbench does not support; "
                             "launch with --mixed_precision no (and --precision bf16 for bf16)")
    if launched == "bf16":  # accelerate autocasts the model's forward to bf16 already
        if precision == "fp32":
            raise WorkbenchError("accelerate is set to mixed precision bf16 but --precision is fp32; "
                                 "launch with --mixed_precision no, or pass --precision bf16")
        return "bf16"
    return resolve_precision(precision, acc.device)


def _tune_device(device: torch.device) -> None:
    """Process-wide speed settings that leave the maths alone (fp32 matmuls use TF32 on CUDA)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 mode: TF32 tensor cores
        torch.backends.cudnn.allow_tf32 = True
    else:
        retain_freed_memory()  # big activations reuse heap pages instead of faulting in anew


class Engine:
    """Device, precision, optimizer, LR schedule and the optimizer step of one training run."""

    def __init__(self, precision: str = "auto", log_with: list[Any] | None = None) -> None:
        # No mixed_precision argument: an Accelerator made earlier in this process (a notebook's
        # Trainer) or by `accelerate launch --mixed_precision` fixes it; _launched_precision checks.
        # log_with is per instance (AcceleratorState, the shared part, does not hold it).
        self.accelerator = Accelerator(log_with=log_with or None)
        acc = self.accelerator
        self.device, self.world, self.rank = acc.device, acc.num_processes, acc.process_index
        self.is_main = acc.is_main_process
        if self.world == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
            print("warning: launched for several processes but running in one: accelerate 1.x's "
                  "`launch --cpu --num_processes N` starts a single process (multi-CPU needs mpirun); "
                  "use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N` (torchrun, gloo)",
                  file=sys.stderr)
        self.precision = _launched_precision(acc, precision)
        _tune_device(self.device)
        self.module: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    def prepare(self, model: torch.nn.Module, *, lr: float, weight_decay: float, total: int, warmup: int,
                schedule: str = "linear", betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                max_grad_norm: float = 0.0,
                on_nonfinite: Callable[[float, float], Exception] | None = None) -> torch.nn.Module:
        """Place ``model`` (DDP when launched), make its optimizer and LR schedule; returns the module to call."""
        self.module = self.accelerator.prepare(model)  # device placement, DDP when launched
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = configure_optimizer(model, lr, weight_decay, betas, eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(s, total, warmup, schedule))
        self.max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        self.on_nonfinite = on_nonfinite or (lambda loss, grad: TrainingDiverged(
            f"non-finite loss {loss} or gradient norm {grad}; lower the learning rate"))
        return self.module

    def autocast(self) -> Any:
        """This run's autocast context (bf16, or none for fp32)."""
        return autocast(self.precision, self.device)

    @contextmanager
    def accumulate(self, last: bool) -> Iterator[None]:
        """Forward a micro-batch: without DDP's gradient all-reduce unless it is the step's ``last``."""
        with nullcontext() if last else self.accelerator.no_sync(self.module), self.autocast():
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward a micro-batch loss; bf16/fp32 need no loss scaling, so not accelerator.backward."""
        loss.backward()

    def step(self, loss: torch.Tensor, measure: Callable[[], Metrics]) -> Metrics:
        """Backward ``loss`` (the step's last micro-batch), clip, check, optimizer and scheduler step, zero_grad.

        ``measure()`` gives the step's global metrics with its ``loss``; it runs once backward and
        clipping are queued, so its host sync (an all-reduce) does not stall the GPU. A non-finite
        loss or gradient norm drops the gradients and raises ``on_nonfinite(loss, grad_norm)``.
        Returns the metrics plus ``lr`` (this step's) and ``grad_norm`` (before clipping).
        """
        self.backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        metrics = measure()
        value, grad = float(metrics["loss"]), float(grad_norm)
        if not (math.isfinite(value) and math.isfinite(grad)):
            self.optimizer.zero_grad(set_to_none=True)
            raise self.on_nonfinite(value, grad)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**metrics, "lr": lr, "grad_norm": grad}

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes (itself in one process)."""
        return self.accelerator.reduce(tensor, reduction="sum")

    def state_dict(self) -> dict[str, Any]:
        """The optimizer and scheduler state, for a checkpoint."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (extra keys are ignored)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
