"""Result objects of :mod:`analyses.pe_ablation`: ``to_dict`` is metrics.json, ``csv_rows`` metrics.csv."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from interp import baselines, outcomes
from interp.stats import Estimate

ANALYSIS = "pe_ablation"
SCHEMA_VERSION = 1
OFFSETS = outcomes.MATCH_OFFSETS


@dataclass(frozen=True)
class Condition:
    """One way of running the model: ``method`` and ``parameters`` for ablate_positional_encoding."""

    name: str
    family: str
    label: str
    method: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConditionResult:
    """Means with CIs over sequences for one condition (``delta_*``: minus ``none``, paired)."""

    condition: Condition
    accuracy: Estimate
    loss: Estimate
    logit_diff: Estimate
    delta_accuracy: Estimate
    delta_loss: Estimate
    per_position_accuracy: list[Estimate]
    offset_match: dict[int, Estimate]  # share of predictions equal to t[N−1−i+d]
    flip_mass: dict[str, Estimate]  # "layer.head" → mean A[i, N−1−i]

    def to_dict(self) -> dict[str, Any]:
        c = self.condition
        return {
            "family": c.family,
            "label": c.label,
            "method": c.method,
            "parameters": c.parameters,
            **{
                k: getattr(self, k).to_dict()
                for k in ("accuracy", "loss", "logit_diff", "delta_accuracy", "delta_loss")
            },
            "per_position_accuracy": [e.to_dict() for e in self.per_position_accuracy],
            "offset_match": {str(d): e.to_dict() for d, e in self.offset_match.items()},
            "flip_mass": {k: e.to_dict() for k, e in self.flip_mass.items()},
        }


@dataclass
class PEAblationResult:
    num_sequences: int
    seq_len: int
    num_categories: int
    seed: int
    batch_size: int
    bootstrap_resamples: int
    confidence: float
    conditions: dict[str, ConditionResult]
    ceiling: baselines.NoPositionBound | None  # exact; None when N > EXACT_CEILING_MAX_LEN
    ceiling_monte_carlo: Estimate
    monte_carlo_sequences: int
    band_wavelengths: list[float]  # 2π / ω_k in positions, per band k
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return baselines.chance_accuracy(self.num_categories)

    @property
    def ceiling_accuracy(self) -> float:
        return float(self.ceiling.accuracy) if self.ceiling else self.ceiling_monte_carlo.mean

    def family(self, name: str) -> list[ConditionResult]:
        return [r for r in self.conditions.values() if r.condition.family == name]

    def to_dict(self) -> dict[str, Any]:
        exact = self.ceiling.to_dict() if self.ceiling else None
        return {
            "schema_version": SCHEMA_VERSION,
            "analysis": ANALYSIS,
            "provenance": self.provenance,
            "settings": {
                "num_sequences": self.num_sequences,
                "seq_len": self.seq_len,
                "num_categories": self.num_categories,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "bootstrap_resamples": self.bootstrap_resamples,
                "confidence": self.confidence,
                "resampling_unit": "sequence",
                "offsets": list(OFFSETS),
            },
            "reference": {
                "chance_accuracy": self.chance,
                "chance_loss": math.log(self.num_categories),
                "uniform_flip_mass": 1.0 / self.seq_len,
                "no_position": {
                    "accuracy": self.ceiling_accuracy,
                    "exact": exact,
                    "monte_carlo": {
                        **self.ceiling_monte_carlo.to_dict(),
                        "sequences": self.monte_carlo_sequences,
                    },
                    "method": (
                        "Without positions the output at i is a function of (own token, multiset of tokens); "
                        "the best such predictor guesses the most frequent token among the other N−1 "
                        "(even N) or among all N (odd N). 'exact' sums its expected accuracy over the "
                        "partitions of N into at most C parts (rational arithmetic); 'monte_carlo' applies "
                        "that predictor to random sequences (percentile-bootstrap CI)."
                    ),
                },
            },
            "band_wavelengths": self.band_wavelengths,
            "conditions": {name: r.to_dict() for name, r in self.conditions.items()},
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        rows = []
        for name, r in self.conditions.items():
            for metric, value in r.to_dict().items():
                if isinstance(value, dict) and "mean" in value:
                    rows.append({"condition": name, "metric": metric, "index": "", **value})
                elif isinstance(value, list):
                    rows += [
                        {"condition": name, "metric": metric, "index": i, **e} for i, e in enumerate(value)
                    ]
                elif metric in ("offset_match", "flip_mass"):
                    rows += [{"condition": name, "metric": metric, "index": k, **e} for k, e in value.items()]
        return rows


CSV_FIELDS = ("condition", "metric", "index", "mean", "ci_low", "ci_high")
COLUMNS = ("accuracy", "loss", "logit_diff", "delta_accuracy", "delta_loss")
