"""Does the flip alignment form before, with or after the accuracy jump? Progress measures over training.

Train with snapshots (``python -m models.train ... --save-every-log-steps K`` writes the encoder at
log-spaced steps and at the step training ended to ``RUN/snapshots/step_XXXXXX.pt``), then for every
snapshot (and the run's ``model.pt`` when its step has no snapshot) evaluate on the same random sequences:

- accuracy and loss (held-out: fresh random sequences), and both with the positional encoding zeroed;
- per head: flip mass A[i, N−1−i], neighbour mass (keys N−1−i ± 1, ± 2), row entropy, argmax hit rate;
- the *restricted* loss: every attention row of every head restricted to the keys |k − (N−1−i)| ≤ w
  (w = 1) and renormalised, A'[i, k] = A[i, k]·[|k − f(i)| ≤ w] / Σ_k' A[i, k']·[|k' − f(i)| ≤ w];
- the *excluded* loss: the flipped key removed from every row and the row renormalised,
  A'[i, k] = A[i, k]·[k ≠ f(i)] / (1 − A[i, f(i)]).

A restricted loss close to the loss says the model needs nothing outside the flip window; an excluded
loss far above it says it needs the flipped key itself. Then the step at which each curve first passes
fractions (default 10%, 50%, 90%) of its way from initial to final value, with bootstrap CIs over the
evaluation sequences, and the paired difference "flip mass crossing − accuracy crossing" whose CI
answers before (< 0) / with (∋ 0) / after (> 0) — or "unresolved" when both cross between the same two
snapshots, where only more snapshots can tell. See :mod:`analyses.training_dynamics_crossings` for the maths.

Python: ``result = run(find_snapshots("runs/tutorial-seed0"))``; ``write_outputs(result, "out/td")``.
CLI:    ``python -m analyses.training_dynamics --run DIR [--out DIR] ...`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses import command, common
from analyses.training_dynamics_crossings import find_crossings
from analyses.training_dynamics_figures import FIGURES
from analyses.training_dynamics_measures import (
    exclude_flip,
    flip_window,
    renormalise_rows,
    renormalised_attention,
    restrict_to_flip,
    snapshot_statistics,
)
from analyses.training_dynamics_result import (
    ANALYSIS,
    CROSSING_METRICS,
    CSV_FIELDS,
    DEFAULT_OUT,
    HEAD_METRICS,
    MODEL_METRICS,
    SCHEMA_VERSION,
    TrainingDynamicsResult,
)
from interp.stats import Estimate, bootstrap_distribution, percentile_interval
from models.checkpoints import CheckpointError, load_model, sha256_file

__all__ = [
    "ANALYSIS",
    "CSV_FIELDS",
    "FIGURES",
    "SCHEMA_VERSION",
    "TrainingDynamicsResult",
    "exclude_flip",
    "find_snapshots",
    "flip_window",
    "main",
    "renormalise_rows",
    "renormalised_attention",
    "restrict_to_flip",
    "run",
    "snapshot_statistics",
    "summary_text",
    "write_outputs",
]

FRACTIONS: tuple[float, ...] = (0.1, 0.5, 0.9)
COMPARED: tuple[tuple[str, str], ...] = (
    ("flip_mass", "accuracy"),
    ("flip_mass", "loss"),
    ("argmax_hit_rate", "accuracy"),
)
_SNAPSHOT = re.compile(r"step_(\d+)\.pt")


# --- snapshots ------------------------------------------------------------------------------------
def _recorded_step(path: Path) -> int | None:
    """The optimizer step of a run's model.pt (``models.train`` records it as ``metadata["step"]``), or
    None when the file does not say."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        raise CheckpointError(f"{path}: cannot read ({type(e).__name__})") from None
    meta = document.get("metadata", {}) if isinstance(document, dict) else {}
    step = meta.get("step") if isinstance(meta, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def find_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of every ``snapshots/step_XXXXXX.pt`` of a run folder (the trainer also snapshots
    the step training ended at), plus its ``model.pt`` (the best checkpoint's weights) when that holds
    a step no snapshot covers. Sorted by step; a :class:`common.UserError` when there is nothing to read."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise common.UserError(
            f"--run {run_dir}: is a file, not a run folder (give the folder holding snapshots/)"
        )
    if not run_dir.is_dir():
        raise common.UserError(f"--run {run_dir}: no such folder")
    folder = run_dir / "snapshots"
    found = (
        {int(m.group(1)): p for p in folder.glob("step_*.pt") if (m := _SNAPSHOT.fullmatch(p.name))}
        if folder.is_dir()
        else {}
    )
    if not found:
        raise common.UserError(
            f"--run {run_dir}: no snapshots/step_*.pt (train with --save-every-log-steps K)"
        )
    final = run_dir / "model.pt"
    if final.is_file():
        step = _recorded_step(final)
        if step is not None and step not in found:
            found[step] = final
    if len(found) < 2:
        raise common.UserError(f"--run {run_dir}: need at least two snapshots, found {len(found)}")
    return sorted(found.items())


def _load(source: Any, device: str) -> Any:
    if isinstance(source, (str, Path)):
        return load_model(source, device=device, check_accuracy=False)  # snapshots start untrained
    return source


def run(
    snapshots: Sequence[tuple[int, Any]],
    num_sequences: int = 2000,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    window: int = 1,
    fractions: Sequence[float] = FRACTIONS,
    device: str = "cpu",
    run_dir: str | Path | None = None,
) -> TrainingDynamicsResult:
    """Evaluate every (step, model or checkpoint path) on the same ``num_sequences`` sequences and
    find when each progress measure crosses its thresholds. Models are loaded one at a time."""
    for name, value in (
        ("num_sequences", num_sequences),
        ("batch_size", batch_size),
        ("bootstrap_resamples", bootstrap_resamples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be a non-negative integer, got {window!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"threshold fractions must lie in (0, 1], got {list(fractions)}")
    snapshots = sorted(snapshots, key=lambda item: item[0])
    steps = [int(step) for step, _ in snapshots]
    if len(steps) < 2 or len(set(steps)) != len(steps) or min(steps) < 0:
        raise ValueError(f"need at least two snapshots with distinct non-negative steps, got {steps}")

    tables, patterns, degenerate, config = [], [], {"restricted": [], "excluded": []}, None
    for step, source in snapshots:
        model = _load(source, device)
        cfg = model.cfg
        if config is None:
            config, n, d_vocab = cfg.to_dict(), cfg.n_ctx, cfg.d_vocab
        elif {k: v for k, v in cfg.to_dict().items() if k != "device"} != {
            k: v for k, v in config.items() if k != "device"
        }:
            raise ValueError(f"snapshot at step {step} has another architecture than the first one")
        batches = common.token_batches(num_sequences, n, d_vocab, seed, batch_size)
        table, mean_pattern, bad = snapshot_statistics(model, batches, window)
        table["restricted_loss_increase"] = table["restricted_loss"] - table["loss"]
        table["excluded_loss_increase"] = table["excluded_loss"] - table["loss"]
        if "zero_pe_accuracy" in table:
            table["zero_pe_accuracy_drop"] = table["accuracy"] - table["zero_pe_accuracy"]
        tables.append(table)
        patterns.append(mean_pattern)
        for key, value in bad.items():
            degenerate[key].append(value)
        del model

    names = [m for m in MODEL_METRICS if m in tables[0]]
    n_snap, (n_layers, n_heads) = len(steps), tables[0]["flip_mass"].shape[1:]
    # Columns: for each metric, its values at every snapshot: [seq, snapshot(, layer, head)] flattened.
    blocks = {name: np.stack([t[name] for t in tables], axis=1) for name in (*names, *HEAD_METRICS)}
    offsets, start = {}, 0
    for name, block in blocks.items():
        width = int(np.prod(block.shape[1:]))
        offsets[name] = (slice(start, start + width), block.shape[1:])
        start += width
    full = np.hstack([b.reshape(num_sequences, -1) for b in blocks.values()])
    point, reps = bootstrap_distribution(full, None, bootstrap_resamples, seed=[seed, 1])
    low, high = percentile_interval(reps, confidence)

    def estimates(name: str) -> np.ndarray:
        where, shape = offsets[name]
        flat = [
            Estimate(float(m), float(lo), float(hi))
            for m, lo, hi in zip(point[where], low[where], high[where])
        ]
        return np.array(flat, dtype=object).reshape(shape)

    def curves(name: str, layer: int | None = None, head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        where, shape = offsets[name]
        p, r = point[where].reshape(shape), reps[:, where].reshape(-1, *shape)
        return (p, r) if layer is None else (p[:, layer, head], r[:, :, layer, head])

    final_flip = point[offsets["flip_mass"][0]].reshape(n_snap, n_layers, n_heads)[-1]
    flip_head = tuple(int(i) for i in np.unravel_index(int(np.argmax(final_flip)), final_flip.shape))
    curves_at = {
        name: (*curves(name, *flip_head), flip_head)
        if name in HEAD_METRICS
        else (*curves(name), (None, None))
        for name in CROSSING_METRICS
        if name in blocks
    }
    crossings, comparisons = find_crossings(steps, curves_at, fractions, confidence, COMPARED)

    sources = [
        str(Path(src).relative_to(run_dir))
        if run_dir is not None and isinstance(src, (str, Path)) and Path(src).is_relative_to(run_dir)
        else (str(src) if isinstance(src, (str, Path)) else "in memory")
        for _, src in snapshots
    ]
    return TrainingDynamicsResult(
        run=None if run_dir is None else str(Path(run_dir).absolute()),
        steps=steps,
        sources=sources,
        num_sequences=num_sequences,
        seq_len=n,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        window=window,
        fractions=fractions,
        model_metrics={name: list(estimates(name)) for name in names},
        head_metrics={name: estimates(name) for name in HEAD_METRICS},
        mean_patterns=np.stack(patterns),
        flip_head=flip_head,
        crossings=crossings,
        comparisons=comparisons,
        degenerate_rows=degenerate,
        config=config,
        d_vocab=d_vocab,
    )


# --- outputs --------------------------------------------------------------------------------------
OUTPUTS = command.Outputs(ANALYSIS, CSV_FIELDS, figures="analyses.training_dynamics_figures", source="run")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write


def summary_text(result: TrainingDynamicsResult) -> str:
    """The CLI's one-screen answer: crossing steps at the half-way point and the verdict."""
    lines = [
        f"training dynamics: {len(result.steps)} snapshots (steps {result.steps[0]}..{result.steps[-1]}), "
        f"{result.num_sequences:,} sequences each, flip head {result.flip_head[0]}.{result.flip_head[1]}",
        f"{'metric':<20}{'initial':>9}{'final':>9}{'half-way step [95% CI]':>32}",
    ]
    for c in result.crossings:
        if c.fraction == 0.5:
            s = c.step
            lines.append(
                f"{c.metric:<20}{c.initial:>9.3f}{c.final:>9.3f}"
                f"{f'{s.mean:.0f} [{s.ci_low:.0f}, {s.ci_high:.0f}]':>32}"
            )
    for c in result.comparisons:
        d = c.difference
        lines.append(
            f"{c.first} − {c.second} at {c.fraction:.0%}: {d.mean:+.0f} steps "
            f"[{d.ci_low:+.0f}, {d.ci_high:+.0f}] → {c.verdict_text}"
        )
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def build_parser() -> common.ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Progress measures over a run's snapshots: when does the flip alignment form?",
        out=DEFAULT_OUT,
        num_sequences=2000,
        model=False,
        seq_len=False,
    )
    p.add_argument(
        "--run",
        type=common.path_arg,
        required=True,
        help="run folder with snapshots/ (train with --save-every-log-steps K)",
    )
    p.add_argument(
        "--window",
        type=common.non_negative_int,
        default=1,
        help="restricted loss keeps keys within this distance of the flipped key (default 1)",
    )
    p.add_argument(
        "--fractions",
        type=_fraction,
        nargs="+",
        default=list(FRACTIONS),
        help="threshold fractions of the way from initial to final value (default 0.1 0.5 0.9)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def compute(args: argparse.Namespace, folder: Path) -> TrainingDynamicsResult:
        snapshots = find_snapshots(args.run)
        try:
            result = run(
                snapshots,
                **command.sampling_kwargs(args),
                window=args.window,
                fractions=args.fractions,
                device=args.device,
                run_dir=args.run,
            )
        except CheckpointError as e:
            raise common.UserError(f"--run {e}") from None
        final = args.run / "model.pt"
        result.provenance = command.cli_provenance(
            ANALYSIS,
            args,
            argv,
            checkpoint=args.run.absolute(),
            checkpoint_sha256=sha256_file(final) if final.is_file() else None,
            config=result.config,
            snapshots=[{"step": s, "file": str(p), "sha256": sha256_file(p)} for s, p in snapshots],
        )
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS, summary=summary_text)


if __name__ == "__main__":
    sys.exit(main())
