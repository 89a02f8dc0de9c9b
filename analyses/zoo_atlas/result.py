"""The atlas' result objects and metrics.json / metrics.csv.

Three levels of numbers, kept apart:

- per run: mechanism scalars on the evaluation sequences (point values; the per-run evaluation CIs of
  flip and neighbour mass are ``analyses.zoo_summary``'s), its class (:mod:`analyses.zoo_atlas.classes`);
- per cell (one architecture trained with one recipe, over its seeds): each scalar's mean with a Student
  t-interval over the seed-level values, the share of runs in each class with a Wilson interval (never
  of zero width, also at 0/n and n/n), raw and aligned similarities between its seeds (means over pairs);
- between recipes of one architecture: Welch intervals of the difference of the seed means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.result import AnalysisResult, plain
from analyses.zoo_atlas.classes import CLASSES, DESCRIPTIONS, RULE
from analyses.zoo_atlas.runs import RunInfo

ANALYSIS = "zoo_atlas"
SCHEMA_VERSION = 1
DEFAULT_OUT = Path("out") / ANALYSIS
SCALARS = (
    "accuracy", "zero_pe_accuracy", "flip_mass", "neighbour_mass", "spill_width", "argmax_hit_rate",
    "position_share", "beta", "iia_z", "flip_coverage", "served_share", "reference_similarity",
)  # fmt: skip
LABELS = {
    "accuracy": "accuracy",
    "zero_pe_accuracy": "accuracy, PE zeroed",
    "flip_mass": "flip mass (main head)",
    "neighbour_mass": "neighbour mass (main head)",
    "spill_width": "spill width, keys (main head)",
    "argmax_hit_rate": "argmax hit rate (main head)",
    "position_share": "position share of score variance (main head, layer 0)",
    "beta": "β of softmax(β·cos PE) (main head, layer 0)",
    "iia_z": "IIA of z (selector head)",
    "flip_coverage": "flip coverage (max over heads)",
    "served_share": "share of queries served by the main head",
    "reference_similarity": "similarity to the reference's attention (served pattern)",
    "first_perfect_step": "steps to 100% val accuracy",
}
COMPARED = (
    ("pattern_raw", "pattern_aligned"),
    ("qk_raw", "qk_aligned"),
    ("ov_raw", "ov_aligned"),
    ("representation_raw", "representation_procrustes"),
)
CKA_CAVEAT = (
    "Linear CKA is dominated by the directions of largest variance: it can change a lot through directions "
    "the model does not use and stay high while a low-variance direction it does use is destroyed; it is "
    "shown next to the aligned (orthogonal Procrustes) similarity, never alone."
)


@dataclass
class RunAtlas:
    """One run's mechanism scalars, class and (in memory only) what the comparisons need."""

    info: RunInfo
    positional_embedding: str
    n_layers: int
    n_heads: int
    d_model: int
    seq_len: int
    d_vocab: int
    scalars: dict[str, float]
    heads: list[dict[str, Any]]  # per (layer, head): its scalars and the queries it serves
    main_head: tuple[int, int]
    served_by: list[tuple[int, int]]  # per query: the (layer, head) serving it
    selector_head: tuple[int, int] | None
    selector_holds: bool | None
    mechanism: str
    mean_patterns: np.ndarray  # [layer, head, query, key]
    sha256: str
    qk_positions: np.ndarray | None = field(default=None, repr=False)  # [head, query, key], layer 0
    token_ov: np.ndarray | None = field(default=None, repr=False)  # [head, digit, d_model], layer 0
    representation: np.ndarray | None = field(default=None, repr=False)  # [rows, d_model]
    dynamics: dict[str, Any] | None = None  # crossing differences (analyses.zoo_atlas.dynamics)
    outlier: str | None = None  # why this run stands out of its cell, if it does

    def value(self, name: str) -> float:
        if name in self.scalars:
            return self.scalars[name]
        v = self.info.training.get(name)
        return math.nan if v is None else float(v)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "zoo": self.info.zoo,
            "cell": self.info.cell,
            "recipe": self.info.recipe,
            "seed": self.info.seed,
            "role": self.info.role,
            "positional_embedding": self.positional_embedding,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_model": self.d_model,
            "mechanism": self.mechanism,
            "outlier": self.outlier,
            "scalars": plain(self.scalars),
            "training": plain(self.info.training),
            "main_head": {"layer": self.main_head[0], "head": self.main_head[1]},
            "selector_head": None
            if self.selector_head is None
            else {
                "layer": self.selector_head[0],
                "head": self.selector_head[1],
                "holds": self.selector_holds,
            },
            "served_by": [list(x) for x in self.served_by],
            "heads": plain(self.heads),
            "dynamics": self.dynamics,
            "snapshots": self.info.snapshots,
            "sha256": self.sha256,
            "mean_patterns": self.mean_patterns.tolist(),
        }


