"""``run``: every head ablation, pattern intervention and patching sweep on the same sequences."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.loading import check_seq_len, records_source
from analyses.frame.sequences import token_batches
from analyses.head_ablation.patching import patching_sweep
from analyses.head_ablation.result import ANALYSIS, STATS, ConditionResult, HeadAblationResult
from interp import baselines, outcomes, paired, patterns
from interp.ablation import HEAD_METHODS, ablate_heads, head_means, replace_pattern
from interp.stats import Estimate, bootstrap_distribution, percentile_interval
from models.data import make_reverse_data

TAUS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)


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
            stats = outcomes.sequence_outcomes(model(tokens), tokens)
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
    reference_sequences: int = 1000,
    taus: Sequence[float] = TAUS,
    patch_sequences: int = 200,
    patch_position: int | None = None,
) -> HeadAblationResult:
    """Run every head ablation and pattern intervention on the same sequences (same seed, same numbers)."""
    cfg = model.cfg
    seq_len = cfg.n_ctx if seq_len is None else seq_len
    arguments.positive_ints(
        num_sequences=num_sequences,
        seq_len=seq_len,
        batch_size=batch_size,
        reference_sequences=reference_sequences,
        patch_sequences=patch_sequences,
    )
    arguments.non_negative_ints(seed=seed, permutations=permutations)
    check_seq_len(cfg, seq_len)
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

    def batches() -> Iterator[torch.Tensor]:
        for tokens in token_batches(num_sequences, seq_len, cfg.d_vocab, seed, batch_size):
            yield tokens.to(device)

    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    table: dict[str, dict[str, np.ndarray]] = {}
    meta: dict[str, tuple[str, int | None, int | None, str]] = {}
    perm_acc: dict[str, list[float]] = {}
    perm_loss: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
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
                    runs.append(_sweep(model, batches, replace_pattern(model, layer, head, fn)))
                perm_acc[key] = [float(r["accuracy"].mean()) for r in runs]
                perm_loss[key] = [float(r["loss"].mean()) for r in runs]
                if runs:
                    name = f"pattern/L{layer}H{head}/permuted"
                    table[name] = {s: np.mean([r[s] for r in runs], axis=0) for s in STATS}
                    meta[name] = ("pattern", layer, head, "permuted")
            clean = next(token_batches(patch_sequences, seq_len, cfg.d_vocab, seed, patch_sequences))
            sweep = patching_sweep(
                model, clean.to(device), patch_position, seed, bootstrap_resamples, confidence
            )
    finally:
        model.train(was_training)

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
    """Means and paired deltas with CIs (one shared set of resamples), Wilcoxon tests, Holm."""
    clean = table["none"]
    out: dict[str, ConditionResult] = {}
    for name, values in table.items():
        columns = [values[s] for s in STATS] + [values[s] - clean[s] for s in STATS]
        point, reps = bootstrap_distribution(np.stack(columns, 1), resamples=resamples, seed=[seed, 1])
        low, high = percentile_interval(reps, confidence)
        est = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
        kind, layer, head, method = meta[name]
        test = paired.wilcoxon_signed_rank(values["loss"], clean["loss"]) if kind == "ablation" else None
        out[name] = ConditionResult(name, kind, layer, head, method, *est, wilcoxon=test)
    tested = [c for c in out.values() if c.wilcoxon is not None]
    if tested:
        for c, p in zip(tested, paired.holm(np.array([c.wilcoxon.pvalue for c in tested]))):
            c.p_holm = float(p)
    return out
