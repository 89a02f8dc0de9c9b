"""One-parameter families of attention patterns, from a head's own pattern to a degraded one.

Each family maps the head's own pattern A [batch, query, key] (rows sum to one) and a scalar to a new
pattern of the same shape; the scalar runs from the *identity point* (the model's own pattern) towards
a pattern with less weight on the flipped key f(i) = N − 1 − i (conventions of :mod:`interp.metrics`):

- ``temperature`` (parameter τ > 0, identity τ = 1): the scores divided by τ,

      A'_ik = softmax_k(S_ik / τ) = A_ik^(1/τ) / Σ_j A_ij^(1/τ)     (A = softmax(S)),

  sharper than the model's own for τ < 1, blurrier for τ > 1 (uniform over the row's support as τ → ∞);
- ``neighbours`` (s ∈ [0, 1], identity s = 0): A' = (1 − s) A + s B, where B_i is uniform over the keys
  at offsets ``offsets`` (default ±1, ±2) that exist for query i; flip mass (1 − s) A_{i f(i)};
- ``uniform`` (s ∈ [0, 1]): A' = (1 − s) A + s / N; flip mass (1 − s) A_{i f(i)} + s / N;
- ``single_key`` (s ∈ [0, 1], one offset d): a share s of the flipped key's weight moves to the one key
  g(i) = f(i) + d, or f(i) − d at an edge where f(i) + d does not exist (every row loses weight):
  A'_{i f(i)} = (1 − s) A_{i f(i)}, A'_{i g(i)} = A_{i g(i)} + s A_{i f(i)}; flip mass (1 − s) A_{i f(i)}.

A :class:`PatternFamily` names a family and its grid of parameter values in degradation order (the
temperature grid may start below 1: sharper patterns come first); the identity point is always part
of the grid (added when missing), since margins are measured from the model's own pattern.
:func:`apply_family` evaluates a whole grid at once, ``[point, batch, query, key]``, so that a sweep
can run every point in one forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from interp.metrics import NEIGHBOUR_OFFSETS, _heads, flipped_keys
from interp.patterns import neighbour_keys
from machine.scalars import is_int

FamilyKind = Literal["temperature", "neighbours", "uniform", "single_key"]
FAMILY_KINDS: tuple[str, ...] = get_args(FamilyKind)

# τ = 2^(k/8): coarse on the sharp side, steps of 9% from τ = 0.84 to 3.4, then τ = 4.
TEMPERATURES: tuple[float, ...] = tuple(2.0 ** (k / 8) for k in (-16, -8, -4, -2, -1, *range(0, 15), 16))
MIXES: tuple[float, ...] = tuple(k / 20 for k in range(21))  # s = 0, 0.05, ..., 1


@dataclass(frozen=True)
class PatternFamily:
    """A family ``kind`` evaluated at ``values`` (degradation order); ``offset`` only for single_key."""

    kind: FamilyKind
    values: tuple[float, ...]
    offset: int | None = None
    neighbour_offsets: tuple[int, ...] = NEIGHBOUR_OFFSETS

    def __post_init__(self) -> None:
        if self.kind not in FAMILY_KINDS:
            raise ValueError(f"unknown pattern family {self.kind!r}; families: {', '.join(FAMILY_KINDS)}")
        values = tuple(float(v) for v in self.values)
        if any(not math.isfinite(v) for v in values) or any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"the {self.kind} family's values must be finite and increasing, got {values}")
        # The model's own pattern is always a point: margins are measured from it.
        identity = 1.0 if self.kind == "temperature" else 0.0
        values = tuple(sorted({*values, identity}))
        if self.kind == "temperature" and values[0] <= 0:
            raise ValueError(f"temperatures must be positive, got {values[0]!r}")
        if self.kind != "temperature" and not (0.0 <= values[0] and values[-1] <= 1.0):
            raise ValueError(f"the {self.kind} family's mixing weights must lie in [0, 1], got {values}")
        needs_offset = self.kind == "single_key"
        bad_offset = not is_int(self.offset) or not int(self.offset)
        if needs_offset and bad_offset:
            raise ValueError(f"the single_key family needs a non-zero integer offset, got {self.offset!r}")
        if not needs_offset and self.offset is not None:
            raise ValueError(f"offset= is only used by the single_key family, not {self.kind!r}")
        object.__setattr__(self, "values", values)
        if needs_offset:
            object.__setattr__(self, "offset", int(self.offset))  # np.int64 / 0-d tensor → int
        object.__setattr__(self, "neighbour_offsets", tuple(int(d) for d in self.neighbour_offsets))

    @property
    def name(self) -> str:
        """``temperature``, ``neighbours``, ``uniform`` or ``single_key+1`` (with the offset's sign)."""
        return f"single_key{self.offset:+d}" if self.kind == "single_key" else self.kind

    @property
    def parameter(self) -> str:
        return "tau" if self.kind == "temperature" else "s"

    @property
    def identity(self) -> float:
        """The parameter value that leaves the pattern unchanged."""
        return 1.0 if self.kind == "temperature" else 0.0


def default_families(
    temperatures: Sequence[float] = TEMPERATURES, mixes: Sequence[float] = MIXES, single_offset: int = 1
) -> list[PatternFamily]:
    """Temperature, neighbour mix, uniform mix and single key (offset ``single_offset``)."""
    return [
        PatternFamily("temperature", tuple(temperatures)),
        PatternFamily("neighbours", tuple(mixes)),
        PatternFamily("uniform", tuple(mixes)),
        PatternFamily("single_key", tuple(mixes), offset=single_offset),
    ]


def _check(pattern: Tensor) -> int:
    if isinstance(pattern, Tensor) and pattern.ndim != 3:
        raise ValueError(f"pattern must be one head's [batch, query, key], got {tuple(pattern.shape)}")
    _heads(pattern)  # the metrics' checks: a tensor, square, floating point, rows summing to one
    return pattern.shape[-1]


def neighbour_target(
    n: int, offsets: Sequence[int] = NEIGHBOUR_OFFSETS, device: torch.device | str | None = None
) -> Float[Tensor, "query key"]:
    """B_i: uniform over the keys f(i) + d (d in ``offsets``) that exist; a row without any is zero."""
    b = neighbour_keys(n, offsets, device)
    if (b.sum(-1) == 0).any():
        raise ValueError(f"some query has no neighbour key at offsets {tuple(offsets)} for N = {n}")
    return b / b.sum(-1, keepdim=True)


def single_keys(n: int, offset: int, device: torch.device | str | None = None) -> Tensor:
    """g(i) = f(i) + d, reflected to f(i) − d where f(i) + d is outside 0..N−1."""
    f = flipped_keys(n, device)
    keys = f + offset
    keys = torch.where((keys >= 0) & (keys < n), keys, f - offset)
    if ((keys < 0) | (keys >= n)).any():
        raise ValueError(f"offset {offset} leaves some query without a key on either side for N = {n}")
    return keys


def apply_family(
    pattern: Float[Tensor, "batch query key"], family: PatternFamily
) -> Float[Tensor, "point batch query key"]:
    """The family's patterns at each of ``family.values``, stacked on axis 0."""
    _check(pattern)
    values = torch.tensor(family.values, dtype=pattern.dtype, device=pattern.device)
    return family_points(pattern.unsqueeze(0), family, values)


def family_points(
    patterns: Float[Tensor, "point batch query key"], family: PatternFamily, values: Float[Tensor, " point"]
) -> Float[Tensor, "point batch query key"]:
    """Point p's pattern from own pattern ``patterns[p]`` (or ``patterns[0]`` for every p when the
    leading axis is 1) at parameter ``values[p]``: the batched form a sweep uses inside one hook."""
    if patterns.ndim != 4 or patterns.shape[0] not in (1, len(values)):
        raise ValueError(
            f"patterns must be [point or 1, batch, query, key] for {len(values)} values, "
            f"got {tuple(patterns.shape)}"
        )
    n = _check(patterns[0])
    vals = values.to(patterns.dtype).view(-1, 1, 1, 1)
    a = patterns
    if family.kind == "temperature":
        # softmax(log A / τ): exact zeros stay zero (log 0 = −inf) for every τ.
        return torch.softmax(torch.log(a) / vals, dim=-1)
    if family.kind == "uniform":
        return (1 - vals) * a + vals / n
    if family.kind == "neighbours":
        b = neighbour_target(n, family.neighbour_offsets, a.device).to(a.dtype)
        return (1 - vals) * a + vals * b
    f = flipped_keys(n, a.device)
    g = single_keys(n, int(family.offset), a.device)
    rows = torch.arange(n, device=a.device)
    moved = vals.view(-1, 1, 1) * a[..., rows, f]  # [point, batch, query]
    out = a.expand(vals.shape[0], *a.shape[1:]).clone()
    out[..., rows, f] -= moved
    out[..., rows, g] += moved
    return out