@dataclass
class PairComparison:
    """Two seeds of one cell: raw and aligned similarities (:mod:`analyses.zoo_atlas.compare`)."""

    cell: str
    first: str
    second: str
    matching: list[list[int]]  # per layer: head h of `first` ↔ matching[layer][h] of `second`
    pattern_raw: float
    pattern_aligned: float
    qk_raw: float | None
    qk_aligned: float | None
    ov_raw: float
    ov_aligned: float
    representation_raw: float | None
    representation_procrustes: float
    representation_cka: float


@dataclass
class SeedInterval:
    """Mean over seeds with its Student t-interval. NaN bounds for fewer than two seeds, and when every
    seed gave the same value (``all_equal``): a zero-width interval would claim what n seeds cannot show."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    values: list[float]
    all_equal: bool = False


@dataclass
class Share:
    """k of n runs, with the share's interval (Wilson by default)."""

    k: int
    n: int
    share: float
    ci_low: float
    ci_high: float


@dataclass
class CellSummary:
    """One architecture trained with one recipe, over its seeds."""

    name: str
    recipe: str
    positional_embedding: str
    n_layers: int
    n_heads: int
    d_model: int
    runs: list[str]
    classes: dict[str, Share]
    stats: dict[str, SeedInterval]
    similarities: dict[str, SeedInterval]  # COMPARED and representation_cka: mean over pairs of seeds
    dynamics: dict[str, dict[str, Any]]  # pair → {"difference": SeedInterval, "before": Share}
    final_flip_mass: dict[str, Any] | None = None  # {"steps", "flip_mass": SeedInterval} at the last snapshot


@dataclass
class RecipeDifference:
    """Recipe B minus recipe A for one architecture: Welch interval of the seed means."""

    architecture: str
    recipe_a: str
    recipe_b: str
    metric: str
    difference: float
    ci_low: float
    ci_high: float


