"""Exact extremes of a linear-fractional function of independent per-key choices (Dinkelbach).

Query i's attention output along a direction α (one head) is

    f(t) = Σ_p w_p(t_p) · y_p(t_p) / Σ_p w_p(t_p),     y_p(t) = α·v_p(t),  w_p(t) = exp(s_p(t)) > 0,

where each key position p picks its digit t_p independently from an allowed set. Its minimum over all
choices is the root λ* of the separable function F(λ) = min_t Σ_p w_p(t_p)(y_p(t_p) − λ) =
Σ_p min_{t} w_p(t)(y_p(t) − λ): Dinkelbach's iteration λ ← f(argmin) decreases strictly until
F(λ) = 0, after finitely many steps (finitely many choices). Whatever the number of steps, for every
choice t, Σ w (y − λ) ≥ F(λ) gives f(t) ≥ λ + F(λ)/Σ_p w_p(t_p) ≥ λ + min(F(λ), 0)/W_min with
W_min = Σ_p min_t w_p(t): a sound lower bound, equal to λ* at convergence.

The returned bound is computed in float64 and lowered by an explicit allowance for that float64
arithmetic (:func:`float64_allowance`): F(λ) and W_min are sums of rounded terms, so without it a
bound equal to the true minimum in exact arithmetic may come out float64 ulps of Σ|terms| above it
when the terms cancel (tested against exact rational arithmetic). The objective y itself is taken as
exact: its caller's rounding (e.g. of the projections a·v) is the caller's to add.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.certificate.floats import U64, gamma64

# Test-only switch (see network.MUTATIONS): "drop_dinkelbach_rounding" leaves the float64 allowance out.
MUTATIONS: set[str] = set()


def min_ratio(
    values: Tensor, weights: Tensor, allowed: Tensor, max_steps: int = 40, magnitude: Tensor | None = None
) -> tuple[Tensor, Tensor, int]:
    """Sound lower bound of min_t Σ_p w y / Σ_p w over independent allowed choices t_p (float64).

    Args:
        values: y [..., N, C] float64 (the objective per key position and digit), taken as exact.
        weights: w [..., N, C] > 0 where allowed (broadcastable to ``values``).
        allowed: [..., N, C] bool (broadcastable), at least one True per position.
        max_steps: Dinkelbach steps at most (the bound is sound after any number).
        magnitude: a bound [...] on max |y| (default: computed), for the float64 allowance.

    Returns:
        (lower [...], attained [...], steps): ``lower`` ≤ the minimum (including the float64 allowance of
        :func:`float64_allowance`) ≤ ``attained``, the ratio of an actual choice (computed in float64);
        equal up to that allowance when the iteration converged.
    """
    inf = torch.tensor(float("inf"), dtype=values.dtype)
    weights = torch.where(allowed, weights, 0.0).to(values.dtype)
    wy = torch.where(allowed, weights * values, inf)  # +inf where not allowed
    w_min = torch.where(allowed, weights, inf).amin(-1).sum(-1)
    # Iterate in float32 (half the memory traffic): the iterates only choose λ; the bound below is
    # computed in float64 at the final λ, with its own full minimisation, so it is sound whatever they are.
    wy32, w32 = wy.float(), weights.float().expand_as(wy)
    choice = torch.where(allowed, values, inf).float().expand_as(wy).argmin(-1, keepdim=True)
    lam = _ratio(wy, weights.expand_as(wy), choice)
    steps = 0
    for step in range(1, max_steps + 1):
        steps = step
        g = torch.addcmul(wy32, w32, -lam.float()[..., None, None])
        choice = g.argmin(-1, keepdim=True)
        new = _ratio(wy, weights.expand_as(wy), choice)
        improved = new < lam
        lam = torch.where(improved, new, lam)
        if not bool(improved.any()):
            break
    # F(λ) = Σ_p min_t w (y − λ) in float64 at the final λ: min ratio ≥ λ + min(F, 0)/W_min.
    gap = torch.addcmul(wy, weights, -lam[..., None, None]).amin(-1).sum(-1)
    lower = torch.where(gap >= 0, lam, lam + gap / w_min)  # (W_min = 0 only if weights underflow: −inf)
    if "drop_dinkelbach_rounding" not in MUTATIONS:
        if magnitude is None:
            magnitude = torch.where(allowed, values.abs(), 0.0).amax((-2, -1))
        w_sum_max = weights.amax(-1).sum(-1)
        lower = lower - float64_allowance(
            values.shape[-2], lam, gap, w_min, w_sum_max * (magnitude + lam.abs())
        )
    return lower, lam, steps


def float64_allowance(n: int, lam: Tensor, gap: Tensor, w_min: Tensor, term_sum: Tensor) -> Tensor:
    """How far the float64 evaluation of λ + min(F(λ), 0)/W_min may lie above its exact value [...].

    With u = 2^-53: each term fl(w·y) − λ·w (a fused multiply-add) is within 3u·(|w y| + |λ w|) of
    w(y − λ), so each per-position minimum within that of its largest such term, and their N-term sum
    adds γ_N of Σ|terms|: |F̃ − F| ≤ E_F := γ_{N+3}·``term_sum``, ``term_sum`` ≥ Σ_p max_t w(|y| + |λ|).
    W̃_min has relative error ≤ γ_N. When F̃ ≥ E_F the exact F ≥ 0 and the bound is λ. Otherwise the
    exact bound is ≥ λ + (min(F̃, 0) − E_F)/(W̃_min (1 − γ_N)); the allowance is the difference of the
    computed bound to that, plus 8u·(|λ| + |quotient|) for the roundings of these few operations."""
    g_n = gamma64(n)
    quotient = (gap.clamp(max=0) - gamma64(n + 3) * term_sum) / (w_min * (1 - g_n))
    exact_part = torch.where(gap >= gamma64(n + 3) * term_sum, lam, lam + quotient)
    computed = torch.where(gap >= 0, lam, lam + gap / w_min)
    return (computed - exact_part).clamp(min=0) + 8 * U64 * (lam.abs() + quotient.abs())


def _ratio(wy: Tensor, weights: Tensor, choice: Tensor) -> Tensor:
    """Σ_p w y / Σ_p w at the choice [..., N, 1]."""
    return wy.gather(-1, choice).sum((-2, -1)) / weights.gather(-1, choice).sum((-2, -1))


def max_weight_fraction(weights: Tensor, allowed: Tensor, key: int, digit: Tensor) -> Tensor:
    """The exact minimum over allowed choices of key ``key``'s attention weight w_key / Σ_p w_p, its
    digit fixed to ``digit`` [...]: every other position takes its largest allowed weight.

    weights [..., N, C], allowed [..., N, C]; returns [...]."""
    masked = torch.where(allowed, weights, torch.zeros((), dtype=weights.dtype))
    own = weights[..., key, :].gather(-1, digit.unsqueeze(-1)).squeeze(-1)
    others = masked.amax(-1).sum(-1) - masked[..., key, :].amax(-1)
    return own / (own + others)
