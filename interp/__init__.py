"""Model-agnostic interpretability tools: metrics on attention patterns, ablations and interventions
as hook context managers, bootstrap and paired statistics, circuit decompositions.

The circuit tools (``interp.circuits``: QK/OV FactoredMatrix, the exact split of layer 0's scores,
positional scores, swap effects; ``interp.residual``: the frozen-LayerNorm decomposition of the
residual stream) import TransformerLens, which takes seconds, so their names below are imported on
first use, and so are the tools of issue 14 (``interp.pattern_families``, ``tolerance``, ``thresholds``,
``tolerance_verdict``, ``readout``, ``adversarial``, ``interchange``) and the certificate of issue 26
(``interp.certify``), which most users of the metrics never need. ``interp.plotting`` (matplotlib) is
not imported here at all.
"""

import importlib
from typing import Any

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
from interp.proportions import binomial_estimate, clopper_pearson, proportion_interval
from interp.seed_intervals import median_interval, shift_interval
from interp.stats import (
    Estimate,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_distributions,
    percentile_interval,
    resample_counts,
)

_LAZY = {
    name: "interp.circuits"
    for name in (
        "SCORE_TERMS",
        "ScoreDecomposition",
        "SwapEffect",
        "bilinear_score_terms",
        "cosine_by_offset",
        "decompose_layer0_scores",
        "flip_score_gap",
        "ov_circuit",
        "positional_encodings",
        "positional_scores",
        "qk_circuit",
        "swap_effect",
    )
} | {name: "interp.residual" for name in ("frozen_ln_decomposition", "removal_error", "decomposition_hooks")}
# Certified accuracy over all C^N inputs (issue 26).
_LAZY |= {name: "interp.certificate" for name in ("certify", "Certificate", "CertificateUnsupported")}
# Tolerance of approximate attention, the readout rule and interchange interventions (issue 14).
_LAZY |= {
    name: module
    for module, names in {
        "interp.pattern_families": (
            "FAMILY_KINDS",
            "PatternFamily",
            "apply_family",
            "default_families",
            "family_points",
        ),
        "interp.tolerance": ("family_sweep", "sweep_batch", "sweep_units"),
        "interp.thresholds": ("Threshold", "crossings", "family_threshold"),
        "interp.tolerance_verdict": ("Verdict", "make_verdict"),
        "interp.readout": (
            "READOUT_COLUMNS",
            "argmax_key_digit",
            "digit_votes",
            "margin_bins",
            "neighbours_agree_wrong",
            "readout_columns",
            "readout_estimates",
            "readout_statistic",
            "target_margin",
        ),
        "interp.adversarial": (
            "SearchResult",
            "beam_search",
            "isolated_digit_sequences",
            "min_logit_margin",
            "min_vote_margin",
            "single_changes",
        ),
        "interp.interchange": (
            "SITES",
            "InterchangeSummary",
            "batched_hits",
            "counterfactual_outputs",
            "head_iia",
            "interchange_hits",
            "make_sources",
            "pair_batches",
            "patched_predictions",
            "program_dependency",
            "selector_head",
            "streamed_summary",
            "summarise_interchange",
        ),
    }.items()
    for name in names
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "ablate_heads",
    "ablate_positional_encoding",
    "intervene",
    "replace_pattern",
    "no_position_ceiling",
    "holm",
    "binomial_estimate",
    "clopper_pearson",
    "proportion_interval",
    "median_interval",
    "shift_interval",
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
