"""Paired statistics agree with scipy (Wilcoxon, paired bootstrap) and with hand computations (Holm)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from interp import paired


def sample_with_ties_and_zeros(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1.0, size=n).round(1)  # rounding makes tied |d|
    y = rng.normal(0.0, 1.0, size=n).round(1)
    y[:7] = x[:7]  # exact zero differences
    return x, y


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
@pytest.mark.parametrize("correction", [False, True])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_agrees_with_scipy(zero_method, correction, alternative):
    x, y = sample_with_ties_and_zeros()
    ours = paired.wilcoxon_signed_rank(
        x, y, zero_method=zero_method, correction=correction, alternative=alternative
    )
    ref = sps.wilcoxon(
        x, y, zero_method=zero_method, correction=correction, alternative=alternative, method="asymptotic"
    )
    assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert ours.pvalue == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert ours.zstatistic == pytest.approx(float(ref.zstatistic), rel=1e-9)
    assert ours.n_zero == int((x - y == 0).sum()) >= 7


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_agrees_with_scipy_on_continuous_data(seed):
    d = np.random.default_rng(seed).normal(0.1 * seed, 1, size=200)
    ours = paired.wilcoxon_signed_rank(d)
    ref = sps.wilcoxon(d, method="asymptotic")
    assert (ours.statistic, ours.n) == (float(ref.statistic), 200)
    assert ours.pvalue == pytest.approx(float(ref.pvalue), rel=1e-9)


def test_wilcoxon_hand_case_and_effect_size():
    # d = 1, 2, 3, 4, −5: ranks 1..5, R+ = 10, R− = 5, μ = 7.5, σ² = 5·6·11/24 = 13.75.
    result = paired.wilcoxon_signed_rank(np.array([1.0, 2, 3, 4, -5]))
    assert (result.r_plus, result.r_minus, result.statistic) == (10.0, 5.0, 5.0)
    assert result.zstatistic == pytest.approx(-2.5 / np.sqrt(13.75))
    assert result.rank_biserial == pytest.approx(5 / 15)
    assert paired.wilcoxon_signed_rank(np.arange(1.0, 30)).rank_biserial == 1.0


def test_wilcoxon_without_any_difference_is_not_significant():
    x = np.linspace(0, 1, 50)
    result = paired.wilcoxon_signed_rank(x, x.copy())
    assert (result.pvalue, result.zstatistic, result.n, result.n_zero) == (1.0, 0.0, 0, 50)
    assert np.isnan(result.rank_biserial) and result.to_dict()["rank_biserial"] is None


def test_holm_hand_case():
    # Sorted 0.01, 0.03, 0.04, 0.2 → 4·0.01, 3·0.03, max(0.09, 2·0.04), max(0.09, 0.2).
    adjusted = paired.holm(np.array([0.04, 0.01, 0.2, 0.03]))
    assert np.allclose(adjusted, [0.09, 0.04, 0.2, 0.09])
    assert np.allclose(paired.holm(np.array([0.5, 0.6])), [1.0, 1.0])


def holm_rejections(p: np.ndarray, alpha: float) -> set[int]:
    """Holm's procedure as stated: step down through sorted p, reject while p_(j) ≤ α/(m − j + 1)."""
    rejected = set()
    for j, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (len(p) - j):
            break
        rejected.add(int(i))
    return rejected


def test_holm_adjusted_values_reproduce_the_step_down_procedure():
    p = np.random.default_rng(3).uniform(0, 0.05, size=12) ** 1.5
    adjusted = paired.holm(p)
    for alpha in np.linspace(0.001, 0.2, 60):
        assert {i for i in range(12) if adjusted[i] <= alpha} == holm_rejections(p, alpha)
    assert (adjusted >= p).all() and (adjusted <= 1).all()


def test_paired_bootstrap_agrees_with_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 1.0, size=150)
    y = x - rng.normal(0.2, 0.5, size=150)
    ours = paired.paired_bootstrap_ci(x, y, resamples=999, confidence=0.9, seed=11)
    ref = sps.bootstrap(
        (x, y),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=999,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(11),
    )
    assert ours.mean == pytest.approx(np.mean(x - y))
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-10)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-10)


def test_paired_bootstrap_of_identical_samples_is_zero():
    x = np.arange(10.0)
    est = paired.paired_bootstrap_ci(x, x, resamples=50)
    assert (est.mean, est.ci_low, est.ci_high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: paired.wilcoxon_signed_rank(np.ones(3), np.ones(4)), "same shape"),
        (lambda: paired.wilcoxon_signed_rank(np.array([])), "non-empty"),
        (lambda: paired.wilcoxon_signed_rank(np.array([1.0, np.nan])), "NaN"),
        (lambda: paired.wilcoxon_signed_rank(np.ones(3), zero_method="drop"), "unknown zero_method 'drop'"),
        (lambda: paired.wilcoxon_signed_rank(np.ones(3), alternative="up"), "unknown alternative 'up'"),
        (lambda: paired.holm(np.array([0.1, 1.5])), r"\[0, 1\]"),
        (lambda: paired.holm(np.array([[0.1]])), "1-d"),
        (lambda: paired.paired_bootstrap_ci(np.ones(3), np.ones(2)), "same shape"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_all_hand_holm_orders():
    # Every ordering of the same p-values gives the same adjusted values, permuted alike.
    p = np.array([0.001, 0.02, 0.02, 0.3])
    base = dict(zip(p.tolist(), paired.holm(p).tolist()))
    for perm in itertools.permutations(range(4)):
        q = p[list(perm)]
        assert [base[v] for v in q.tolist()] == paired.holm(q).tolist()


def test_average_ranks_hand_case_and_scipy_with_ties():
    assert paired.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert paired.average_ranks(np.array([5.0, 5.0, 5.0])).tolist() == [2.0, 2.0, 2.0]
    assert paired.average_ranks(np.array([])).size == 0
    rng = np.random.default_rng(0)
    for _ in range(50):  # many ties, and none
        x = rng.integers(0, 8, size=int(rng.integers(1, 200))).astype(float)
        np.testing.assert_array_equal(paired.average_ranks(x), sps.rankdata(x))
    y = rng.normal(size=500)
    np.testing.assert_array_equal(paired.average_ranks(y), sps.rankdata(y))


def test_average_ranks_refuses_nan_and_two_dimensions():
    with pytest.raises(ValueError, match="without NaN"):
        paired.average_ranks(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="1-d"):
        paired.average_ranks(np.ones((2, 2)))


def test_p_values_are_floored_never_zero():
    """10,000 positive differences: z ≈ 86, the normal tail underflows to 0.0; we store the bound."""
    from interp.paired import P_FLOOR, holm

    result = paired.wilcoxon_signed_rank(np.arange(1.0, 10_001.0))
    assert result.pvalue == P_FLOOR > 0
    assert (holm(np.array([result.pvalue, 0.5])) >= P_FLOOR).all()
