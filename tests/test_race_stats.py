"""The race's statistics against a reference computation (scipy.stats), over random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from descentlab.racing.stats import (
    indistinguishable,
    mean_interval,
    paired_difference,
    probability_of_improvement,
)

values = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12)


@settings(max_examples=200, deadline=None)
@given(values)
def test_mean_interval_is_scipys_t_interval(data: list[float]) -> None:
    interval = mean_interval(data)
    assert interval.n == len(data)
    assert interval.mean == pytest.approx(np.mean(data), abs=1e-9)
    sem = scipy_stats.sem(data)
    if sem == 0:
        assert interval.low == pytest.approx(interval.mean, abs=1e-9)
        assert interval.high == pytest.approx(interval.mean, abs=1e-9)
        return
    low, high = scipy_stats.t.interval(0.95, len(data) - 1, loc=np.mean(data), scale=sem)
    assert interval.low == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert interval.high == pytest.approx(high, rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=2, max_size=10))
def test_paired_difference_matches_scipys_paired_t_test(pairs: list[tuple[float, float]]) -> None:
    a = {seed: x for seed, (x, _) in enumerate(pairs)}
    b = {seed: y for seed, (_, y) in enumerate(pairs)}
    interval = paired_difference(a, b)
    diffs = [x - y for x, y in pairs]
    assert interval.mean == pytest.approx(np.mean(diffs), abs=1e-12)
    if np.std(diffs) > 1e-9:
        # 0 lies outside the 95 % interval exactly when the paired t test rejects at 5 %
        p = scipy_stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue
        if abs(p - 0.05) > 1e-6:
            assert indistinguishable(a, b) == (p > 0.05)


def test_pairs_by_seed_not_by_position() -> None:
    a = {0: 0.90, 1: 0.80, 2: 0.70}
    b = {2: 0.69, 1: 0.79, 0: 0.89, 7: 0.10}  # seed 7 has no partner: left out
    interval = paired_difference(a, b)
    assert interval.n == 3
    assert interval.mean == pytest.approx(0.01)
    assert interval.low == pytest.approx(0.01) and interval.high == pytest.approx(0.01)
    assert not indistinguishable(a, b)
    # the same values unpaired overlap completely: pairing is what tells them apart
    assert mean_interval(list(a.values())).contains(mean_interval(list(b.values())[:3]).mean)


def test_one_seed_has_no_interval_and_is_never_told_apart() -> None:
    interval = mean_interval([0.5, None, math.nan])
    assert interval.n == 1 and interval.mean == 0.5 and not interval.bounded
    assert "one seed" in interval.format(100)
    assert indistinguishable({0: 0.9}, {0: 0.1})
    assert mean_interval([]).mean is None and mean_interval([]).format() == "-"


def test_probability_of_improvement() -> None:
    assert probability_of_improvement({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.5}) == 1.0
    assert probability_of_improvement({0: 1.0}, {0: 1.0}) == 0.5
    assert probability_of_improvement({0: 1.0, 1: 3.0}, {0: 2.0}) == 0.5
    assert probability_of_improvement({}, {0: 1.0}) is None


def test_an_interval_stays_inside_the_values_range():
    interval = mean_interval([1.0, 0.9], bounds=(0.0, 1.0))
    assert interval.high == 1.0 and interval.low == pytest.approx(0.95 - 12.706 * 0.05, abs=1e-3)