@dataclass(repr=False)
class ZooAtlasResult(AnalysisResult):
    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("scope", "cell", "run", "metric", "value", "ci_low", "ci_high", "n")

    zoos: list[str]
    num_sequences: int
    seed: int
    confidence: float
    share_interval: str
    iia_pairs: int
    reference: str
    runs: list[RunAtlas]
    cells: list[CellSummary]
    pairs: list[PairComparison]
    recipe_differences: list[RecipeDifference]
    missing: list[str]
    dynamics_sequences: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def outliers(self) -> list[RunAtlas]:
        return [r for r in self.runs if r.outlier]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.header(),
            "settings": {
                "zoos": self.zoos,
                "num_sequences": self.num_sequences,
                "seed": self.seed,
                "confidence": self.confidence,
                "share_interval": self.share_interval,
                "seed_interval": "Student t over the seed-level values",
                "recipe_difference_interval": "Welch t, recipe B minus recipe A",
                "iia_pairs": self.iia_pairs,
                "reference": self.reference,
                "dynamics_sequences": self.dynamics_sequences,
                "class_rule": RULE,
                "cka_caveat": CKA_CAVEAT,
                "not_measured": "tolerance margin and certified bound (too slow per run; see the docs)",
            },
            "classes": {k: DESCRIPTIONS[k] for k in CLASSES},
            "labels": LABELS,
            "cells": plain(self.cells),
            "recipe_differences": plain(self.recipe_differences),
            "pairs": plain(self.pairs),
            "outliers": [{"run": r.info.name, "cell": r.info.cell, "why": r.outlier} for r in self.outliers],
            "runs": [r.to_dict() for r in self.runs],
            "missing": self.missing,
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for r in self.runs:
            for k, v in r.scalars.items():
                rows.append(
                    {"scope": "run", "cell": r.info.cell, "run": r.info.name, "metric": k, "value": v}
                )
            rows.append(
                {
                    "scope": "run",
                    "cell": r.info.cell,
                    "run": r.info.name,
                    "metric": "class",
                    "value": r.mechanism,
                }
            )
        for c in self.cells:
            for k, s in c.classes.items():
                rows.append(
                    {"scope": "cell_share", "cell": c.name, "run": "", "metric": k, "value": s.share,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}
                )  # fmt: skip
            for k, s in {**c.stats, **c.similarities}.items():
                rows.append(
                    {"scope": "cell", "cell": c.name, "run": "", "metric": k, "value": s.mean,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}
                )  # fmt: skip
        for d in self.recipe_differences:
            rows.append(
                {"scope": "recipe_difference", "cell": f"{d.architecture}: {d.recipe_b} − {d.recipe_a}",
                 "run": "", "metric": d.metric, "value": d.difference, "ci_low": d.ci_low,
                 "ci_high": d.ci_high}
            )  # fmt: skip
        return [{k: plain(row.get(k, "")) for k in self.CSV_FIELDS} for row in rows]

    def summary(self) -> str:
        pct = f"{self.confidence:.0%}"
        lines = [
            f"zoo atlas: {len(self.runs)} runs in {len(self.cells)} cells (architecture × recipe), "
            f"{self.num_sequences:,} sequences each; reference run {self.reference}",
            f"class rule: {RULE}",
            f"{'cell':<44}{'seeds':>6}  {f'single_pointer share [{pct} {self.share_interval}]':<36}"
            f"{'flip mass [' + pct + ' t over seeds]':<30}{'sim. to reference':<22}",
        ]
        for c in self.cells:
            s = c.classes["single_pointer"]
            f = c.stats["flip_mass"]
            r = c.stats["reference_similarity"]
            lines.append(
                f"{c.name:<44}{len(c.runs):>6}  {f'{s.k}/{s.n} [{s.ci_low:.2f}, {s.ci_high:.2f}]':<36}"
                f"{_interval(f):<30}{_interval(r):<22}"
            )
        if self.recipe_differences:
            lines.append("recipe differences (Welch, B − A):")
            for d in self.recipe_differences:
                if d.metric == "flip_mass":
                    lines.append(
                        f"  {d.architecture}: {d.recipe_b} − {d.recipe_a}: flip mass {d.difference:+.3f} "
                        f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
                    )
        for c in self.cells:
            if c.final_flip_mass:
                f = c.final_flip_mass
                lines.append(
                    f"flip mass at the last snapshot (step {', '.join(map(str, f['steps']))}) {c.name}: "
                    f"{_interval(f['flip_mass'])} over {f['flip_mass'].n} seeds "
                    f"(model.pt: {_interval(c.stats['flip_mass'])})"
                )
            for pair, v in c.dynamics.items():
                diff, before = v["difference"], v["before"]
                lines.append(
                    f"dynamics {c.name}: {pair} at half rise {_interval(diff, 0)} steps over {diff.n} seeds; "
                    f"'before' in {before.k}/{before.n} [{before.ci_low:.2f}, {before.ci_high:.2f}]"
                )
        if self.outliers:
            lines.append("outliers: " + "; ".join(f"{r.info.name} ({r.outlier})" for r in self.outliers))
        if self.missing:
            lines.append(f"not finished ({len(self.missing)}): {', '.join(self.missing)}")
        return "\n".join(lines)

    def headline(self) -> str:
        return f"{len(self.runs)} runs in {len(self.cells)} cells"


def _interval(s: SeedInterval, digits: int = 3) -> str:
    if not math.isfinite(s.mean):
        return "n/a"
    if s.all_equal:
        return f"{s.mean:.{digits}f} (all {s.n} seeds)"
    if s.n < 2 or not math.isfinite(s.ci_low):
        return f"{s.mean:.{digits}f} (1 seed)"
    return f"{s.mean:.{digits}f} [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"


CSV_FIELDS = ZooAtlasResult.CSV_FIELDS
