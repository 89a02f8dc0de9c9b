"""The flip-alignment result object and its renderings as metrics.json, metrics.csv rows and text.

Schema of metrics.json (``schema_version`` 2; unchanged from 1, which differed only in metrics.csv) is
documented in docs/guide/metrics-json.md; the core keys
(``accuracy`` and ``layers[l].heads[h].{flip_mass, offset_mass, argmax_hit_rate, entropy,
per_position_flip_mass}``, each an ``{"mean", "ci_low", "ci_high"}`` object) are a contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import numbers
from analyses.frame.result import AnalysisResult, estimate_row
from interp.stats import Estimate

ANALYSIS = "flip_alignment"
SCHEMA_VERSION = 2  # 2: metrics.csv has a scope column; "difference" is duplicate_minus_other_mass_per_key
DEFAULT_OUT = Path("out") / ANALYSIS
# Per-sequence scalars per head that are bootstrapped as plain means.
HEAD_SCALARS = (
    "flip_mass",
    "neighbour_mass",
    "remainder_mass",
    "argmax_hit_rate",
    "entropy",
    "target_digit_mass",
)


@dataclass
class HeadMetrics:
    """Everything measured for one attention head (means with CIs over sequences)."""

    layer: int
    head: int
    flip_mass: Estimate
    offset_mass: dict[int, Estimate]
    neighbour_mass: Estimate
    remainder_mass: Estimate
    argmax_hit_rate: Estimate
    entropy: Estimate
    target_digit_mass: Estimate
    per_position_flip_mass: list[Estimate]
    duplicate_mass_per_key: Estimate  # mean weight on a neighbour key holding the target digit
    other_mass_per_key: Estimate  # mean weight on a neighbour key holding another digit
    duplicate_minus_other: Estimate
    duplicate_key_share: float  # share of neighbour keys that hold the target digit
    entropy_counts: np.ndarray  # [bins], attention rows per entropy bin
    entropy_counts_edge: np.ndarray  # [bins], the rows of the edge queries 0 and N − 1 among them
    mean_pattern: np.ndarray  # [query, key], mean over all sequences


@dataclass(repr=False)
class FlipAlignmentResult(AnalysisResult):
    """The result object; ``to_dict`` is metrics.json, ``csv_rows`` is metrics.csv."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("scope", "layer", "head", "metric", "index", "mean", "ci_low", "ci_high")

    num_sequences: int
    seq_len: int
    seed: int
    batch_size: int
    bootstrap_resamples: int
    confidence: float
    offsets: tuple[int, ...]
    neighbour_offsets: tuple[int, ...]
    offset_queries: list[int]
    accuracy: Estimate
    sequence_accuracy: Estimate
    loss: Estimate
    per_position_accuracy: list[Estimate]
    layers: list[list[HeadMetrics]]  # [layer][head]
    entropy_edges: np.ndarray  # [bins + 1], nats
    example_tokens: np.ndarray  # [example, pos]
    example_patterns: np.ndarray  # [example, layer, head, query, key]
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return len(self.layers[0]) if self.layers else 0

    def stack(self, name: str, part: str = "mean") -> np.ndarray:
        """``[layer, head, ...]`` array of one field of a metric, e.g. ``stack("offset_mass", "ci_low")``."""

        def values(value: Any) -> Any:
            if isinstance(value, Estimate):
                return getattr(value, part)
            if isinstance(value, dict):
                return [values(v) for v in value.values()]
            if isinstance(value, list):
                return [values(v) for v in value]
            return value

        return np.array([[values(getattr(h, name)) for h in layer] for layer in self.layers], dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (schema in docs/guide/metrics-json.md, version ``SCHEMA_VERSION``)."""
        n = self.seq_len
        return {
            **self.header(),
            "settings": self.sampling_settings(
                offsets=list(self.offsets), neighbour_offsets=list(self.neighbour_offsets)
            ),
            "reference": {
                "uniform_mass": 1.0 / n,
                "uniform_entropy": math.log(n),
                "permutation_entropy": 0.0,
            },
            "offset_queries": {str(d): c for d, c in zip(self.offsets, self.offset_queries)},
            "accuracy": self.accuracy.to_dict(),
            "sequence_accuracy": self.sequence_accuracy.to_dict(),
            "loss": self.loss.to_dict(),
            "per_position_accuracy": [e.to_dict() for e in self.per_position_accuracy],
            "entropy_bin_edges": self.entropy_edges.tolist(),
            "layers": [
                {"layer": li, "heads": [_head_dict(h) for h in layer]} for li, layer in enumerate(self.layers)
            ],
            "examples": [
                {"tokens": t.tolist(), "patterns": p.tolist()}
                for t, p in zip(self.example_tokens, self.example_patterns)
            ],
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (layer, head, metric[, index]); model-wide metrics have scope "model"."""
        rows = [
            estimate_row(getattr(self, name), metric=name)
            for name in ("accuracy", "sequence_accuracy", "loss")
        ]
        rows += [
            estimate_row(e, metric="per_position_accuracy", index=i)
            for i, e in enumerate(self.per_position_accuracy)
        ]
        for layer in self.layers:
            for h in layer:
                where = {"layer": h.layer, "head": h.head}
                for name in (*HEAD_SCALARS, "duplicate_mass_per_key", "other_mass_per_key"):
                    rows.append(estimate_row(getattr(h, name), metric=name, **where))
                # metrics.json's duplicate_neighbours.difference: per-key duplicate − other mass
                rows.append(estimate_row(h.duplicate_minus_other, metric=DUPLICATE_DIFFERENCE, **where))
                rows += [
                    estimate_row(e, metric="offset_mass", index=d, **where) for d, e in h.offset_mass.items()
                ]
                rows += [
                    estimate_row(e, metric="per_position_flip_mass", index=i, **where)
                    for i, e in enumerate(h.per_position_flip_mass)
                ]
        return rows

    def summary(self) -> str:
        """The one-screen text summary the CLI prints: one row per head, mean [CI] (outward-rounded:
        an accuracy of 100% reads 1.0000 [0.9996, 1.0000], not 1.0000 ± 0.0000)."""

        def fmt(e: Estimate) -> str:
            return numbers.interval(e.mean, e.ci_low, e.ci_high, 4)

        columns = ("flip mass", "neighbour ±1,±2", "remainder", "argmax hit", "entropy (nats)")
        lines = [
            f"flip alignment: {self.num_sequences:,} sequences of length {self.seq_len}, "
            f"{self.bootstrap_resamples} bootstrap resamples of whole sequences",
            f"accuracy {fmt(self.accuracy)}   sequence accuracy {fmt(self.sequence_accuracy)}   "
            f"loss {fmt(self.loss)}",
            "",
            f"{'L.H':<5}" + "".join(f"{c:>26}" for c in columns),
        ]
        for layer in self.layers:
            for h in layer:
                values = (h.flip_mass, h.neighbour_mass, h.remainder_mass, h.argmax_hit_rate, h.entropy)
                lines.append(f"{f'{h.layer}.{h.head}':<5}" + "".join(f"{fmt(v):>26}" for v in values))
        lines += [
            "",
            f"[low, high]: {self.confidence:.0%} CI rounded outwards (exact bounds in metrics.json; "
            "accuracies and hit rates: Clopper-Pearson at the effective number of trials)",
            f"uniform attention: mass 1/N = {1 / self.seq_len:.4f}, "
            f"entropy log N = {math.log(self.seq_len):.4f}",
        ]
        return "\n".join(lines)

    def headline(self) -> str:
        best = max((h for layer in self.layers for h in layer), key=lambda h: h.flip_mass.mean)
        return (
            f"accuracy {self.accuracy.mean:.3f}, flip mass {best.flip_mass.mean:.3f} "
            f"(head {best.layer}.{best.head} of {self.n_layers}×{self.n_heads})"
        )


DUPLICATE_DIFFERENCE = "duplicate_minus_other_mass_per_key"
CSV_FIELDS = FlipAlignmentResult.CSV_FIELDS


def _head_dict(h: HeadMetrics) -> dict[str, Any]:
    return {
        "layer": h.layer,
        "head": h.head,
        "flip_mass": h.flip_mass.to_dict(),
        "offset_mass": {str(d): e.to_dict() for d, e in h.offset_mass.items()},
        "neighbour_mass": h.neighbour_mass.to_dict(),
        "remainder_mass": h.remainder_mass.to_dict(),
        "argmax_hit_rate": h.argmax_hit_rate.to_dict(),
        "entropy": h.entropy.to_dict(),
        "target_digit_mass": h.target_digit_mass.to_dict(),
        "per_position_flip_mass": [e.to_dict() for e in h.per_position_flip_mass],
        "duplicate_neighbours": {
            "duplicate_mass_per_key": h.duplicate_mass_per_key.to_dict(),
            "other_mass_per_key": h.other_mass_per_key.to_dict(),
            "difference": h.duplicate_minus_other.to_dict(),
            "duplicate_key_share": h.duplicate_key_share,
        },
        "entropy_histogram": h.entropy_counts.tolist(),
        "entropy_histogram_edge_rows": h.entropy_counts_edge.tolist(),
        "mean_pattern": h.mean_pattern.tolist(),
    }
