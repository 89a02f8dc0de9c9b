"""The certificate's result: bounds over all C^N inputs, the census of proven-wrong regions, the
per-cell table and what the computation cost.

Counting conventions (every count is an exact Python int):

* an *input* is one of the C^N token sequences; a *pair* is (input, output position i), N·C^N of them;
* position i is right on an input iff ``logits[b] > logits[c]`` for every digit c ≠ b, where
  b = t_{N−1−i}: an argmax tie is wrong;
* per-digit accuracy = right pairs / (N·C^N); sequence accuracy = inputs right at every position / C^N.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

Method = Literal["proof", "enumeration"]
CellStatus = Literal["right", "wrong", "mixed", "unresolved"]
CELL_STATUSES: tuple[str, ...] = ("right", "wrong", "mixed", "unresolved")


class CertificateUnsupported(ValueError):
    """The model (or the request) is outside what the certificate can prove; the message is one line
    naming what is not supported and why."""


@dataclass(frozen=True)
class Region:
    """A set of (input, position) pairs: output position ``position`` on every input whose digit at
    each constrained position lies in the given set; unconstrained positions are free (C choices).

    ``constraints``: ((key position, (digit, ...)), ...) sorted by position; ``count``: the exact
    number of inputs in the region, C^free · Π |digit set|.
    """

    position: int
    constraints: tuple[tuple[int, tuple[int, ...]], ...]
    count: int

    @staticmethod
    def make(
        position: int, constraints: dict[int, Sequence[int]], seq_len: int, num_categories: int
    ) -> Region:
        """A region with its exact count (digit sets are sorted and deduplicated)."""
        items = tuple(sorted((int(p), tuple(sorted({int(d) for d in ds}))) for p, ds in constraints.items()))
        count = num_categories ** (seq_len - len(items))
        for _, digits in items:
            count *= len(digits)
        return Region(int(position), items, count)

    def contains(self, tokens: Sequence[int]) -> bool:
        """Whether the input ``tokens`` lies in the region (its output ``position`` is then counted)."""
        return all(int(tokens[p]) in digits for p, digits in self.constraints)

    def pattern(self, seq_len: int) -> str:
        """Readable form: one character per position, ``*`` free, a digit, or ``[digits]``;
        e.g. ``**7[37]**`` (digits above 9 are written in brackets as numbers)."""
        fixed = dict(self.constraints)
        parts = []
        for p in range(seq_len):
            digits = fixed.get(p)
            if digits is None:
                parts.append("*")
            elif len(digits) == 1 and digits[0] < 10:
                parts.append(str(digits[0]))
            else:
                parts.append("[" + ",".join(map(str, digits)) + "]")
        return "".join(parts)

    def to_dict(self, seq_len: int | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "position": self.position,
            "constraints": {str(p): list(d) for p, d in self.constraints},
            "count": self.count,
        }
        if seq_len is not None:
            doc["pattern"] = self.pattern(seq_len)
        return doc


@dataclass(frozen=True)
class Cell:
    """One (query position i, own digit a = t_i, flipped digit b = t_{N−1−i}) cell: C^(N−2) inputs
    (C^(N−1) at the middle position of an odd N, where i = N−1−i and only a = b exists).

    ``right``/``wrong``: inputs of the cell proven right / proven wrong at output i (exact counts);
    ``unresolved`` = ``inputs − right − wrong``. ``status``: ``right`` (all right), ``wrong`` (all
    wrong), ``mixed`` (both, nothing unresolved), ``unresolved`` (some inputs undecided).

    Theorem columns (``None`` when not computed; 1 head; see ``proof._theorems``). Their arithmetic:
    ``min_weight``: the smallest attention weight on the flipped key over all inputs of the cell in
    *exact* arithmetic on the model's float32 weights (softmax of the exact scores q·k/√d_head),
    evaluated in float64 (relative error < 2^-48); the float32 forward's own weight may differ from it
    by its softmax rounding (relative ≤ ``floats.softmax_relative_error``, ~10^-6), which is *not*
    added to it. ``guarantee_weight``: w* (bisection grid 2^-14) such that whenever the exact weight on
    the flipped key is ≥ w* and the rest of the attention is any mixture of the other allowed keys'
    values, the *float32* forward's output is proven right: the float32 rounding of the softmax, the
    weighted sum and everything after attention is inside that proof (``Network.mid_error`` and the
    relaxations). So ``min_weight ≥ guarantee_weight`` proves the cell right for the float32 forward,
    both columns speaking of the same exact weight. ``inert_positions``: key positions whose digit can
    never change output i within the cell (proven: the output is right whatever they hold on all of
    the cell, or the whole cell is decided identically).
    """

    position: int
    own: int
    flipped: int
    inputs: int
    right: int
    wrong: int
    status: CellStatus
    guarantee_weight: float | None = None
    min_weight: float | None = None
    inert_positions: tuple[int, ...] | None = None

    @property
    def unresolved(self) -> int:
        return self.inputs - self.right - self.wrong

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["unresolved"] = self.unresolved
        if self.inert_positions is not None:
            doc["inert_positions"] = list(self.inert_positions)
        return doc


def cell_status(inputs: int, right: int, wrong: int) -> CellStatus:
    """``right``/``wrong`` when one of them is everything, ``mixed`` when they add up, else ``unresolved``."""
    if right == inputs:
        return "right"
    if wrong == inputs:
        return "wrong"
    return "mixed" if right + wrong == inputs else "unresolved"


@dataclass(frozen=True)
class Certificate:
    """Certified bounds on a 1-layer reverse encoder's accuracy over all C^N inputs.

    Fractions are over all C^N inputs (``sequence_*``) or all N·C^N (input, position) pairs
    (``per_digit_*``); ``*_lower ≤ true ≤ *_upper``, equal when everything is resolved (always for
    ``method="enumeration"``). ``wrong_count_lower/upper`` bound the number of wrong pairs.
    ``wrong_regions``: regions proven wrong (disjoint; their counts add up to ``wrong_count_lower``
    when ``regions_complete``; a long census is cut at the caller's ``max_regions``).
    ``wrong_examples``: ``{"tokens": [...], "position": i}``, each re-checked with the model's own
    float32 forward. ``cells``: the per-(i, a, b) table. ``unsupported``: None, or the one-line reason
    a part (e.g. the theorem columns for several heads) was not computed. Compute: ``seconds`` (wall),
    ``boxes`` (regions bounded), ``flops`` (an estimate of the arithmetic done), ``brute_force_flops``
    (N·C^N position evaluations × flops per position of the model's forward). ``arithmetic``: what
    arithmetic the proof uses and how the model's float32 rounding is covered.
    """

    method: Method
    seq_len: int
    num_categories: int
    inputs: int
    per_digit_lower: float
    per_digit_upper: float
    sequence_lower: float
    sequence_upper: float
    wrong_count_lower: int
    wrong_count_upper: int
    wrong_regions: tuple[Region, ...]
    regions_complete: bool
    wrong_examples: tuple[dict[str, Any], ...]
    cells: tuple[Cell, ...]
    unsupported: str | None
    seconds: float
    boxes: int
    flops: float
    brute_force_flops: float
    arithmetic: str
    sequence_right_lower: int = 0
    sequence_right_upper: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        """N·C^N (input, position) pairs."""
        return self.seq_len * self.inputs

    @property
    def resolved(self) -> bool:
        """Whether the bounds meet (the census is then exact)."""
        return self.wrong_count_lower == self.wrong_count_upper

    @property
    def speedup(self) -> float:
        """Brute force's FLOPs over the certificate's."""
        return self.brute_force_flops / self.flops if self.flops > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (counts as ints; ``per_digit``/``sequence`` also nested as
        ``{"lower", "upper"}`` for ``metrics.json``)."""
        return {
            "method": self.method,
            "seq_len": self.seq_len,
            "num_categories": self.num_categories,
            "inputs": self.inputs,
            "pairs": self.pairs,
            "per_digit": {"lower": self.per_digit_lower, "upper": self.per_digit_upper},
            "sequence": {"lower": self.sequence_lower, "upper": self.sequence_upper},
            "per_digit_lower": self.per_digit_lower,
            "per_digit_upper": self.per_digit_upper,
            "sequence_lower": self.sequence_lower,
            "sequence_upper": self.sequence_upper,
            "sequence_right_lower": self.sequence_right_lower,
            "sequence_right_upper": self.sequence_right_upper,
            "wrong_count_lower": self.wrong_count_lower,
            "wrong_count_upper": self.wrong_count_upper,
            "resolved": self.resolved,
            "wrong_regions": [r.to_dict(self.seq_len) for r in self.wrong_regions],
            "regions_complete": self.regions_complete,
            "wrong_examples": [dict(e) for e in self.wrong_examples],
            "cells": [c.to_dict() for c in self.cells],
            "unsupported": self.unsupported,
            "seconds": self.seconds,
            "boxes": self.boxes,
            "flops": self.flops,
            "brute_force_flops": self.brute_force_flops,
            "speedup": self.speedup if math.isfinite(self.speedup) else None,
            "arithmetic": self.arithmetic,
            "details": self.details,
        }


def fraction(count: int, total: int, rounding: Literal["down", "up"]) -> float:
    """count/total as a float rounded ``down`` (for a lower bound) or ``up`` (an upper bound), so that
    rounding the exact ratio to a float never makes a bound claim more than was proven."""
    value = count / total  # correctly rounded: within half an ulp of the exact ratio
    exact = Fraction(count, total)
    if rounding == "down" and Fraction(value) > exact:
        value = math.nextafter(value, -math.inf)
    elif rounding == "up" and Fraction(value) < exact:
        value = math.nextafter(value, math.inf)
    return min(max(value, 0.0), 1.0)
