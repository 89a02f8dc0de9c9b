"""The length-generalisation result object and its renderings as metrics.json, metrics.csv rows and text.

Schema of metrics.json (``schema_version`` 2; metrics.json as in 1, metrics.csv gained ``scope``)::

    schema_version, analysis = "length_generalisation", provenance
    settings    {num_sequences, seed, batch_size, bootstrap_resamples, confidence, resampling_unit,
                 requested_lengths, train_length}
    reference   {chance_accuracy: 1/C}
    lengths     [{length, uniform_mass: 1/N′, learned_key_queries, accuracy, sequence_accuracy, loss,
                  per_position_accuracy: [...], learned_copy_rate,
                  heads: [{layer, head, task_flip_mass, learned_flip_mass, task_flip_mass_shared,
                           learned_minus_task, preference, mean_pattern}]}]
    skipped     [{length, reason}]

Every statistic is an ``{"mean", "ci_low", "ci_high"}`` object (null where undefined: the learned
key N_train − 1 − i exists for no query when N′ ≤ N_train / 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import numbers
from analyses.frame.result import AnalysisResult, estimate_row, plain
from interp.stats import Estimate

ANALYSIS = "length_generalisation"
SCHEMA_VERSION = 2  # 2: metrics.csv has a scope column (metrics.json unchanged)
DEFAULT_OUT = Path("out") / ANALYSIS
DEFAULT_LENGTHS: tuple[int, ...] = (8, 12, 16, 20, 24, 32)
HEAD_FIELDS = ("task_flip_mass", "learned_flip_mass", "task_flip_mass_shared", "learned_minus_task")
# What a head's attention prefers, from the CI of (learned − task) mass on the shared queries.
PREFERENCES = {
    "same_key": "N′ = N_train: the task key and the learned key coincide",
    "no_learned_key": "no query has a key at N_train − 1 − i",
    "learned": "more mass on the learned key N_train − 1 − i (CI above 0)",
    "task": "more mass on the task key N′ − 1 − i (CI below 0)",
    "unclear": "CI of the difference includes 0",
}
NAN = Estimate(float("nan"), float("nan"), float("nan"))


@dataclass
class HeadAtLength:
    """Where one head's attention goes at one evaluation length N′ (means over sequences, with CIs).

    - ``task_flip_mass``: mean over all N′ queries of A[i, N′ − 1 − i] (the key the task needs);
    - ``learned_flip_mass``: mean of A[i, N_train − 1 − i] over the queries where that key exists;
    - ``task_flip_mass_shared``: the task mass over those same queries (a like-for-like comparison);
    - ``learned_minus_task``: their difference, per sequence, then averaged (paired CI).
    """

    layer: int
    head: int
    task_flip_mass: Estimate
    learned_flip_mass: Estimate
    task_flip_mass_shared: Estimate
    learned_minus_task: Estimate
    preference: str  # a key of PREFERENCES
    mean_pattern: np.ndarray  # [query, key], mean over the sequences


@dataclass
class LengthResult:
    """Everything measured at one evaluation length N′."""

    length: int
    learned_key_queries: int  # queries i with 0 ≤ N_train − 1 − i < N′
    accuracy: Estimate
    sequence_accuracy: Estimate
    loss: Estimate
    per_position_accuracy: list[Estimate]
    learned_copy_rate: Estimate  # share of predictions equal to t[N_train − 1 − i], where it exists
    heads: list[HeadAtLength]  # layer-major: (0, 0), (0, 1), ..., (1, 0), ...

    def head(self, layer: int, head: int) -> HeadAtLength:
        return next(h for h in self.heads if (h.layer, h.head) == (layer, head))


@dataclass
class SkippedLength:
    """A requested length the model cannot be run at, and why."""

    length: int
    reason: str


@dataclass(repr=False)
class LengthGeneralisationResult(AnalysisResult):
    """The result object; ``to_dict`` is metrics.json, ``csv_rows`` is metrics.csv."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("length", "scope", "layer", "head", "metric", "index", "mean", "ci_low", "ci_high", "note")

    train_length: int
    num_categories: int
    num_sequences: int
    seed: int
    batch_size: int
    bootstrap_resamples: int
    confidence: float
    requested_lengths: list[int]
    lengths: list[LengthResult]
    skipped: list[SkippedLength]
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return 1.0 / self.num_categories

    def at(self, length: int) -> LengthResult:
        """The result at evaluation length ``length`` (KeyError if it was skipped or not requested)."""
        for r in self.lengths:
            if r.length == length:
                return r
        raise KeyError(f"length {length} was not evaluated")

    @property
    def heads(self) -> list[tuple[int, int]]:
        return [(h.layer, h.head) for h in self.lengths[0].heads] if self.lengths else []

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (schema in the module docstring)."""
        return {
            **self.header(),
            "settings": self.sampling_settings(
                requested_lengths=list(self.requested_lengths), train_length=self.train_length
            ),
            "reference": {"chance_accuracy": self.chance, "preferences": PREFERENCES},
            "lengths": [{**plain(r), "uniform_mass": 1.0 / r.length} for r in self.lengths],
            "skipped": plain(self.skipped),
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (length, [layer, head,] metric[, index]); skipped lengths as rows with a note."""
        rows: list[dict[str, Any]] = []
        for r in self.lengths:
            for name in ("accuracy", "sequence_accuracy", "loss", "learned_copy_rate"):
                rows.append(estimate_row(getattr(r, name), length=r.length, metric=name, note=""))
            for i, est in enumerate(r.per_position_accuracy):
                rows.append(
                    estimate_row(est, length=r.length, metric="per_position_accuracy", index=i, note="")
                )
            for h in r.heads:
                for name in HEAD_FIELDS:
                    rows.append(
                        estimate_row(
                            getattr(h, name),
                            layer=h.layer,
                            head=h.head,
                            length=r.length,
                            metric=name,
                            note=h.preference,
                        )
                    )
        for s in self.skipped:
            rows.append({"length": s.length, "scope": "model", "metric": "skipped", "note": s.reason})
        return rows

    def summary(self) -> str:
        """The text summary the CLI prints: one row per length (and head), mean [CI]."""

        def fmt(e: Estimate) -> str:
            return "n/a" if np.isnan(e.mean) else numbers.interval(e.mean, e.ci_low, e.ci_high)

        g = f"{self.train_length - 1}−i"
        lines = [
            f"length generalisation: trained at N = {self.train_length}; {self.num_sequences:,} sequences "
            f"per length; chance {self.chance:.3f}",
            f"{'N′':>4}  {'accuracy':<22} {'copies t[' + g + ']':<22} {'L.H':<4} "
            f"{'mass on N′−1−i':<22} {'mass on ' + g:<22} {'prefers'}",
        ]
        for r in self.lengths:
            for k, h in enumerate(r.heads):
                left = (
                    f"{r.length:>4}  {fmt(r.accuracy):<22} {fmt(r.learned_copy_rate):<22}"
                    if k == 0
                    else " " * 50
                )
                lines.append(
                    f"{left} {f'{h.layer}.{h.head}':<4} {fmt(h.task_flip_mass):<22} "
                    f"{fmt(h.learned_flip_mass):<22} {h.preference}"
                )
        for s in self.skipped:
            lines.append(f"{s.length:>4}  skipped: {s.reason}")
        return "\n".join(lines)

    def headline(self) -> str:
        accuracy = ", ".join(f"N′={r.length}: {r.accuracy.mean:.2f}" for r in self.lengths)
        return f"trained at N = {self.train_length}; accuracy {accuracy}"


CSV_FIELDS = LengthGeneralisationResult.CSV_FIELDS
