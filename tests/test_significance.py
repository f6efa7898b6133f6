"""detkit.evaluation.significance: Student's t quantiles, paired intervals, the bootstrap, the verdict."""

import math

import numpy as np
import pytest

from detkit.evaluation.significance import (
    Interval,
    bootstrap_interval,
    paired_t_interval,
    t_quantile,
    verdict,
)

# two-sided 95% critical values from a printed t table
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 29: 2.045, 30: 2.042}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(0.95, df) == pytest.approx(T_TABLE[df], abs=5e-4)


def test_t_quantile_matches_scipy_for_many_df():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 60):
        for conf in (0.8, 0.9, 0.95, 0.99):
            assert t_quantile(conf, df) == pytest.approx(stats.t.ppf(0.5 + conf / 2, df), rel=1e-9)


def test_t_quantile_rejects_bad_input():
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


def test_paired_t_interval_by_hand():
    d = [0.10, 0.20, 0.15]  # mean 0.15, sd 0.05
    iv = paired_t_interval(d)
    half = 4.302652729749 * 0.05 / math.sqrt(3)
    assert iv.mean == pytest.approx(0.15)
    assert iv.low == pytest.approx(0.15 - half) and iv.high == pytest.approx(0.15 + half)
    assert iv.significant and iv.n == 3
    assert not paired_t_interval([0.1, -0.1, 0.05]).significant
    one = paired_t_interval([0.2])
    assert math.isnan(one.low) and not one.significant
    same = paired_t_interval([-0.02, -0.02])
    assert same.low == same.high == pytest.approx(-0.02) and same.significant


def test_bootstrap_interval_is_reproducible_and_covers_the_mean():
    rng = np.random.default_rng(1)
    d = rng.normal(0.03, 0.1, size=400)
    a, b = bootstrap_interval(d, seed=3), bootstrap_interval(d, seed=3)
    assert a == b
    assert a.low < d.mean() < a.high
    # the percentile interval of the mean is close to the normal one: mean +- 1.96 sd / sqrt(n)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert a.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert a.high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert bootstrap_interval([0.0] * 10).low == 0.0


def test_verdict_lines():
    assert verdict("ATSS", "max-IoU", Interval(0.16, 0.12, 0.20, 3, "t over seeds")) == \
        "ATSS - max-IoU: +0.160 AP, 95% CI [+0.120, +0.200] (significant; t over seeds, n=3)"
    assert "(not significant;" in verdict("a", "b", Interval(0.01, -0.02, 0.04, 3, "t over seeds"))
    assert "no interval" in verdict("a", "b", Interval(0.01, math.nan, math.nan, 1, "t over seeds"))
