"""The training engine: param groups, precision, autocast, LR schedule and the optimizer step."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertForPreTraining

from workbench.config import TrainConfig
from workbench.errors import WorkbenchError
from workbench.training.engine import (
    Engine,
    TrainingDiverged,
    autocast,
    configure_optimizer,
    cpu_supports_bf16,
    lr_multiplier,
    resolve_attention,
    resolve_precision,
)
from workbench.training.model import preset_config


def _tiny_bert() -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(preset_config("tiny", 100, 0, hidden_size=16, intermediate_size=32,
                                            num_attention_heads=2))


def _engine(model: torch.nn.Module, **kwargs) -> Engine:
    engine = Engine("fp32")
    engine.prepare(model, lr=0.1, weight_decay=0.01, total=10, warmup=2, **kwargs)
    return engine


# ---------------------------------------------------------------------------------- param groups
def test_biases_and_layernorm_weights_get_no_weight_decay():
    model = _tiny_bert()
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-6)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert not any(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied: once
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6


def test_frozen_parameters_are_left_out():
    model = _tiny_bert()
    for p in model.cls.seq_relationship.parameters():
        p.requires_grad_(False)
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.01)
    kept = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in kept for p in model.cls.seq_relationship.parameters())


# ------------------------------------------------------------------------------------- precision
def test_linear_schedule_warms_up_then_decays():
    f = [lr_multiplier(s, 100, 10, "linear") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and all(a > b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] == pytest.approx(1 / 90) and min(f) > 0


def test_one_cycle_schedule():
    f = [lr_multiplier(s, 100, 30, "one_cycle") for s in range(100)]
    assert f[0] < 0.1 and f[29] == pytest.approx(1.0) and max(f) == pytest.approx(1.0)
    assert f[-1] < 1e-3 and all(a >= b for a, b in zip(f[29:], f[30:], strict=False))


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")


def test_attention_resolution():
    assert resolve_attention("auto", torch.device("cpu")) == "eager"  # CPU flash backward is slower
    assert resolve_attention("auto", torch.device("cuda")) == "sdpa"
    assert resolve_attention("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(WorkbenchError, match="attention 'flash' is not one of auto, sdpa, eager"):
        TrainConfig(attention="flash")


def test_autocast_bf16_on_cpu():
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with autocast("bf16", torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert (a @ b).dtype == torch.float32


# ------------------------------------------------------------------------------------------ step
def test_step_clips_steps_the_schedule_and_clears_gradients():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    engine = _engine(model, max_grad_norm=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.full((3, 4), 10.0)).pow(2).sum()
    metrics = engine.step(loss, lambda: {"loss": float(loss.detach())})
    assert metrics["loss"] == pytest.approx(float(loss.detach())) and metrics["grad_norm"] > 0.5  # the norm before clipping
    assert metrics["lr"] == pytest.approx(0.1 * lr_multiplier(0, 10, 2, "linear"))
    assert engine.scheduler.get_last_lr()[0] == pytest.approx(0.1 * lr_multiplier(1, 10, 2, "linear"))
    assert all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("poison", ["loss", "grad"])
def test_nonfinite_loss_or_gradient_raises_and_leaves_the_weights(poison):
    model = torch.nn.Linear(4, 1)
    engine = _engine(model)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.ones(2, 4)).sum() * (float("inf") if poison == "grad" else 1.0)
    reported = math.nan if poison == "loss" else 1.0
    with pytest.raises(TrainingDiverged, match="non-finite"):
        engine.step(loss, lambda: {"loss": reported})
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert engine.scheduler.last_epoch == 0  # no step was taken


def test_nonfinite_raises_the_callers_error():
    model = torch.nn.Linear(4, 1)
    engine = _engine(model, on_nonfinite=lambda loss, grad: WorkbenchError(f"loss {loss} at step 1"))
    with pytest.raises(WorkbenchError, match="loss nan at step 1"):
        engine.step(model(torch.ones(1, 4)).sum(), lambda: {"loss": math.nan})


def test_engine_state_round_trips():
    model = torch.nn.Linear(4, 1)
    engine = _engine(model)
    loss = model(torch.ones(2, 4)).sum()
    engine.step(loss, lambda: {"loss": float(loss.detach())})
    again = _engine(torch.nn.Linear(4, 1))
    again.load_state_dict(engine.state_dict())
    assert again.scheduler.last_epoch == 1 and again.optimizer.state_dict()["state"]
