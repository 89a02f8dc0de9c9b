"""The temperature of "attention follows similarity": the single β with attention ≈ softmax(β · similarity).

Pure numpy on patterns and similarity matrices, used by ``analyses.qk_circuit`` (with the similarity
cos(PE_{N−1−i}, PE_j)) and ``analyses.zoo_atlas`` (β per run of a zoo).
"""

from __future__ import annotations

import math

import numpy as np

BETA_MAX = 1000.0


def fit_temperatures(similarity: np.ndarray, observed: np.ndarray, beta_max: float = BETA_MAX) -> np.ndarray:
    """For each pattern ``observed[..., query, key]``, the β ∈ [0, beta_max] maximising
    Σ_ik observed_ik · log softmax_k(β · similarity_ik) (``similarity`` broadcasts against it).

    The objective is concave in β (log-sum-exp is convex), so its derivative
    g(β) = Σ_ik observed_ik (similarity_ik − E_{softmax_k(β·similarity_i)}[similarity_i]) (with each row's
    expectation weighted by that row's observed mass) falls with β: β = 0 where g(0) ≤ 0, beta_max where
    g(beta_max) ≥ 0, else the root of g, found by bisection of [0, beta_max] to double precision (all
    patterns at once). This is the best single temperature for "attention follows similarity". NaN
    where no β is better than another or the pattern is not one: a similarity constant along each row
    (e.g. no positional encoding), a pattern without mass, a negative or a non-finite entry.
    """
    if isinstance(beta_max, bool) or not (math.isfinite(beta_max) and beta_max > 0):
        raise ValueError(f"beta_max must be a positive finite number, got {beta_max!r}")
    similarity = np.asarray(similarity, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    shape = np.broadcast_shapes(similarity.shape, observed.shape)[:-2]
    undefined = ~np.isfinite(similarity).all((-1, -2)) | (np.ptp(similarity, axis=-1) == 0).all(-1)
    undefined = undefined | ~np.isfinite(observed).all((-1, -2)) | (observed < 0).any((-1, -2))
    undefined = undefined | (observed.sum((-1, -2)) == 0)
    row_mass = observed.sum(-1)
    target = (observed * similarity).sum((-1, -2))

    def slope(beta: np.ndarray) -> np.ndarray:
        logits = beta[..., None, None] * similarity
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        expected = (weights * similarity).sum(-1) / weights.sum(-1)
        return target - (row_mass * expected).sum(-1)

    with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs: NaN below
        low, high = np.zeros(shape), np.full(shape, float(beta_max))
        at_zero, at_max = slope(low) <= 0, slope(high) >= 0  # the optimum is a bound
        for _ in range(64):  # beta_max / 2**64: below double precision at any β of interest
            mid = (low + high) / 2
            rising = slope(mid) > 0
            low, high = np.where(rising, mid, low), np.where(rising, high, mid)
    # The bounds exactly (bisection can stop an ulp below beta_max, e.g. for 7.3).
    beta = np.where(at_zero, 0.0, np.where(at_max, float(beta_max), (low + high) / 2))
    return np.where(undefined, np.nan, beta)


def fit_temperature(similarity: np.ndarray, observed: np.ndarray, beta_max: float = BETA_MAX) -> float:
    """:func:`fit_temperatures` of one pattern ``observed[query, key]``."""
    return float(fit_temperatures(similarity, observed, beta_max))
