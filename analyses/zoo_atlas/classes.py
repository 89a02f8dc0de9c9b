"""Mechanism classes of a trained run: a stated rule on its cheap mechanism scalars.

The rule, in order (the first that applies):

1. ``fails`` — accuracy < ``SOLVED`` (0.99): the run does not reverse reliably;
2. ``no_pointer`` — flip coverage < ``POINTER`` (0.5): no head puts most of any typical query's weight on
   the flipped key N−1−i (coverage = mean_i max_{layer, head} Ā[i, N−1−i] of the mean patterns); the
   run reverses some other way (e.g. routing over two layers);
3. ``split_pointer`` — the queries are served by several heads: the head serving most queries (the
   head with the largest Ā[i, N−1−i] at query i serves i) serves fewer than ``SINGLE`` (90%) of them —
   the heads divide the queries, or two heads both point and the stronger one changes from query to query;
4. ``single_pointer`` — one head serves ≥ 90% of the queries: the tutorial's circuit (one head reading the
   flipped key, helped by the neighbours' similar encodings).

Sharpness (how much of the weight the pointer puts on the flipped key: 0.57 in the tutorial's run, 0.71–0.76
with the fast preset) is a scalar *within* a class, compared across recipes with intervals over seeds,
not a class boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SOLVED = 0.99
POINTER = 0.5
SINGLE = 0.9
CLASSES: tuple[str, ...] = ("single_pointer", "split_pointer", "no_pointer", "fails")
DESCRIPTIONS = {
    "single_pointer": "one head points every query at its flipped key (the tutorial's circuit)",
    "split_pointer": "no one head is the strongest pointer for 90% of the queries: several heads share the "
    "queries, or duplicate the pointing (see the examples)",
    "no_pointer": "reverses without a head that points at the flipped key",
    "fails": f"accuracy below {SOLVED:.0%}",
}
RULE = (
    f"fails: accuracy < {SOLVED}; else no_pointer: flip coverage < {POINTER}; else split_pointer: the head "
    f"serving most queries serves < {SINGLE:.0%} of them; else single_pointer"
)


def classify(scalars: Mapping[str, float]) -> str:
    """The class of a run from ``accuracy``, ``flip_coverage`` and ``served_share`` (share of queries
    served by the run's main head); the rule is the module docstring's. A NaN accuracy counts as failing."""
    accuracy = float(scalars["accuracy"])
    if not math.isfinite(accuracy) or accuracy < SOLVED:
        return "fails"
    if not float(scalars["flip_coverage"]) >= POINTER:
        return "no_pointer"
    if not float(scalars["served_share"]) >= SINGLE:
        return "split_pointer"
    return "single_pointer"
