"""``interp.rank_correlation``: Spearman's ρ on hand-built cases, its interval's formula, range and
coverage (bivariate normal samples: population Spearman ρ = (6/π)·asin(r/2))."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from interp.rank_correlation import average_ranks, spearman, spearman_rho


def test_ranks_share_their_mean_on_ties():
    assert average_ranks(np.array([10.0, 30.0, 20.0, 30.0])).tolist() == [1.0, 3.5, 2.0, 3.5]


def test_rho_on_hand_built_cases():
    x = np.arange(1.0, 6.0)
    assert spearman_rho(x, x**3) == pytest.approx(1.0)  # monotone, not linear
    assert spearman_rho(x, -np.exp(x)) == pytest.approx(-1.0)
    # y's ranks 1, 2, 3.5, 5, 3.5: Σ (rx − 3)(ry − 3) = 8, Σ (rx − 3)² = 10, Σ (ry − 3)² = 9.5
    assert spearman_rho(x, np.array([5.0, 6.0, 7.0, 8.0, 7.0])) == pytest.approx(8 / math.sqrt(95))
    assert math.isnan(spearman_rho(x, np.ones(5)))


def test_the_interval_is_fisher_z_with_bonett_wright_variance():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 6.0, 8.0, 5.0, 7.0])
    c = spearman(x, y, 0.9)
    rho = spearman_rho(x, y)
    se = math.sqrt((1 + rho**2 / 2) / (8 - 3))
    q = NormalDist().inv_cdf(0.95)
    assert (c.rho, c.n, c.confidence, c.note) == (rho, 8, 0.9, "")
    assert c.ci_low == pytest.approx(math.tanh(math.atanh(rho) - q * se))
    assert c.ci_high == pytest.approx(math.tanh(math.atanh(rho) + q * se))
    assert c.text() == f"ρ = {rho:.2f} [{c.ci_low:.2f}, {c.ci_high:.2f}], n = 8"


def test_a_perfect_ordering_keeps_a_wide_interval_inside_minus_one_one():
    for n in (4, 5, 12):
        x = np.arange(float(n))
        for sign in (1, -1):
            c = spearman(x, sign * x)
            assert c.rho == sign and -1 <= c.ci_low < c.ci_high <= 1
            assert (c.ci_high if sign == 1 else c.ci_low) == sign  # the far end is ±1 itself ...
            # ... and the near end holds orderings that are not perfect: never [1, 1] from a lucky sample
            assert abs(c.ci_low if sign == 1 else c.ci_high) < 1 - 12 / (n * (n * n - 1))
            edge = 1 - 6 / (n * (n * n - 1))
            q = NormalDist().inv_cdf(0.975)
            expected = math.tanh(math.atanh(edge) - q * math.sqrt(1.5 / (n - 3)))
            assert (c.ci_low if sign == 1 else -c.ci_high) == pytest.approx(expected)


def test_pairs_with_a_missing_side_are_dropped_and_small_n_has_no_interval():
    c = spearman([1.0, 2.0, np.nan, 4.0, 5.0], [1.0, 3.0, 2.0, np.inf, 4.0])
    assert c.n == 3 and c.rho == pytest.approx(1.0) and math.isnan(c.ci_low)
    assert c.note == "fewer than 4 pairs" and c.to_dict()["ci_low"] is None
    assert "no interval" in c.text()
    constant = spearman([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0])
    assert math.isnan(constant.rho) and "constant" in constant.note
    assert spearman([1.0], [2.0]).note == "1 pair: no correlation"
    with pytest.raises(ValueError, match="pair up"):
        spearman([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        spearman([1.0, 2.0], [1.0, 2.0], 1.0)


# The regime the coverage holds in: population |ρ_s| up to 0.89 (r = 0.9). Within ~0.02 of ±1 the
# Fisher-z interval undercovers (85% at ρ_s = 0.989, n = 12), as the module docstring says.
@pytest.mark.parametrize(("r", "n"), [(0.0, 8), (0.6, 12), (0.9, 25), (-0.9, 6)])
def test_coverage_on_bivariate_normal_samples(r, n):
    rng = np.random.default_rng([7, n])
    truth = 6 / math.pi * math.asin(r / 2)
    reps = 1500
    hits, inside = 0, True
    for _ in range(reps):
        z = rng.standard_normal((2, n))
        x, y = z[0], r * z[0] + math.sqrt(1 - r * r) * z[1]
        c = spearman(x, y)
        hits += c.ci_low <= truth <= c.ci_high
        inside &= -1 <= c.ci_low <= c.rho <= c.ci_high <= 1
    assert inside
    # 95% nominal; 1,500 draws: a binomial sd of 0.56 points, so ±2.5 points is ~4.5 sd
    assert 0.925 <= hits / reps <= 0.985
