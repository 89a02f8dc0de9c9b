"""Pure metrics on attention patterns of the reverse task.

Every function takes a pattern ``[batch, head, query, key]`` (rows sum to one, e.g. a
``blocks.l.attn.hook_pattern`` from any cache) and returns one value per attention row
``[batch, head, query]`` (or per row and offset), so callers can average however they need. One
head's pattern ``[batch, query, key]`` gives ``[batch, query]``. Inputs are checked: a torch tensor
(numpy arrays are refused with the conversion to use), square over (query, key), rows summing to one
(within 1e-3; rows holding NaN pass as NaN) — so scores (``hook_attn_scores``) passed by mistake are
named as such.

Conventions (used throughout the toolkit):

- sequence length N; the *flipped key* of query i is f(i) = N − 1 − i (the position the reverse task
  must read from);
- the *offset* of key k from query i is d = k − f(i), i.e. key = N − 1 − i + d. Offset +1 is the key to
  the right of the flipped one; the offset-d key exists only for the queries with 0 ≤ N − 1 − i + d < N,
  that is for N − |d| queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

OFFSETS: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)
NEIGHBOUR_OFFSETS: tuple[int, ...] = (-2, -1, 1, 2)


ROW_SUM_TOLERANCE = 1e-3


def _heads(pattern: Tensor) -> tuple[Tensor, bool]:
    """The pattern as [batch, head, query, key] and whether one head [batch, query, key] was given;
    ``TypeError``/``ValueError`` (one line) for anything that is not an attention pattern."""
    if not isinstance(pattern, Tensor):
        kind = f"{type(pattern).__module__}.{type(pattern).__name__}"
        convert = " (convert with torch.from_numpy(pattern))" if isinstance(pattern, np.ndarray) else ""
        raise TypeError(f"pattern must be a torch.Tensor [batch, head, query, key], got {kind}{convert}")
    single = pattern.ndim == 3
    if single:
        pattern = pattern.unsqueeze(1)
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(
            "pattern must have shape [batch, head, query, key] or [batch, query, key] with query == key, "
            f"got {tuple(pattern.shape if not single else pattern.shape[:1] + pattern.shape[2:])}"
        )
    if pattern.is_floating_point() and pattern.numel():
        # Rows holding NaN (undefined patterns, e.g. a prediction without encodings) pass through as NaN.
        deviation = (pattern.detach().sum(-1, dtype=torch.float64) - 1).abs().nan_to_num(nan=0.0)
        worst = float(deviation.max())
        if worst > ROW_SUM_TOLERANCE:
            raise ValueError(
                f"pattern rows must sum to one (attention weights, blocks.l.attn.hook_pattern), but a row "
                f"is off by {worst:.3g}: pre-softmax scores (hook_attn_scores) are not a pattern"
            )
    elif not pattern.is_floating_point():
        raise ValueError(f"pattern must hold floating-point attention weights, got dtype {pattern.dtype}")
    return pattern, single


def _one(value: Tensor, single: bool) -> Tensor:
    """Drop the head axis (1) again for a single-head input."""
    return value.squeeze(1) if single else value


def _check_tokens(tokens: Tensor, pattern: Tensor) -> None:
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens must be a torch.Tensor [batch, pos], got {type(tokens).__name__}")
    if tokens.ndim != 2 or tokens.shape[0] != pattern.shape[0] or tokens.shape[1] != pattern.shape[-1]:
        raise ValueError(
            f"tokens must have shape [batch, pos] = {(pattern.shape[0], pattern.shape[-1])} to match the "
            f"pattern, got {tuple(tokens.shape)}"
        )


def flipped_keys(n: int, device: torch.device | str | None = None) -> Int[Tensor, " query"]:
    """f(i) = N − 1 − i for every query i."""
    return torch.arange(n - 1, -1, -1, device=device)


def offset_keys(
    n: int, offsets: Sequence[int] = OFFSETS, device: torch.device | str | None = None
) -> tuple[Int[Tensor, "query offset"], Bool[Tensor, "query offset"]]:
    """Key index N − 1 − i + d for each query i and offset d, and whether that key exists.

    Missing keys are clamped into range (so they can be gathered) and flagged False in the mask.
    """
    d = torch.as_tensor(list(offsets), device=device)
    keys = flipped_keys(n, device).unsqueeze(1) + d.unsqueeze(0)
    valid = (keys >= 0) & (keys < n)
    return keys.clamp(0, n - 1), valid


def offset_query_counts(n: int, offsets: Sequence[int] = OFFSETS) -> list[int]:
    """How many queries have a key at each offset: N − |d| (0 when |d| ≥ N)."""
    return [max(n - abs(int(d)), 0) for d in offsets]


def flip_mass(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, "batch head query"]:
    """A[b, h, i, N − 1 − i]: the weight each query puts on its flipped key."""
    pattern, single = _heads(pattern)
    n = pattern.shape[-1]
    index = flipped_keys(n, pattern.device).view(1, 1, n, 1).expand(*pattern.shape[:3], 1)
    return _one(pattern.gather(-1, index).squeeze(-1), single)


def offset_mass(
    pattern: Float[Tensor, "batch head query key"], offsets: Sequence[int] = OFFSETS
) -> Float[Tensor, "batch head query offset"]:
    """A[b, h, i, N − 1 − i + d] for each offset d; exactly 0 where that key does not exist."""
    pattern, single = _heads(pattern)
    return _one(offset_values(pattern, offsets), single)


def offset_values(
    matrix: Float[Tensor, "batch head query key"], offsets: Sequence[int] = OFFSETS
) -> Float[Tensor, "batch head query offset"]:
    """M[b, h, i, N − 1 − i + d] of any square matrix (scores, similarities; no check that rows sum
    to one), exactly 0 where that key does not exist; :func:`offset_mass` for patterns."""
    if matrix.ndim != 4 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix must have shape [batch, head, query, key], got {tuple(matrix.shape)}")
    keys, valid = offset_keys(matrix.shape[-1], offsets, matrix.device)
    gathered = matrix.gather(-1, keys.expand(*matrix.shape[:2], *keys.shape))
    return gathered * valid.to(matrix.dtype)


def neighbour_mass(
    pattern: Float[Tensor, "batch head query key"], offsets: Sequence[int] = NEIGHBOUR_OFFSETS
) -> Float[Tensor, "batch head query"]:
    """Σ_{d ∈ {±1, ±2}} A[b, h, i, N − 1 − i + d] (existing keys only)."""
    return offset_mass(pattern, offsets).sum(-1)


def remainder_mass(
    pattern: Float[Tensor, "batch head query key"], max_offset: int = 3
) -> Float[Tensor, "batch head query"]:
    """Σ_k A[b, h, i, k] over the keys with |k − (N − 1 − i)| > max_offset.

    Computed from the keys themselves (not as 1 − the offset masses), so that
    ``offset_mass(...).sum(-1) + remainder_mass(...) == pattern.sum(-1)`` is a real identity.
    """
    pattern, single = _heads(pattern)
    n = pattern.shape[-1]
    key = torch.arange(n, device=pattern.device)
    distance = (key.unsqueeze(0) - flipped_keys(n, pattern.device).unsqueeze(1)).abs()
    return _one((pattern * (distance > max_offset).to(pattern.dtype)).sum(-1), single)


def argmax_hit(pattern: Float[Tensor, "batch head query key"]) -> Bool[Tensor, "batch head query"]:
    """Whether the row's largest weight is on the flipped key (ties go to the lowest key index)."""
    pattern, single = _heads(pattern)
    return _one(pattern.argmax(-1) == flipped_keys(pattern.shape[-1], pattern.device), single)


