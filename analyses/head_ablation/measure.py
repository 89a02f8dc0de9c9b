"""``run``: every head ablation, pattern intervention and patching sweep on the same sequences."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.result import estimates
from analyses.frame.sequences import token_batches
from analyses.head_ablation.patching import patching_sweep
from analyses.head_ablation.result import ANALYSIS, STATS, ConditionResult, HeadAblationResult
from interp import baselines, outcomes, paired, patterns
from interp.ablation import HEAD_METHODS, ablate_heads, head_means, replace_pattern
from interp.stats import bootstrap_distributions
from models.data import make_reverse_data

TAUS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)
PERMUTATION_SEQUENCES = 1000  # sequences each random row permutation is evaluated on (see run)


def pattern_functions(taus: Sequence[float] = TAUS) -> dict[str, Callable]:
    """The fixed pattern interventions by name (permutations are added separately)."""
    out: dict[str, Callable] = {
        "flip": patterns.flip,
        "flip+1": partial(patterns.flip, shift=1),
        "flip-1": partial(patterns.flip, shift=-1),
        "uniform": patterns.uniform,
    }
    out.update({f"tau_{t:g}": partial(patterns.temperature, tau=float(t)) for t in taus})
    return out


def permutation_seed(seed: int, k: int) -> int:
    """Generator seed of row permutation k in a run with ``seed`` (distinct for k < 10⁶)."""
    return seed * 1_000_000 + k


# --- the analysis ---------------------------------------------------------------------------------
def _sweep(
    model: Any, batches: Callable[[], Iterator[torch.Tensor]], manager: AbstractContextManager
) -> dict[str, np.ndarray]:
    """Per-sequence accuracy, loss and logit difference over all batches, inside ``manager``."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in STATS}
    with manager:
        for tokens in batches():
            # offset 0 only: the other copy offsets of interp.outcomes are not reported here
            stats = outcomes.sequence_outcomes(model(tokens), tokens, offsets=(0,))
            for k in STATS:
                parts[k].append(stats[k].cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 10_000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    permutations: int = 100,
    permutation_sequences: int = PERMUTATION_SEQUENCES,
    reference_sequences: int = 1000,
    taus: Sequence[float] = TAUS,
    patch_sequences: int = 200,
    patch_position: int | None = None,
    progress: bool = True,
) -> HeadAblationResult:
    """Run every head ablation and pattern intervention on the same sequences (same seed, same numbers).

    The random row permutations run on the first ``permutation_sequences`` of the ``num_sequences``
    sequences (all of them when it is larger): each permutation's accuracy is a mean over those, and
    the "permuted" condition is, per sequence, the mean over the permutations, paired with the clean
    run on the same sequences. ``progress=False`` hides the patching sweeps' progress bars.
    """
    cfg = model.cfg
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    arguments.positive_ints(
        permutation_sequences=permutation_sequences,
        reference_sequences=reference_sequences,
        patch_sequences=patch_sequences,
    )
    arguments.non_negative_ints(permutations=permutations)
    if patch_position is not None and (
        isinstance(patch_position, bool)
        or not isinstance(patch_position, int)
        or not 0 <= patch_position < seq_len
    ):
        raise ValueError(f"patch position must be an integer in 0..{seq_len - 1}, got {patch_position!r}")
    for t in taus:
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            raise ValueError(f"temperatures must be positive numbers, got {t!r}")
    fns = pattern_functions(taus)
    device = next(model.parameters()).device
    permuted_sequences = min(permutation_sequences, num_sequences)

    def batches(count: int = num_sequences) -> Iterator[torch.Tensor]:
        """The first ``count`` sequences of the stream (the same ones whatever ``count``)."""
        for tokens in token_batches(count, seq_len, cfg.d_vocab, seed, batch_size):
            yield tokens.to(device)

    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    table: dict[str, dict[str, np.ndarray]] = {}
    meta: dict[str, tuple[str, int | None, int | None, str]] = {}
    perm_acc: dict[str, list[float]] = {}
    perm_loss: dict[str, list[float]] = {}
    with evaluating(model):
        table["none"] = _sweep(model, batches, nullcontext())
        meta["none"] = ("clean", None, None, "none")
        means = head_means(model, batches())
        reference = make_reverse_data(reference_sequences, seq_len, cfg.d_vocab, seed=seed).to(device)
        for layer, head in heads:
            for method in HEAD_METHODS:
                name = f"{method}/L{layer}H{head}"
                manager = ablate_heads(
                    model, [(layer, head)], method, means=means, reference=reference, seed=seed
                )
                table[name] = _sweep(model, batches, manager)
                meta[name] = ("ablation", layer, head, method)
        for layer, head in heads:
            for kind, fn in fns.items():
                name = f"pattern/L{layer}H{head}/{kind}"
                table[name] = _sweep(model, batches, replace_pattern(model, layer, head, fn))
                meta[name] = ("pattern", layer, head, kind)
            key, runs = f"{layer}.{head}", []
            for k in range(permutations):
                fn = partial(patterns.permute_rows, seed=permutation_seed(seed, k))
                manager = replace_pattern(model, layer, head, fn)
                runs.append(_sweep(model, partial(batches, permuted_sequences), manager))
            perm_acc[key] = [float(r["accuracy"].mean()) for r in runs]
            perm_loss[key] = [float(r["loss"].mean()) for r in runs]
            if runs:
                name = f"pattern/L{layer}H{head}/permuted"
                table[name] = {s: np.mean([r[s] for r in runs], axis=0) for s in STATS}
                meta[name] = ("pattern", layer, head, "permuted")
        clean = next(token_batches(patch_sequences, seq_len, cfg.d_vocab, seed, patch_sequences))
        sweep = patching_sweep(
            model, clean.to(device), patch_position, seed, bootstrap_resamples, confidence, progress
        )

    conditions = _summarise(table, meta, bootstrap_resamples, confidence, seed)
    ceiling = (
        float(baselines.no_position_ceiling(seq_len, cfg.d_vocab).accuracy)
        if seq_len <= 32
        else baselines.no_position_ceiling_monte_carlo(seq_len, cfg.d_vocab, seed=seed).mean
    )
    return HeadAblationResult(
        num_sequences=num_sequences,
        seq_len=seq_len,
        num_categories=cfg.d_vocab,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        reference_sequences=reference_sequences,
        permutation_sequences=permuted_sequences,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        conditions=conditions,
        permutation_accuracy=perm_acc,
        permutation_loss=perm_loss,
        patching=sweep,
        no_position_accuracy=ceiling,
        config=cfg.to_dict(),
    )


