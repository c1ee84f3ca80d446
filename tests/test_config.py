"""Config dataclasses: validation, flat-dict construction and type coercion."""

from __future__ import annotations

import pytest

from workbench.config import DataConfig, MaskingConfig, config_fields, config_from_dict
from workbench.errors import WorkbenchError


def test_defaults_are_valid_and_documented():
    for cls in (DataConfig, MaskingConfig):
        cls()
        for f in config_fields(cls).values():
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_mask_rate_outside_open_interval(rate):
    with pytest.raises(WorkbenchError, match="mask_rate"):
        MaskingConfig(mask_rate=rate)


def test_high_mask_rates_work():
    assert MaskingConfig(mask_rate=0.4).mask_rate == 0.4
    assert MaskingConfig(mask_token_prob=0.5, random_token_prob=0.25).keep_prob == pytest.approx(0.25)
    with pytest.raises(WorkbenchError, match="exceeds 1"):
        MaskingConfig(mask_token_prob=0.9, random_token_prob=0.2)


@pytest.mark.parametrize("kwargs, match", [
    ({"objective": "clm"}, "objective"),
    ({"max_seq_length": 4}, "max_seq_length"),
    ({"shard_size": 1}, "shard_size"),
    ({"errors": "ignore"}, "errors"),
    ({"validation_fraction": 0.7}, "validation_fraction"),
])
def test_data_config_validation(kwargs, match):
    with pytest.raises(WorkbenchError, match=match) as err:
        DataConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_from_dict_coerces_strings_and_rejects_unknown_names():
    cfg = config_from_dict(MaskingConfig, {"mask_rate": "0.3", "whole_word": "true"})
    assert cfg.mask_rate == 0.3 and cfg.whole_word is True
    cfg = config_from_dict(DataConfig, {"max_seq_length": "64", "google_compat": False})
    assert cfg.max_seq_length == 64
    with pytest.raises(WorkbenchError, match="valid names: .*mask_rate"):
        config_from_dict(MaskingConfig, {"mask_rat": 0.3})
    with pytest.raises(WorkbenchError, match="not a number"):
        config_from_dict(MaskingConfig, {"mask_rate": "high"})
    with pytest.raises(WorkbenchError, match="not an integer"):
        config_from_dict(DataConfig, {"max_seq_length": 12.5})
    with pytest.raises(WorkbenchError, match="not a boolean"):
        config_from_dict(MaskingConfig, {"whole_word": "maybe"})


def test_train_and_finetune_share_one_base_and_keep_their_own_defaults():
    from workbench.config import FinetuneConfig, LoopConfig, TrainConfig

    shared = set(config_fields(LoopConfig))
    assert len(shared) == 16 and {"lr", "weight_decay", "seed", "precision", "report_to", "out"} <= shared
    assert issubclass(TrainConfig, LoopConfig) and issubclass(FinetuneConfig, LoopConfig)
    # The shared fields are flat fields of both (one flag, one papermill parameter each) ...
    assert shared <= set(config_fields(TrainConfig)) and shared <= set(config_fields(FinetuneConfig))
    # ... with each run's own default where pretraining and fine-tuning differ.
    train, tune = TrainConfig(), FinetuneConfig()
    assert (train.lr, tune.lr) == (2e-3, 1e-4) and (train.seed, tune.seed) == (42, 0)
    assert (train.dropout, tune.dropout) == (0.0, 0.1) and (train.out, tune.out) == ("runs/pretrain", "runs/finetune")
    assert (train.weight_decay, tune.weight_decay) == (0.01, 0.01) and train.report_to == tune.report_to == "tensorboard"
    assert "then linear decay" in config_fields(FinetuneConfig)["warmup_fraction"].metadata["help"]
    assert "then linear decay" not in config_fields(TrainConfig)["warmup_fraction"].metadata["help"]
    for cls in (LoopConfig, TrainConfig, FinetuneConfig):
        assert all(f.metadata.get("help") for f in config_fields(cls).values()), cls.__name__


@pytest.mark.parametrize("kwargs, message", [
    ({"weight_decay": -0.1}, "weight_decay -0.1 must be 0 or more"),
    ({"precision": "fp16"}, "precision 'fp16' is not one of auto, bf16, fp32"),
    ({"report_to": "comet"}, "comet is not one of tensorboard, wandb, mlflow"),
    ({"dropout": 1.0}, r"dropout 1.0 must be in \[0, 1\)"),
    ({"lr": float("nan")}, "lr nan is not a finite number"),
])
def test_the_shared_checks_run_for_both_runs(kwargs, message):
    from workbench.config import FinetuneConfig, TrainConfig

    for cls in (TrainConfig, FinetuneConfig):
        with pytest.raises(WorkbenchError, match=message):
            cls(**kwargs)
    # and each run's own checks still run after them
    with pytest.raises(WorkbenchError, match="lr -1.0 must be positive; e.g. 1e-3"):
        TrainConfig(lr=-1.0)
    with pytest.raises(WorkbenchError, match="lr -1.0 must be positive; e.g. 1e-4"):
        FinetuneConfig(lr=-1.0)
    with pytest.raises(WorkbenchError, match="init 'x' is not pretrained or random"):
        FinetuneConfig(init="x")


def test_flags_list_each_commands_own_fields_first():
    from workbench.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    flags = [o for a in sub["finetune"]._actions for o in a.option_strings if o.startswith("--") and not o.startswith("--no-") and o != "--help"]
    assert flags[:4] == ["--model", "--init", "--tokenizer", "--task"]
    assert flags.index("--out") < flags.index("--lr") < flags.index("--weight-decay")  # inherited flags last
    from workbench.config import FinetuneConfig

    assert sorted(f.removeprefix("--").replace("-", "_") for f in flags) == sorted(config_fields(FinetuneConfig))
