"""The result object of ``analyses.qk_circuit`` and its renderings: metrics.json, metrics.csv, text.

The numbers are computed in :mod:`analyses.qk_circuit.statistics`; the verdict's sentences in
:mod:`analyses.qk_circuit.verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import numbers
from analyses.frame.result import AnalysisResult, estimate_row, plain
from interp.circuits import SCORE_TERMS
from interp.stats import Estimate

ANALYSIS = "qk_circuit"
# 2: metrics.csv has a scope column; model-wide rows (accuracy, swap, rollout) have empty layer and head
SCHEMA_VERSION = 2
DEFAULT_OUT = Path("out") / ANALYSIS
SWAP_OFFSETS: tuple[int, ...] = (-2, -1, 0, 1, 2)
GAP_OFFSETS: tuple[int, ...] = (-2, -1, 1, 2)
SIMILARITIES: tuple[str, ...] = ("raw_pe", "key_key", "query_key")
PREDICTIONS: tuple[str, ...] = ("positions_and_mean_tokens", "positions_only", "pe_similarity")
VERDICT_LABELS: tuple[str, ...] = ("right", "partly right", "not supported", "not applicable")


@dataclass
class Verdict:
    """The verdict on the tutorial's explanation, in words (rules: :mod:`analyses.qk_circuit.verdict`)."""

    label: str  # one of VERDICT_LABELS
    head: int  # layer-0 head the verdict is about
    sentences: list[str]


@dataclass
class PatternSummary:
    """An attention pattern (observed or predicted) and its flip-alignment numbers."""

    pattern: np.ndarray  # [query, key]
    flip_mass: Estimate
    neighbour_mass: Estimate  # Σ over d = ±1, ±2, mean over queries (interp.metrics.neighbour_mass)
    offset_mass: dict[int, Estimate]  # mean over queries where key N−1−i+d exists
    jsd_bits: Estimate | None = None  # vs the observed mean pattern (predictions only)
    flip_mass_minus_observed: Estimate | None = None
    neighbour_mass_minus_observed: Estimate | None = None


@dataclass
class SimilaritySummary:
    matrix: np.ndarray  # [query, key], weights only
    by_offset: dict[int, float]  # mean over queries of matrix[i, N−1−i+d]
    spearman_positions: Estimate  # vs the observed mean pattern, over the N² (query, key) pairs
    spearman_positions_p: float
    spearman_offsets: Estimate  # vs the observed offset profile, over d = −(N−1)..N−1
    spearman_offsets_p: float


@dataclass
class HeadCircuit:
    """Layer 0, one head."""

    head: int
    variance_share: dict[str, Estimate]  # Σ c̃_t S̃ / Σ S̃² (sums to 1 over terms)
    variance_ratio: dict[str, Estimate]  # Σ c̃_t² / Σ S̃²
    mean_terms: dict[str, np.ndarray]  # [query, key] mean over sequences
    observed: PatternSummary
    predictions: dict[str, PatternSummary]
    temperature: Estimate  # best β of the pe_similarity prediction
    similarity: dict[str, SimilaritySummary]
    score_gaps: dict[int, dict[str, Estimate]]  # offset -> {term..., "total"}
    side_mass: dict[int, Estimate]  # |d| -> mean attention per key at ±d
    fall_1_to_2: Estimate  # side_mass[1] / side_mass[2]
    gap: dict[int, Estimate]  # |d| -> mean total score gap at ±d
    pos_pos_gap_share: dict[int, Estimate]  # |d| -> pos_pos part of that gap / total gap
    qk_gain: float
    law_slope: Estimate  # least-squares β' in pos_pos ≈ β'·cos(PE_{N−1−i}, PE_j) + row constant
    law_r2: Estimate  # share of pos_pos's within-row variance that this law explains


