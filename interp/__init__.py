"""Model-agnostic interpretability tools: metrics on attention patterns, ablations and interventions
as hook context managers, bootstrap and paired statistics, circuit decompositions.

``interp.plotting`` (matplotlib) is not imported here, to keep ``import interp`` light.
"""

from interp.ablation import ablate_heads, ablate_positional_encoding, intervene, replace_pattern
from interp.baselines import no_position_ceiling
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
from interp.paired import holm, paired_bootstrap_ci, wilcoxon_signed_rank
from interp.stats import (
    Estimate,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_distributions,
    percentile_interval,
    resample_counts,
)

__all__ = [
    "ablate_heads",
    "ablate_positional_encoding",
    "intervene",
    "replace_pattern",
    "no_position_ceiling",
    "holm",
    "paired_bootstrap_ci",
    "wilcoxon_signed_rank",
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
