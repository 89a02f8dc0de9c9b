"""The zoo-summary result object, the across-seed statistics, and metrics.json / metrics.csv.

Two levels of uncertainty, kept apart:

- per run, each metric is a mean over evaluation sequences with a percentile-bootstrap CI (how well the
  evaluation pins down *this* trained model);
- per architecture, the seed-level values x_1..x_n (one per trained seed) give the mean x̄ and the
  Student t-interval x̄ ± t_{(1+c)/2, n−1} · s/√n (s the sample standard deviation): how much a
  *new* seed would vary. With one seed the interval is undefined (NaN).

Differences between an architecture A and the reference R use Welch's interval
x̄_A − x̄_R ± t_{(1+c)/2, ν} · √(s_A²/n_A + s_R²/n_R), ν the Welch–Satterthwaite degrees of freedom;
when both groups have zero spread the interval collapses onto the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.result import AnalysisResult, plain
from interp.stats import Estimate

ANALYSIS = "zoo_summary"
SCHEMA_VERSION = 1
DEFAULT_OUT = Path("out") / ANALYSIS
# Seed-level metrics: measured on the model (with evaluation CIs) ...
MEASURED = ("accuracy", "zero_pe_accuracy", "flip_mass", "neighbour_mass", "flip_coverage")
# ... and read from the run's metrics.json (training's own numbers, no evaluation CI).
FROM_TRAINING = ("test_acc", "first_perfect_step", "steps", "fit_seconds")
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
    "fit_seconds": "seconds of fitting",
    "certified_lower": "certified per-digit accuracy, lower bound (all inputs)",
    "certified_upper": "certified per-digit accuracy, upper bound (all inputs)",
}


def t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """(mean, low, high, sd) of the Student t-interval over ``values`` (NaNs dropped; NaN bounds if n < 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return mean, mean - half, mean + half, sd


def welch_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean(a) − mean(b), low, high): Welch's t-interval (NaN bounds if either group has < 2 values)."""
    from scipy import stats

    a, b = (np.asarray(v, dtype=np.float64) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return diff, diff - half, diff + half


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
    (as ``models.zoo`` names its runs): runs of different widths are different architectures, never
    seeds of one."""
    return f"{pe} L{n_layers} H{n_heads}" + ("" if d_model == 32 else f" D{d_model}")


@dataclass
class SeedStats:
    """Across-seed mean with its t-interval."""

    mean: float
    ci_low: float
    ci_high: float
    sd: float
    n: int
    values: list[float]


@dataclass
class ArchitectureSummary:
    name: str
    positional_embedding: str
    n_layers: int
    n_heads: int
    role: str
    runs: list[str]
    stats: dict[str, SeedStats]
    differences: dict[str, Estimate]  # metric → (this − reference), Welch CI; empty for the reference
    d_model: int = 32


@dataclass(repr=False)
class ZooSummaryResult(AnalysisResult):
    """Per run and per architecture (over seeds), with differences from the reference architecture."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("scope", "architecture", "run", "metric", "mean", "ci_low", "ci_high", "n", "sd")

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
                "run_interval": "percentile bootstrap over evaluation sequences",
                "architecture_interval": "Student t over the seed-level values",
                "difference_interval": "Welch t, architecture minus reference",
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
        for a in self.architectures:
            for k, s in a.stats.items():
                stats = plain(s)
                add(
                    "architecture",
                    a.name,
                    "",
                    k,
                    {x: stats[x] for x in ("mean", "ci_low", "ci_high", "n", "sd")},
                )
            for k, e in a.differences.items():
                add("difference_from_reference", a.name, "", k, e.to_dict())
        return rows

    def summary(self) -> str:
        """The CLI's table: per architecture, mean [t-interval] over seeds."""
        shown = ("flip_mass", "neighbour_mass", "zero_pe_accuracy", "accuracy", "first_perfect_step")
        if any(r.certified for r in self.runs):
            shown += CERTIFIED
        head = f"{'architecture':<24}{'seeds':>6}" + "".join(f"{m:>26}" for m in shown)
        lines = [
            f"zoo summary: {len(self.runs)} runs, {self.num_sequences:,} sequences each; "
            f"mean [{self.confidence:.0%} t-interval over seeds]",
            head,
        ]
        single = False
        for a in self.architectures:
            runs = [r for r in self.runs if r.architecture == a.name]
            cells, run_cells = [], []
            for m in shown:
                s = a.stats.get(m)
                digits = 0 if m == "first_perfect_step" else 3
                run_cells.append("")
                if s is None or not math.isfinite(s.mean):
                    cells.append("n/a")
                elif s.n < 2:  # no interval over seeds: show the one run's evaluation CI instead
                    cells.append(f"{s.mean:.{digits}f} n/a (1 seed)")
                    measured = [
                        r.measured[m] for r in runs if m in r.measured and math.isfinite(r.measured[m].mean)
                    ]
                    e = measured[0] if len(measured) == 1 else None
                    run_cells[-1] = "–" if e is None else f"[{e.ci_low:.{digits}f}, {e.ci_high:.{digits}f}]"
                else:
                    cells.append(f"{s.mean:.{digits}f} [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]")
            n = max((s.n for s in a.stats.values()), default=0)
            lines.append(f"{a.name:<24}{n:>6}" + "".join(f"{c:>26}" for c in cells))
            if any(run_cells):
                single = True
                lines.append(f"{'  run CI (1 seed)':<30}" + "".join(f"{c:>26}" for c in run_cells))
        if single:
            lines.append(
                f"n/a (1 seed): no interval over seeds; 'run CI' is that run's {self.confidence:.0%} "
                "bootstrap CI over evaluation sequences (– : no evaluation CI, a training number)"
            )
        if self.missing:
            lines.append(f"not finished ({len(self.missing)}): {', '.join(self.missing)}")
        return "\n".join(lines)

    def headline(self) -> str:
        return (
            f"{len(self.runs)} runs of {len(self.architectures)} architectures (reference {self.reference})"
        )


CSV_FIELDS = ZooSummaryResult.CSV_FIELDS
