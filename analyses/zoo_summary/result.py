"""The zoo-summary result object, the across-seed statistics, and metrics.json / metrics.csv.

Two levels of uncertainty, kept apart:

- per run, each metric is a mean over evaluation sequences with a bootstrap CI (how well the
  evaluation pins down *this* trained model; accuracies: Clopper–Pearson at the effective number of
  trials, exact at 0 and 1, ``interp.proportions``);
- per architecture, the seed-level values x_1..x_n (one per trained seed) give the *median* with the
  distribution-free order-statistic interval (``interp.seed_intervals.median_interval``): every end is
  an observed seed value, so a mass stays in [0, 1] and a step count non-negative, and the interval's
  exact coverage is stored (``achieved``): with n ≤ 5 seeds even [min, max] covers the median with only
  1 − 2^{1−n} (75%, 87.5%, 93.75%), which is said, not hidden. With fewer than 3 seeds there is no
  interval (NaN ends and a note). The mean and sd of the seeds are kept as plain descriptions.

Differences between an architecture A and the reference R are the Hodges–Lehmann shift (median of the
pairwise differences a_i − r_j) with the exact Mann–Whitney interval (``shift_interval``), inside
[min, max] of the pairwise differences; again NaN ends with fewer than 3 seeds in a group.

``fit_seconds`` of ensemble members is the whole ensemble's fit (M members trained together in one
Lightning fit): it is summarised once per ensemble, not once per member (M copies of one timing are not
M timings), and ``fit_seconds_per_member`` (the ensemble's time / M) is recorded per run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import numbers
from analyses.frame.result import AnalysisResult, plain

# t and Welch intervals live in interp.populations (zoo_atlas uses them); imported here for callers.
from interp.populations import t_interval, welch_interval  # noqa: F401
from interp.seed_intervals import median_interval, shift_interval
from interp.stats import Estimate

ANALYSIS = "zoo_summary"
# 2: architecture stats are the median with an order-statistic interval (+ median, achieved, note); the
# differences a Hodges–Lehmann shift with the Mann–Whitney interval (+ achieved, n, note); fit_seconds
# summarised once per ensemble; runs record training.fit_seconds_per_member and training.ensemble_size
SCHEMA_VERSION = 2
DEFAULT_OUT = Path("out") / ANALYSIS
# Seed-level metrics: measured on the model (with evaluation CIs) ...
MEASURED = ("accuracy", "zero_pe_accuracy", "flip_mass", "neighbour_mass", "flip_coverage")
# ... and read from the run's metrics.json (training's own numbers, no evaluation CI).
FROM_TRAINING = ("test_acc", "first_perfect_step", "steps", "fit_seconds", "fit_seconds_per_member")
# ... and certified over all C^N inputs (``--certify``; absent otherwise).
CERTIFIED = ("certified_lower", "certified_upper")
SUMMARISED = (*MEASURED, "first_perfect_step", "fit_seconds", *CERTIFIED)
LABELS = {
    "accuracy": "held-out accuracy",
    "zero_pe_accuracy": "accuracy with PE zeroed",
    "flip_mass": "flip mass (best head)",
    "neighbour_mass": "neighbour mass (best head)",
    "flip_coverage": "flip coverage (max over heads)",
    "first_perfect_step": "steps to 100% val accuracy",
    "fit_seconds": "seconds of fitting (one value per ensemble: its wall time)",
    "fit_seconds_per_member": "seconds of fitting per member (ensemble wall time / members)",
    "certified_lower": "certified per-digit accuracy, lower bound (all inputs)",
    "certified_upper": "certified per-digit accuracy, upper bound (all inputs)",
}


@dataclass(frozen=True)
class ShiftEstimate(Estimate):
    """A difference between architectures: Hodges–Lehmann shift (``mean``), Mann–Whitney interval, its
    exact coverage ``achieved``, the smaller group's size ``n`` and a ``note`` (why no / a weak interval)."""

    achieved: float = math.nan
    n: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
        return {k: finite(v) for k, v in vars(self).items()}


