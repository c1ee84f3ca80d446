"""Student t intervals and paired differences on hand-computed examples."""

from __future__ import annotations

import math

import pytest

from workbench.errors import WorkbenchError
from workbench.evaluation.stats import (
    NO_DIFFERENCE,
    describe_difference,
    mean_ci,
    paired_difference,
    t_quantile,
)


def test_t_quantiles_match_the_table():
    # Printed t tables, two-sided 95%: 12.706 (1 dof), 4.303 (2), 2.776 (4); 99% with 4 dof: 4.604.
    assert t_quantile(0.95, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.99, 4) == pytest.approx(4.6041, abs=1e-4)


def test_mean_ci_by_hand():
    # 1..5: mean 3, sample sd sqrt(2.5), se sqrt(2.5/5) = 0.70711, half-width 2.77645 * 0.70711 = 1.96324.
    mean, low, high = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert low == pytest.approx(3 - 1.96324, abs=1e-5)
    assert high == pytest.approx(3 + 1.96324, abs=1e-5)
    _, low90, high90 = mean_ci([1, 2, 3, 4, 5], confidence=0.90)  # t_{0.95, 4} = 2.13185
    assert high90 - low90 == pytest.approx(2 * 2.13185 * math.sqrt(0.5), abs=1e-4)


def test_mean_ci_of_one_value_is_unknown_and_of_equal_values_is_a_point():
    mean, low, high = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_paired_difference_by_hand_is_a_gain():
    # Differences 0.10, 0.07, 0.08: mean 0.08333, sd 0.015275, se 0.0088192, t_{0.975, 2} 4.302653.
    d = paired_difference([0.70, 0.72, 0.69], [0.60, 0.65, 0.61])
    assert d["n"] == 3 and d["confidence"] == 0.95
    assert d["mean"] == pytest.approx(0.083333, abs=1e-6)
    assert d["low"] == pytest.approx(0.083333 - 0.037946, abs=1e-5)
    assert d["high"] == pytest.approx(0.083333 + 0.037946, abs=1e-5)
    assert d["verdict"] == "gain"
    assert describe_difference(d) == "gain: +8.3 points (95% CI +4.5 to +12.1, 3 seeds)"


def test_pairing_cancels_seed_noise_that_an_unpaired_interval_keeps():
    # Seeds vary by 0.2 together; b is always 0.01 lower: paired, a clear gain; unpaired, overlapping CIs.
    a = [0.50, 0.70, 0.60, 0.55, 0.65]
    b = [x - 0.01 - 0.001 * i for i, x in enumerate(a)]
    assert paired_difference(a, b)["verdict"] == "gain"
    _, a_low, _ = mean_ci(a)
    _, _, b_high = mean_ci(b)
    assert a_low < b_high


def test_verdicts_loss_and_no_difference():
    assert paired_difference([0.5, 0.6, 0.55], [0.6, 0.72, 0.64])["verdict"] == "loss"
    mixed = paired_difference([0.6, 0.5, 0.58], [0.5, 0.6, 0.57])
    assert mixed["low"] < 0 < mixed["high"] and mixed["verdict"] == NO_DIFFERENCE
    one = paired_difference([0.9], [0.1])
    assert one["verdict"] == NO_DIFFERENCE and "unknown" in describe_difference(one)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(WorkbenchError, match="equal lengths"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(WorkbenchError, match="empty"):
        mean_ci([])
    with pytest.raises(WorkbenchError, match="NaN"):
        mean_ci([0.5, float("nan")])
    with pytest.raises(WorkbenchError, match="confidence"):
        mean_ci([1, 2], confidence=95)