def row_entropy(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, "batch head query"]:
    """H = −Σ_k A_ik log A_ik in nats, with 0 log 0 = 0: 0 for a permutation row, log N when uniform."""
    pattern, single = _heads(pattern)
    return _one(0.0 - torch.xlogy(pattern, pattern).sum(-1), single)  # 0.0 - x: no "-0.0" for one-hot rows


def target_digit_mass(
    pattern: Float[Tensor, "batch head query key"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch head query"]:
    """Σ_k A_ik [t_k = t_{N−1−i}]: mass on every key that holds the digit query i must output.

    Attending to a duplicate of the target digit costs nothing for the task; this is the flip mass
    a content-aware head could reach.
    """
    pattern, single = _heads(pattern)
    _check_tokens(tokens, pattern)
    same = tokens.unsqueeze(1) == tokens.flip(-1).unsqueeze(2)  # [batch, query, key]
    return _one((pattern * same.unsqueeze(1).to(pattern.dtype)).sum(-1), single)


def duplicate_neighbour_mass(
    pattern: Float[Tensor, "batch head query key"],
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = NEIGHBOUR_OFFSETS,
) -> tuple[
    Float[Tensor, "batch head query"],
    Int[Tensor, "batch query"],
    Float[Tensor, "batch head query"],
    Int[Tensor, "batch query"],
]:
    """Split the neighbour mass by whether the neighbour key holds the flipped key's digit.

    For query i with flipped key f = N − 1 − i and each existing neighbour key k = f + d:
    ``duplicate`` when t_k = t_f, ``other`` otherwise. Returns (duplicate mass, number of duplicate
    neighbour keys, other mass, number of other neighbour keys). The mass *per key* (mass / count)
    of the two groups is equal for a head blind to content, and larger for duplicates if the head
    prefers keys that hold the right digit.
    """
    pattern, single = _heads(pattern)
    _check_tokens(tokens, pattern)
    keys, valid = offset_keys(pattern.shape[-1], offsets, pattern.device)  # [query, offset]
    batch = tokens.shape[0]
    neighbour_tokens = tokens.gather(1, keys.reshape(1, -1).expand(batch, -1)).view(batch, *keys.shape)
    target = tokens.flip(-1).unsqueeze(-1)  # t_{N−1−i}, [batch, query, 1]
    duplicate = valid & (neighbour_tokens == target)  # [batch, query, offset]
    other = valid & (neighbour_tokens != target)
    mass = offset_mass(pattern, offsets)  # [batch, head, query, offset]
    dup_mass = (mass * duplicate.unsqueeze(1).to(mass.dtype)).sum(-1)
    other_mass = (mass * other.unsqueeze(1).to(mass.dtype)).sum(-1)
    return _one(dup_mass, single), duplicate.sum(-1), _one(other_mass, single), other.sum(-1)


def reversal_correct(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Bool[Tensor, "batch pos"]:
    """Whether the predicted digit at position i equals the target t_{N−1−i}."""
    if logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on [batch, pos]"
        )
    return logits.argmax(-1) == tokens.flip(-1)


def sequence_statistics(
    pattern: Float[Tensor, "batch head query key"],
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = OFFSETS,
    neighbour_offsets: Sequence[int] = NEIGHBOUR_OFFSETS,
) -> dict[str, Tensor]:
    """Reduce one pattern to a few numbers per sequence (and head): the unit a bootstrap resamples.

    Queries inside a sequence share their digits, so they are not independent; averaging them per
    sequence first keeps the statistics small (``batch × head × (N + 15)`` numbers) and lets a
    stream of batches be concatenated instead of storing patterns.

    Returns float64 tensors keyed by name, each ``[batch, head, ...]`` (``[batch, ...]`` for one head's
    ``[batch, query, key]``):

    - ``flip_mass``, ``neighbour_mass``, ``remainder_mass``, ``argmax_hit_rate``, ``entropy``,
      ``target_digit_mass``: means over the N queries;
    - ``offset_mass`` ``[batch, head, offset]``: mean over the N − |d| queries where the key exists
      (NaN if none does);
    - ``per_position_flip_mass`` ``[batch, head, query]``;
    - ``duplicate_mass`` / ``other_mass`` ``[batch, head]``: neighbour mass summed over queries, and
      ``duplicate_keys`` / ``other_keys`` ``[batch]``: how many neighbour keys fell in each group.
    """
    pattern, single = _heads(pattern)
    _check_tokens(tokens, pattern)
    n = pattern.shape[-1]
    p = pattern.detach().to(torch.float64)
    counts = torch.tensor(offset_query_counts(n, offsets), dtype=torch.float64, device=p.device)
    dup_mass, dup_keys, other_mass, other_keys = duplicate_neighbour_mass(p, tokens, neighbour_offsets)
    flip = flip_mass(p)
    per_head = {
        "flip_mass": flip.mean(-1),
        "offset_mass": offset_mass(p, offsets).sum(2) / counts,
        "neighbour_mass": neighbour_mass(p, neighbour_offsets).mean(-1),
        "remainder_mass": remainder_mass(p, max(abs(int(d)) for d in offsets)).mean(-1),
        "argmax_hit_rate": argmax_hit(p).to(torch.float64).mean(-1),
        "entropy": row_entropy(p).mean(-1),
        "target_digit_mass": target_digit_mass(p, tokens).mean(-1),
        "per_position_flip_mass": flip,
        "duplicate_mass": dup_mass.sum(-1),
        "other_mass": other_mass.sum(-1),
    }
    return {
        **{name: _one(value, single) for name, value in per_head.items()},
        "duplicate_keys": dup_keys.sum(-1).to(torch.float64),
        "other_keys": other_keys.sum(-1).to(torch.float64),
    }
