"""Attention patterns to put in place of a head's own, for :func:`interp.ablation.replace_pattern`.

Each function maps a pattern A [batch, query, key] (rows sum to one) to a new one of the same shape;
those with parameters are used through ``functools.partial``, e.g.
``replace_pattern(model, 0, 0, partial(patterns.flip, shift=1))``. Several on one head compose in the
order they are entered (the report's lab: temperature, then flip or uniform, then neighbour_mix, then pin).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.metrics import NEIGHBOUR_OFFSETS
from machine.scalars import as_float, as_int


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


def neighbour_keys(
    n: int, offsets: Sequence[int] = NEIGHBOUR_OFFSETS, device: torch.device | str | None = None
) -> Float[Tensor, "query key"]:
    """1 at (i, f(i) + d) for each d in ``offsets`` where that key exists (f(i) = N − 1 − i), else 0."""
    target = torch.zeros(n, n, device=device)
    flipped = torch.arange(n - 1, -1, -1, device=device)
    rows = torch.arange(n, device=device)
    for d in offsets:
        if int(d) == 0:
            raise ValueError("neighbour offsets must not contain 0 (the flipped key itself)")
        keys = flipped + int(d)
        ok = (keys >= 0) & (keys < n)
        target[rows[ok], keys[ok]] = 1.0
    return target


def neighbour_mix(
    pattern: Float[Tensor, "batch query key"], s: float, offsets: Sequence[int] = NEIGHBOUR_OFFSETS
) -> Float[Tensor, "batch query key"]:
    """A' = (1 − s) A + s B, B_i uniform over the keys f(i) + d (d in ``offsets``) that exist.

    s = 0 is A; s = 1 spreads each row evenly over the flipped key's neighbours (none on the flipped
    key itself), so the flip mass falls to (1 − s) A_{i f(i)}. A row without any neighbour key (N = 1)
    is left as it is. The neighbour family of the tolerance analysis, at one point.
    """
    n = _check(pattern)
    s = as_float(s, "s")
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"the mixing weight s must lie in [0, 1], got {s!r}")
    target = neighbour_keys(n, offsets, pattern.device).to(pattern.dtype)
    count = target.sum(-1, keepdim=True)
    target = torch.where(count > 0, target / count.clamp(min=1), pattern)
    return (1 - s) * pattern + s * target


def pin(pattern: Float[Tensor, "batch query key"], query: int, key: int) -> Float[Tensor, "batch query key"]:
    """Row ``query`` one-hot at ``key`` in every sequence; the other rows unchanged."""
    n = _check(pattern)
    query, key = as_int(query, "query"), as_int(key, "key")
    for name, value in (("query", query), ("key", key)):
        if not 0 <= value < n:
            raise ValueError(f"{name} {value} does not exist: the pattern has positions 0..{n - 1}")
    out = pattern.clone()
    out[:, query] = 0
    out[:, query, key] = 1
    return out
