"""Coverage of every interval kind the toolkit reports, measured on data whose true value is known.

- Clopper–Pearson (independent trials): exact coverage by summing the binomial distribution over
  every outcome, at p = 0, 1, 1 − 10⁻⁵ and interior rates;
- the proportion interval over sequences (``interp.proportions.proportion_interval``): simulated
  datasets of sequences of m positions, positions independent or clustered (each sequence draws its own
  rate from a Beta with the given mean), bootstrapped with the toolkit's own resamples;
- the across-seeds interval (order statistics for the median, ``analyses.zoo_summary``'s seeds);
- the percentile bootstrap of interior means (``interp.stats.bootstrap_ci``).

Each harness is also run on a mutant (a percentile bootstrap at p = 1 − 10⁻⁵, an interval that ignores
the clustering, a Wald interval, a t-interval across seeds) and must catch it, so the tests can fail.
Everything is vectorised: the datasets are columns of one matrix and share one set of resamples.
``python tests/test_coverage.py`` prints the coverage table quoted in docs/statistics.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import betaincinv

from interp.proportions import binomial_estimate, clopper_pearson, proportion_interval
from interp.seed_intervals import median_interval, shift_interval
from interp.stats import percentile_interval, resample_counts

CONF = 0.95
RATES = (0.0, 1.0, 1.0 - 1e-5, 0.5, 0.9, 0.99, 0.003)


def binomial_coverage(interval, p: float, n: int) -> float:
    """Exact coverage Σ_k P(K = k) 1[low_k ≤ p ≤ high_k] of an interval rule ``interval(k, n)``."""
    from scipy.stats import binom

    k = np.arange(n + 1)
    low, high = interval(k, n)
    return float((binom.pmf(k, n, p) * ((low <= p) & (p <= high))).sum())


def wald(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The textbook p̂ ± 1.96 √(p̂(1−p̂)/n): zero width at 0 and n (the mutant)."""
    p = k / n
    half = 1.959964 * np.sqrt(p * (1 - p) / n)
    return p - half, p + half


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("p", RATES)
def test_clopper_pearson_exact_coverage(p, n):
    assert binomial_coverage(lambda k, n: clopper_pearson(k, n, CONF), p, n) >= CONF - 1e-9


def test_clopper_pearson_known_values_and_never_zero_width():
    low, high = clopper_pearson(np.array([0, 10, 5]), 10, CONF)
    assert low[0] == 0 and high[0] == pytest.approx(1 - 0.025**0.1)  # 0 of 10: [0, 1 − (α/2)^(1/n)]
    assert low[1] == pytest.approx(0.025**0.1) and high[1] == 1
    assert (low[2], high[2]) == pytest.approx((0.187086, 0.812914), abs=1e-6)  # R: binom.test(5, 10)
    assert (high - low > 0).all()
    e = binomial_estimate(0, 10)
    assert (e.mean, e.ci_low) == (0.0, 0.0) and e.ci_high == pytest.approx(1 - 0.025**0.1)
    assert np.isnan(binomial_estimate(0, 0).mean)


def test_binomial_harness_catches_wald():
    assert binomial_coverage(wald, 1.0 - 1e-5, 100) < 0.01  # [1, 1] almost always: misses
    assert binomial_coverage(wald, 0.003, 100) < 0.5


def simulate_sequences(
    p: float, sequences: int, positions: int, datasets: int, clustered: float, seed: int = 0
) -> np.ndarray:
    """``[sequences, datasets]`` per-sequence proportions x_s = Binomial(m, r_s)/m with E[x_s] = p:
    r_s = p (independent positions, ``clustered`` = 0) or r_s ~ Beta(κp, κ(1 − p)) with κ = ``clustered``
    (sequences differ; the intra-sequence correlation of positions is 1/(κ + 1))."""
    rng = np.random.default_rng(seed)
    if clustered and 0 < p < 1:
        rates = rng.beta(clustered * p, clustered * (1 - p), size=(sequences, datasets))
    else:
        rates = np.full((sequences, datasets), p)
    return rng.binomial(positions, rates) / positions


