"""Model-agnostic interpretability tools: metrics on attention patterns and bootstrap statistics.

``interp.plotting`` (matplotlib) is not imported here, to keep ``import interp`` light.
"""

from interp.metrics import (
    NEIGHBOUR_OFFSETS,
    OFFSETS,
    argmax_hit,
    duplicate_neighbour_mass,
    flip_mass,
    flipped_keys,
    neighbour_mass,
    offset_keys,
    offset_mass,
    offset_query_counts,
    remainder_mass,
    reversal_correct,
    row_entropy,
    sequence_statistics,
    target_digit_mass,
)
from interp.stats import (
    Estimate,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_distributions,
    percentile_interval,
    resample_counts,
)

__all__ = [
    "NEIGHBOUR_OFFSETS",
    "OFFSETS",
    "Estimate",
    "argmax_hit",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_distributions",
    "duplicate_neighbour_mass",
    "flip_mass",
    "flipped_keys",
    "neighbour_mass",
    "offset_keys",
    "offset_mass",
    "offset_query_counts",
    "percentile_interval",
    "remainder_mass",
    "resample_counts",
    "reversal_correct",
    "row_entropy",
    "sequence_statistics",
    "target_digit_mass",
]
