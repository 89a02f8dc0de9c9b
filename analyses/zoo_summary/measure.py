"""``run``: evaluate every finished run of a zoo, then summarise each architecture over its seeds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import arguments
from analyses.frame.cli import UserError
from analyses.zoo_summary.engine import SummaryEngine, evaluate_run, evaluation_payload, map_runs
from analyses.zoo_summary.result import (
    MEASURED,
    SUMMARISED,
    ArchitectureSummary,
    RunSummary,
    ZooSummaryResult,
    seed_difference,
    seed_stats,
)
from analyses.zoo_summary.runs import discover

DEFAULT_REFERENCE = "sinusoidal L1 H1"
_PE_ORDER = {"sinusoidal": 0, "learned": 1, "none": 2}


def fit_times(members: list[RunSummary]) -> np.ndarray:
    """fit_seconds once per training: the members of one ensemble (same ``ensemble_seeds``) share its one
    wall time, which counts once, not once per member (M copies of one timing are not M timings)."""
    seen: dict[Any, float] = {}
    for m in members:
        ensemble = m.training.get("ensemble_seeds")
        seen.setdefault(tuple(ensemble) if ensemble else m.name, m.value("fit_seconds"))
    return np.array(list(seen.values()), dtype=np.float64)


def run(
    zoo: str | Path,
    num_sequences: int = 2000,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    reference: str | None = DEFAULT_REFERENCE,
    device: str = "cpu",
    progress: bool = False,
    engine: SummaryEngine | None = None,
    certify_budget: float | None = None,
    certify_boxes: int | None = None,
) -> ZooSummaryResult:
    """Evaluate every finished run of ``zoo`` and summarise across seeds per architecture; ``progress``
    prints ``[i/n runs, ETA] run: evaluation`` to stderr as each run is done. ``engine`` runs the
    evaluations in this process (default) or as Ray tasks (:mod:`analyses.zoo_summary.engine`): the
    same numbers either way. ``certify_budget`` (seconds per run) and/or ``certify_boxes`` (regions per
    run, the engine's deterministic ``max_boxes``) also certify every run's per-digit accuracy over all
    C^N inputs (``interp.certify``) and measure its tolerance margin, and the result then holds the
    association of the certified bounds with flip mass, neighbour mass and the margin."""
    engine = SummaryEngine() if engine is None else engine
    engine.check(device)
    arguments.positive_ints(
        num_sequences=num_sequences, batch_size=batch_size, bootstrap_resamples=bootstrap_resamples
    )
    arguments.check_confidence(confidence)
    arguments.check_resamples(bootstrap_resamples, len(MEASURED))
    folders, missing = discover(zoo)
    settings = dict(
        num_sequences=num_sequences,
        seed=seed,
        batch_size=batch_size,
        resamples=bootstrap_resamples,
        confidence=confidence,
        device=device,
        certify_budget=None if certify_budget is None else float(certify_budget),
        certify_boxes=None if certify_boxes is None else int(certify_boxes),
    )
    payloads = [evaluation_payload(folder, role, **settings) for folder, role in folders]
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else None
    runs = map_runs(evaluate_run, payloads, engine, log, "evaluation", ship_files=True)
    shapes = {(r.mean_pattern.shape[0], r.d_vocab) for r in runs}
    if len(shapes) != 1:
        raise UserError(f"zoo {zoo}: runs differ in (sequence length, categories): {sorted(shapes)}")
    seq_len, d_vocab = shapes.pop()

    groups: dict[str, list[RunSummary]] = {}
    for r in sorted(
        runs,
        key=lambda r: (
            r.role == "control",
            _PE_ORDER.get(r.positional_embedding, 9),
            r.n_layers,
            r.n_heads,
            r.d_model,
            r.seed,
        ),
    ):
        groups.setdefault(r.architecture, []).append(r)
    reference = None if reference is None else reference.replace("_", " ")
    if reference is not None and reference not in groups:
        if reference != DEFAULT_REFERENCE:
            raise UserError(f"--reference {reference!r} is not in the zoo ({', '.join(groups)})")
        reference = next(iter(groups))

    def values(members: list[RunSummary], metric: str) -> np.ndarray:
        return np.array([m.value(metric) for m in members], dtype=np.float64)

    per_ensemble = fit_times

    architectures = []
    for name, members in groups.items():
        stats = {}
        for metric in SUMMARISED:
            v = values(members, metric) if metric != "fit_seconds" else per_ensemble(members)
            if np.isfinite(v).any():
                stats[metric] = seed_stats(v, confidence)
        differences = {}
        if reference is not None and name != reference:
            for metric in stats:
                if metric == "fit_seconds":
                    a, b = per_ensemble(members), per_ensemble(groups[reference])
                else:
                    a, b = values(members, metric), values(groups[reference], metric)
                d = seed_difference(a, b, confidence)
                if np.isfinite(d.mean):
                    differences[metric] = d
        first = members[0]
        architectures.append(
            ArchitectureSummary(
                name=name,
                positional_embedding=first.positional_embedding,
                n_layers=first.n_layers,
                n_heads=first.n_heads,
                d_model=first.d_model,
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
