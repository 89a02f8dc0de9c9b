"""Bootstrap confidence intervals: exact cases, a calibration check, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from interp import stats


def test_counts_are_resamples_with_replacement():
    chunks = list(stats.resample_counts(7, 25, seed=3))
    counts = np.concatenate(chunks)
    assert counts.shape == (25, 7)
    assert (counts.sum(1) == 7).all() and (counts >= 0).all()
    assert np.array_equal(counts, np.concatenate(list(stats.resample_counts(7, 25, seed=3))))
    assert not np.array_equal(counts, np.concatenate(list(stats.resample_counts(7, 25, seed=4))))


def test_counts_are_chunked_for_large_n(monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 30)
    chunks = list(stats.resample_counts(10, 7, seed=0))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert all((c.sum(1) == 10).all() for c in chunks)


def test_counts_follow_the_multinomial_law():
    # Each unit is drawn Binomial(n, 1/n) times: mean 1, variance 1 − 1/n.
    counts = np.concatenate(list(stats.resample_counts(20, 4000, seed=0)))
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / 20, rel=0.05)


def test_vectorised_bootstrap_equals_explicit_resampling():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, 2))
    den = rng.integers(1, 4, size=(30, 2)).astype(float)
    point, reps = stats.bootstrap_distribution(values, den, resamples=50, seed=9)
    counts = np.concatenate(list(stats.resample_counts(30, 50, seed=9)))
    for r in range(50):
        drawn = np.repeat(np.arange(30), counts[r].astype(int))  # the units of resample r
        assert np.allclose(reps[r], values[drawn].sum(0) / den[drawn].sum(0))
    assert np.allclose(point, values.sum(0) / den.sum(0))


def test_constant_values_give_a_zero_width_interval():
    (est,) = stats.bootstrap_ci(np.full(40, 0.25), resamples=100)
    assert est == stats.Estimate(0.25, 0.25, 0.25)


def test_interval_matches_the_normal_theory_width():
    # Mean of 2,000 standard normals: the 95% CI half-width is 1.96/√2000 ≈ 0.0438.
    values = np.random.default_rng(1).normal(size=2000)
    (est,) = stats.bootstrap_ci(values, resamples=2000, seed=0)
    half_width = (est.ci_high - est.ci_low) / 2
    assert half_width == pytest.approx(1.96 / math.sqrt(2000), rel=0.1)
    assert est.mean == pytest.approx(values.mean())


def test_ratio_of_sums_and_zero_denominators():
    num = np.array([[1.0], [0.0], [3.0]])
    den = np.array([[2.0], [0.0], [2.0]])
    (est,) = stats.bootstrap_ci(num, den, resamples=300, seed=0)
    assert est.mean == pytest.approx(4 / 4)
    assert 0.5 <= est.ci_low <= est.mean <= est.ci_high <= 1.5
    # A statistic whose denominator is 0 everywhere is undefined, and so is its interval.
    (none,) = stats.bootstrap_ci(np.zeros(4), np.zeros(4), resamples=20)
    assert all(math.isnan(v) for v in (none.mean, none.ci_low, none.ci_high))
    assert none.to_dict() == {"mean": None, "ci_low": None, "ci_high": None}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="resamples"):
        stats.bootstrap_ci(np.ones(3), resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci(np.ones(3), confidence=1.0)
    with pytest.raises(ValueError, match="shape"):
        stats.bootstrap_ci(np.ones((0, 2)))
    with pytest.raises(ValueError, match="must match"):
        stats.bootstrap_ci(np.ones((3, 2)), np.ones((3, 1)))


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.float64,
        st.tuples(st.integers(1, 40), st.integers(1, 3)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    resamples=st.integers(200, 400),  # with a handful of resamples a percentile can miss the mean
    seed=st.integers(0, 2**32 - 1),
    confidence=st.floats(0.5, 0.99),
)
def test_interval_contains_the_mean(values, resamples, seed, confidence):
    for est in stats.bootstrap_ci(values, resamples=resamples, confidence=confidence, seed=seed):
        tol = 1e-9 * (1 + abs(est.mean))
        assert est.ci_low - tol <= est.mean <= est.ci_high + tol
