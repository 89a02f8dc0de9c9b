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


# --- UnitSums: the bootstrap in memory independent of the number of sequences ----------------------
def _fill(units: stats.UnitSums, values: np.ndarray, keys: np.ndarray, batch: int) -> None:
    for start in range(0, len(values), batch):
        units.add({"x": values[start : start + batch], "keys": keys[start : start + batch]})


def test_unit_sums_up_to_max_units_are_the_per_sequence_bootstrap_bit_for_bit():
    rng = np.random.default_rng(0)
    values, keys = rng.exponential(size=(700, 3)), rng.integers(0, 4, size=700).astype(float)
    units = stats.UnitSums(700, max_units=700)
    _fill(units, values, keys, 64)
    assert units.per_sequence and stats.resampling_unit(700, 700) == "sequence"
    got = stats.bootstrap_distributions([units.table("x"), units.table("x", "keys")], 200, seed=5)
    want = stats.bootstrap_distributions(
        [(values, None), (values, np.broadcast_to(keys[:, None], values.shape))], 200, seed=5
    )
    for (gp, gr), (wp, wr) in zip(got, want):
        assert np.array_equal(gp, wp) and np.array_equal(gr, wr)


def test_unit_sums_beyond_max_units_hold_block_sums_and_counts():
    values = np.arange(10.0)
    units = stats.UnitSums(10, max_units=4)
    _fill(units, values[:, None], np.ones(10), 3)  # batches cross block boundaries
    # sequence i goes to block i * 4 // 10: blocks {0,1,2}, {3,4}, {5,6,7}, {8,9}
    assert units.counts.tolist() == [3, 2, 3, 2]
    assert units.sums["x"][:, 0].tolist() == [3, 7, 18, 17]
    num, den = units.table("x")
    assert den[:, 0].tolist() == [3, 2, 3, 2]
    point, _ = stats.bootstrap_distribution(num, den, resamples=10)
    assert point[0] == pytest.approx(4.5)  # the mean over all sequences
    assert stats.resampling_unit(10, 4) == "block of 2-3 consecutive sequences"
    assert stats.resampling_unit(10**7, 10**4) == "block of 1000 consecutive sequences"
    with pytest.raises(ValueError, match="more than the 10 sequences"):
        units.add({"x": np.zeros((1, 1)), "keys": np.zeros(1)})


def test_block_bootstrap_matches_the_per_sequence_bootstrap_on_small_n():
    """Skewed data, 20,000 sequences in 500 blocks of 40: the CI of a mean and of a ratio of sums
    agrees with the per-sequence bootstrap's to a few percent of its width."""
    rng = np.random.default_rng(1)
    n = 20_000
    values, keys = rng.exponential(size=(n, 2)) ** 2, rng.integers(0, 3, size=n).astype(float)
    units = stats.UnitSums(n, max_units=500)
    _fill(units, values, keys, 1000)
    block = [stats.bootstrap_ci(*units.table("x"), resamples=2000, seed=2)]
    block.append(stats.bootstrap_ci(*units.table("x", "keys"), resamples=2000, seed=2))
    exact = [stats.bootstrap_ci(values, resamples=2000, seed=2)]
    exact.append(stats.bootstrap_ci(values, np.broadcast_to(keys[:, None], values.shape), 2000, seed=2))
    for got, want in zip(block, exact):
        for g, w in zip(got, want):
            assert g.mean == pytest.approx(w.mean, rel=1e-12)
            width = w.ci_high - w.ci_low
            assert abs((g.ci_high - g.ci_low) / width - 1) < 0.1
            assert abs(g.ci_low - w.ci_low) < 0.1 * width and abs(g.ci_high - w.ci_high) < 0.1 * width


def test_block_bootstrap_covers_a_known_mean_95_percent_of_the_time():
    """300 samples of 1,000 skewed values (exponential, mean 1) in 100 blocks of 10: the 95% CI contains
    the true mean in 90-98.5% of them (binomial sd 1.3%; 92.0% here), within 3 points of the
    per-sequence bootstrap on the same samples (92.7%)."""
    rng = np.random.default_rng(7)
    covered = {"block": 0, "sequence": 0}
    trials = 300
    for trial in range(trials):
        values = rng.exponential(size=1000)
        units = stats.UnitSums(1000, max_units=100)
        units.add({"x": values})
        (block,) = stats.bootstrap_ci(*units.table("x"), resamples=300, seed=trial)
        (exact,) = stats.bootstrap_ci(values, resamples=300, seed=trial)
        covered["block"] += block.ci_low <= 1.0 <= block.ci_high
        covered["sequence"] += exact.ci_low <= 1.0 <= exact.ci_high
    block, sequence = covered["block"] / trials, covered["sequence"] / trials
    assert 0.90 <= block <= 0.985 and abs(block - sequence) <= 0.03, covered


def test_resample_counts_drawn_again_are_the_same_counts_and_a_fresh_copy():
    from interp import stats as interp_stats

    first = [c.copy() for c in interp_stats.resample_counts(300, 700, seed=[3, 1])]
    again = list(interp_stats.resample_counts(300, 700, seed=[3, 1]))  # from the kept draw
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again))
    again[0][:] = -1  # a caller writing into its counts changes nothing for the next one
    assert np.array_equal(next(interp_stats.resample_counts(300, 700, seed=[3, 1])), first[0])
    other = next(interp_stats.resample_counts(300, 700, seed=[3, 2]))
    assert not np.array_equal(other, first[0]) and other.sum(1).tolist() == [300.0] * len(other)
    g = np.random.default_rng(0)  # a generator moves on: never served from the kept draw
    assert not np.array_equal(
        next(interp_stats.resample_counts(50, 10, g)), next(interp_stats.resample_counts(50, 10, g))
    )


def test_the_kept_draw_is_not_served_for_another_chunking_or_a_seed_numpy_refuses(monkeypatch):
    import torch

    from interp import stats as interp_stats

    list(interp_stats.resample_counts(10, 7, seed=0))
    monkeypatch.setattr(interp_stats, "_CHUNK_ELEMENTS", 30)
    assert [len(c) for c in interp_stats.resample_counts(10, 7, seed=0)] == [3, 3, 1]
    list(interp_stats.resample_counts(10, 7, seed=3))
    with pytest.raises(TypeError):  # numpy refuses a tensor seed, kept draw or not
        list(interp_stats.resample_counts(10, 7, seed=torch.tensor(3)))
