"""Result objects of :mod:`analyses.head_ablation`: ``to_dict`` is metrics.json, ``csv_rows`` metrics.csv,
``summary`` the text the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import numbers
from analyses.frame.result import SampledResult, estimate_row, plain
from analyses.head_ablation.patching import PatchingSweep
from interp import baselines, paired
from interp.ablation import HEAD_METHODS
from interp.stats import Estimate

ANALYSIS = "head_ablation"
# 2: metrics.csv has a scope column; settings.permutation_sequences (row permutations run on the first
# permutation_sequences sequences; 1: on all of them)
# 3: with more than one head per layer, conditions "joint/L<l>" (kind "joint", head null): every head of
# layer l zeroed together, and "redundancy" (per layer: joint vs the worst single head)
SCHEMA_VERSION = 3
DEFAULT_OUT = Path("out") / ANALYSIS
STATS = ("accuracy", "loss", "logit_diff")


@dataclass
class ConditionResult:
    """One condition: means with CIs, paired changes from the clean run, and (head ablations) a test."""

    name: str
    kind: str  # "clean" | "ablation" | "pattern" | "joint" (every head of ``layer`` zeroed together)
    layer: int | None
    head: int | None
    method: str
    accuracy: Estimate
    loss: Estimate
    logit_diff: Estimate
    delta_accuracy: Estimate
    delta_loss: Estimate
    delta_logit_diff: Estimate
    wilcoxon: paired.WilcoxonResult | None = None
    p_holm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the name (the key it is stored under); the test as ``wilcoxon_loss``."""
        out = {k: v for k, v in plain(self).items() if k not in ("name", "wilcoxon", "p_holm")}
        if self.wilcoxon is not None:
            out["wilcoxon_loss"] = {**self.wilcoxon.to_dict(), "p_holm": self.p_holm}
        return out