def seed_stats(values: np.ndarray, confidence: float) -> SeedStats:
    """Median of the finite seed-level ``values`` with its order-statistic interval (module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    iv = median_interval(finite, confidence)
    sd = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    mean = float(finite.mean()) if len(finite) else math.nan
    return SeedStats(mean, iv.low, iv.high, sd, iv.n, x.tolist(), iv.point, iv.achieved, iv.reason)


def seed_difference(a: np.ndarray, b: np.ndarray, confidence: float) -> ShiftEstimate:
    """Architecture minus reference: Hodges–Lehmann shift with the exact Mann–Whitney interval."""
    iv = shift_interval(a, b, confidence)
    return ShiftEstimate(iv.point, iv.low, iv.high, iv.achieved, iv.n, iv.reason)


@dataclass
class RunSummary:
    """One trained run: its architecture, measured metrics (evaluation CIs) and training numbers."""

    name: str
    seed: int
    positional_embedding: str
    n_layers: int
    n_heads: int
    role: str
    measured: dict[str, Estimate]  # MEASURED (zero_pe_accuracy absent without a PE)
    training: dict[str, Any]  # FROM_TRAINING, as metrics.json has them
    best_head: tuple[int, int]
    mean_pattern: np.ndarray  # [query, key] of the best head
    sha256: str
    d_vocab: int
    d_model: int = 32
    certified: dict[str, Any] = field(default_factory=dict)  # CERTIFIED bounds, method, seconds or reason

    @property
    def architecture(self) -> str:
        return architecture_name(self.positional_embedding, self.n_layers, self.n_heads, self.d_model)

    def value(self, metric: str) -> float:
        if metric in self.measured:
            return self.measured[metric].mean
        value = self.certified.get(metric) if metric in CERTIFIED else self.training.get(metric)
        return math.nan if value is None else float(value)


def architecture_name(pe: str, n_layers: int, n_heads: int, d_model: int = 32) -> str:
    """``"<pe> L<layers> H<heads>"``, plus ``" D<d_model>"`` for a width other than the tutorial's 32
    (as ``models.zoo.cli`` names its runs): runs of different widths are different architectures, never
    seeds of one."""
    return f"{pe} L{n_layers} H{n_heads}" + ("" if d_model == 32 else f" D{d_model}")


@dataclass
class SeedStats:
    """Across seeds: the median with its order-statistic interval [ci_low, ci_high] (exact coverage
    ``achieved``; NaN ends and a ``note`` with fewer than 3 seeds), and the seeds' mean and sd."""

    mean: float
    ci_low: float
    ci_high: float
    sd: float
    n: int
    values: list[float]
    median: float = math.nan
    achieved: float = math.nan
    note: str = ""


@dataclass
class ArchitectureSummary:
    name: str
    positional_embedding: str
    n_layers: int
    n_heads: int
    role: str
    runs: list[str]
    stats: dict[str, SeedStats]
    differences: dict[str, ShiftEstimate]  # metric → (this − reference); empty for the reference
    d_model: int = 32


