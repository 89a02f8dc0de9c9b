"""Confidence intervals for proportions (accuracies, hit rates, IIA, agreements, shares) that keep their
coverage at 0% and 100%.

Two situations, one family of intervals:

- **independent trials** (k successes in n i.i.d. Bernoulli trials, e.g. "sequences reversed whole"):
  the Clopper–Pearson interval, the Beta quantiles

      low  = B⁻¹(α/2; k, n − k + 1)       (0 when k = 0)
      high = B⁻¹(1 − α/2; k + 1, n − k)   (1 when k = n),   α = 1 − confidence.

  It inverts two one-sided binomial tests, so its coverage is ≥ the confidence for *every* p (Wilson's
  dips below nominal near 0 and 1, Brown, Cai & DasGupta 2001, which is where our accuracies live).
  With no failure in n trials it gives [(α/2)^{1/n}, 1] ≈ [1 − 3.7/n, 1] at 95%: never zero width.

- **a mean of per-sequence proportions** x_s ∈ [0, 1] (e.g. per-position accuracy averaged over the 16
  positions of each sequence; positions of one sequence share its digits and are not independent):
  the Clopper–Pearson interval at the *effective number of trials* (Kish's design effect; Korn &
  Graubard 1998 use the same construction for survey proportions),

      n_eff = p̂ (1 − p̂) / Var*(p̂),   clipped to [S, S · m],

  where Var*(p̂) is the variance of the bootstrap replicates over sequences (so the clustering of
  positions is measured, not assumed), S the number of independent sequences and m the trials per
  sequence. The clip is not a fudge: since x_s² ≤ x_s, Var(x_s) ≤ p(1 − p), so the truth has
  n_eff ≥ S (the lower clip only removes bootstrap noise); n_eff > S·m would mean positions help each
  other beyond independence, which we do not credit (the upper clip is conservative).
  **At the boundary** (p̂ ∈ {0, 1}, or a bootstrap with zero variance) n_eff is undefined and the interval
  switches to the exact sequence-level bound n_eff = S: a sequence with no failure has x_s = 1, and
  1 − p = E[1 − x_s] ≤ P(a sequence has a failure), whose Clopper–Pearson upper bound with 0 of S
  failing is 1 − (α/2)^{1/S}. So 100% on 10,000 sequences reads [0.99963, 1], never [1, 1].

A percentile bootstrap would give [1, 1] there (every resample of all-correct sequences is all-correct):
``tests/test_coverage.py`` measures the coverage of both kinds on simulated data with known rates
(0, 1, 1 − 10⁻⁵ and interior ones, independent and clustered positions) and fails on that mutant.
"""

from __future__ import annotations

import numpy as np

from interp.stats import DEFAULT_CONFIDENCE, Estimate


def _alpha(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return 1.0 - float(confidence)


def clopper_pearson(
    successes: np.ndarray | float, trials: np.ndarray | float, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson bounds ``(low, high)`` (arrays, broadcast) of k successes in n trials (see the
    module docstring). k and n may be fractional (effective counts); NaN where n ≤ 0 or k is NaN."""
    from scipy.special import betaincinv  # lazy: scipy takes a while to import

    alpha = _alpha(confidence)
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    ok = (n > 0) & np.isfinite(k) & np.isfinite(n)
    k = np.where(ok, np.clip(k, 0.0, np.where(ok, n, 1.0)), 0.5)
    n = np.where(ok, n, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k <= 0, 0.0, betaincinv(np.maximum(k, 1e-300), n - k + 1.0, alpha / 2))
        high = np.where(k >= n, 1.0, betaincinv(k + 1.0, np.maximum(n - k, 1e-300), 1.0 - alpha / 2))
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def effective_trials(
    point: np.ndarray, replicates: np.ndarray, sequences: int | np.ndarray, trials_per_sequence: float = 1.0
) -> np.ndarray:
    """n_eff = p̂(1 − p̂)/Var*(p̂) clipped to [S, S·m] per column, S where it is undefined (module docstring).

    ``point`` [k], ``replicates`` [R, k] (NaN replicates ignored), ``sequences`` S (scalar or [k]),
    ``trials_per_sequence`` m (scalar or [k]; 1 when each sequence is one trial).
    """
    p = np.asarray(point, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64).reshape(-1, p.size)
    s = np.broadcast_to(np.asarray(sequences, dtype=np.float64), p.shape).astype(np.float64)
    m = np.broadcast_to(np.asarray(trials_per_sequence, dtype=np.float64), p.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        finite = np.isfinite(reps).sum(0).reshape(p.shape)
        var = np.where(finite > 1, np.nanvar(reps, axis=0, ddof=1).reshape(p.shape) if reps.size else 0, 0.0)
        interior = (p > 0) & (p < 1) & (var > 0)
        n_eff = np.where(interior, p * (1 - p) / np.where(var > 0, var, 1.0), s)
    return np.clip(n_eff, s, s * np.maximum(m, 1.0))


def proportion_interval(
    point: np.ndarray,
    replicates: np.ndarray,
    sequences: int | np.ndarray,
    trials_per_sequence: float | np.ndarray = 1.0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` for proportions estimated as means over ``sequences`` independent sequences, from
    their point values ``[k]`` and bootstrap replicates ``[R, k]``: Clopper–Pearson at the effective
    number of trials (:func:`effective_trials`); exact sequence-level bound at 0 and 1. The drop-in
    replacement of :func:`interp.stats.percentile_interval` for proportions."""
    p = np.asarray(point, dtype=np.float64)
    n = effective_trials(p, replicates, sequences, trials_per_sequence)
    low, high = clopper_pearson(p * n, n, confidence)
    undefined = ~np.isfinite(p)
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def proportion_estimates(
    point: np.ndarray,
    replicates: np.ndarray,
    sequences: int | np.ndarray,
    trials_per_sequence: float | np.ndarray = 1.0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[Estimate]:
    """:func:`proportion_interval` as a list of :class:`~interp.stats.Estimate` (one per column)."""
    p = np.asarray(point, dtype=np.float64).ravel()
    low, high = proportion_interval(p, replicates, sequences, trials_per_sequence, confidence)
    return [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(p, low.ravel(), high.ravel())]


def binomial_estimate(successes: int, trials: int, confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """k/n with its Clopper–Pearson interval (independent trials); NaN when n = 0."""
    if trials <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    low, high = clopper_pearson(successes, trials, confidence)
    return Estimate(successes / trials, float(low), float(high))
