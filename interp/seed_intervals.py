"""Intervals across a handful of training seeds that stay inside the range of the quantity.

A zoo trains 2–10 seeds per architecture. A Student t-interval over 2 seeds of a flip mass gives
0.784 [0.306, 1.262] (above 1), over steps [−679, 1099] (negative): the normal model behind it does not
hold for bounded or skewed quantities with so few values. These intervals make no distributional
assumption, and every end is an observed value (or a difference of two), so a quantity in [0, 1] gets
an interval in [0, 1] and a count a non-negative one:

- :func:`median_interval` — the order-statistic interval for the *median* seed-level value:
  with x_(1) ≤ … ≤ x_(n), P(x_(k) ≤ median ≤ x_(n+1−k)) = 1 − 2 · P(Bin(n, ½) ≤ k − 1) for any
  continuous distribution. It takes the largest k whose coverage reaches the confidence; when even
  [min, max] does not (n ≤ 5 at 95%: 1 − 2^{1−n} = 75%, 87.5%, 93.75% for n = 3, 4, 5), it reports
  [min, max] *with its achieved confidence*, never a narrower interval dressed up as 95%.
- :func:`shift_interval` — the difference between two architectures (A − R) as the Hodges–Lehmann
  shift (median of the n_A · n_R pairwise differences a_i − r_j) with the exact Mann–Whitney interval
  [D_(k), D_(m+1−k)] over the sorted pairwise differences, k the largest with
  P(U ≤ k − 1) ≤ α/2 under the exact null distribution of U (location-shift model); again
  [min, max] with its achieved confidence when the groups are too small for the confidence asked.

With fewer than :data:`MIN_SEEDS` (3) values in a group there is no interval (NaN ends, ``reason``
says so): two seeds cover their median with probability ½.
``tests/test_coverage.py`` checks both against simulation (bounded and skewed distributions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3


@dataclass(frozen=True)
class SeedInterval:
    """A point (median or shift), its interval, the confidence it really has, and n."""

    point: float
    low: float
    high: float
    achieved: float  # the interval's exact coverage (≥ the confidence asked, unless it is [min, max])
    n: int
    reason: str  # "" or why there is no interval / why its coverage is below the confidence asked


def _finite(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return np.sort(x[np.isfinite(x)])


def order_coverage(n: int, k: int) -> float:
    """P(x_(k) ≤ median ≤ x_(n+1−k)) = 1 − 2 P(Bin(n, ½) ≤ k − 1), exactly."""
    return 1.0 - 2.0 * sum(math.comb(n, j) for j in range(k)) / 2.0**n


def median_interval(values: np.ndarray, confidence: float = 0.95) -> SeedInterval:
    """The median of the finite ``values`` with the order-statistic interval (module docstring)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return SeedInterval(math.nan, math.nan, math.nan, math.nan, 0, "no values")
    median = float(np.median(x))
    if n < MIN_SEEDS:
        return SeedInterval(median, math.nan, math.nan, math.nan, n, f"fewer than {MIN_SEEDS} seeds")
    k = 1
    while k + 1 <= n // 2 and order_coverage(n, k + 1) >= confidence:
        k += 1
    achieved = order_coverage(n, k)
    reason = "" if achieved >= confidence else f"min–max of {n} seeds covers the median with {achieved:.1%}"
    return SeedInterval(median, float(x[k - 1]), float(x[n - k]), achieved, n, reason)


def mann_whitney_null(n_a: int, n_b: int) -> np.ndarray:
    """P(U = u), u = 0..n_a·n_b, of the Mann–Whitney U under H0 (no ties), by the counting recursion
    c(a, b, u) = c(a − 1, b, u − b) + c(a, b − 1, u)."""
    m = n_a * n_b
    table = np.zeros((n_a + 1, n_b + 1, m + 1))
    table[0, :, 0] = 1.0
    table[:, 0, 0] = 1.0
    for a in range(1, n_a + 1):
        for b in range(1, n_b + 1):
            table[a, b] = table[a, b - 1]
            table[a, b, b:] += table[a - 1, b, : m + 1 - b]
    counts = table[n_a, n_b]
    return counts / counts.sum()


def shift_interval(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> SeedInterval:
    """Hodges–Lehmann shift a − b with the exact Mann–Whitney interval (module docstring)."""
    x, y = _finite(a), _finite(b)
    if len(x) == 0 or len(y) == 0:
        return SeedInterval(math.nan, math.nan, math.nan, math.nan, 0, "no values")
    d = np.sort((x[:, None] - y[None, :]).ravel())
    point = float(np.median(d))
    n = min(len(x), len(y))
    if n < MIN_SEEDS:
        return SeedInterval(
            point, math.nan, math.nan, math.nan, n, f"fewer than {MIN_SEEDS} seeds in a group"
        )
    cdf = np.cumsum(mann_whitney_null(len(x), len(y)))
    # P(D_(k) ≤ Δ ≤ D_(m+1−k)) = 1 − 2 P(U ≤ k − 1): the largest k ≤ m/2 with P(U ≤ k − 1) ≤ α/2, else 1.
    tail = (1.0 - confidence) / 2
    k = 1
    while k + 1 <= len(d) // 2 and cdf[k] <= tail:
        k += 1
    achieved = 1.0 - 2.0 * float(cdf[k - 1])
    reason = (
        ""
        if achieved >= confidence
        else (f"min–max of {len(x)}×{len(y)} differences covers the shift with {achieved:.1%}")
    )
    return SeedInterval(point, float(d[k - 1]), float(d[len(d) - k]), achieved, n, reason)