@dataclass(repr=False)
class QKCircuitResult(AnalysisResult):
    """The result object; ``to_dict`` is metrics.json, ``csv_rows`` is metrics.csv."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("section", "scope", "layer", "head", "metric", "index", "mean", "ci_low", "ci_high")

    settings: dict[str, Any]
    decomposition_max_abs_error: float
    frozen_scale: bool
    accuracy: Estimate
    heads: list[HeadCircuit]
    singular_values: np.ndarray  # [layer, head, d_head] of W_Q W_Kᵀ
    raw_pe_cosine_by_distance: np.ndarray  # [N]
    key_cosine_by_distance: np.ndarray  # [head, N]
    swap: dict[int, dict[str, Any]]  # offset -> {"follows": Estimate, "changed": Estimate, "swaps": int}
    rollout: dict[str, Any] | None  # multi-layer models only
    verdict: Verdict
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return int(self.settings["seq_len"])

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def num_sequences(self) -> int:
        return int(self.settings["num_sequences"])

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (schema version ``SCHEMA_VERSION``; Estimates as mean/ci_low/ci_high)."""
        return {
            **self.header(),
            "settings": self.settings,
            "definitions": DEFINITIONS,
            "decomposition_max_abs_error": self.decomposition_max_abs_error,
            "frozen_scale": self.frozen_scale,
            "accuracy": self.accuracy.to_dict(),
            "verdict": plain(self.verdict),
            "raw_pe_cosine_by_distance": self.raw_pe_cosine_by_distance.tolist(),
            "qk_singular_values": self.singular_values.tolist(),
            "heads": [_head_dict(h, self.key_cosine_by_distance[h.head]) for h in self.heads],
            "swap": plain(self.swap),
            "rollout": plain(self.rollout),
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (section, head, metric[, index]); every head row is layer 0's, the model-wide rows
        (accuracy, swap, rollout across all layers) have scope "model" and no layer or head."""
        rows: list[dict[str, Any]] = []

        def add(section: str, head: int | None, metric: str, index: Any, est: Estimate) -> None:
            layer = None if head is None else 0
            rows.append(
                estimate_row(est, layer=layer, head=head, section=section, metric=metric, index=index)
            )

        add("model", None, "accuracy", "", self.accuracy)
        for h in self.heads:
            for t in SCORE_TERMS:
                add("decomposition", h.head, "variance_share", t, h.variance_share[t])
                add("decomposition", h.head, "variance_ratio", t, h.variance_ratio[t])
            for d, e in h.observed.offset_mass.items():
                add("observed", h.head, "offset_mass", d, e)
            add("observed", h.head, "flip_mass", "", h.observed.flip_mass)
            add("observed", h.head, "neighbour_mass", "", h.observed.neighbour_mass)
            for k in (1, 2):
                add("observed", h.head, "side_mass", k, h.side_mass[k])
                add("gaps", h.head, "score_gap", k, h.gap[k])
                add("gaps", h.head, "pos_pos_gap_share", k, h.pos_pos_gap_share[k])
            add("similarity_law", h.head, "slope", "", h.law_slope)
            add("similarity_law", h.head, "r2", "", h.law_r2)
            add("observed", h.head, "fall_1_to_2", "", h.fall_1_to_2)
            for o, parts in h.score_gaps.items():
                for name, e in parts.items():
                    add("gaps", h.head, f"score_gap.{name}", o, e)
            for name, pred in h.predictions.items():
                for metric in (
                    "jsd_bits",
                    "flip_mass",
                    "neighbour_mass",
                    "flip_mass_minus_observed",
                    "neighbour_mass_minus_observed",
                ):
                    add(f"prediction.{name}", h.head, metric, "", getattr(pred, metric))
            add("prediction.pe_similarity", h.head, "temperature", "", h.temperature)
            for kind, sim in h.similarity.items():
                add(f"similarity.{kind}", h.head, "spearman_positions", "", sim.spearman_positions)
                add(f"similarity.{kind}", h.head, "spearman_offsets", "", sim.spearman_offsets)
        for o, v in self.swap.items():
            for metric in ("follows", "changed", "logprob_drop"):
                add("swap", None, metric, o, v[metric])
        if self.rollout is not None:
            for name in ("flip_mass", "neighbour_mass"):
                add("rollout", None, name, "", self.rollout[name])
        return rows

    def headline(self) -> str:
        h = self.heads[self.verdict.head]
        return (
            f"verdict {self.verdict.label!r} (layer 0 head {h.head}: flip mass "
            f"{h.observed.flip_mass.mean:.3f}, position share {h.variance_share['pos_pos'].mean:.2f})"
        )

    def summary(self) -> str:
        """The one-screen text the CLI prints: key numbers and the verdict."""
        lines = [
            f"qk circuit: {self.settings['num_sequences']:,} sequences, "
            f"{self.settings['bootstrap_resamples']} bootstrap resamples, "
            f"{self.settings['confidence']:.0%} CIs",
            f"decomposition max |Σ terms − hook_attn_scores| = {self.decomposition_max_abs_error:.2e}"
            + (" (pre-LN: LayerNorm scale frozen)" if self.frozen_scale else ""),
            f"accuracy {_fmt(self.accuracy)}",
        ]
        for h in self.heads:
            share = "  ".join(f"{t} {h.variance_share[t].mean:+.2f}" for t in SCORE_TERMS)
            jsd = "  ".join(f"{k} {p.jsd_bits.mean:.4f}" for k, p in h.predictions.items())
            lines += [f"head {h.head}: variance share  {share}", f"        JSD (bits)  {jsd}"]
        lines += ["", f"verdict: {self.verdict.label} (layer 0, head {self.verdict.head})"]
        lines += [f"- {s}" for s in self.verdict.sentences[1:]]
        return "\n".join(lines)


CSV_FIELDS = QKCircuitResult.CSV_FIELDS
DEFINITIONS = {
    "tok": "W_E[token] + b_E (hook_embed; the embedding bias is part of the token part)",
    "pos": "the positional encoding (hook_pos_embed)",
    "pos_pos": "(pos_q W_Q)·(pos_k W_K)/sqrt(d_head)",
    "tok_pos": "(tok_q W_Q)·(pos_k W_K)/sqrt(d_head)  (query token, key position)",
    "pos_tok": "(pos_q W_Q)·(tok_k W_K)/sqrt(d_head)  (query position, key token)",
    "tok_tok": "(tok_q W_Q)·(tok_k W_K)/sqrt(d_head)",
    "bias": "[b_Q·(x_k W_K) + (x_q W_Q)·b_K + b_Q·b_K]/sqrt(d_head): every product with b_Q or b_K",
    "pre_ln": "pre-LN models: tok and pos pass LN1 with its scale frozen at the forward value; LN1's bias "
    "is folded into b_Q and b_K",
    "variance_share": "sum c~_t S~ / sum S~^2, scores centred over the keys of each query row; sums to 1",
    "variance_ratio": "sum c~_t^2 / sum S~^2",
    "jsd_bits": "Jensen-Shannon divergence (base 2) per query row between the observed mean pattern and "
    "the prediction, averaged over rows",
    "neighbour_mass": "attention on keys N-1-i+d, d = ±1, ±2, summed, averaged over queries",
    "offset_mass": "attention on key N-1-i+d averaged over the queries where it exists",
    "score_gap": "S[i, N-1-i] - S[i, N-1-i+d] averaged over queries; exp(gap) = attention ratio",
    "side_mass": "mean of offset_mass at -d and +d",
    "swap": "digit at key N-1-i+o replaced by a digit different from it (and, for o != 0, from the "
    "target); follows = prediction at i equals the new digit; changed = prediction at i changed; "
    "logprob_drop = log p(t_{N-1-i}) at i before minus after the swap (nats)",
}


def _fmt(e: Estimate) -> str:
    return numbers.interval(e.mean, e.ci_low, e.ci_high)  # ends rounded outwards


def _pattern_dict(p: PatternSummary) -> dict[str, Any]:
    """Its fields; an observed pattern has no comparison with itself (those fields are left out)."""
    return {k: v for k, v in plain(p).items() if v is not None}


def _head_dict(h: HeadCircuit, key_cosine: np.ndarray) -> dict[str, Any]:
    return {
        "layer": 0,
        "head": h.head,
        "variance_share": plain(h.variance_share),
        "variance_ratio": plain(h.variance_ratio),
        "observed": _pattern_dict(h.observed),
        "side_mass": plain(h.side_mass),
        "fall_1_to_2": h.fall_1_to_2.to_dict(),
        "score_gap": plain(h.gap),
        "pos_pos_gap_share": plain(h.pos_pos_gap_share),
        "score_gaps_by_offset": plain(h.score_gaps),
        "qk_gain": h.qk_gain,
        "similarity_law": {"slope": h.law_slope.to_dict(), "r2": h.law_r2.to_dict()},
        "temperature": h.temperature.to_dict(),
        "predictions": {name: _pattern_dict(p) for name, p in h.predictions.items()},
        "key_cosine_by_distance": key_cosine.tolist(),
        "similarity": plain(h.similarity),
        "mean_terms": plain(h.mean_terms),
    }