def bootstrap_columns(x: np.ndarray, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Point means ``[D]`` and replicates ``[R, D]`` of every column, with the toolkit's resamples."""
    (counts,) = list(resample_counts(x.shape[0], resamples, seed=1))
    return x.mean(0), counts @ x / x.shape[0]


def sequence_coverage(interval, p: float, clustered: float, sequences=100, positions=16, datasets=400):
    """Empirical coverage of ``interval(point, replicates, sequences, positions)`` and its widths."""
    x = simulate_sequences(p, sequences, positions, datasets, clustered, seed=int(1e6 * p) + int(clustered))
    point, reps = bootstrap_columns(x, 400)
    low, high = interval(point, reps, sequences, positions)
    return float(((low <= p) & (p <= high)).mean()), high - low


def ours(point, reps, sequences, positions):
    return proportion_interval(point, reps, sequences, positions, CONF)


def percentile(point, reps, sequences, positions):
    return percentile_interval(reps, CONF)


def ignores_clustering(point, reps, sequences, positions):
    """Mutant: every position counted as an independent trial."""
    return clopper_pearson(point * sequences * positions, sequences * positions, CONF)


# With 400 datasets the standard error of a 95% coverage is 1.1%: 0.925 is 2.3 SE below nominal.
@pytest.mark.parametrize("clustered", [0.0, 10.0])
@pytest.mark.parametrize("p", RATES)
def test_sequence_proportion_coverage(p, clustered):
    coverage, width = sequence_coverage(ours, p, clustered)
    assert coverage >= 0.925
    assert (width > 0).all()  # never zero width, not even at 0% or 100%


def test_sequence_harness_catches_mutants():
    assert sequence_coverage(percentile, 1.0 - 1e-5, 0.0)[0] < 0.1
    assert (sequence_coverage(percentile, 1.0, 0.0)[1] == 0).all()  # zero width: what we forbid
    assert sequence_coverage(ignores_clustering, 0.5, 2.0)[0] < 0.8


def test_boundary_interval_is_the_sequence_level_bound():
    """All of S sequences correct: [(α/2)^(1/S), 1] — 10,000 sequences give [0.99963, 1]."""
    low, high = proportion_interval(np.array([1.0, 0.0]), np.array([[1.0, 0.0]] * 5), 10_000, 16, CONF)
    assert low[0] == pytest.approx(0.025 ** (1 / 10_000)) and high[0] == 1
    assert low[0] == pytest.approx(0.99963, abs=1e-5)
    assert low[1] == 0 and high[1] == pytest.approx(1 - 0.025 ** (1 / 10_000))


SEED_DRAWS = {  # (sampler of [datasets, n] seed-level values, the true median)
    "flip mass ~ Beta(5, 2)": (lambda rng, shape: rng.beta(5, 2, shape), float(betaincinv(5, 2, 0.5))),
    "steps ~ 50 + lognormal(4, 1)": (lambda rng, shape: 50 + rng.lognormal(4, 1, shape), 50 + np.exp(4)),
}


def seed_coverage(draw, median: float, n: int, datasets: int = 2000, narrower: int = 0):
    """Coverage of :func:`median_interval` over ``datasets`` sets of n seeds, and its claimed coverage;
    ``narrower`` > 0 is the mutant that drops that many more order statistics from each end."""
    x = draw(np.random.default_rng(n), (datasets, n))
    hits, claimed = [], None
    for row in x:
        iv = median_interval(row, CONF)
        claimed = iv.achieved
        if narrower:
            srt = np.sort(row)
            k = int(np.searchsorted(srt, iv.low)) + narrower
            iv = type(iv)(iv.point, srt[k], srt[n - 1 - k], iv.achieved, n, "")
        hits.append(iv.low <= median <= iv.high)
        assert np.isnan(iv.low) or (row.min() <= iv.low and iv.high <= row.max())  # inside the range
    return float(np.mean(hits)), claimed


@pytest.mark.parametrize("n", [3, 5, 10, 20])
@pytest.mark.parametrize("name", list(SEED_DRAWS))
def test_seed_median_interval_coverage_is_what_it_claims(name, n):
    coverage, claimed = seed_coverage(*SEED_DRAWS[name], n)
    assert claimed >= CONF or n <= 5  # ≥ 95% from 6 seeds on; below, the claim says less
    assert coverage >= claimed - 3 * np.sqrt(claimed * (1 - claimed) / 2000) - 1e-9


def test_seed_harness_catches_a_narrower_interval():
    coverage, claimed = seed_coverage(*SEED_DRAWS["flip mass ~ Beta(5, 2)"], 20, narrower=2)
    assert coverage < claimed - 0.05


def shift_coverage(n: int, shift: float, datasets: int = 600) -> tuple[float, float]:
    """Coverage of :func:`shift_interval` (A − R) on Beta(5, 2)-shaped seeds moved by ``shift``."""
    rng = np.random.default_rng(7 + n)
    hits, claimed = [], 1.0
    for _ in range(datasets):
        a, b = rng.beta(5, 2, n) * 0.5 + shift, rng.beta(5, 2, n) * 0.5
        iv = shift_interval(a, b, CONF)
        claimed = min(claimed, iv.achieved)
        hits.append(iv.low <= shift <= iv.high)
    return float(np.mean(hits)), claimed


@pytest.mark.parametrize("n", [3, 5, 8])
def test_seed_shift_interval_coverage_is_what_it_claims(n):
    coverage, claimed = shift_coverage(n, 0.1)
    assert coverage >= claimed - 3 * np.sqrt(claimed * (1 - claimed) / 600) - 1e-9


def coverage_table() -> list[tuple[str, float, str, float]]:
    """(interval kind, rate, data, coverage) rows for docs/statistics.md."""
    rows = []
    for p in RATES:
        rows.append(
            (
                "Clopper-Pearson n=100 (exact)",
                p,
                "iid",
                binomial_coverage(lambda k, n: clopper_pearson(k, n), p, 100),
            )
        )
    for clustered in (0.0, 10.0, 2.0):
        for p in RATES:
            data = f"clustered k={clustered:g}" if clustered else "iid positions"
            rows.append(("proportion S=100 m=16", p, data, sequence_coverage(ours, p, clustered)[0]))
            rows.append(("  percentile (old)", p, data, sequence_coverage(percentile, p, clustered)[0]))
    for name, (draw, median) in SEED_DRAWS.items():
        for n in (3, 5, 10, 20):
            coverage, claimed = seed_coverage(draw, median, n)
            rows.append((f"seed median n={n} (claims {claimed:.3f})", median, name, coverage))
    for n in (3, 5, 8):
        coverage, claimed = shift_coverage(n, 0.1)
        rows.append((f"seed shift n={n} (claims {claimed:.3f})", 0.1, "Beta(5,2)/2 shifted", coverage))
    return rows


if __name__ == "__main__":
    for kind, p, data, cov in coverage_table():
        print(f"{kind:32s} p={p:<9.6g} {data:14s} coverage {cov:.3f}")
