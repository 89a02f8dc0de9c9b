"""Attention patterns to put in place of a head's own, for :func:`interp.ablation.replace_pattern`.

Each function maps a pattern A [batch, query, key] (rows sum to one) to a new one of the same shape;
those with parameters are used through ``functools.partial``, e.g.
``replace_pattern(model, 0, 0, partial(patterns.flip, shift=1))``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from models.scalars import as_float, as_int


def _check(pattern: Tensor) -> int:
    if pattern.ndim != 3 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(
            f"pattern must have shape [batch, query, key] with query == key, got {tuple(pattern.shape)}"
        )
    return pattern.shape[-1]


def flip(pattern: Float[Tensor, "batch query key"], shift: int = 0) -> Float[Tensor, "batch query key"]:
    """One-hot rows at key clamp(N − 1 − i + shift, 0, N − 1): the perfect reversal for shift 0.

    With shift ±1 query i reads the neighbour of its flipped key; at the one edge where that key does
    not exist the row stays on the nearest key (the flipped key itself).
    """
    n = _check(pattern)
    shift = as_int(shift, "shift")
    keys = (torch.arange(n - 1, -1, -1, device=pattern.device) + shift).clamp(0, n - 1)
    one_hot = torch.nn.functional.one_hot(keys, n).to(pattern.dtype)
    return one_hot.expand_as(pattern).clone()


def uniform(pattern: Float[Tensor, "batch query key"]) -> Float[Tensor, "batch query key"]:
    """A[i, k] = 1/N: every key weighted equally (the head returns the mean value vector)."""
    n = _check(pattern)
    return torch.full_like(pattern, 1.0 / n)


def row_permutations(n: int, seed: int) -> Tensor:
    """[query, key] index: row i is a random permutation π_i of the keys, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(as_int(seed, "seed", minimum=0))
    return torch.rand(n, n, generator=generator).argsort(dim=-1)


def permute_rows(pattern: Float[Tensor, "batch query key"], seed: int) -> Float[Tensor, "batch query key"]:
    """A'[b, i, k] = A[b, i, π_i(k)]: the weights of each row moved to random keys.

    Each query row gets its own permutation (the same for every sequence); the multiset of weights in
    a row, hence its entropy and its peak, is unchanged, only *where* the weight goes changes — the
    "attention is not explanation" test (Jain & Wallace, 2019).
    """
    n = _check(pattern)
    index = row_permutations(n, seed).to(pattern.device)
    return pattern.gather(-1, index.expand_as(pattern))


def temperature(pattern: Float[Tensor, "batch query key"], tau: float) -> Float[Tensor, "batch query key"]:
    """softmax(S / τ) computed from A = softmax(S): A'[i, k] = A[i, k]^(1/τ) / Σ_j A[i, j]^(1/τ).

    τ < 1 sharpens the rows towards their argmax, τ > 1 flattens them towards uniform; τ = 1 is A.
    """
    _check(pattern)
    tau = as_float(tau, "tau")
    if tau <= 0:
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    return torch.softmax(torch.log(pattern) / tau, dim=-1)
