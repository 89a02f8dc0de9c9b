"""Across seeds and architectures of a model zoo: flip mass, neighbour mass, zero-PE accuracy.

Reads a zoo folder written by ``python -m models.zoo`` (its ``zoo.json`` lists the grid; without one,
every finished run folder inside is used), loads each finished run's ``model.pt`` and evaluates it on
the same random sequences:

- accuracy, and accuracy with the positional encoding zeroed (``zero_pe_accuracy``; not for PE none);
- flip mass and neighbour mass (keys N−1−i ± 1, ± 2) of the *best head*, the (layer, head) with the
  largest flip mass;
- flip coverage, mean_i max_{layer, head} A[i, N−1−i]: whether *some* head reads the flipped key of
  every query (several heads can split the positions between them);

each with a bootstrap CI over sequences; plus the run's own training numbers (steps to 100% validation
accuracy, seconds). Per architecture: the mean over seeds with a t-interval, and the Welch interval of
the difference from a reference architecture (default sinusoidal, 1 layer, 1 head: the tutorial's).
See :mod:`analyses.zoo_summary_result` for the statistics.

Python: ``result = run("zoo/")``; ``write_outputs(result, "out/zoo")``.
CLI:    ``python -m analyses.zoo_summary ZOO_DIR [--out DIR] ...`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses import command, common
from analyses.zoo_summary_figures import FIGURES
from analyses.zoo_summary_result import (
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_OUT,
    SCHEMA_VERSION,
    SUMMARISED,
    ArchitectureSummary,
    RunSummary,
    SeedStats,
    ZooSummaryResult,
    t_interval,
    welch_interval,
)
from analyses.zoo_summary_runs import discover, summarise_run
from interp.stats import Estimate

__all__ = [
    "ANALYSIS",
    "CSV_FIELDS",
    "FIGURES",
    "SCHEMA_VERSION",
    "ZooSummaryResult",
    "discover",
    "main",
    "run",
    "summary_text",
    "write_outputs",
]

DEFAULT_REFERENCE = "sinusoidal L1 H1"
_PE_ORDER = {"sinusoidal": 0, "learned": 1, "none": 2}


def run(
    zoo: str | Path,
    num_sequences: int = 2000,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    reference: str | None = DEFAULT_REFERENCE,
    device: str = "cpu",
    log: Any = None,
) -> ZooSummaryResult:
    """Evaluate every finished run of ``zoo`` and summarise across seeds per architecture."""
    for name, value in (
        ("num_sequences", num_sequences),
        ("batch_size", batch_size),
        ("bootstrap_resamples", bootstrap_resamples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    folders, missing = discover(zoo)
    runs = []
    for i, (folder, role) in enumerate(folders, 1):
        runs.append(
            summarise_run(
                folder, role, num_sequences, seed, batch_size, bootstrap_resamples, confidence, device
            )
        )
        if log is not None:
            log(f"[{i}/{len(folders)}] {folder.name}")
    shapes = {(r.mean_pattern.shape[0], r.d_vocab) for r in runs}
    if len(shapes) != 1:
        raise common.UserError(f"zoo {zoo}: runs differ in (sequence length, categories): {sorted(shapes)}")
    seq_len, d_vocab = shapes.pop()

    groups: dict[str, list[RunSummary]] = {}
    for r in sorted(
        runs,
        key=lambda r: (
            r.role == "control",
            _PE_ORDER.get(r.positional_embedding, 9),
            r.n_layers,
            r.n_heads,
            r.seed,
        ),
    ):
        groups.setdefault(r.architecture, []).append(r)
    reference = None if reference is None else reference.replace("_", " ")
    if reference is not None and reference not in groups:
        if reference != DEFAULT_REFERENCE:
            raise common.UserError(f"--reference {reference!r} is not in the zoo ({', '.join(groups)})")
        reference = next(iter(groups))

    def values(members: list[RunSummary], metric: str) -> np.ndarray:
        return np.array([m.value(metric) for m in members], dtype=np.float64)

    architectures = []
    for name, members in groups.items():
        stats = {}
        for metric in SUMMARISED:
            v = values(members, metric)
            if np.isfinite(v).any():
                mean, low, high, sd = t_interval(v, confidence)
                stats[metric] = SeedStats(mean, low, high, sd, int(np.isfinite(v).sum()), v.tolist())
        differences = {}
        if reference is not None and name != reference:
            for metric in stats:
                d, lo, hi = welch_interval(
                    values(members, metric), values(groups[reference], metric), confidence
                )
                if np.isfinite(d):
                    differences[metric] = Estimate(d, lo, hi)
        first = members[0]
        architectures.append(
            ArchitectureSummary(
                name=name,
                positional_embedding=first.positional_embedding,
                n_layers=first.n_layers,
                n_heads=first.n_heads,
                role=first.role,
                runs=[m.name for m in members],
                stats=stats,
                differences=differences,
            )
        )
    return ZooSummaryResult(
        zoo=str(Path(zoo).absolute()),
        num_sequences=num_sequences,
        seq_len=seq_len,
        seed=seed,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        reference=reference,
        runs=[r for members in groups.values() for r in members],
        architectures=architectures,
        missing=missing,
        d_vocab=d_vocab,
    )


# --- outputs --------------------------------------------------------------------------------------
OUTPUTS = command.Outputs(ANALYSIS, CSV_FIELDS, figures="analyses.zoo_summary_figures", source="zoo")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write


def summary_text(result: ZooSummaryResult) -> str:
    """The CLI's table: per architecture, mean [t-interval] over seeds."""
    shown = ("flip_mass", "neighbour_mass", "zero_pe_accuracy", "accuracy", "first_perfect_step")
    head = f"{'architecture':<20}{'seeds':>6}" + "".join(f"{m:>26}" for m in shown)
    lines = [
        f"zoo summary: {len(result.runs)} runs, {result.num_sequences:,} sequences each; "
        f"mean [{result.confidence:.0%} t-interval over seeds]",
        head,
    ]
    single = False
    for a in result.architectures:
        runs = [r for r in result.runs if r.architecture == a.name]
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
        lines.append(f"{a.name:<20}{n:>6}" + "".join(f"{c:>26}" for c in cells))
        if any(run_cells):
            single = True
            lines.append(f"{'  run CI (1 seed)':<26}" + "".join(f"{c:>26}" for c in run_cells))
    if single:
        lines.append(
            f"n/a (1 seed): no interval over seeds; 'run CI' is that run's {result.confidence:.0%} bootstrap "
            "CI over evaluation sequences (– : no evaluation CI, a training number)"
        )
    if result.missing:
        lines.append(f"not finished ({len(result.missing)}): {', '.join(result.missing)}")
    return "\n".join(lines)


