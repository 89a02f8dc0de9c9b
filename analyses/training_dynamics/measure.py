"""``run``: every snapshot of a run on the same sequences, then the steps at which each curve crosses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame import arguments
from analyses.frame.result import estimates
from analyses.frame.sequences import token_batches
from analyses.training_dynamics.attention import snapshot_statistics
from analyses.training_dynamics.crossings import find_crossings
from analyses.training_dynamics.result import (
    CROSSING_METRICS,
    HEAD_METRICS,
    MODEL_METRICS,
    TrainingDynamicsResult,
)
from interp.stats import bootstrap_distribution
from models.storage.checkpoints import load_model

FRACTIONS: tuple[float, ...] = (0.1, 0.5, 0.9)
COMPARED: tuple[tuple[str, str], ...] = (
    ("flip_mass", "accuracy"),
    ("flip_mass", "loss"),
    ("argmax_hit_rate", "accuracy"),
)


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
    arguments.positive_ints(
        num_sequences=num_sequences, batch_size=batch_size, bootstrap_resamples=bootstrap_resamples
    )
    arguments.non_negative_ints(window=window)
    arguments.check_confidence(confidence)
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"threshold fractions must lie in (0, 1], got {list(fractions)}")
    snapshots = sorted(snapshots, key=lambda item: item[0])
    steps = [int(step) for step, _ in snapshots]
    if len(steps) < 2 or len(set(steps)) != len(steps) or min(steps) < 0:
        raise ValueError(f"need at least two snapshots with distinct non-negative steps, got {steps}")
    arguments.check_resamples(bootstrap_resamples, 2 * len(steps))  # accuracy and loss at every snapshot

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
        batches = token_batches(num_sequences, n, d_vocab, seed, batch_size)
        units, mean_pattern, bad = snapshot_statistics(model, batches, window, num_sequences)
        table = {name: sums.numpy() for name, sums in units.sums.items()}  # per resampling unit
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
    n_units = units.units  # the same units at every snapshot: the same sequences, the same blocks
    full = np.hstack([b.reshape(n_units, -1) for b in blocks.values()])
    # Blocks of sequences (beyond MAX_UNITS): each column is Σ sums / Σ sequences over the units drawn.
    counts = None if units.per_sequence else np.broadcast_to(units.counts.numpy()[:, None], full.shape)
    point, reps = bootstrap_distribution(full, counts, bootstrap_resamples, seed=[seed, 1])

    def block(name: str) -> np.ndarray:
        where, shape = offsets[name]
        return estimates(point[where], reps[:, where], confidence, shape)

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
        model_metrics={name: list(block(name)) for name in names},
        head_metrics={name: block(name) for name in HEAD_METRICS},
        mean_patterns=np.stack(patterns),
        flip_head=flip_head,
        crossings=crossings,
        comparisons=comparisons,
        degenerate_rows=degenerate,
        config=config,
        d_vocab=d_vocab,
    )
