"""Paired statistics for "the same sequences, with and without an intervention".

- :func:`wilcoxon_signed_rank` — Wilcoxon's signed-rank test of d = x − y with the normal
  approximation (what ``scipy.stats.wilcoxon(..., method="asymptotic")`` computes), vectorised so that
  10⁶ pairs cost one sort. With the n non-zero differences ranked by |d| (ties get their average rank):

      R+ = Σ_{d_j > 0} rank_j,   R− = Σ_{d_j < 0} rank_j,   μ = n(n + 1)/4,
      σ² = [n(n + 1)(2n + 1) − ½ Σ_t (t³ − t)] / 24   (t: sizes of groups of tied |d|),
      z = (R+ − μ) / σ,   p = 2 Φ(−|z|)  (two-sided).

  ``zero_method``: "wilcox" drops zero differences; "pratt" ranks them but leaves them out of R±
  (μ, σ² lose the zeros' share); "zsplit" splits their ranks between R+ and R−.
  The effect size is the matched-pairs rank-biserial correlation r = (R+ − R−)/(R+ + R−) ∈ [−1, 1].
  A p-value is never 0: below :data:`P_FLOOR` (10⁻¹⁶) neither the normal approximation nor a tail
  computed in double precision resolves it, so p is stored as the bound P_FLOOR, read "p ≤ 10⁻¹⁶"
  (``analyses.frame.numbers.p_value`` prints ``< 1e-16``). Holm keeps the floor (it only multiplies).
- :func:`holm` — Holm's step-down adjusted p-values (family-wise error control).
- :func:`paired_bootstrap_ci` — percentile-bootstrap CI of mean(x − y) resampling *pairs*; with the
  same seed it draws the very resamples ``scipy.stats.bootstrap(..., paired=True, rng=default_rng(seed))``
  draws (see :mod:`interp.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from interp.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Estimate, bootstrap_ci

P_FLOOR = 1e-16  # the smallest p-value this module resolves; smaller ones are stored as this bound
ZeroMethod = Literal["wilcox", "pratt", "zsplit"]
ZERO_METHODS: tuple[str, ...] = get_args(ZeroMethod)
Alternative = Literal["two-sided", "greater", "less"]
ALTERNATIVES: tuple[str, ...] = get_args(Alternative)


@dataclass(frozen=True)
class WilcoxonResult:
    """``statistic`` is min(R+, R−) for two-sided tests and R+ otherwise (scipy's convention)."""

    statistic: float
    pvalue: float
    zstatistic: float
    r_plus: float
    r_minus: float
    n: int  # pairs used (non-zero differences for "wilcox")
    n_zero: int  # pairs whose difference is exactly zero
    rank_biserial: float  # (R+ − R−)/(R+ + R−); NaN when every difference is zero

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in vars(self).items()}


def _differences(x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"paired samples must have the same shape, got {x.shape} and {y.shape}")
        x = x - y
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-d sample of differences, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the paired differences contain NaN or infinity")
    return x


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-d sample without NaN, ties given the mean of the ranks they span
    (``[3, 1, 3, 2]`` → ``[3.5, 1, 3.5, 2]``): ``scipy.stats.rankdata(values)``, exactly, without
    importing scipy.stats (a second of start-up for one sort)."""
    values = np.asarray(values)
    if values.ndim != 1 or (values.dtype.kind == "f" and np.isnan(values).any()):
        raise ValueError(f"expected a 1-d sample without NaN, got shape {values.shape}")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])  # tie groups' bounds
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts[:-1] + starts[1:] + 1) / 2.0, np.diff(starts))
    return ranks


def wilcoxon_signed_rank(
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    zero_method: ZeroMethod = "wilcox",
    correction: bool = False,
    alternative: Alternative = "two-sided",
) -> WilcoxonResult:
    """Signed-rank test that d = x − y (or x alone) is symmetric about 0 (normal approximation).

    ``correction`` applies the continuity correction of ½ towards μ. If every difference is zero
    (σ = 0) there is no evidence of an effect: p = 1 and z = 0 (scipy returns NaN there).
    """
    from scipy.special import ndtr  # lazy: scipy takes a while to import, most commands never test

    if zero_method not in ZERO_METHODS:
        raise ValueError(f"unknown zero_method {zero_method!r}; choose one of {', '.join(ZERO_METHODS)}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; choose one of {', '.join(ALTERNATIVES)}")
    d = _differences(x, y)
    zero = d == 0
    n_zero = int(zero.sum())
    if zero_method == "wilcox":
        d = d[~zero]
        zero = zero[~zero]
    n = d.size
    ranks = average_ranks(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    r_minus = float(ranks[d < 0].sum())
    if zero_method == "zsplit":
        r_plus += ranks[zero].sum() / 2
        r_minus += ranks[zero].sum() / 2
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1)
    ties = np.unique(np.abs(d[~zero]) if zero_method == "pratt" else np.abs(d), return_counts=True)[1]
    if zero_method == "pratt":
        mean -= n_zero * (n_zero + 1) / 4
        var -= n_zero * (n_zero + 1) * (2 * n_zero + 1)
    sigma = np.sqrt(max(var - 0.5 * float((ties.astype(np.float64) ** 3 - ties).sum()), 0.0) / 24)
    if sigma == 0:
        z, p = 0.0, 1.0
    else:
        z = (r_plus - mean) / sigma
        if correction:
            sign = {"greater": 1.0, "less": -1.0}.get(alternative, float(np.sign(z)))
            z -= sign * 0.5 / sigma
        if alternative == "two-sided":
            p = float(min(1.0, 2 * ndtr(-abs(z))))
        else:
            p = float(ndtr(-z) if alternative == "greater" else ndtr(z))
    p = max(p, P_FLOOR)  # a bound, never 0 (module docstring)
    statistic = min(r_plus, r_minus) if alternative == "two-sided" else r_plus
    total = r_plus + r_minus
    return WilcoxonResult(
        statistic=float(statistic),
        pvalue=float(p),
        zstatistic=float(-abs(z) if alternative == "two-sided" else z),
        r_plus=r_plus,
        r_minus=r_minus,
        n=int(n),
        n_zero=n_zero,
        rank_biserial=float((r_plus - r_minus) / total) if total > 0 else float("nan"),
    )


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, in the input's order: with p_(1) ≤ … ≤ p_(m) sorted,

        p̃_(j) = min(1, max_{i ≤ j} (m − i + 1) p_(i)).

    Rejecting every hypothesis with p̃ ≤ α controls the family-wise error rate at α.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a 1-d array, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("pvalues must lie in [0, 1] (no NaN)")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def paired_bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """Mean of d = x − y with a percentile-bootstrap CI that resamples the pairs (units) together."""
    return bootstrap_ci(_differences(x, y), resamples=resamples, confidence=confidence, seed=seed)[0]
