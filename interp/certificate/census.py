"""Readable regions from explicit sets of inputs, and the order in which positions are branched on."""

from __future__ import annotations

import numpy as np

from interp.certificate.result import Region


def branch_order(position: int, seq_len: int) -> list[int]:
    """Key positions in the order a cell at query ``position`` is split: the query's own position i and
    the flipped key j = N−1−i (the cell's constraints) first, then the other keys by distance from j
    (the flipped key's neighbours, where attention spills over, before the far keys), ties by position.
    """
    j = seq_len - 1 - position
    head = [position] if position == j else [position, j]
    rest = sorted((p for p in range(seq_len) if p not in head), key=lambda p: (abs(p - j), p))
    return head + rest


def compress(
    position: int, digits: np.ndarray, num_categories: int, order: list[int] | None = None
) -> list[Region]:
    """Disjoint regions whose union is exactly the set of inputs ``digits`` [M, N] (distinct rows), all
    at output ``position``: a prefix tree over ``order`` (default :func:`branch_order`) whose full
    subtrees (all C^free completions present) become one region each."""
    digits = np.asarray(digits, dtype=np.int64)
    if digits.size == 0:
        return []
    seq_len = digits.shape[1]
    order = branch_order(position, seq_len) if order is None else order
    regions: list[Region] = []

    def walk(rows: np.ndarray, depth: int, fixed: dict[int, list[int]]) -> None:
        if len(rows) == num_categories ** (seq_len - depth):
            regions.append(Region.make(position, fixed, seq_len, num_categories))
            return
        p = order[depth]
        column = rows[:, p]
        for d in np.unique(column):
            walk(rows[column == d], depth + 1, {**fixed, p: [int(d)]})

    walk(digits, 0, {})
    return regions
