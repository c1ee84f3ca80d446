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
