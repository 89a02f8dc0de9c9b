"""Result objects of :mod:`analyses.pe_ablation`: ``to_dict`` is metrics.json, ``csv_rows`` metrics.csv,
``summary`` the text the CLI prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.frame import numbers
from analyses.frame.result import SampledResult, estimate_row, plain
from interp import baselines, outcomes
from interp.stats import Estimate

ANALYSIS = "pe_ablation"
# 2: metrics.csv has scope, layer and head columns; flip_mass rows name their head there, not in index
SCHEMA_VERSION = 2
DEFAULT_OUT = Path("out") / ANALYSIS
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
        """The condition (without its name, the key it is stored under) and its numbers."""
        condition = {k: v for k, v in plain(self.condition).items() if k != "name"}
        return {**condition, **{k: v for k, v in plain(self).items() if k != "condition"}}


@dataclass(repr=False)
class PEAblationResult(SampledResult):
    """The result object: every condition's numbers, and the no-position ceiling."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("condition", "scope", "layer", "head", "metric", "index", "mean", "ci_low", "ci_high")

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
            **self.header(),
            "settings": self.sampling_settings(offsets=list(OFFSETS)),
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
        """One row per (condition, metric[, index]); flip mass per head (scope "head"), the rest model-wide
        (index: an output position, or an offset d for offset_match)."""
        rows = []
        for name, r in self.conditions.items():
            for metric in COLUMNS:
                rows.append(estimate_row(getattr(r, metric), condition=name, metric=metric))
            for i, e in enumerate(r.per_position_accuracy):
                rows.append(estimate_row(e, condition=name, metric="per_position_accuracy", index=i))
            for d, e in r.offset_match.items():
                rows.append(estimate_row(e, condition=name, metric="offset_match", index=d))
            for key, e in r.flip_mass.items():
                layer, head = (int(part) for part in key.split("."))
                rows.append(estimate_row(e, layer=layer, head=head, condition=name, metric="flip_mass"))
        return rows

    def summary(self) -> str:
        """The text the CLI prints: the main conditions, then accuracy by scale α and by removed band."""

        def fmt(e: Estimate) -> str:
            return numbers.interval(e.mean, e.ci_low, e.ci_high)  # ends rounded outwards

        lines = [
            f"PE ablation: {self.num_sequences:,} sequences of length {self.seq_len}; "
            f"chance {self.chance:.3f}, no-position ceiling {self.ceiling_accuracy:.4f}",
            f"{'condition':<14} {'accuracy':<22} {'loss':<22} {'Δ accuracy':<24} {'copies t[N−1−i±1]'}",
        ]
        for name, r in self.conditions.items():
            if r.condition.family in ("band", "scale"):
                continue
            lines.append(
                f"{name:<14} {fmt(r.accuracy):<22} {fmt(r.loss):<22} {fmt(r.delta_accuracy):<24} "
                f"{r.offset_match[-1].mean:.3f} / {r.offset_match[1].mean:.3f}"
            )
        scale = ", ".join(
            f"{r.condition.parameters['alpha']:g}: {r.accuracy.mean:.3f}" for r in self.family("scale")
        )
        lines.append(f"accuracy by α: {scale}")
        bands = ", ".join(
            f"{r.condition.parameters['band']}: {r.accuracy.mean:.3f}" for r in self.family("band")
        )
        if bands:
            lines.append(f"accuracy without band k: {bands}")
        return "\n".join(lines)

    def headline(self) -> str:
        zero = self.conditions.get("zero")
        without = f"without PE {zero.accuracy.mean:.3f}, " if zero is not None else ""
        return (
            f"accuracy {self.conditions['none'].accuracy.mean:.3f}, {without}no-position ceiling "
            f"{self.ceiling_accuracy:.3f}; {len(self.conditions)} conditions"
        )


CSV_FIELDS = PEAblationResult.CSV_FIELDS
COLUMNS = ("accuracy", "loss", "logit_diff", "delta_accuracy", "delta_loss")