@dataclass(repr=False)
class ZooSummaryResult(AnalysisResult):
    """Per run and per architecture (over seeds), with differences from the reference architecture."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = (
        "scope", "architecture", "run", "metric", "mean", "ci_low", "ci_high", "n", "sd", "median", "achieved"
    )  # fmt: skip

    zoo: str | None
    num_sequences: int
    seq_len: int
    seed: int
    bootstrap_resamples: int
    confidence: float
    reference: str | None
    runs: list[RunSummary]
    architectures: list[ArchitectureSummary]
    missing: list[str]  # runs of the zoo's grid that have not finished
    d_vocab: int
    index_page: str | None = None  # index.html comparing the runs' full reports (``--index``)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.header(),
            "settings": {
                "zoo": self.zoo,
                "num_sequences": self.num_sequences,
                "seq_len": self.seq_len,
                "seed": self.seed,
                "bootstrap_resamples": self.bootstrap_resamples,
                "confidence": self.confidence,
                "run_interval": "bootstrap over evaluation sequences (accuracies: Clopper-Pearson at the "
                "effective number of trials)",
                "architecture_interval": "median of the seed-level values, order-statistic interval "
                "(distribution-free; 'achieved' is its exact coverage; none with fewer than 3 seeds)",
                "difference_interval": "Hodges-Lehmann shift, architecture minus reference, exact "
                "Mann-Whitney interval (none with fewer than 3 seeds in a group)",
                "reference": self.reference,
                "best_head": "the (layer, head) with the largest flip mass",
                "flip_coverage": "mean over queries of the largest flip mass A[i, N−1−i] of any head",
                "neighbour_offsets": [-2, -1, 1, 2],
            },
            "reference_values": {"uniform_mass": 1.0 / self.seq_len, "chance_accuracy": 1.0 / self.d_vocab},
            "labels": {k: LABELS[k] for k in SUMMARISED},
            "certified": "per-digit accuracy bounds over all C^N inputs (interp.certify), seed-level values"
            if any(r.certified for r in self.runs)
            else None,
            "certified_association": self.certified_association(),
            "architectures": plain(self.architectures),
            "runs": [
                {
                    "name": r.name,
                    "architecture": r.architecture,
                    "d_model": r.d_model,
                    "seed": r.seed,
                    "role": r.role,
                    "best_head": {"layer": r.best_head[0], "head": r.best_head[1]},
                    **{k: v.to_dict() for k, v in r.measured.items()},
                    "training": r.training,
                    "certified": r.certified or None,
                    "sha256": r.sha256,
                    "mean_pattern": r.mean_pattern.tolist(),
                }
                for r in self.runs
            ],
            "missing": self.missing,
            "index_page": self.index_page,
        }

    def certify_budget_text(self) -> str:
        """The per-run certification budget as the runs record it: ``60 s``, ``2,000 boxes`` or both."""
        first = next((r.certified for r in self.runs if r.certified), {})
        parts = []
        if first.get("max_boxes") is not None:
            parts.append(f"{first['max_boxes']:,} boxes")
        if first.get("budget_seconds") is not None and math.isfinite(first["budget_seconds"]):
            parts.append(f"{first['budget_seconds']:g} s")
        return " and ".join(parts) or "none"

    def certified_association(self) -> dict[str, Any] | None:
        """With ``--certify``: Spearman's ρ of the certified lower bound and of the bounds' gap against
        flip mass, neighbour mass and tolerance margin over the certified runs, and the sentence
        answering "does a higher flip mass buy a tighter proof?" (:mod:`analyses.zoo_summary.certified`)."""
        from analyses.zoo_summary.certified import answer, associations

        if not any(r.certified for r in self.runs):
            return None
        rows = associations(self.runs, self.confidence)
        budget = self.certify_budget_text()
        return {
            "measure": "Spearman rank correlation over the certified runs, Fisher-z interval (Bonett-Wright "
            "variance), inside [-1, 1]; censored tolerance margins ranked beyond every measured one",
            "budget": budget,
            "rows": rows,
            "answer": answer(rows, budget),
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (run, metric), (architecture, metric) and (difference from the reference, metric)."""
        rows: list[dict[str, Any]] = []

        def add(scope: str, architecture: str, run: str, metric: str, values: dict[str, Any]) -> None:
            rows.append(
                {"scope": scope, "architecture": architecture, "run": run, "metric": metric, **values}
            )

        for r in self.runs:
            for k, e in r.measured.items():
                add("run", r.architecture, r.name, k, {**e.to_dict(), "n": self.num_sequences})
            for k in FROM_TRAINING:
                add("run", r.architecture, r.name, k, {"mean": r.training.get(k), "n": 1})
            if r.certified:
                for k in CERTIFIED:
                    add("run", r.architecture, r.name, k, {"mean": r.certified.get(k), "n": 1})
                margin = r.certified.get("tolerance_margin")
                if margin:
                    add(
                        "run",
                        r.architecture,
                        r.name,
                        "tolerance_margin",
                        {k: margin[k] for k in ("mean", "ci_low", "ci_high")} | {"n": self.num_sequences},
                    )
        for a in self.architectures:
            for k, s in a.stats.items():
                stats = plain(s)
                add(
                    "architecture",
                    a.name,
                    "",
                    k,
                    {x: stats[x] for x in ("mean", "ci_low", "ci_high", "n", "sd", "median", "achieved")},
                )
            for k, e in a.differences.items():
                d = e.to_dict()
                add(
                    "difference_from_reference",
                    a.name,
                    "",
                    k,
                    {x: d[x] for x in ("mean", "ci_low", "ci_high", "n", "achieved")},
                )
        for row in (self.certified_association() or {}).get("rows", []):
            add(
                "association",
                "",
                "",
                f"spearman:{row['scalar']}:{row['outcome']}",
                {x: row[x] for x in ("ci_low", "ci_high", "n")} | {"mean": row["rho"]},
            )
        return rows

    def summary(self) -> str:
        """The CLI's table: per architecture, median [order-statistic interval] over seeds, with the
        interval's exact coverage when it is below the confidence asked, and none with < 3 seeds."""
        shown = ("flip_mass", "neighbour_mass", "zero_pe_accuracy", "accuracy", "first_perfect_step")
        if any(r.certified for r in self.runs):
            shown += CERTIFIED
        head = f"{'architecture':<24}{'seeds':>6}" + "".join(f"{m:>30}" for m in shown)
        lines = [
            f"zoo summary: {len(self.runs)} runs, {self.num_sequences:,} sequences each; "
            f"median over seeds [order-statistic interval for the median, {self.confidence:.0%} or "
            "its exact coverage in (); none with fewer than 3 seeds]",
            head,
        ]
        few = False
        for a in self.architectures:
            runs = [r for r in self.runs if r.architecture == a.name]
            cells, run_cells = [], []
            for m in shown:
                s = a.stats.get(m)
                digits = 0 if m == "first_perfect_step" else 3
                run_cells.append("")
                if s is None or not math.isfinite(s.median):
                    cells.append("n/a")
                elif not math.isfinite(s.ci_low):  # < 3 seeds: no interval over seeds
                    cells.append(f"{s.median:.{digits}f} ({s.n} seed{'s' if s.n > 1 else ''}: no CI)")
                    measured = [
                        r.measured[m] for r in runs if m in r.measured and math.isfinite(r.measured[m].mean)
                    ]
                    e = measured[0] if len(measured) == 1 else None
                    run_cells[-1] = (
                        "–" if e is None else numbers.interval(e.mean, e.ci_low, e.ci_high, digits)
                    )
                else:
                    shown_ci = f"{s.median:.{digits}f} [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"
                    if s.achieved < self.confidence:
                        shown_ci += f" ({s.achieved:.0%})"
                    cells.append(shown_ci)
            n = max((s.n for s in a.stats.values()), default=0)
            lines.append(f"{a.name:<24}{n:>6}" + "".join(f"{c:>30}" for c in cells))
            if any(run_cells):
                few = True
                lines.append(f"{'  run CI (1 seed)':<30}" + "".join(f"{c:>30}" for c in run_cells))
        if few:
            lines.append(
                "no CI: fewer than 3 seeds (two seeds cover their median with probability 1/2); 'run CI' is "
                f"the one run's {self.confidence:.0%} CI over evaluation sequences (– : a training number)"
            )
        association = self.certified_association()
        if association:
            lines.append(association["answer"])
        if self.missing:
            lines.append(f"not finished ({len(self.missing)}): {', '.join(self.missing)}")
        return "\n".join(lines)

    def headline(self) -> str:
        return (
            f"{len(self.runs)} runs of {len(self.architectures)} architectures (reference {self.reference})"
        )


CSV_FIELDS = ZooSummaryResult.CSV_FIELDS
