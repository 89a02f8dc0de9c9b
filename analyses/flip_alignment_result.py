"""The flip-alignment result object and its renderings as metrics.json and metrics.csv rows.

Schema of metrics.json (``schema_version`` 1) is documented in the README; the core keys
(``accuracy`` and ``layers[l].heads[h].{flip_mass, offset_mass, argmax_hit_rate, entropy,
per_position_flip_mass}``, each an ``{"mean", "ci_low", "ci_high"}`` object) are a contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interp.stats import Estimate

ANALYSIS = "flip_alignment"
SCHEMA_VERSION = 1
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
    mean_pattern: np.ndarray  # [query, key], mean over all sequences


@dataclass
class FlipAlignmentResult:
    """The result object; ``to_dict`` is metrics.json, ``csv_rows`` is metrics.csv."""

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
        """The metrics.json document (schema in the README, version ``SCHEMA_VERSION``)."""
        n = self.seq_len
        return {
            "schema_version": SCHEMA_VERSION,
            "analysis": ANALYSIS,
            "provenance": self.provenance,
            "settings": {
                "num_sequences": self.num_sequences,
                "seq_len": self.seq_len,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "bootstrap_resamples": self.bootstrap_resamples,
                "confidence": self.confidence,
                "resampling_unit": "sequence",
                "offsets": list(self.offsets),
                "neighbour_offsets": list(self.neighbour_offsets),
            },
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
        """One row per (layer, head, metric[, index]); model-wide metrics have empty layer/head."""
        rows: list[dict[str, Any]] = []

        def add(layer: Any, head: Any, metric: str, index: Any, est: Estimate) -> None:
            rows.append({"layer": layer, "head": head, "metric": metric, "index": index, **est.to_dict()})

        for name in ("accuracy", "sequence_accuracy", "loss"):
            add("", "", name, "", getattr(self, name))
        for i, est in enumerate(self.per_position_accuracy):
            add("", "", "per_position_accuracy", i, est)
        for layer in self.layers:
            for h in layer:
                for name in (*HEAD_SCALARS, "duplicate_mass_per_key", "other_mass_per_key"):
                    add(h.layer, h.head, name, "", getattr(h, name))
                # "difference" as in metrics.json's duplicate_neighbours: per-key duplicate − other mass
                add(h.layer, h.head, "difference", "", h.duplicate_minus_other)
                for d, est in h.offset_mass.items():
                    add(h.layer, h.head, "offset_mass", d, est)
                for i, est in enumerate(h.per_position_flip_mass):
                    add(h.layer, h.head, "per_position_flip_mass", i, est)
        return rows


CSV_FIELDS = ("layer", "head", "metric", "index", "mean", "ci_low", "ci_high")


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
        "mean_pattern": h.mean_pattern.tolist(),
    }