@dataclass(repr=False)
class HeadAblationResult(SampledResult):
    """The result object: every condition with its changes from the clean run, the permutation
    distribution and the patching sweep."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = (
        "condition",
        "kind",
        "scope",
        "layer",
        "head",
        "method",
        "metric",
        "mean",
        "ci_low",
        "ci_high",
        "p_wilcoxon",
        "p_holm",
    )

    reference_sequences: int
    permutation_sequences: int  # the first sequences, on which every row permutation runs
    n_layers: int
    n_heads: int
    conditions: dict[str, ConditionResult]
    permutation_accuracy: dict[str, list[float]]  # "L.H" → mean accuracy under each permutation
    permutation_loss: dict[str, list[float]]
    patching: PatchingSweep
    no_position_accuracy: float
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return baselines.chance_accuracy(self.num_categories)

    @property
    def heads(self) -> list[tuple[int, int]]:
        return [(layer, head) for layer in range(self.n_layers) for head in range(self.n_heads)]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.header(),
            "settings": self.sampling_settings(
                methods=list(HEAD_METHODS),
                mean_over="the evaluated sequences, per position",
                resample_from=f"{self.reference_sequences} other sequences (make_reverse_data)",
                permutations=len(next(iter(self.permutation_accuracy.values()), [])),
                permutation_sequences=self.permutation_sequences,
                tests="Wilcoxon signed-rank (normal approximation) on per-sequence loss, ablated vs clean; "
                "Holm-corrected across heads × methods",
            ),
            "reference": {"chance_accuracy": self.chance, "no_position_accuracy": self.no_position_accuracy},
            "conditions": {name: c.to_dict() for name, c in self.conditions.items()},
            "permutations": {
                key: {"accuracy": acc, "loss": self.permutation_loss[key], **spread(acc)}
                for key, acc in self.permutation_accuracy.items()
            },
            "patching": self.patching.to_dict(),
            "redundancy": self.redundancy(),
        }

    def redundancy(self) -> list[dict[str, Any]]:
        """Per layer with more than one head: Δ accuracy of zeroing all its heads together against the
        worst single head. ``covering`` when no head alone costs more than 1% of accuracy (CI low ≥
        −0.01) but all together do (CI high < −0.01): the heads cover for each other, so a single-head
        ablation understates what the layer does."""
        out = []
        for name, joint in self.conditions.items():
            if joint.kind != "joint":
                continue
            single = [
                c
                for c in self.conditions.values()
                if c.kind == "ablation" and c.method == "zero" and c.layer == joint.layer
            ]
            worst = min(single, key=lambda c: c.delta_accuracy.mean)
            d_joint, d_worst = joint.delta_accuracy, worst.delta_accuracy
            covering = all(c.delta_accuracy.ci_low >= -0.01 for c in single) and d_joint.ci_high < -0.01
            text = lambda e: numbers.interval(e.mean, e.ci_low, e.ci_high)  # noqa: E731
            sentence = (
                f"Zeroing every head of layer {joint.layer} together changes accuracy by {text(d_joint)}; "
                f"the worst single head, {worst.layer}.{worst.head}, by {text(d_worst)}"
            )
            if covering:
                sentence += ": the heads cover for each other (no one head is needed, together they are)."
            else:
                sentence += "."
            out.append(
                {"layer": joint.layer, "condition": name, "worst_single": f"{worst.layer}.{worst.head}",
                 "covering": covering, "sentence": sentence}
            )  # fmt: skip
        return out

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (condition, metric); the clean run has scope "model", the others their head."""
        rows = []
        for name, c in self.conditions.items():
            p = c.wilcoxon.pvalue if c.wilcoxon else None
            for metric in (*STATS, *(f"delta_{s}" for s in STATS)):
                row = estimate_row(
                    getattr(c, metric),
                    layer=c.layer if c.head is not None else None,  # a joint row: its layer is in the name
                    head=c.head,
                    condition=name,
                    kind=c.kind,
                    method=c.method,
                )
                rows.append({**row, "metric": metric, "p_wilcoxon": p, "p_holm": c.p_holm})
        return rows

    def summary(self) -> str:
        """The text the CLI prints: every condition's change from the clean run, and the permutations."""

        def fmt(e: Estimate) -> str:
            return f"{e.mean:+.3f} [{e.ci_low:+.3f}, {e.ci_high:+.3f}]"

        clean = self.conditions["none"]
        lines = [
            f"head ablation: {self.num_sequences:,} sequences; clean accuracy {clean.accuracy.mean:.4f}, "
            f"loss {clean.loss.mean:.4f}; chance {self.chance:.3f}",
            f"{'condition':<26} {'Δ accuracy':<26} {'Δ loss':<26} {'p (Holm)'}",
        ]
        for name, c in self.conditions.items():
            if c.kind == "clean":
                continue
            p = "" if c.p_holm is None else numbers.p_value(c.p_holm)
            lines.append(f"{name:<26} {fmt(c.delta_accuracy):<26} {fmt(c.delta_loss):<26} {p}")
        lines += [r["sentence"] for r in self.redundancy()]
        for key, acc in self.permutation_accuracy.items():
            if acc:
                s = spread(acc)
                lines.append(
                    f"head {key}: {len(acc)} row permutations, accuracy min {s['min']:.3f} "
                    f"median {s['median']:.3f} max {s['max']:.3f}"
                )
        return "\n".join(lines)

    def headline(self) -> str:
        zeroed = [c for c in self.conditions.values() if c.kind == "ablation" and c.method == "zero"]
        worst = min(zeroed, key=lambda c: c.delta_accuracy.mean)
        return (
            f"clean accuracy {self.conditions['none'].accuracy.mean:.3f}; zeroing head "
            f"{worst.layer}.{worst.head} changes it by {worst.delta_accuracy.mean:+.3f}"
        )


CSV_FIELDS = HeadAblationResult.CSV_FIELDS


def spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {}
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}
