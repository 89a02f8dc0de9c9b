"""Tolerances for float32 results that two kernel paths compute in different summation orders, derived
from the operations (the ``rounding`` tests; ``.ci/run`` runs them a second time on other kernels).

Model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2.2 and §3.1): every float32
operation returns its exact result times (1 + δ), |δ| ≤ u = 2⁻²⁴, so a sum of n terms, in any order or
blocking, is off by at most γₙ·Σ|terms| with γₙ = n·u / (1 − n·u). Through a composition of stages whose
summation lengths are n₁, n₂, … the first-order errors add: γ_N with N = n₁ + n₂ + … . Normwise, and
assuming each stage is well conditioned (the magnitude of its result is that of the terms it sums, so
that Σ|terms| ≈ ‖result‖), a tensor y computed through that path satisfies

    ‖ŷ₃₂ − y‖∞ ≤ γ_N · ‖y‖∞,

and two float32 evaluations of y in different orders (another CPU's kernels, a batched product instead
of one per model) differ by at most 2·γ_N·‖y‖∞. The tests check the stronger statement — each float32
evaluation against y computed in float64 (whose own error, γ_N with u = 2⁻⁵³, is negligible) — which also
tests the conditioning assumption: were a tensor ill-conditioned, the plain hooked model in float32
would fail it too, whatever the path being tested.

``path_length`` counts N for the encoder (an upper bound: every linear layer counted at the larger of its
two widths, so the same count bounds the backward pass, whose products sum over the other width).
"""

from __future__ import annotations

import torch

U32 = 2.0**-24  # float32 unit roundoff


def gamma(n: int, u: float = U32) -> float:
    """γₙ = n·u / (1 − n·u): the relative error bound of a sum of n terms (n·u < 1)."""
    if n * u >= 1:
        raise ValueError(f"gamma: n·u = {n * u} ≥ 1, no bound")
    return n * u / (1 - n * u)


def path_length(cfg, pos: int) -> int:
    """N for the encoder's forward pass on sequences of ``pos`` tokens, up to the loss: the summation
    lengths of the stages on its longest path, each rounding of an elementwise step counted as 1.

    linear (in → out)   max(in, out) + 1 (the products' sum, then the bias)
    LayerNorm (d)       2·d + 3 (mean, mean square, + eps, sqrt, divide)
    attention           qkv + (d_head + 1) scores and their scaling + (pos + 2) softmax (exp, sum, divide)
                        + pos (pattern · v) + o_proj
    block               attention + add + LN + fc_in + ReLU + fc_out + add + LN
    embed               2 (bias, positional encoding; the row lookup is exact)
    head and loss       fc_in + LN + ReLU + fc_out + (d_vocab + 3) (log-softmax: max, exp, sum, log)
    """
    d, c = cfg.d_model, cfg.d_vocab

    def linear(i: int, o: int) -> int:
        return max(i, o) + 1

    layer_norm = 2 * d + 3
    attention = linear(d, 3 * d) + (cfg.d_head + 1) + (pos + 2) + pos + linear(d, d)
    mlp = linear(d, cfg.d_mlp) + 1 + linear(cfg.d_mlp, d)
    block = attention + 1 + layer_norm + mlp + 1 + layer_norm
    head = linear(d, d) + layer_norm + 1 + linear(d, c) + (c + 3)
    return 2 + cfg.n_layers * block + head


def gradient_path_length(cfg, batch: int, pos: int) -> int:
    """N for the gradient of the mean loss over ``batch·pos`` tokens: the forward path, the backward
    path (bounded by the same count), and a parameter's sum over the tokens, then the mean's division."""
    return 2 * path_length(cfg, pos) + batch * pos + 1


def assert_within_rounding(actual: torch.Tensor, exact: torch.Tensor, n: int, name: str = "") -> None:
    """‖actual − exact‖∞ ≤ γₙ·‖exact‖∞, with ``exact`` computed in float64 (see the module docstring)."""
    actual, exact = actual.detach().double(), exact.detach().double()
    bound = gamma(n) * float(exact.abs().max())
    error = float((actual - exact).abs().max())
    assert error <= bound, f"{name}: |float32 − float64| = {error:.3g} > γ_{n}·max|y| = {bound:.3g}"