def _summarise(
    table: dict[str, dict[str, np.ndarray]],
    meta: dict[str, tuple[str, int | None, int | None, str]],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, ConditionResult]:
    """Means and paired deltas with CIs, Wilcoxon tests, Holm.

    Each condition's per-sequence values and their differences from the clean run on the same
    sequences (the first n of them) are bootstrapped over the same resamples of those n sequences
    (seed ``[seed, 1]``): conditions of equal n share one set of resample counts, which gives the same
    numbers as resampling each condition on its own and costs one draw instead of one per condition.
    """
    clean = table["none"]
    columns = {}
    for name, values in table.items():
        n = len(values[STATS[0]])
        columns[name] = np.stack([values[s] for s in STATS] + [values[s] - clean[s][:n] for s in STATS], 1)
    found: dict[str, np.ndarray] = {}
    for n in sorted({len(c) for c in columns.values()}):
        names = [name for name, c in columns.items() if len(c) == n]
        drawn = bootstrap_distributions([(columns[name], None) for name in names], resamples, seed=[seed, 1])
        for name, (point, reps) in zip(names, drawn):
            found[name] = estimates(point, reps, confidence)
    out: dict[str, ConditionResult] = {}
    for name, values in table.items():
        kind, layer, head, method = meta[name]
        test = paired.wilcoxon_signed_rank(values["loss"], clean["loss"]) if kind == "ablation" else None
        out[name] = ConditionResult(name, kind, layer, head, method, *found[name], wilcoxon=test)
    tested = [c for c in out.values() if c.wilcoxon is not None]
    if tested:
        for c, p in zip(tested, paired.holm(np.array([c.wilcoxon.pvalue for c in tested]))):
            c.p_holm = float(p)
    return out
