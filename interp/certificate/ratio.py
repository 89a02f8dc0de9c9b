"""Exact extremes of a linear-fractional function of independent per-key choices (Dinkelbach).

Query i's attention output along a direction α (one head) is

    f(t) = Σ_p w_p(t_p) · y_p(t_p) / Σ_p w_p(t_p),     y_p(t) = α·v_p(t),  w_p(t) = exp(s_p(t)) > 0,

where each key position p picks its digit t_p independently from an allowed set. Its minimum over all
choices is the root λ* of the separable function F(λ) = min_t Σ_p w_p(t_p)(y_p(t_p) − λ) =
Σ_p min_{t} w_p(t)(y_p(t) − λ): Dinkelbach's iteration λ ← f(argmin) decreases strictly until
F(λ) = 0, after finitely many steps (finitely many choices). Whatever the number of steps, for every
choice t, Σ w (y − λ) ≥ F(λ) gives f(t) ≥ λ + F(λ)/Σ_p w_p(t_p) ≥ λ + min(F(λ), 0)/W_min with
W_min = Σ_p min_t w_p(t): a sound lower bound, equal to λ* at convergence.
"""

from __future__ import annotations

import torch
from torch import Tensor


def min_ratio(
    values: Tensor, weights: Tensor, allowed: Tensor, max_steps: int = 40
) -> tuple[Tensor, Tensor, int]:
    """Lower bound and attained value of min_t Σ_p w y / Σ_p w over independent allowed choices.

    Args:
        values: y [..., N, C] (the objective per key position and digit).
        weights: w [..., N, C] > 0 where allowed (broadcastable to ``values``).
        allowed: [..., N, C] bool (broadcastable), at least one True per position.
        max_steps: Dinkelbach steps at most (the bound is sound after any number).

    Returns:
        (lower [...], attained [...], steps): ``lower`` ≤ the minimum ≤ ``attained``, where ``attained``
        is the ratio of an actual choice; equal up to float64 rounding when the iteration converged.
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
    return lower, lam, steps


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
