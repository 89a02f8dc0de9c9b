"""The training-dynamics result object and its renderings as metrics.json, metrics.csv and text.

The crossing steps and comparisons it holds are defined in :mod:`analyses.training_dynamics.crossings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.result import AnalysisResult, estimate_row, plain
from interp.metrics import NEIGHBOUR_OFFSETS, offset_query_counts
from interp.stats import Estimate

ANALYSIS = "training_dynamics"
# 2: the "unresolved" verdict, shared_interval and verdict_text in comparisons
# 3: metrics.csv has a scope column (metrics.json as in 2)
# 4: "seeds" (null for one run): several runs' crossing differences, median and order-statistic interval
SCHEMA_VERSION = 4
DEFAULT_OUT = Path("out") / ANALYSIS
# Per-sequence model-level statistics (``zero_pe_*`` only when the model has a positional encoding).
MODEL_METRICS = (
    "accuracy",
    "loss",
    "zero_pe_accuracy",
    "zero_pe_loss",
    "restricted_loss",
    "restricted_accuracy",
    "excluded_loss",
    "excluded_accuracy",
    "restricted_loss_increase",  # restricted_loss − loss, per sequence (paired)
    "excluded_loss_increase",  # excluded_loss − loss
    "zero_pe_accuracy_drop",  # accuracy − zero_pe_accuracy
)
HEAD_METRICS = ("flip_mass", "neighbour_mass", "entropy", "argmax_hit_rate")
# The metrics whose crossing steps are reported (head metrics: of the flip head).
CROSSING_METRICS = (
    "accuracy",
    "loss",
    "zero_pe_accuracy",
    "restricted_loss",
    "excluded_loss",
    "flip_mass",
    "neighbour_mass",
    "entropy",
    "argmax_hit_rate",
)
VERDICTS = ("before", "with", "after", "unresolved", "undetermined")
SNAPSHOT_HINT = "save more snapshots: train with a larger --save-every-log-steps K"


# --- the result -----------------------------------------------------------------------------------
@dataclass
class Crossing:
    """When one metric passed the threshold at one fraction of its way from initial to final value."""

    metric: str
    layer: int | None  # the flip head's, for head metrics
    head: int | None
    fraction: float
    initial: float
    final: float
    threshold: float
    step: Estimate  # interpolated crossing step s*, bootstrap CI over evaluation sequences
    first_snapshot_past: int | None  # step of the first snapshot past θ (None: the curve never moves)
    last_snapshot_before: int | None  # step of the snapshot before it (None if it is the first)


@dataclass
class Comparison:
    """Crossing of ``first`` minus crossing of ``second`` (paired over the same resamples)."""

    first: str
    second: str
    fraction: float
    difference: Estimate  # s*_first − s*_second, in optimizer steps
    share_before: float  # share of resamples with s*_first < s*_second
    same_snapshot_share: float  # share of resamples where both pass θ at the same first snapshot
    # "before" / "with" / "after": the CI of the difference below / around / above 0; "unresolved": the
    # crossings share their snapshot pair in most resamples; "undetermined": a curve never crosses.
    verdict: str
    shared_interval: tuple[int, int] | None = None  # (s_{j−1}, s_j) both cross between, when they share one

    @property
    def verdict_text(self) -> str:
        """The verdict in words, with the snapshot pair and the hint when it is unresolved."""
        if self.verdict == "unresolved" and self.shared_interval is not None:
            a, b = self.shared_interval
            return (
                f"unresolved at this snapshot spacing (both cross between steps {a} and {b} in "
                f"{self.same_snapshot_share:.0%} of resamples; {SNAPSHOT_HINT})"
            )
        if self.verdict == "undetermined":
            return "undetermined (a curve never crosses its threshold)"
        return self.verdict


@dataclass(repr=False)
class TrainingDynamicsResult(AnalysisResult):
    """Progress measures of one training run at its snapshot steps; ``to_dict`` is metrics.json."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("step", "scope", "layer", "head", "metric", "fraction", "mean", "ci_low", "ci_high")

    run: str | None
    steps: list[int]
    sources: list[str]  # snapshot file of each step (relative to the run folder when possible)
    num_sequences: int
    seq_len: int
    seed: int
    batch_size: int
    bootstrap_resamples: int
    confidence: float
    window: int  # restricted loss keeps keys |k − (N−1−i)| ≤ window
    fractions: tuple[float, ...]
    model_metrics: dict[str, list[Estimate]]  # name → one estimate per snapshot
    head_metrics: dict[str, np.ndarray]  # name → Estimate array [snapshot, layer, head]
    mean_patterns: np.ndarray  # [snapshot, layer, head, query, key]
    flip_head: tuple[int, int]  # (layer, head) with the largest final flip mass
    crossings: list[Crossing]
    comparisons: list[Comparison]
    degenerate_rows: dict[str, list[int]]  # restricted/excluded rows with no mass left, per snapshot
    config: dict[str, Any]
    d_vocab: int
    provenance: dict[str, Any] = field(default_factory=dict)
    # several runs (--run R1 R2 ...): analyses.training_dynamics.seeds.across_runs; the rest is run 1's
    seeds: dict[str, Any] | None = None

    @property
    def n_layers(self) -> int:
        return int(self.mean_patterns.shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.mean_patterns.shape[2])

    @property
    def uniform_neighbour_mass(self) -> float:
        """Neighbour mass of uniform attention: the mean over queries of (neighbour keys that exist) / N,
        Σ_d (N − |d|) / N² over d ∈ {±1, ±2} (58/256 ≈ 0.227 for N = 16)."""
        counts = offset_query_counts(self.seq_len, NEIGHBOUR_OFFSETS)
        return sum(counts) / self.seq_len**2

    def series(self, name: str, part: str = "mean", layer: int | None = None, head: int | None = None):
        """One metric over the snapshots as a float array (head metrics: of ``layer``/``head``, by
        default the flip head)."""
        if name in self.model_metrics:
            values = self.model_metrics[name]
        else:
            layer, head = self.flip_head if layer is None else (layer, head)
            values = list(self.head_metrics[name][:, layer, head])
        return np.array([getattr(e, part) for e in values], dtype=float)

    def crossing(self, metric: str, fraction: float = 0.5) -> Crossing:
        for c in self.crossings:
            if c.metric == metric and math.isclose(c.fraction, fraction):
                return c
        raise KeyError(f"no crossing of {metric!r} at fraction {fraction}")

    @property
    def answer(self) -> Comparison | None:
        """Flip mass vs accuracy at the half-way threshold (or the first comparison)."""
        for c in self.comparisons:
            if (c.first, c.second) == ("flip_mass", "accuracy") and math.isclose(c.fraction, 0.5):
                return c
        return self.comparisons[0] if self.comparisons else None

    def to_dict(self) -> dict[str, Any]:
        layer, head = self.flip_head
        return {
            **self.header(),
            "settings": self.sampling_settings(
                run=self.run,
                resampling_unit="sequence (the same sequences at every snapshot)",
                restricted_window=self.window,
                threshold_fractions=list(self.fractions),
                threshold_definition="θ_f = v_first + f · (v_last − v_first); crossing step interpolated "
                "linearly in log(1 + step) between the snapshots around the first one past θ_f",
                neighbour_offsets=[-2, -1, 1, 2],
            ),
            "reference": {
                "chance_accuracy": 1.0 / self.d_vocab,
                "uniform_mass": 1.0 / self.seq_len,
                "uniform_neighbour_mass": self.uniform_neighbour_mass,
                "uniform_entropy": math.log(self.seq_len),
                "chance_loss": math.log(self.d_vocab),
            },
            "flip_head": {"layer": layer, "head": head},
            "answer": None if self.answer is None else self._answer_dict(self.answer),
            "comparisons": [_comparison_dict(c) for c in self.comparisons],
            "crossings": [plain(c) for c in self.crossings],
            "snapshots": [self._snapshot_dict(i) for i in range(len(self.steps))],
            "degenerate_rows": self.degenerate_rows,
            "seeds": self.seeds,
        }

    def _answer_dict(self, c: Comparison) -> dict[str, Any]:
        return {
            **_comparison_dict(c),
            "first_crossing": plain(self.crossing(c.first, c.fraction)),
            "second_crossing": plain(self.crossing(c.second, c.fraction)),
        }

    def _snapshot_dict(self, i: int) -> dict[str, Any]:
        return {
            "step": self.steps[i],
            "source": self.sources[i],
            **{name: values[i].to_dict() for name, values in self.model_metrics.items()},
            "heads": [
                {
                    "layer": layer,
                    "head": head,
                    **{name: self.head_metrics[name][i, layer, head].to_dict() for name in HEAD_METRICS},
                    "mean_pattern": self.mean_patterns[i, layer, head].tolist(),
                }
                for layer in range(self.n_layers)
                for head in range(self.n_heads)
            ],
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (snapshot, metric[, layer, head]); crossing rows have an empty step."""
        rows: list[dict[str, Any]] = []
        for i, step in enumerate(self.steps):
            for name, values in self.model_metrics.items():
                rows.append(estimate_row(values[i], step=step, metric=name, fraction=""))
            for name in HEAD_METRICS:
                for layer in range(self.n_layers):
                    for head in range(self.n_heads):
                        est = self.head_metrics[name][i, layer, head]
                        rows.append(
                            estimate_row(est, layer=layer, head=head, step=step, metric=name, fraction="")
                        )
        for c in self.crossings:
            metric = f"crossing_step:{c.metric}"
            rows.append(
                estimate_row(c.step, layer=c.layer, head=c.head, step="", metric=metric, fraction=c.fraction)
            )
        for c in self.comparisons:
            metric = f"crossing_difference:{c.first}-{c.second}"
            rows.append(estimate_row(c.difference, step="", metric=metric, fraction=c.fraction))
        for row in (self.seeds or {}).get("comparisons", []):  # across runs: the median's interval
            metric = f"seeds_median_difference:{row['first']}-{row['second']}"
            e = Estimate(*(math.nan if row[k] is None else row[k] for k in ("median", "ci_low", "ci_high")))
            rows.append(estimate_row(e, step="", metric=metric, fraction=row["fraction"]))
        return rows

    def summary(self) -> str:
        """The CLI's one-screen answer: crossing steps at the half-way point and the verdict."""
        lines = [
            f"training dynamics: {len(self.steps)} snapshots (steps {self.steps[0]}..{self.steps[-1]}), "
            f"{self.num_sequences:,} sequences each, flip head {self.flip_head[0]}.{self.flip_head[1]}",
            f"{'metric':<20}{'initial':>9}{'final':>9}{'half-way step [95% CI]':>32}",
        ]
        for c in self.crossings:
            if c.fraction == 0.5:
                s = c.step
                lines.append(
                    f"{c.metric:<20}{c.initial:>9.3f}{c.final:>9.3f}"
                    f"{f'{s.mean:.0f} [{s.ci_low:.0f}, {s.ci_high:.0f}]':>32}"
                )
        for c in self.comparisons:
            d = c.difference
            lines.append(
                f"{c.first} − {c.second} at {c.fraction:.0%}: {d.mean:+.0f} steps "
                f"[{d.ci_low:+.0f}, {d.ci_high:+.0f}] → {c.verdict_text}"
            )
        if self.seeds is not None:
            n = self.seeds["n"]
            lines[0] = f"run 1 of {n}: " + lines[0]
            lines += [f"over {n} runs: " + seeds_sentence(row, n) for row in self.seeds["comparisons"]]
        return "\n".join(lines)

    def headline(self) -> str:
        answer = self.answer
        verdict = "" if answer is None else f"; {answer.first} vs {answer.second}: {answer.verdict}"
        return f"{len(self.steps)} snapshots, steps {self.steps[0]}..{self.steps[-1]}{verdict}"


CSV_FIELDS = TrainingDynamicsResult.CSV_FIELDS


def seeds_sentence(row: dict[str, Any], n: int) -> str:
    """``A − B at f: median d steps [lo, hi] over n runs (achieved confidence), k/n before``."""
    if row["median"] is None:
        return f"{row['first']} − {row['second']} at {row['fraction']:.0%}: no run crossed"
    spread = (
        f"[{row['ci_low']:+.0f}, {row['ci_high']:+.0f}] ({row['achieved_confidence']:.1%} order-statistic)"
        if row["ci_low"] is not None
        else f"(no interval: {row['reason']})"
    )
    counts = ", ".join(f"{k} {v}" for k, v in row["verdicts"].items() if v)
    return (
        f"{row['first']} − {row['second']} at {row['fraction']:.0%}: median {row['median']:+.0f} steps "
        f"{spread} over {n} runs; runs' own verdicts: {counts}"
    )


def _comparison_dict(c: Comparison) -> dict[str, Any]:
    return {**plain(c), "verdict_text": c.verdict_text}
