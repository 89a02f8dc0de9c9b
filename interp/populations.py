"""Statistics over a population of trained runs: seed-level means, differences and shares.

A zoo trains the same architecture with several seeds; what a *new* seed would do is the question, so
the unit of resampling is the run, not the evaluation sequence:

- :func:`t_interval` — mean of the seed-level values x_1..x_n with the Student t-interval
  x̄ ± t_{(1+c)/2, n−1} · s/√n (s the sample standard deviation); undefined (NaN) for n < 2;
- :func:`welch_interval` — difference of two groups' means with Welch's interval
  x̄_A − x̄_B ± t_{(1+c)/2, ν} · √(s_A²/n_A + s_B²/n_B), ν the Welch–Satterthwaite degrees of freedom;
- :func:`wilson_interval` and :func:`clopper_pearson_interval` — the share k/n of runs in a class. Both
  stay inside [0, 1] and never have zero width, also at k = 0 or k = n (with 0 failures in n the 95%
  lower bound is about 1 − 3/n, never 1): Wilson's score interval inverts the normal score test,
  Clopper–Pearson's inverts the two one-sided binomial tests (exact: coverage ≥ c at every p).
"""

from __future__ import annotations

import math

import numpy as np


def t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """(mean, low, high, sd) of the Student t-interval over ``values`` (NaNs dropped; NaN bounds if n < 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return mean, mean - half, mean + half, sd


def welch_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean(a) − mean(b), low, high): Welch's t-interval (NaN bounds if either group has < 2 values)."""
    from scipy import stats

    a, b = (np.asarray(v, dtype=np.float64) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return diff, diff - half, diff + half


def _check_share(k: int, n: int, confidence: float) -> None:
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer count, got {value!r}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"a share needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a share k/n: the p with |k/n − p| ≤ z √(p(1−p)/n),

    centre (k + z²/2)/(n + z²), half-width z √(k(n−k)/n + z²/4)/(n + z²), z = Φ⁻¹((1+c)/2).
    At k = 0 the lower bound is exactly 0 and the upper one z²/(n + z²) > 0 (symmetrically at k = n)."""
    from scipy.special import ndtri

    _check_share(k, n, confidence)
    z = float(ndtri((1 + confidence) / 2))
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval for a share k/n: [B⁻¹(α/2; k, n−k+1), B⁻¹(1−α/2; k+1, n−k)]
    with α = 1 − c and B⁻¹ the beta quantile; the lower bound is 0 at k = 0, the upper 1 at k = n
    (there the other bound is (α/2)^{1/n} from its end)."""
    from scipy.special import betaincinv

    _check_share(k, n, confidence)
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return low, high


SHARE_INTERVALS = {"wilson": wilson_interval, "clopper-pearson": clopper_pearson_interval}
