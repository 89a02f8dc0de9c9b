"""The float32 rounding the proof covers: constants of the standard error analysis.

The model computes in IEEE-754 float32 with round-to-nearest, unit roundoff u = 2^-24. For any order
of summation (blocked, vectorised, with or without fused multiply-add),
|fl(Σ_{k≤n} a_k b_k) − Σ a_k b_k| ≤ γ_n Σ |a_k b_k| with γ_n = n·u / (1 − n·u) (Higham, Accuracy and
Stability of Numerical Algorithms, §3.1); an elementwise +, −, ×, ÷ or √ is correctly rounded (relative
error ≤ u); ``exp`` is assumed within ``EXP_ULPS`` ulps (≤ 2·EXP_ULPS·u relative; torch's vectorised
float32 exp measured within 1 ulp here; the allowance is that of its least accurate kernel).
Subnormal results add at most 2^-149 per operation (2^-126 with flush-to-zero), far below the
``ABSOLUTE`` allowance added to every error bound. The proof's own arithmetic is float64 (u₆₄ = 2^-53)
on numbers of magnitude ≤ ~10^3 and ~10^3 operations per bound; ``RELATIVE_SLACK`` (2^-30, > 10^6·u₆₄)
of every magnitude is added to cover it.
"""

from __future__ import annotations

U32 = 2.0**-24  # float32 unit roundoff (round to nearest)
U64 = 2.0**-53  # float64 unit roundoff: the proof's own arithmetic
EXP_ULPS = 20  # allowance for float32 exp, in ulps (relative 2·EXP_ULPS·u): torch's least accurate
# vectorised exp (Vectorized::exp_u20, used by its fused CPU attention kernels) is documented at 20 ulp
RELATIVE_SLACK = 2.0**-30  # covers the proof's own float64 rounding, relative to magnitudes
ABSOLUTE = 1e-30  # covers subnormal flushing (2^-149 ≈ 1.4e-45 per operation) many times over


def gamma(n: int) -> float:
    """γ_n = n·u/(1 − n·u): the relative error bound of an n-term float32 sum of products, any order."""
    return n * U32 / (1 - n * U32)


def gamma64(n: int) -> float:
    """γ_n in float64 (u = 2^-53): the relative error bound of the proof's own n-term float64 sums."""
    return n * U64 / (1 - n * U64)


def softmax_relative_error(score_error: float, score_range: float, keys: int) -> float:
    """ρ with |π̃_k − π_k| ≤ ρ·π_k for torch's float32 softmax π̃ of scores s̃ = s + Δ, |Δ| ≤ score_error.

    torch computes m = max s̃, e_k = exp(fl(s̃_k − m)), S = Σ e_k, π̃_k = e_k·fl(1/S) (or e_k/S). With
    η_k = fl(s̃_k − m) − (s_k − m), |η_k| ≤ E := score_error + u·score_range; exp within 2·EXP_ULPS·u;
    the sum within γ_keys; one or two roundings for the normalisation:
    π̃_k / π_k ∈ [e^{−2E}(1−ε)(1−u)²/(1+γ), e^{2E}(1+ε)(1+u)²/((1−ε)(1−γ))], ε = 2·EXP_ULPS·u.
    """
    import math

    e = score_error + U32 * score_range
    eps = 2 * EXP_ULPS * U32
    g = gamma(keys)
    return math.exp(2 * e) * (1 + eps) * (1 + U32) ** 2 / ((1 - eps) * (1 - g)) - 1 + RELATIVE_SLACK


def layer_norm_relative_error(d: int) -> float:
    """ρ with |h̃_k − (w_k c̃_k r(c̃) + b_k)| ≤ ρ·|w_k c̃_k r(c̃)| + u·|h̃_k| for torch's float32 LayerNorm
    given the centred vector c̃ it computed, r(c) = 1/√(mean(c²) + eps): squares and the d-term mean
    (γ_{d+1}), + eps (u), √ (u), ÷ (u), × w (u); the final + b is the u·|h̃| term. γ_{d+8} covers it."""
    return gamma(d + 8) + RELATIVE_SLACK