def _build_index(result: ZooSummaryResult, args: Any, folder: Path) -> str:
    """Each run's full report (``reports.build``) in ``RUN/report/``, then ``folder/index.html``
    (``reports.index.build_index``) linking them; returns the page's name."""
    from reports.build import build_report  # lazy: the full pipeline only when asked for
    from reports.index import build_index

    zoo = Path(args.zoo)
    dirs = []
    for i, r in enumerate(result.runs, 1):
        print(f"report {i}/{len(result.runs)}: {r.name}", file=sys.stderr, flush=True)
        dirs.append(zoo / r.name / "report")
        build_report(zoo / r.name, dirs[-1], seed=args.seed, num_sequences=args.num_sequences, name=r.name)
    return build_index(dirs, folder / "index.html").name


# --- command line ---------------------------------------------------------------------------------
def build_parser() -> common.ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Flip mass, neighbour mass and zero-PE accuracy across the seeds and architectures of a zoo.",
        out=DEFAULT_OUT,
        num_sequences=2000,
        model=False,
        seq_len=False,
        sequences_help="random sequences evaluated on every run",
    )
    p.add_argument("zoo", type=common.path_arg, help="zoo folder written by python -m models.zoo")
    p.add_argument(
        "--reference",
        default=DEFAULT_REFERENCE,
        help=f"architecture the others are compared with (default {DEFAULT_REFERENCE!r})",
    )
    p.add_argument(
        "--index",
        action="store_true",
        help="also build every run's full report into RUN/report/ (python -m reports.build; ~20 s per run, "
        "reused when up to date) and OUT/index.html comparing them",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def compute(args: argparse.Namespace, folder: Path) -> ZooSummaryResult:
        result = run(
            args.zoo,
            **command.sampling_kwargs(args),
            reference=args.reference,
            device=args.device,
            log=lambda message: print(message, file=sys.stderr, flush=True),
        )
        result.provenance = command.cli_provenance(
            ANALYSIS,
            args,
            argv,
            checkpoint=Path(args.zoo).absolute(),
            checkpoint_sha256=None,
            config={},
            runs=[{"name": r.name, "sha256": r.sha256} for r in result.runs],
        )
        if args.index:
            result.index_page = _build_index(result, args, folder)
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS, summary=summary_text)


if __name__ == "__main__":
    sys.exit(main())
